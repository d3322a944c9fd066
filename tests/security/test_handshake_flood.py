"""Issue 9, item 6 (channels): a flood of aborted TLS handshakes against an agent's inbound tunnel.

A separate process of an unprivileged uid opens connections to the tunnel's TLS listener and closes
them in the middle of the ClientHello or right after it, half of them with a TCP reset. Each must
end as one counted refusal; the agent's log gets no traceback and only a few rate-limited lines.
"""

from __future__ import annotations

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import result_of, spawn
from spire_pqc.bench.spirelab import free_port
from tests.security._support import (
    ATTACKER,
    TRUST_DOMAIN,
    assert_no_traceback,
    public_dir,
    require_root,
    wait_for,
)

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
