"""Issue 9, item 4: an outbound tunnel speaks as the node's SPIFFE ID, so only the users it names may use it.

A real agent process hosts two outbound tunnels (a loopback TCP listener that admits uid ATTACKER, a
Unix-socket listener that admits gid ATTACKER) and the inbound tunnel they reach, whose target is an
echo server in this test. Processes of two unprivileged uids try both listeners: the allowed one
gets its echo through the hybrid channel, the other is closed before any byte reaches the remote,
the refusal is logged and counted. Without a list of allowed users the configuration is refused;
``"*"`` is accepted with a warning.
"""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spire_pqc.bench.agentproc import AgentProcess, to_toml
from spire_pqc.bench.hostile import result_of, spawn
from spire_pqc.bench.spirelab import free_port
from tests.security._support import (
    ATTACKER,
    ATTACKER2,
    TRUST_DOMAIN,
    assert_no_traceback,
    log_lines,
    public_dir,
    require_root,
    wait_for,
)

CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/svc/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/svc/server"
NOBODY = "unix:uid:4294967294"  # the entries serve the tunnels only


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while chunk := self.request.recv(65536):
            data += chunk
        self.server.seen.append(data)  # type: ignore[attr-defined]
        self.request.sendall(b"pong:" + data)


@contextmanager
def echo_server() -> Iterator[tuple[int, list[bytes]]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _config(directory: Path, target: int, outbound: list[dict[str, Any]]) -> dict[str, Any]:
    inbound_port = free_port()
    entries = [{"spiffe_id": sid, "selectors": [NOBODY]} for sid in (CLIENT_ID, SERVER_ID)]
    for tunnel in outbound:
        tunnel.update(remote=f"127.0.0.1:{inbound_port}", peer_ids=[SERVER_ID], spiffe_id=CLIENT_ID)
    return {
        "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
        "source": {"kind": "dev", "dev": {"trust_domain": TRUST_DOMAIN, "entries": entries}},
        "tunnel": {
            "outbound": outbound,
            "inbound": [
                {
                    "name": "in",
                    "listen": f"127.0.0.1:{inbound_port}",
                    "target": f"127.0.0.1:{target}",
                    "spiffe_id": SERVER_ID,
                    "allowed_ids": [CLIENT_ID],
                }
            ],
        },
    }


def test_only_the_named_users_may_use_an_outbound_tunnel() -> None:
    require_root()
    tcp_port = free_port()
    with public_dir() as directory, echo_server() as (target, seen):
        unix_path = directory / "out.sock"
        outbound = [
            {"name": "by-uid", "listen": f"127.0.0.1:{tcp_port}", "allowed_uids": [ATTACKER]},
            {"name": "by-gid", "listen": f"unix:{unix_path}", "allowed_gids": [ATTACKER]},
        ]
        with AgentProcess(directory, _config(directory, target, outbound)) as agent:
            results = {}
            for uid in (ATTACKER, ATTACKER2):
                for flag, address in (("--tcp", f"127.0.0.1:{tcp_port}"), ("--unix", str(unix_path))):
                    results[uid, flag] = result_of(spawn("tunnel", [flag, address], uid=uid))
            for where in ("--tcp", "--unix"):
                assert results[ATTACKER, where]["received"] == "pong:ping", results
                denied = results[ATTACKER2, where]
                assert denied["connected"] and denied["received"] == "", results
            assert seen == [b"ping", b"ping"]  # nothing from the refused uid reached the remote side
            for name in ("by-uid", "by-gid"):
                labels = {"tunnel": name, "kind": "outbound"}
                wait_for(lambda labels=labels: agent.metric(  # type: ignore[misc]
                    "spire_pqc_agent_tunnel_connections_total", result="denied", **labels) == 1,
                    f"tunnel {name} to count the denied user")  # fmt: skip
                assert (
                    agent.metric("spire_pqc_agent_tunnel_connections_total", result="accepted", **labels) == 1
                )
            assert len(log_lines(agent, f"uid {ATTACKER2}")) == 2, agent.log_tail()
            assert_no_traceback(agent)


def test_a_socket_closed_before_its_owner_is_read_is_not_root() -> None:
    # A TCP socket its process already closed is reported by the kernel with uid 0. With root among
    # the allowed users, an attacker who sends and closes at once must still not get through. The
    # agent is paused while the attacker does it, so every lookup happens after the close.
    require_root()
    tcp_port = free_port()
    with public_dir() as directory, echo_server() as (target, seen):
        outbound = [{"name": "root-only", "listen": f"127.0.0.1:{tcp_port}", "allowed_uids": [0]}]
        with AgentProcess(directory, _config(directory, target, outbound)) as agent:
            agent.pause()
            try:
                attack = ["--tcp", f"127.0.0.1:{tcp_port}", "--hit-and-run", "--count", "20"]
                assert result_of(spawn("tunnel", attack, uid=ATTACKER2))["sent"] == 20
            finally:
                agent.resume()
            labels = {"tunnel": "root-only", "kind": "outbound"}
            wait_for(lambda: agent.metric("spire_pqc_agent_tunnel_connections_total", result="denied", **labels) == 20,
                     "20 denials")  # fmt: skip
            assert agent.metric("spire_pqc_agent_tunnel_connections_total", result="accepted", **labels) == 0
            assert seen == []
            # Root itself still gets through.
            with socket.create_connection(("127.0.0.1", tcp_port)) as mine:
                mine.sendall(b"ping")
                mine.shutdown(socket.SHUT_WR)
                assert mine.recv(100) == b"pong:ping"


def _validate(directory: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = directory / "check.toml"
    path.write_text(to_toml(config))
    return subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "agent", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_an_outbound_tunnel_without_allowed_users_is_refused_and_star_is_warned_about() -> None:
    require_root()
    with public_dir() as directory, echo_server() as (target, _):
        result = _validate(directory, _config(directory, target, [{"name": "open", "listen": "127.0.0.1:0"}]))
        assert result.returncode != 0
        assert "tunnel.outbound[0].allowed_uids: give allowed_uids and/or allowed_gids" in result.stderr, (
            result.stderr
        )
        port = free_port()
        config = _config(
            directory, target, [{"name": "open", "listen": f"127.0.0.1:{port}", "allowed_uids": "*"}]
        )
        with AgentProcess(directory, config) as agent:
            assert (
                result_of(spawn("tunnel", ["--tcp", f"127.0.0.1:{port}"], uid=ATTACKER2))["received"]
                == "pong:ping"
            )
            assert log_lines(agent, "any local user"), agent.log_tail()


def test_a_tunnel_owner_lookup_names_the_connecting_uid_not_ours() -> None:
    # The kernel's owner of a loopback TCP connection (sock_diag) is the uid that created the socket.
    require_root()
    from spire_pqc.agent.localpeer import tcp_peer_uid

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = spawn("tunnel", ["--tcp", f"127.0.0.1:{port}"], uid=ATTACKER)
        conn, _ = listener.accept()
        with conn:
            assert tcp_peer_uid(conn) == ATTACKER
            conn.close()
        result_of(client)
        with socket.create_connection(("127.0.0.1", port)) as mine:
            conn, _ = listener.accept()
            with conn:
                assert tcp_peer_uid(conn) == 0
            mine.close()
