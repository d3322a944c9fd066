"""`spire-pqc bench soak` at a small size: the benchmark runs, and a short mixed attack leaves the
legitimate workload served, the agent's descriptors where they were and its log small."""

from __future__ import annotations

from spire_pqc.bench import soak
from tests.security._support import require_root


def test_a_small_soak_runs_and_the_workload_is_served() -> None:
    require_root()
    report = soak.run(connections=400, seconds=3)
    text = soak.format_report(report)
    assert report.attacker_connections >= 350, text  # the attackers did connect (a few may be refused)
    for phase in (report.baseline, report.attack):
        assert phase.latencies_ms and phase.failures == 0, text
    assert report.after.fds <= report.before.fds + 4, text
    assert report.after.log_bytes - report.before.log_bytes < 16_384, text
    refusals = report.counters
    assert refusals["spire_pqc_agent_requests_refused_total{reason=malformed_request}"] == 400 // 8, text
    assert refusals["spire_pqc_agent_requests_refused_total{reason=message_too_large}"] >= 1, text
    assert "p99 under attack / p99 alone" in text
