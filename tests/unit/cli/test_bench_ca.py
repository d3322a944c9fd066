"""`spire-pqc bench ca`: one worker process per backend, issuance measured against its crypto floor."""

from __future__ import annotations

import pytest

from spire_pqc.bench import ca as bench_ca
from spire_pqc.bench.worker import Worker, last_json_line
from tests._backends import require_liboqs


@pytest.mark.liboqs
def test_bench_ca_measures_both_backends_and_their_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OQS_INSTALL_PATH", str(require_liboqs()))
    report = bench_ca.run(requests=4, rounds=2)
    assert [r.backend for r in report.results] == ["openssl", "liboqs"]
    for result in report.results:
        assert result.available, result.describe
        assert result.describe.startswith(result.backend + " ")
        assert result.issuance_per_cpu_s > 0 and result.floor_per_cpu_s > 0 and result.bindings_per_cpu_s > 0
        # An issuance does at least the floor's work, so it cannot be much faster than it (CPU noise aside).
        assert 0 < result.floor_ratio < 1.5
    text = bench_ca.format_report(report)
    assert "liboqs / openssl issuance:" in text
    assert "issuance/floor" in text


def test_an_unusable_backend_is_reported_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIRE_PQC_BACKEND", "bogus")
    with Worker("spire_pqc.bench.ca", ["--worker"]) as worker:
        assert (
            worker.unavailable is not None and "expected one of auto, openssl, liboqs" in worker.unavailable
        )
    with pytest.raises(ValueError, match="backends"):
        bench_ca.run(backends=("bogus",))


def test_last_json_line_reads_the_result_a_child_printed_last() -> None:
    assert last_json_line('log line\n{"a": 1}\nnoise\n{"b": 2}\n') == {"b": 2}
    assert last_json_line("nothing here\n") is None


@pytest.mark.liboqs
def test_expiring_issuances_are_pruned_while_rss_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench ca --expiring N`: entries of expired SVIDs leave the file ledger while the CA keeps issuing."""
    monkeypatch.setenv("OQS_INSTALL_PATH", str(require_liboqs()))
    report = bench_ca.run_expiring(issuances=1400, ttl_s=2.0, freshness_s=1.0)
    issued = [sample[0] for sample in report.samples]
    assert issued[-1] == 1400 and issued == sorted(issued)
    assert all(rss > 0 for _, rss, _, _ in report.samples)
    late = [live for _, _, live, seconds in report.samples if seconds > 5.0]
    # Entries live ~3 s (+ up to 1 s until the pruner runs): once the run is past that, not all 1,400 remain.
    assert not late or late[-1] < 1400
    assert "RSS growth after the first entries expired" in bench_ca.format_expiry(report)


def test_two_endpoints_on_one_sqlite_ledger_issue_every_request() -> None:
    """`bench ca --endpoints`: two real CA endpoint processes share one ledger file; every request is
    issued in both modes (one endpoint, alternating two), and both endpoints did the work of "two"."""
    from spire_pqc.bench import endpoints as bench_endpoints

    report = bench_endpoints.run(requests=6, concurrency=3, rounds=1, postgres=False)
    (sqlite,) = report.ledgers
    assert sqlite.ledger == "sqlite file"
    assert sqlite.one_per_s > 0 and sqlite.two_per_s > 0
    assert sqlite.issued == 2 * 6 + 2
    assert sqlite.cpu_a_s > 0 and sqlite.cpu_b_s > 0  # B answered its share (and its warm-up request)
    assert "two/one" in bench_endpoints.format_report(report)
