"""Forwards the plugin's counters and gauges into spire-server's own telemetry.

SPIRE v1.15.3 offers server plugins its ``spire.hostservice.common.metrics.v1.Metrics`` host service
(``pkg/server/catalog/catalog.go``): whatever a plugin reports there goes to the sinks configured in
spire-server's ``telemetry`` block (Prometheus, statsd, DogStatsD, M3, in-memory), under SPIRE's own
service prefix — ``spire_server_spire_pqc_ca_issuance_total`` on SPIRE's Prometheus endpoint. So an
operator who already scrapes SPIRE sees the plugin without a second scrape target.

The plugin's metrics stay defined once, in :class:`~spire_pqc.plugin.metrics.PluginMetrics`' registry;
this bridge reads that registry every ``interval`` and reports what changed: a counter's increase since
the last report that SPIRE accepted (``IncrCounter``) and every gauge's current value (``SetGauge``).
Histograms are not forwarded (the host service takes single samples, not bucket counts): they are on
``metrics_listen_address`` only. When SPIRE does not answer, the increases accumulate and go with the
next report that succeeds, so no count is lost while spire-server is busy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry

from spire_pqc._proto.spire.hostservice.common.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from spire_pqc.errors import SpirePqcError

__all__ = ["SpireTelemetryBridge"]

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0
# (sample name, sorted label pairs): one reported series.
_Series = tuple[str, tuple[tuple[str, str], ...]]


class SpireTelemetryBridge:
    """Reports ``registry``'s counters and gauges to SPIRE every ``interval`` seconds, on its own thread."""

    def __init__(
        self, registry: CollectorRegistry, channel: Callable[[], grpc.Channel], *, interval: float
    ) -> None:
        self._registry = registry
        self._channel = channel
        self.interval = interval
        self.enabled = True  # False: no reports (the counts SPIRE has are kept for when it is set again)
        self._reported: dict[_Series, float] = {}  # counter values SPIRE has accepted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None  # the last failure logged, so an outage logs once
        self.reports = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spire-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting (a stopped bridge is not restarted: a new one would report from zero)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=CALL_TIMEOUT * 2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.enabled:
                self.report()

    def report(self) -> bool:
        """One report of every counter increase and gauge value; False (logged once) if SPIRE refused it."""
        try:
            stub = metrics_pb2_grpc.MetricsStub(self._channel())
            accepted = self._send(stub)
        except grpc.RpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.UNIMPLEMENTED:
                why = "spire-server does not offer the Metrics host service; set spire_telemetry = false"
            else:
                why = f"{code.name}: {exc.details()}"
            self._failed(why)
            return False
        except SpirePqcError as exc:  # no broker connection yet, or the plugin is stopping
            self._failed(str(exc))
            return False
        self._reported.update(accepted)
        self.reports += 1
        if self._failing is not None:
            log.info("reporting metrics to spire-server's telemetry again")
            self._failing = None
        return True

    def _send(self, stub: metrics_pb2_grpc.MetricsStub) -> dict[_Series, float]:
        accepted: dict[_Series, float] = {}
        for family in self._registry.collect():
            if family.type not in ("counter", "gauge"):
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # prometheus_client's creation timestamp, not a value
                labels = tuple(sorted(sample.labels.items()))
                wire_labels = [metrics_pb2.Label(name=k, value=v) for k, v in labels]
                if family.type == "gauge":
                    stub.SetGauge(
                        metrics_pb2.SetGaugeRequest(key=[sample.name], val=sample.value, labels=wire_labels),
                        timeout=CALL_TIMEOUT,
                    )
                    continue
                series = (sample.name, labels)
                increase = sample.value - self._reported.get(series, 0.0)
                if increase > 0:
                    stub.IncrCounter(
                        metrics_pb2.IncrCounterRequest(key=[sample.name], val=increase, labels=wire_labels),
                        timeout=CALL_TIMEOUT,
                    )
                    # Accepted one by one: a failure later in this report must not re-send this increase.
                    self._reported[series] = sample.value
                accepted[series] = sample.value
        return accepted

    def _failed(self, why: str) -> None:
        if why != self._failing:
            log.warning("cannot report metrics to spire-server's telemetry (%s); retrying every %.0fs",
                        why, self.interval)  # fmt: skip
            self._failing = why
