"""`spire-pqc bench composer`: what the plugin adds to SPIRE's signing, measured in one run.

Two spire-server v1.15.3 processes are started on loopback, one with the spire-pqc composer and one
without, and the same number of `spire-server x509 mint` calls is timed against each, interleaved
so machine noise hits both alike. Each mint is a CLI process (spawn + gRPC + signing), so the
difference of the medians is the composer's cost per SVID as a SPIRE user sees it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spire_pqc._internal.spirelab import SpireServer, cleanup, short_tempdir


@dataclass(frozen=True)
class ComposerReport:
    mints: int
    baseline_p50_ms: float
    baseline_p99_ms: float
    plugin_p50_ms: float
    plugin_p99_ms: float


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _pqc_files(directory: Path, trust_domain: str) -> dict[str, object]:
    cli = [sys.executable, "-m", "spire_pqc.cli"]
    subprocess.run([*cli, "ca", "init", "--trust-domain", trust_domain, "--out-dir", str(directory), "--no-encryption"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*cli, "ca", "intermediate", "--trust-domain", trust_domain, "--root-dir", str(directory),
                    "--out-dir", str(directory), "--no-encryption"], check=True, capture_output=True)  # fmt: skip
    return {
        "intermediate_key_path": str(directory / "intermediate.key.pem"),
        "intermediate_cert_path": str(directory / "intermediate.crt.pem"),
        "pqc_bundle_path": str(directory / "root.crt.pem"),
    }


def run(*, mints: int = 100) -> ComposerReport:
    base_dir, plugin_dir = short_tempdir(), short_tempdir()
    pqc_dir = Path(tempfile.mkdtemp(prefix="spire-pqc-bench-"))
    baseline = SpireServer(base_dir)
    with_plugin = SpireServer(plugin_dir, composer_data=_pqc_files(pqc_dir, "example.org"))
    try:
        baseline.start()
        with_plugin.start()
        times: dict[str, list[float]] = {"baseline": [], "plugin": []}
        for index in range(mints):
            for name, server in (("baseline", baseline), ("plugin", with_plugin)):
                started = time.perf_counter()
                result = server.mint(f"spiffe://example.org/bench/{index}", server.workdir / "mint")
                times[name].append(time.perf_counter() - started)
                if result.returncode != 0:
                    raise RuntimeError(f"x509 mint failed on the {name} server: {result.stderr}")
    finally:
        baseline.stop()
        with_plugin.stop()
        for path in (base_dir, plugin_dir, pqc_dir):
            cleanup(path)
    return ComposerReport(
        mints=mints,
        baseline_p50_ms=statistics.median(times["baseline"]) * 1e3,
        baseline_p99_ms=_p99(times["baseline"]) * 1e3,
        plugin_p50_ms=statistics.median(times["plugin"]) * 1e3,
        plugin_p99_ms=_p99(times["plugin"]) * 1e3,
    )


def format_report(report: ComposerReport) -> str:
    overhead = report.plugin_p50_ms - report.baseline_p50_ms
    return "\n".join(
        [
            f"spire-pqc bench composer ({report.mints} `spire-server x509 mint` calls per server, interleaved)",
            f"  SPIRE without plugin: p50 {report.baseline_p50_ms:7.1f} ms  p99 {report.baseline_p99_ms:7.1f} ms",
            f"  SPIRE with spire-pqc: p50 {report.plugin_p50_ms:7.1f} ms  p99 {report.plugin_p99_ms:7.1f} ms",
            f"  composer overhead at p50: {overhead:+.1f} ms per SVID "
            f"(ratio {report.plugin_p50_ms / report.baseline_p50_ms:.2f})",
        ]
    )
