"""The HybridWorkload extension: verified hybrid SVIDs, PQC bundles, Unavailable until PQC credentials exist."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from spire_pqc._internal import wire
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import DevSourceConfig
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.ca.request import IssueRequest, IssueResponse
from spire_pqc.errors import UnavailableError
from spire_pqc.svid import verify_hybrid_svid
from spire_pqc.workload.client import parse_hybrid_response
from tests.unit.agent._support import HEADER, ME, dev_config, first_reply, running_agent, short_dir

HYBRID = wire.FETCH_HYBRID_SVIDS
PQC_BUNDLES = wire.FETCH_PQC_BUNDLES


@pytest.mark.asyncio
async def test_hybrid_svid_passes_verify_hybrid_svid() -> None:
    async with running_agent() as agent:
        reply = await first_reply(
            agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
        )
        update = parse_hybrid_response(reply)
        assert len(update.svids) == 1
        svid = update.svids[0]
        result = verify_hybrid_svid(
            svid.classical_chain, svid.pqc_chain, svid.kem_chain,
            classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles,
        )  # fmt: skip
        assert str(result.spiffe_id) == ME
        assert svid.hint == "me"
        # The PQC bundle is the dev hierarchy's root, and the classical bundle the dev CA.
        root = agent.source.hierarchy.root  # type: ignore[attr-defined]
        assert update.pqc_bundles.get(svid.spiffe_id.trust_domain).authorities == (root,)
        bundles = await first_reply(agent.socket_path, PQC_BUNDLES, hy.PQCBundlesRequest(), hy.PQCBundlesResponse,
                                    metadata=HEADER)  # fmt: skip
        assert list(bundles.bundles) == ["example.org"]


@pytest.mark.asyncio
async def test_rotation_replaces_pqc_keys_and_pushes() -> None:
    async with running_agent() as agent:
        channel = Channel(path=str(agent.socket_path))
        try:
            async with channel.request(
                HYBRID, Cardinality.UNARY_STREAM, hy.HybridSVIDRequest, hy.HybridSVIDResponse, metadata=HEADER
            ) as stream:
                await stream.send_message(hy.HybridSVIDRequest(), end=True)
                reply = await stream.recv_message()
                assert reply is not None
                first = parse_hybrid_response(reply)
                await agent.source.rotate_now()  # type: ignore[attr-defined]
                async with asyncio.timeout(10):
                    reply = await stream.recv_message()
                assert reply is not None
                second = parse_hybrid_response(reply)
                a, b = first.svids[0], second.svids[0]
                assert a.classical_chain[0] != b.classical_chain[0]
                assert a.pqc_key.seed() != b.pqc_key.seed()
                assert a.kem_key.seed() != b.kem_key.seed()
                b.verify(classical_bundles=second.classical_bundles, pqc_bundles=second.pqc_bundles)
                await stream.cancel()
        finally:
            channel.close()


class FlakyCA:
    """Unreachable until ``up`` is set, then forwards to the dev CA; records the keys asked for."""

    def __init__(self, source: DevIdentitySource) -> None:
        self.source = source
        self.up = asyncio.Event()
        self.attempts: list[bytes] = []

    async def issue(self, request: IssueRequest) -> IssueResponse:
        self.attempts.append(request.mldsa_spki)
        if not self.up.is_set():
            raise UnavailableError("PQC CA unreachable (test)")
        return await self.source.local_ca_client().issue(request)

    async def close(self) -> None:
        return None


@pytest.mark.asyncio
async def test_unreachable_ca_gives_unavailable_then_recovers() -> None:
    config = dataclasses.replace(
        dev_config(short_dir()), retry_initial=dt.timedelta(seconds=0.05), retry_max=dt.timedelta(seconds=0.2)
    )
    assert isinstance(config.source, DevSourceConfig)
    source = DevIdentitySource(config.source)
    flaky = FlakyCA(source)
    agent = Agent(config, source=source, ca_client=flaky, first_pqc_wait=0.5)
    async with agent:
        with pytest.raises(GRPCError) as info:
            await first_reply(
                agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
            )
        assert info.value.status is Status.UNAVAILABLE
        assert "PQC credentials are not available yet" in (info.value.message or "")
        with pytest.raises(GRPCError) as info:
            await first_reply(agent.socket_path, PQC_BUNDLES, hy.PQCBundlesRequest(), hy.PQCBundlesResponse,
                              metadata=HEADER)  # fmt: skip
        assert info.value.status is Status.UNAVAILABLE
        # The standard Workload API keeps working meanwhile.
        from spiffe._proto import workload_pb2 as wl

        classical = await first_reply(agent.socket_path, wire.FETCH_X509_SVID, wl.X509SVIDRequest(),
                                      wl.X509SVIDResponse, metadata=HEADER)  # fmt: skip
        assert classical.svids[0].spiffe_id == ME
        await asyncio.sleep(0.5)
        assert len(flaky.attempts) >= 2  # retried with backoff
        flaky.up.set()
        async with asyncio.timeout(10):
            while (
                agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="success") == 0
            ):  # the next retry succeeds
                await asyncio.sleep(0.02)
        reply = await first_reply(
            agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
        )
        update = parse_hybrid_response(reply)
        # Every retry presented the same keys (so a lost reply cannot trigger the CA's duplicate rule).
        assert len(set(flaky.attempts)) == 1
        assert update.svids[0].pqc_key.public_key().spki() == flaky.attempts[0]
        assert agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="failure") >= 2
        assert agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="success") == 1


@pytest.mark.asyncio
async def test_hybrid_without_identity_or_header() -> None:
    import os

    directory = short_dir()
    async with running_agent(dev_config(directory, selectors=[f"unix:uid:{os.getuid() + 7}"])) as agent:
        with pytest.raises(GRPCError) as info:
            await first_reply(
                agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
            )
        assert info.value.status is Status.PERMISSION_DENIED
        with pytest.raises(GRPCError) as info:
            await first_reply(agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse)
        assert info.value.status is Status.INVALID_ARGUMENT
