"""Hand-driven TLS peers for refusal tests: they speak TLS like ours but misbehave after (or during)
the handshake. They reuse the channel's own TLS engine so only the behaviour under test differs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from OpenSSL import SSL

from spire_pqc.channel.context import base_context, context_for, restrict_groups
from spire_pqc.channel.sources import Mode
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.svid import HybridSvid

Behaviour = Callable[[TlsProtocol], Awaitable[None]]


def classical_only_context(svid: HybridSvid, mode: Mode = Mode.SPIFFE) -> SSL.Context:
    """A TLS 1.3 context of ``mode`` that offers/accepts X25519 only (no post-quantum key exchange)."""
    ctx = context_for(mode, svid)
    restrict_groups(ctx, b"X25519")
    return ctx


class RawServer:
    """Accepts TLS connections with ``context`` and runs ``behaviour`` on each after accepting."""

    def __init__(self, context: SSL.Context, behaviour: Behaviour) -> None:
        self._context = context
        self._behaviour = behaviour
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None

    def _factory(self) -> TlsProtocol:
        proto = TlsProtocol(self._context, server_side=True)
        self.tasks.append(asyncio.get_running_loop().create_task(self._run(proto)))
        return proto

    async def _run(self, proto: TlsProtocol) -> None:
        try:
            await self._behaviour(proto)
        except Exception as exc:  # recorded for the test to inspect
            self.errors.append(exc)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.get_running_loop().create_server(self._factory, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])


async def raw_connect(context: SSL.Context, port: int) -> TlsProtocol:
    """A client TLS connection (not yet handshaken: await ``proto.handshake()``)."""
    _, proto = await asyncio.get_running_loop().create_connection(
        lambda: TlsProtocol(context, server_side=False), "127.0.0.1", port
    )
    return proto


__all__ = ["RawServer", "base_context", "classical_only_context", "raw_connect"]
