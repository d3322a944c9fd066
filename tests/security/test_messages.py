"""Issue 9, items 2 and 6 (frames): oversize and malformed gRPC requests from a uid with no identity.

The agent runs as its own process (`spire-pqc agent run`); the attacker is a separate process under
an unprivileged uid. What must hold: the length prefix is checked before any body byte is read
(RESOURCE_EXHAUSTED for more than 4 MiB; the agent's peak RSS does not follow what the attacker
pushes), malformed frames are INVALID_ARGUMENT, and none of it produces a traceback or more than a
few (rate-limited) log lines, while every refusal is counted in /metrics.
"""

from __future__ import annotations

from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import MALFORMED, result_of, spawn
from tests.security._support import (
    ATTACKER,
    assert_no_traceback,
    dev_agent_config,
    public_dir,
    require_root,
)

PUSH_MIB = 128


def test_a_4_gib_length_prefix_is_refused_before_the_body_is_read() -> None:
    require_root()
    with public_dir() as directory, AgentProcess(directory, dev_agent_config(directory)) as agent:
        peak_before = agent.peak_rss_kib()
        result = result_of(
            spawn("oversize", ["--socket", str(agent.socket_path), "--push", str(PUSH_MIB)], uid=ATTACKER)
        )
        growth_mib = (agent.peak_rss_kib() - peak_before) / 1024
        assert result["status"] == "RESOURCE_EXHAUSTED", result
        assert "4194304" in result["message"], result
        # The attacker could push at most the HTTP/2 windows before the refusal reached it.
        assert growth_mib < 16, (
            f"peak RSS grew by {growth_mib:.0f} MiB while {result['pushed']} bytes were pushed"
        )
        assert agent.metric("spire_pqc_agent_requests_refused_total", reason="message_too_large") == 1
        assert_no_traceback(agent)


def test_request_bodies_one_uid_sends_at_once_are_bounded() -> None:
    # Eight requests of one uid, each announcing 4 MiB and sending 1 KiB of it: four fit the uid's
    # 16 MiB budget of bodies being read, the others are refused at once.
    require_root()
    with public_dir() as directory, AgentProcess(directory, dev_agent_config(directory)) as agent:
        args = ["--socket", str(agent.socket_path), "--count", "8", "--hold", "3"]
        result = result_of(spawn("slow-bodies", args, uid=ATTACKER))
        assert result["statuses"] == {"PENDING": 4, "RESOURCE_EXHAUSTED": 4}, result
        assert agent.metric("spire_pqc_agent_requests_refused_total", reason="too_many_bytes") == 4
        assert_no_traceback(agent)


def test_malformed_frames_are_invalid_argument_without_traceback() -> None:
    require_root()
    kinds = sorted(MALFORMED)  # compressed flag, truncated body, 3-byte body, not protobuf
    with public_dir() as directory, AgentProcess(directory, dev_agent_config(directory)) as agent:
        for kind in kinds:
            result = result_of(
                spawn("malformed", ["--socket", str(agent.socket_path), "--kind", kind], uid=ATTACKER)
            )
            assert result["status"] == "INVALID_ARGUMENT", (kind, result)
        assert agent.metric("spire_pqc_agent_requests_refused_total", reason="malformed_request") == len(
            kinds
        )
        assert_no_traceback(agent)
        lines = [line for line in agent.log_text().splitlines() if "malformed" in line]
        assert len(lines) == 1, lines  # four refusals, one (rate-limited) line
