"""Which post-quantum backend this process runs, for start-up logs, metrics and diagnostics.

Example::

    from spire_pqc.crypto.status import backend_info
    print(backend_info(probe_liboqs=True).describe())
    # openssl 4.0.3 (cryptography 50.0.2, OpenSSL 4.0.3 29 Sep 2026); liboqs 0.16.0 available at ...

Entry points call :func:`log_backend` once at start; metric registries call
:func:`register_backend_metric`, which exports
``spire_pqc_crypto_backend_info{backend="liboqs",version="0.16.0"} 1``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import InfoMetricFamily
from prometheus_client.registry import Collector

from spire_pqc.crypto import _backend
from spire_pqc.errors import BackendUnavailableError

METRIC = "spire_pqc_crypto_backend"


@dataclass(frozen=True)
class BackendInfo:
    """The backend and the library versions behind it.

    ``version`` is that of the library doing the PQ arithmetic (OpenSSL's for ``openssl``, liboqs's
    for ``liboqs``). The ``liboqs*`` fields describe the liboqs the process loaded, or, when probed
    under the ``openssl`` backend, the one ``SPIRE_PQC_BACKEND=liboqs`` would load (None: not found).
    """

    backend: str
    version: str
    cryptography: str
    cryptography_openssl: str
    liboqs: str | None
    liboqs_path: str | None
    liboqs_python: str | None

    def describe(self) -> str:
        text = (
            f"{self.backend} {self.version} (cryptography {self.cryptography}, {self.cryptography_openssl})"
        )
        if self.liboqs_path is None:
            return text
        binding = f", liboqs-python {self.liboqs_python}" if self.liboqs_python else ""
        where = "loaded from" if self.backend == "liboqs" else "available at"
        return f"{text}; liboqs {self.liboqs} {where} {self.liboqs_path}{binding}"


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_info(*, probe_liboqs: bool = False) -> BackendInfo:
    """The process's backend (chosen now if not chosen yet; raises BackendUnavailableError if unusable).

    With ``probe_liboqs`` and the ``openssl`` backend, also look for liboqs's library (the search
    ``SPIRE_PQC_BACKEND=liboqs`` would do) and read its version, without selecting it.
    """
    chosen = _backend.backend()
    liboqs_path = liboqs_version = None
    if chosen.name == "liboqs":
        liboqs_path, liboqs_version = getattr(chosen, "path", None), chosen.version
    elif probe_liboqs:
        from spire_pqc.crypto import _liboqs

        liboqs_path = _liboqs.find_liboqs()
        liboqs_version = _liboqs.library_version(liboqs_path) if liboqs_path else None
    return BackendInfo(
        backend=chosen.name,
        version=chosen.version,
        cryptography=_distribution_version("cryptography") or "unknown",
        cryptography_openssl=_backend.cryptography_openssl_version(),
        liboqs=liboqs_version,
        liboqs_path=liboqs_path,
        liboqs_python=_distribution_version("liboqs-python"),
    )


def log_backend(logger: logging.Logger) -> BackendInfo | None:
    """Log the backend at INFO (an unusable one at ERROR, without raising: the caller keeps
    serving what needs no PQ crypto, and every PQ operation will raise BackendUnavailableError)."""
    try:
        info = backend_info()
    except BackendUnavailableError as exc:
        logger.error("post-quantum backend unavailable: %s", exc)  # noqa: TRY400 - a message, no traceback
        return None
    logger.info("post-quantum backend: %s", info.describe())
    return info


class _BackendCollector(Collector):
    def collect(self) -> Iterator[InfoMetricFamily]:
        family = InfoMetricFamily(METRIC, "The post-quantum backend of this process and its library version.")
        try:
            info = backend_info()
        except BackendUnavailableError:
            family.add_metric([], {"backend": "unavailable", "version": ""})
        else:
            family.add_metric([], {"backend": info.backend, "version": info.version})
        yield family


def register_backend_metric(registry: CollectorRegistry) -> None:
    """Export ``spire_pqc_crypto_backend_info{backend=…,version=…} 1`` from ``registry`` (read per scrape)."""
    registry.register(_BackendCollector())
