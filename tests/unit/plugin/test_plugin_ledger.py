"""Plugin side of the ledger: the metrics listener's bounds and the endpoint supervisor's resilience."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest

from spire_pqc.errors import SpirePqcError
from spire_pqc.plugin import app
from spire_pqc.plugin.metrics import MAX_CONNECTIONS, BindingCounters, MetricsListener, PluginMetrics


def test_metrics_listener_serves_and_bounds_connections() -> None:
    metrics = PluginMetrics()
    metrics.register(BindingCounters(lambda: {"added": 3}))
    listener = MetricsListener(metrics.registry, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.address[1]}/metrics"
    idle = []
    try:
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in (
            'spire_pqc_ca_issuance_total{reason="none",result="issued"} 0.0',
            'spire_pqc_ca_issuance_total{reason="duplicate",result="refused"} 0.0',
            'spire_pqc_ca_issuance_duration_seconds_bucket{le="0.005",result="issued"} 0.0',
            'spire_pqc_plugin_bindings_total{result="added"} 3.0',
            'spire_pqc_ca_ledger_pruned_total{kind="nonce"} 0.0',
            'spire_pqc_crypto_backend_info{backend="openssl"',  # the backend in use, as on the agent
        ):
            assert family in body
        # A local user holding connections open gets MAX_CONNECTIONS of them; the rest are closed.
        idle = [socket.create_connection(listener.address, timeout=10) for _ in range(MAX_CONNECTIONS + 4)]
        time.sleep(0.5)
        closed = 0
        for sock in idle[MAX_CONNECTIONS:]:
            sock.settimeout(5)
            closed += sock.recv(1) == b""
        assert closed == 4
    finally:
        for sock in idle:
            sock.close()
    # Idle connections time out, and then the listener serves again.
    deadline = time.monotonic() + 30
    while True:
        try:
            assert urllib.request.urlopen(url, timeout=10).status == 200
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    listener.close()


class _Endpoint:
    def __init__(self) -> None:
        self.started = threading.Event()

    def start(self) -> None:
        self.started.set()

    def stop(self, grace: float = 1.0) -> None:
        return None


def test_supervisor_logs_and_retries_any_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The old supervisor thread died on any exception but SpirePqcError (a non-UTF-8 ledger line)."""
    attempts: list[int] = []
    endpoint = _Endpoint()

    def factory(*args: Any, **kwargs: Any) -> _Endpoint:
        attempts.append(1)
        if len(attempts) == 1:
            raise SpirePqcError("SPIRE has no server identity yet")
        if len(attempts) == 2:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return endpoint

    monkeypatch.setattr(app, "CAEndpoint", factory)
    monkeypatch.setattr(app, "ENDPOINT_RETRY_SECONDS", 0.05)
    supervisor = app.EndpointSupervisor(broker=None)  # type: ignore[arg-type]
    config = type(
        "C",
        (),
        {"endpoint_listen_address": "127.0.0.1:0", "metrics_listen_address": None, "spire_telemetry": False},
    )()
    supervisor.reconfigure(config)
    try:
        assert endpoint.started.wait(30)
    finally:
        supervisor.stop()
    assert len(attempts) == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "failed to start (attempt 2)" in errors[0].getMessage() and errors[0].exc_info
