"""The bridge into SPIRE's telemetry against an in-process Metrics host service (the real spire-server is
in tests/integration/test_metrics_contract.py): increases once, gauges every time, no histograms, and
nothing lost or counted twice across a failed report."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import empty_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from spire_pqc._proto.spire.hostservice.common.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from spire_pqc.errors import UnavailableError
from spire_pqc.plugin.spiretelemetry import SpireTelemetryBridge


@dataclass
class FakeSpire(metrics_pb2_grpc.MetricsServicer):
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    fail_with: grpc.StatusCode | None = None

    def _key(
        self, key: list[str], labels: list[metrics_pb2.Label]
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        return "_".join(key), tuple((label.name, label.value) for label in labels)

    def IncrCounter(
        self, request: metrics_pb2.IncrCounterRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if self.fail_with is not None:
            context.abort(self.fail_with, "busy")
        k = self._key(list(request.key), list(request.labels))
        self.counters[k] = self.counters.get(k, 0.0) + request.val
        return empty_pb2.Empty()

    def SetGauge(
        self, request: metrics_pb2.SetGaugeRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        if self.fail_with is not None:
            context.abort(self.fail_with, "busy")
        self.gauges[self._key(list(request.key), list(request.labels))] = request.val
        return empty_pb2.Empty()


@pytest.fixture
def spire() -> Iterator[tuple[FakeSpire, grpc.Channel]]:
    servicer = FakeSpire()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_pb2_grpc.add_MetricsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, channel
    channel.close()
    server.stop(0)


def _registry() -> tuple[CollectorRegistry, Counter, Gauge, Histogram]:
    registry = CollectorRegistry()
    issued = Counter("spire_pqc_ca_issuance", "issuance", ["result"], registry=registry)
    up = Gauge("spire_pqc_ca_ledger_up", "ledger", registry=registry)
    latency = Histogram("spire_pqc_ca_issuance_duration_seconds", "latency", registry=registry)
    return registry, issued, up, latency


def test_counters_are_reported_as_increases_and_gauges_as_values(
    spire: tuple[FakeSpire, grpc.Channel],
) -> None:
    fake, channel = spire
    registry, issued, up, latency = _registry()
    bridge = SpireTelemetryBridge(registry, lambda: channel, interval=60)
    issued.labels("issued").inc(3)
    up.set(1)
    latency.observe(0.01)
    assert bridge.report()
    series = ("spire_pqc_ca_issuance_total", (("result", "issued"),))
    assert fake.counters == {series: 3.0}
    assert fake.gauges == {("spire_pqc_ca_ledger_up", ()): 1.0}
    issued.labels("issued").inc(2)
    up.set(0)
    assert bridge.report()
    assert bridge.report()  # nothing new: nothing added
    assert fake.counters == {series: 5.0}
    assert fake.gauges[("spire_pqc_ca_ledger_up", ())] == 0.0
    assert not any("duration" in name or "created" in name for name, _ in [*fake.counters, *fake.gauges])


def test_increases_made_while_spire_refuses_go_with_the_next_report(
    spire: tuple[FakeSpire, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    fake, channel = spire
    registry, issued, _, _ = _registry()
    bridge = SpireTelemetryBridge(registry, lambda: channel, interval=60)
    issued.labels("refused").inc()
    assert bridge.report()
    fake.fail_with = grpc.StatusCode.UNAVAILABLE
    issued.labels("refused").inc(4)
    with caplog.at_level(logging.WARNING, logger="spire_pqc.plugin.spiretelemetry"):
        assert not bridge.report()
        assert not bridge.report()
    assert [r.getMessage() for r in caplog.records if "cannot report" in r.getMessage()] == [
        "cannot report metrics to spire-server's telemetry (UNAVAILABLE: busy); retrying every 60s"
    ]  # one line per outage, not per attempt
    fake.fail_with = None
    assert bridge.report()
    assert fake.counters == {("spire_pqc_ca_issuance_total", (("result", "refused"),)): 5.0}


def test_a_spire_without_the_host_service_or_broker_is_a_logged_refusal(
    spire: tuple[FakeSpire, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    fake, channel = spire
    registry, issued, _, _ = _registry()
    issued.labels("issued").inc()
    fake.fail_with = grpc.StatusCode.UNIMPLEMENTED
    with caplog.at_level(logging.WARNING, logger="spire_pqc.plugin.spiretelemetry"):
        assert not SpireTelemetryBridge(registry, lambda: channel, interval=5).report()

    def no_broker() -> grpc.Channel:
        raise UnavailableError("SPIRE announced no broker connection for service 1")

    with caplog.at_level(logging.WARNING, logger="spire_pqc.plugin.spiretelemetry"):
        assert not SpireTelemetryBridge(registry, no_broker, interval=5).report()
    text = caplog.text
    assert "does not offer the Metrics host service; set spire_telemetry = false" in text
    assert "no broker connection" in text
