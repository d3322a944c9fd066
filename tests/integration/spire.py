"""The SPIRE process harness, shared with `spire-pqc bench composer` (spire_pqc._internal.spirelab)."""

from spire_pqc._internal.spirelab import (
    PLUGIN_CMD,
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
    "PLUGIN_CMD",
    "SpireAgent",
    "SpireServer",
    "cleanup",
    "free_port",
    "running",
    "short_tempdir",
    "spire_bin",
    "stop_process",
]
