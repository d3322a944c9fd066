"""The agent's status document (the PQC migration guide's "status" JSON), served on ``/status``.

Example (``curl http://127.0.0.1:8088/status`` or ``spire-pqc agent status -c agent.toml``)::

    {"pqc_enabled": true, "hybrid_mode": true, "algorithms": {...}, "keys_initialized": true,
     "channel_establishment_success_rate": 1.0, "signature_verification_success_rate": 1.0,
     "avg_channel_setup_latency_ms": 7.9, "backend": {...}, "versions": {...}, ...}

The rates and the average are computed from the agent's own counters (``/metrics``) since it
started; ``null`` while there was nothing to compute them from.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Sequence
from typing import Any

from spire_pqc import __version__
from spire_pqc.agent.metrics import Metrics
from spire_pqc.crypto.status import backend_info
from spire_pqc.errors import BackendUnavailableError

ALGORITHMS = {"signature": "ML-DSA-65", "kem": "ML-KEM-768", "key_exchange": "X25519MLKEM768"}


def _sum(metrics: Metrics, sample: str, **labels: str) -> float:
    """Sum of a sample over every label combination matching ``labels``."""
    total = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _rate(good: float, bad: float) -> float | None:
    return round(good / (good + bad), 6) if good + bad > 0 else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _backend_part() -> tuple[bool, dict[str, Any], str | None, str | None]:
    """(pqc_enabled, backend, OpenSSL version, liboqs version): fixed for the process's lifetime."""
    try:
        info = backend_info(probe_liboqs=True)
    except BackendUnavailableError as exc:
        return False, {"name": "unavailable", "version": None, "error": str(exc)}, None, None
    return True, {"name": info.backend, "version": info.version}, info.cryptography_openssl, info.liboqs


def status_document(
    metrics: Metrics,
    *,
    live: bool,
    ready: bool,
    keys_initialized: bool,
    tunnel_modes: Sequence[str],
    ca: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document; ``tunnel_modes`` are the configured tunnels' channel modes, ``ca`` the PQC CA as
    last seen (:meth:`spire_pqc.agent.cacontact.CAContact.status`; None before the agent started)."""
    pqc_enabled, backend, openssl, liboqs = _backend_part()
    establishments = "spire_pqc_agent_channel_establishments_total"
    verifications = "spire_pqc_agent_signature_verifications_total"
    setups = _sum(metrics, "spire_pqc_agent_channel_setup_duration_seconds_count")
    setup_seconds = _sum(metrics, "spire_pqc_agent_channel_setup_duration_seconds_sum")
    return {
        "pqc_enabled": pqc_enabled,
        # Classical and post-quantum protection combined on every channel: false when a tunnel runs
        # `spiffe` (classical authentication only) or `pq-tls` (post-quantum authentication only).
        "hybrid_mode": all(mode == "hybrid" for mode in tunnel_modes),
        "tunnel_modes": sorted(set(tunnel_modes)),
        "algorithms": dict(ALGORITHMS),
        "keys_initialized": keys_initialized,
        "live": live,
        "ready": ready,
        "channel_establishment_success_rate": _rate(
            _sum(metrics, establishments, result="success"), _sum(metrics, establishments, result="failure")
        ),
        "signature_verification_success_rate": _rate(
            _sum(metrics, verifications, result="success"), _sum(metrics, verifications, result="failure")
        ),
        "avg_channel_setup_latency_ms": round(1000 * setup_seconds / setups, 3) if setups else None,
        "pqc_identities": int(_sum(metrics, "spire_pqc_agent_pqc_identities")),
        "ca": ca,
        "backend": dict(backend),
        "versions": {
            "spire_pqc": __version__,
            "cryptography": _version("cryptography"),
            "openssl": openssl,
            "liboqs": liboqs,
            "liboqs_python": _version("liboqs-python"),
            "python": platform.python_version(),
        },
    }
