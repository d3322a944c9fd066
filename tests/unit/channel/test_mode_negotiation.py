"""Channel modes are negotiated with ALPN: a mismatch is refused in the handshake with a typed error,
and no application byte reaches either side (before ALPN, a ``hybrid`` end facing a ``spiffe`` end
completed the handshake and the other application received the PQ proof as data)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from spire_pqc.channel.api import SecureServer, SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.channel.sources import Mode
from spire_pqc.errors import ModeMismatchError, SpirePqcError
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World

PAIRS = [(c, s) for c, s in itertools.product(Mode, Mode) if c is not s]


class Recorder:
    """The server application: records every byte it is given (there must be none)."""

    def __init__(self) -> None:
        self.received = b""
        self.calls = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        self.calls += 1
        self.received += await reader.read()
        writer.close()


async def _refusal(server: SecureServer) -> SpirePqcError:
    async with asyncio.timeout(30):
        while not server.failures:
            await asyncio.sleep(0.01)
    return server.failures[0]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("client_mode", "server_mode"), PAIRS, ids=[f"{c.value}->{s.value}" for c, s in PAIRS]
)
async def test_mode_mismatch_is_refused_in_the_handshake(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid, client_mode: Mode, server_mode: Mode
) -> None:
    app = Recorder()
    async with await start_server(
        app, "127.0.0.1", 0, source=world.source(server_svid), authorizer=authorize_id(client_svid.spiffe_id),
        mode=server_mode,
    ) as server:  # fmt: skip
        try:
            reader, writer = await open_connection(
                "127.0.0.1", server.port, source=world.source(client_svid),
                authorizer=authorize_id(server_svid.spiffe_id), mode=client_mode,
            )  # fmt: skip
        except ModeMismatchError as exc:
            # A client that names its mode (hybrid, pq-tls) learns of the mismatch in the handshake.
            assert client_mode.alpn is not None, exc
            assert "mode" in str(exc)
        except SpirePqcError as exc:
            # A spiffe client (no ALPN) facing a pq-tls server (which also serves plain OpenSSL
            # clients without ALPN) sees an ML-DSA-65 certificate where it expects a classical SVID.
            assert (client_mode, server_mode) == (Mode.SPIFFE, Mode.PQ_TLS), repr(exc)
        else:
            # A spiffe client facing a hybrid server: the server refuses right after the handshake;
            # the client's application gets nothing, not the server's PQ proof.
            assert (client_mode, server_mode) == (Mode.SPIFFE, Mode.HYBRID)
            writer.write(b"hello")
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
        refusal = await _refusal(server)
    if (client_mode, server_mode) != (Mode.SPIFFE, Mode.PQ_TLS):  # that one: refused by verification
        assert isinstance(refusal, ModeMismatchError), repr(refusal)
        assert server_mode.value in str(refusal)
    assert (app.calls, app.received) == (0, b"")


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
async def test_alpn_per_mode(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid, mode: Mode
) -> None:
    async def hello(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        writer.write(b"hi")
        writer.close()

    async with await start_server(
        hello, "127.0.0.1", 0, source=world.source(server_svid), authorizer=authorize_id(client_svid.spiffe_id),
        mode=mode,
    ) as server:  # fmt: skip
        reader, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id), mode=mode,
        )  # fmt: skip
        assert await reader.read() == b"hi"
        writer.close()
        assert (
            mode.alpn
            == {
                Mode.HYBRID: b"spire-pqc-hybrid/1",
                Mode.PQ_TLS: b"spire-pqc-pq-tls/1",
                Mode.SPIFFE: None,
            }[mode]
        )
        tls = writer.transport.get_extra_info("ssl_object")
        assert (tls.get_alpn_proto_negotiated() or None) == mode.alpn
