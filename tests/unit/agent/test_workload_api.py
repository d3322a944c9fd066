"""The Workload API rules on a real Unix socket: header, caller identity, PID reuse, bad input."""

from __future__ import annotations

import asyncio
import json
import os

import grpc
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.agent.peercred import LinuxProcReader, ProcessStamp
from tests.unit.agent._support import HEADER, ME, dev_config, first_reply, running_agent, short_dir

SVID = wire.FETCH_X509_SVID
BUNDLES = wire.FETCH_X509_BUNDLES


@pytest.mark.asyncio
async def test_svid_and_bundle_for_the_attested_caller() -> None:
    async with running_agent() as agent:
        reply = await first_reply(
            agent.socket_path, SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse, metadata=HEADER
        )
        assert [s.spiffe_id for s in reply.svids] == [ME]
        assert reply.svids[0].hint == "me"
        assert reply.svids[0].bundle == agent.source.classical_ca.certificate.public_bytes(  # type: ignore[attr-defined]
            __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
        )
        bundles = await first_reply(
            agent.socket_path, BUNDLES, wl.X509BundlesRequest(), wl.X509BundlesResponse, metadata=HEADER
        )
        assert list(bundles.bundles) == ["spiffe://example.org"]


@pytest.mark.asyncio
async def test_missing_security_header_is_invalid_argument() -> None:
    async with running_agent() as agent:
        for metadata in (None, {wire.SECURITY_HEADER: "false"}):
            with pytest.raises(GRPCError) as info:
                await first_reply(
                    agent.socket_path, SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse, metadata=metadata
                )
            assert info.value.status is Status.INVALID_ARGUMENT
            assert "security header" in (info.value.message or "")


@pytest.mark.asyncio
async def test_caller_without_entry_is_permission_denied() -> None:
    directory = short_dir()
    config = dev_config(directory, selectors=[f"unix:uid:{os.getuid() + 4242}"])
    async with running_agent(config) as agent:
        for method, req, rep in ((SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse),
                                 (BUNDLES, wl.X509BundlesRequest(), wl.X509BundlesResponse)):  # fmt: skip
            with pytest.raises(GRPCError) as info:
                await first_reply(agent.socket_path, method, req, rep, metadata=HEADER)
            assert info.value.status is Status.PERMISSION_DENIED
            assert info.value.message == "no identity issued"


class _ReusedPid:
    """A /proc reader whose answer changes after the first read: the PID now names another process."""

    def __init__(self) -> None:
        self.real = LinuxProcReader()
        self.reads = 0

    def stamp(self, pid: int) -> ProcessStamp:
        self.reads += 1
        stamp = self.real.stamp(pid)
        if self.reads == 1:
            return stamp  # recorded at connect time
        return ProcessStamp(stamp.starttime + 1, stamp.uid, stamp.gid)


@pytest.mark.asyncio
async def test_reused_pid_is_permission_denied() -> None:
    reader = _ReusedPid()
    async with running_agent(proc_reader=reader) as agent:
        with pytest.raises(GRPCError) as info:
            await first_reply(
                agent.socket_path, SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse, metadata=HEADER
            )
        assert info.value.status is Status.PERMISSION_DENIED
        assert "PID reused" in (info.value.message or "")
        assert reader.reads >= 2


@pytest.mark.asyncio
async def test_jwt_bundles_stream_sends_the_jwks_and_checks_the_header() -> None:
    async with running_agent() as agent:
        reply = await first_reply(
            agent.socket_path, wire.FETCH_JWT_BUNDLES, wl.JWTBundlesRequest(),
            wl.JWTBundlesResponse, metadata=HEADER,
        )  # fmt: skip
        keys = json.loads(reply.bundles["spiffe://example.org"])["keys"]
        assert [(k["kty"], k["crv"], k["use"]) for k in keys] == [("EC", "P-256", "jwt-svid")]
        assert keys[0]["kid"]
        with pytest.raises(GRPCError) as info:
            await first_reply(
                agent.socket_path,
                wire.FETCH_JWT_BUNDLES,
                wl.JWTBundlesRequest(),
                wl.JWTBundlesResponse,
            )
        assert info.value.status is Status.INVALID_ARGUMENT  # the header is checked first


def _grpcio_status(path: object, method: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"unix://{path}") as channel:
        call = channel.unary_stream(
            method,
            request_serializer=wl.X509SVIDRequest.SerializeToString,
            response_deserializer=wl.X509SVIDResponse.FromString,
        )
        try:
            list(call(wl.X509SVIDRequest(), metadata=tuple(wire.SECURITY_METADATA.items()), timeout=10))
        except grpc.RpcError as exc:
            return exc.code()
    raise AssertionError("the call succeeded")


@pytest.mark.asyncio
async def test_malformed_requests_do_not_crash_the_agent() -> None:
    async with running_agent() as agent:
        # Invalid protobuf (a field header with a truncated length-delimited value).
        with pytest.raises(GRPCError) as info:
            await first_reply(
                agent.socket_path, SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse, metadata=HEADER,
                raw_request=b"\x0a\xff\xff\xff\xff\x0f",
            )  # fmt: skip
        assert info.value.status is Status.INVALID_ARGUMENT
        # An RPC the agent does not serve (the WIT profile): grpcio clients see UNIMPLEMENTED, as the
        # specification requires of servers without that profile.
        assert await asyncio.to_thread(
            _grpcio_status, agent.socket_path, wire.workload_method("FetchWITSVID")
        ) == (grpc.StatusCode.UNIMPLEMENTED)
        # Plain garbage on the socket.
        reader, writer = await asyncio.open_unix_connection(str(agent.socket_path))
        writer.write(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(256))
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # Still serving.
        reply = await first_reply(
            agent.socket_path, SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse, metadata=HEADER
        )
        assert reply.svids[0].spiffe_id == ME


@pytest.mark.asyncio
async def test_stream_pushes_full_state_on_rotation() -> None:
    from grpclib.client import Channel

    async with running_agent() as agent:
        channel = Channel(path=str(agent.socket_path))
        try:
            async with channel.request(
                SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest, wl.X509SVIDResponse, metadata=HEADER
            ) as stream:
                await stream.send_message(wl.X509SVIDRequest(), end=True)
                first = await stream.recv_message()
                await agent.source.rotate_now()  # type: ignore[attr-defined]
                second = await asyncio.wait_for(stream.recv_message(), 10)
                assert first is not None and second is not None
                assert len(second.svids) == 1 and second.svids[0].spiffe_id == ME
                assert second.svids[0].x509_svid != first.svids[0].x509_svid
                assert second.svids[0].x509_svid_key != first.svids[0].x509_svid_key
                assert second.svids[0].bundle  # full state: the bundle is repeated
                await stream.cancel()
        finally:
            channel.close()


@pytest.mark.asyncio
async def test_socket_mode_is_applied() -> None:
    directory = short_dir()
    async with running_agent(dev_config(directory, socket_mode="0600")) as agent:
        assert agent.socket_path.stat().st_mode & 0o777 == 0o600
    assert not agent.socket_path.exists()
