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
