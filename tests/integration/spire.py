"""The SPIRE process harness, shared with `spire-pqc bench composer` (spire_pqc.bench.spirelab)."""

from spire_pqc.bench.spirelab import (
    PqcAgent,
    SpireAgent,
    SpireServer,
    cleanup,
    free_port,
    running,
    short_tempdir,
    spire_bin,
    stop_process,
)

__all__ = [
    "PqcAgent",
    "SpireAgent",
    "SpireServer",
    "cleanup",
    "free_port",
    "running",
    "short_tempdir",
    "spire_bin",
    "stop_process",
]
