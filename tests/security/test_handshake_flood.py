"""Issue 9, item 6 (channels): a flood of aborted TLS handshakes against an agent's inbound tunnel.

A separate process of an unprivileged uid opens connections to the tunnel's TLS listener and closes
them in the middle of the ClientHello or right after it, half of them with a TCP reset. Each must
end as one counted refusal; the agent's log gets no traceback and only a few rate-limited lines.
Connections left open in the handshake are capped per peer address (each holds OpenSSL state).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import result_of, spawn
from spire_pqc.bench.spirelab import free_port
from spire_pqc.channel.api import MAX_SETUP_PER_PEER, SecureStreamWriter, open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from tests.security._support import (
    ATTACKER,
    TRUST_DOMAIN,
    assert_no_traceback,
    public_dir,
    require_root,
    wait_for,
)
from tests.unit.channel._creds import make_world

SERVER_ID = f"spiffe://{TRUST_DOMAIN}/svc/server"
CONNECTIONS = 200


def test_aborted_handshakes_are_counted_not_logged_one_by_one() -> None:
    require_root()
    port = free_port()
    with public_dir() as directory:
        config = {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {
                "kind": "dev",
                "dev": {
                    "trust_domain": TRUST_DOMAIN,
                    "entries": [{"spiffe_id": SERVER_ID, "selectors": ["unix:uid:4294967294"]}],
                },
            },
            "tunnel": {
                "inbound": [
                    {
                        "name": "in",
                        "listen": f"127.0.0.1:{port}",
                        "target": f"127.0.0.1:{free_port()}",
                        "spiffe_id": SERVER_ID,
                        "allowed_trust_domain": TRUST_DOMAIN,
                    }
                ]
            },
        }
        with AgentProcess(directory, config) as agent:
            log_before = agent.log_bytes()
            for rst in (False, True):
                args = ["--tcp", f"127.0.0.1:{port}", "--count", str(CONNECTIONS // 2)]
                result = result_of(spawn("handshake", [*args, *(["--rst"] if rst else [])], uid=ATTACKER))
                assert result["made"] == CONNECTIONS // 2, result
            labels = {"tunnel": "in", "kind": "inbound", "result": "refused"}
            wait_for(
                lambda: agent.metric("spire_pqc_agent_tunnel_connections_total", **labels) == CONNECTIONS,
                f"{CONNECTIONS} refusals to be counted",
            )
            assert agent.http("/ready")[0] == 200
            assert_no_traceback(agent)
            new_lines = agent.log_text().encode()[log_before:].decode(errors="replace").splitlines()
            assert len(new_lines) <= 4, new_lines  # one per kind of refusal per 10 s, not one per connection


@pytest.mark.asyncio
async def test_handshakes_left_open_are_capped_per_peer_and_others_still_connect() -> None:
    # A peer that opens connections and never finishes the handshake holds at most MAX_SETUP_PER_PEER
    # of them (each holds OpenSSL state); the rest are closed before anything is read, and a client
    # from another address completes its hybrid channel meanwhile.
    world = make_world()
    server_svid, client_svid = world.main.mint("/server"), world.main.mint("/client")

    async def echo(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
        writer.write(await reader.read(4))
        await writer.drain()
        writer.close()

    async with await start_server(
        echo, "127.0.0.1", 0, source=world.source(server_svid),
        authorizer=authorize_id(client_svid.spiffe_id), handshake_timeout=60,
    ) as server:  # fmt: skip
        held = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
            for _ in range(MAX_SETUP_PER_PEER + 8)
        ]
        closed = 0
        for reader, _ in held:
            with contextlib.suppress(TimeoutError):  # a timeout: it holds a setup slot, as it should
                closed += await asyncio.wait_for(reader.read(1), 0.5) == b""
        assert closed == 8
        assert sum("too many connections in setup" in str(f) for f in server.failures) == 8
        # A client from another address (the attacker used 127.0.0.2) is not affected.
        reader, writer = await open_connection(
            "127.0.0.1", server.port, source=world.source(client_svid),
            authorizer=authorize_id(server_svid.spiffe_id),
        )  # fmt: skip
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 30) == b"ping"
        writer.close()
        for _, idle in held:
            idle.close()
