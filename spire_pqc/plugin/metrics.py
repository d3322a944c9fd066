"""The plugin's metrics: prometheus_client families in one registry per plugin, served on loopback.

Like the agent's (:mod:`spire_pqc.agent.metrics`), :class:`PluginMetrics` owns its own
``CollectorRegistry``. The PQC CA endpoint updates the issuance families directly; the ledger
families are set by the pruner after each run (counting rows is not free, so never per scrape);
the composer's binding counters are read from its stats at scrape time.

:class:`MetricsListener` serves ``GET /metrics`` on ``metrics_listen_address`` (loopback only): at
most ``MAX_CONNECTIONS`` requests at once, each closed after ``REQUEST_TIMEOUT`` seconds, so a
local user cannot make the plugin hold threads or descriptors without bound.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from spire_pqc.ca.intermediates import IntermediateSet, State
from spire_pqc.ca.ledger import PruneRun
from spire_pqc.crypto.status import register_backend_metric
from spire_pqc.errors import RefusalReason

log = logging.getLogger(__name__)

# Seconds per answered issue request: ~5 ms signing, plus the ledger's round trips and fsyncs.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One SvidBinding: one ML-DSA-65 signature, ~0.3-2 ms.
BINDING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MAX_CONNECTIONS = 8
REQUEST_TIMEOUT = 5.0
BINDING_RESULTS = ("added", "skipped", "failed")
# (result, reason) of an answered issue request: docs/metrics.md. "error" = the CA could not decide
# (its ledger is down: "unavailable"; a bug: "internal"); "refused" = the request failed a check.
ISSUANCE_OUTCOMES = (
    ("issued", "none"),
    *(("refused", r.value) for r in RefusalReason
      if r not in (RefusalReason.UNAVAILABLE, RefusalReason.BAD_RESPONSE, RefusalReason.REFUSED)),
    ("error", RefusalReason.UNAVAILABLE.value),
    ("error", "internal"),
)  # fmt: skip


def issuance_outcome(reason: RefusalReason) -> tuple[str, str]:
    """The ``(result, reason)`` labels of a refusal."""
    return ("error" if reason is RefusalReason.UNAVAILABLE else "refused"), reason.value


class PluginMetrics:
    """The plugin's metric families; :meth:`render` is the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.issuance = Counter(
            "spire_pqc_ca_issuance",
            "PQC issue requests answered by the CA endpoint, by result (issued, refused, error) and reason.",
            ["result", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "spire_pqc_ca_issuance_duration_seconds",
            "Seconds to answer a PQC issue request, by result.",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.binding_duration = Histogram(
            "spire_pqc_plugin_binding_duration_seconds",
            "Seconds to build and sign one SvidBinding (ML-DSA-65).",
            buckets=BINDING_BUCKETS,
            registry=r,
        )
        self.ledger_entries = Gauge(
            "spire_pqc_ca_ledger_entries",
            "Rows in the issuance ledger at the last prune run, by kind (issuance, nonce).",
            ["kind"],
            registry=r,
        )
        self.ledger_pruned = Counter(
            "spire_pqc_ca_ledger_pruned",
            "Expired ledger rows removed, by kind (issuance, nonce).",
            ["kind"],
            registry=r,
        )
        self.ledger_up = Gauge(
            "spire_pqc_ca_ledger_up",
            "1 while the issuance ledger's database answers, 0 while PQC issuance is UNAVAILABLE.",
            registry=r,
        )
        self.intermediates = Gauge(
            "spire_pqc_plugin_intermediates",
            "Intermediate PQC CAs by state (next, active, retiring, retired, revoked).",
            ["state"],
            registry=r,
        )
        self.intermediate_expiry = Gauge(
            "spire_pqc_plugin_intermediate_expiry_seconds",
            "Seconds until the active intermediate PQC CA's notAfter (0: none is active).",
            registry=r,
        )
        self.rotation_overdue = Gauge(
            "spire_pqc_plugin_intermediate_rotation_overdue",
            "1 while the active intermediate is past its successor's activation point and no next one "
            "is ready (or none is active): issue the next intermediate.",
            registry=r,
        )
        # The series docs/metrics.md documents and the SpirePqcIntermediateExpiring* alerts read.
        self.intermediate_not_after = Gauge(
            "spire_pqc_ca_intermediate_expiry_timestamp_seconds",
            "notAfter (Unix seconds) of each intermediate PQC CA this instance holds, by key id and state.",
            ["key_id", "state"],
            registry=r,
        )
        for state in State:
            self.intermediates.labels(state=state.value)
        for result, reason in ISSUANCE_OUTCOMES:
            self.issuance.labels(result=result, reason=reason)
        for result in ("issued", "refused", "error"):
            self.latency.labels(result=result)
        for kind in ("issuance", "nonce"):
            self.ledger_pruned.labels(kind=kind)
        register_backend_metric(r)  # spire_pqc_crypto_backend_info{backend=…,version=…} 1

    def observe_issuance(self, result: str, reason: str, seconds: float) -> None:
        self.issuance.labels(result=result, reason=reason).inc()
        self.latency.labels(result=result).observe(seconds)

    def observe_prune(self, run: PruneRun) -> None:
        self.ledger_pruned.labels(kind="issuance").inc(run.pruned.issuances)
        self.ledger_pruned.labels(kind="nonce").inc(run.pruned.nonces)
        if run.size is not None:
            self.ledger_entries.labels(kind="issuance").set(run.size.issuances)
            self.ledger_entries.labels(kind="nonce").set(run.size.nonces)

    def observe_intermediates(self, current: IntermediateSet) -> None:
        for state in State:
            self.intermediates.labels(state=state.value).set(len(current.in_state(state)))
        self.intermediate_not_after.clear()
        for entry in current.in_state(State.NEXT, State.ACTIVE, State.RETIRING):
            self.intermediate_not_after.labels(key_id=entry.key_id[:16], state=entry.state.value).set(
                entry.intermediate.not_after.timestamp()
            )
        active = current.active
        remaining = (
            (active.intermediate.not_after - current.at).total_seconds() if active is not None else 0.0
        )
        self.intermediate_expiry.set(max(0.0, remaining))
        self.rotation_overdue.set(1.0 if current.rotation_overdue() else 0.0)

    def watch_ledger(self, available: Callable[[], bool]) -> None:
        """Report ``available()`` as ``spire_pqc_ca_ledger_up`` (the current endpoint's ledger)."""
        self.ledger_up.set_function(lambda: 1.0 if available() else 0.0)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class BindingCounters(Collector):
    """``spire_pqc_plugin_bindings_total{result}``, read from the composer's counters at scrape time.

    SPIRE's own health-check SVIDs are not workload SVIDs and are not counted here.
    """

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "spire_pqc_plugin_bindings",
            "Workload X509-SVIDs SPIRE signed: SvidBinding added, skipped (on_error=skip), failed (on_error=fail).",
            labels=["result"],
        )
        values = self._read()
        for result in BINDING_RESULTS:
            family.add_metric([result], values.get(result, 0))
        yield family


class _BoundedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: closed at once, nothing read
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsListener:
    """``GET /metrics`` of a registry on a loopback address, in a background thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        handler = type("_Handler", (MetricsHandler.factory(registry),), {"timeout": REQUEST_TIMEOUT})
        self._server = _BoundedServer((host, port), handler)
        self.address = (host, int(self._server.server_address[1]))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spire-pqc-plugin-metrics", daemon=True
        )
        self._thread.start()
        log.info("plugin metrics on http://%s:%d/metrics", host, self.address[1])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=10)
