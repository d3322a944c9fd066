"""Helpers shared by the agent and SDK tests: configs, a running agent, a raw grpclib caller."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality

from spire_pqc._internal import wire
from spire_pqc.agent.config import AgentConfig, parse
from spire_pqc.agent.server import Agent

TRUST_DOMAIN = "example.org"
ME = f"spiffe://{TRUST_DOMAIN}/workload/me"
HEADER = dict(wire.SECURITY_METADATA)


def short_dir() -> Path:
    """Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer."""
    return Path(tempfile.mkdtemp(prefix="spa-", dir="/tmp"))


def dev_config(
    socket_dir: Path,
    *,
    ttl: str = "1h",
    selectors: Sequence[str] | None = None,
    extra_entries: Sequence[dict[str, Any]] = (),
    **agent: Any,
) -> AgentConfig:
    entries = [{"spiffe_id": ME, "selectors": list(selectors or [f"unix:uid:{os.getuid()}"]), "hint": "me"}]
    entries.extend(extra_entries)
    return parse(
        {
            "agent": {"socket_path": str(socket_dir / "agent.sock"), "shutdown_grace": "2s", **agent},
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": TRUST_DOMAIN, "svid_ttl": ttl, "entries": entries},
            },
        }
    )


@asynccontextmanager
async def running_agent(config: AgentConfig | None = None, **kwargs: Any) -> AsyncIterator[Agent]:
    config = config or dev_config(short_dir())
    agent = Agent(config, **kwargs)
    try:
        async with agent:
            yield agent
    finally:
        if config.socket_path.parent.name.startswith("spa-"):  # made by short_dir()
            shutil.rmtree(config.socket_path.parent, ignore_errors=True)


async def first_reply(
    path: Path,
    method: str,
    request: Any,
    reply_type: type[Any],
    *,
    metadata: dict[str, str] | None = None,
    raw_request: bytes | None = None,
) -> Any:
    """Open one server stream with grpclib and return its first reply (or raise GRPCError)."""
    channel = Channel(path=str(path))
    try:
        async with channel.request(
            method, Cardinality.UNARY_STREAM, type(request), reply_type, metadata=metadata, timeout=20
        ) as stream:
            if raw_request is None:
                await stream.send_message(request, end=True)
            else:
                # Bypass the codec to put arbitrary bytes in one length-prefixed gRPC message.
                await stream.send_request()
                frame = b"\x00" + len(raw_request).to_bytes(4, "big") + raw_request
                await stream._stream.send_data(frame, end_stream=True)
            reply = await stream.recv_message()
            await stream.cancel()
            return reply
    finally:
        channel.close()
