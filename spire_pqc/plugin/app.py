"""Assembles the CredentialComposer plugin: servicers, shared state and the PQC CA endpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from spire_pqc._internal.backoff import Backoff
from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import credentialcomposer_pb2_grpc as cc_grpc
from spire_pqc._proto.spire.service.common.config.v1 import config_pb2_grpc
from spire_pqc.ca.jwtsigning import ScheduleSigners
from spire_pqc.errors import ConfigError, NotConfiguredError, SpirePqcError
from spire_pqc.plugin.config import Config
from spire_pqc.plugin.endpoint import CAEndpoint
from spire_pqc.plugin.host import HostServiceBroker, PluginService, serve_plugin
from spire_pqc.plugin.hostservices import identity_fetcher
from spire_pqc.plugin.intermediates import IntermediateWatcher
from spire_pqc.plugin.metrics import BindingCounters, MetricsListener, PluginMetrics
from spire_pqc.plugin.servicer import ConfigServicer, CredentialComposerServicer, PluginState
from spire_pqc.plugin.spiretelemetry import SpireTelemetryBridge

log = logging.getLogger(__name__)

PLUGIN_TYPE = "CredentialComposer"
COMPOSER_SERVICE = "spire.plugin.server.credentialcomposer.v1.CredentialComposer"
CONFIG_SERVICE = "spire.service.common.config.v1.Config"
ENDPOINT_RETRY_SECONDS = 2.0
ENDPOINT_RETRY_MAX_SECONDS = 60.0


class EndpointSupervisor:
    """Starts the PQC CA endpoint once SPIRE can tell the server's identity; restarts it on reconfigure.

    SPIRE loads plugins before its CA is ready, so the first identity fetch may fail: retry in the
    background instead of failing Configure (issuance is "fail soft", docs/trust-model.md). The starting
    thread never ends silently: every failure is logged (the expected wait for SPIRE at INFO, anything
    else at ERROR with its traceback) and retried with backoff until it starts or is superseded.
    Also owns the metrics listener (``metrics_listen_address``) and the bridge into SPIRE's telemetry.
    """

    def __init__(
        self,
        broker: HostServiceBroker,
        metrics: PluginMetrics | None = None,
        intermediates: Callable[[], IntermediateWatcher] | None = None,
    ) -> None:
        self._broker = broker
        self.metrics = metrics or PluginMetrics()
        self._intermediates = intermediates
        self._lock = threading.Lock()
        self._endpoint: CAEndpoint | None = None
        # The PQC JWT signers (in-memory keys) follow the intermediate schedule across reconfigurations.
        self._signers: ScheduleSigners | None = None
        self._listener: MetricsListener | None = None
        self._telemetry: SpireTelemetryBridge | None = None
        self._generation = 0
        self._superseded = threading.Event()

    @property
    def endpoint(self) -> CAEndpoint | None:
        return self._endpoint

    def reconfigure(self, config: Config) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._superseded.set()
            self._superseded = threading.Event()
            superseded = self._superseded
            if self._endpoint is not None:
                self._endpoint.stop()
                self._endpoint = None
            self._serve_metrics(config)
            self._bridge_telemetry(config)
        if config.endpoint_listen_address is None:
            return
        threading.Thread(
            target=self._start, args=(config, generation, superseded), name="pqc-ca-endpoint", daemon=True
        ).start()

    def _serve_metrics(self, config: Config) -> None:
        wanted = config.metrics_listen_address
        if self._listener is not None and (wanted is None or self._listener.address != wanted):
            self._listener.close()
            self._listener = None
        if wanted is not None and self._listener is None:
            try:
                self._listener = MetricsListener(self.metrics.registry, *wanted)
            except OSError as exc:  # the plugin still signs and issues without its metrics
                log.error("metrics_listen_address %s:%d: cannot listen (%s)", *wanted, exc.strerror)  # noqa: TRY400

    def _bridge_telemetry(self, config: Config) -> None:
        # One bridge for the plugin's life: it remembers what SPIRE already counted, so a reconfigure
        # (SIGUSR1) must not start a second one that would report every counter again from zero.
        if self._telemetry is None:
            if not config.spire_telemetry:
                return
            self._telemetry = SpireTelemetryBridge(self.metrics.registry, self._broker.channel, interval=10.0)
            self._telemetry.start()
        self._telemetry.enabled = config.spire_telemetry
        self._telemetry.interval = config.spire_telemetry_interval.total_seconds()

    def _start(self, config: Config, generation: int, superseded: threading.Event) -> None:
        attempt = 0
        backoff = Backoff(ENDPOINT_RETRY_SECONDS, ENDPOINT_RETRY_MAX_SECONDS)
        while not superseded.is_set():
            attempt += 1
            try:
                endpoint = CAEndpoint(
                    config,
                    lambda: identity_fetcher(self._broker),
                    metrics=self.metrics,
                    intermediates=self._intermediates,
                    signers=self._signers,
                )
            except ConfigError as exc:  # e.g. the port is taken: say so (no traceback), retry later
                delay = backoff.next()
                log.error("PQC CA endpoint not started: %s; retrying in %.0fs", exc.problems[0], delay)  # noqa: TRY400
                superseded.wait(delay)
                continue
            except SpirePqcError as exc:
                if attempt == 1 or attempt % 15 == 0:
                    log.info("PQC CA endpoint waiting for SPIRE's server identity (%s)", exc)
                superseded.wait(ENDPOINT_RETRY_SECONDS)
                continue
            except Exception:  # a bug or an OS error: say so loudly, and keep trying
                log.exception("PQC CA endpoint failed to start (attempt %d); retrying", attempt)
                superseded.wait(backoff.next())
                continue
            with self._lock:
                if generation != self._generation:
                    endpoint.stop(0)
                    return
                try:
                    endpoint.start()
                except Exception:
                    log.exception("PQC CA endpoint failed to start (attempt %d); retrying", attempt)
                    endpoint.stop(0)
                    superseded.wait(backoff.next())
                    continue
                self._endpoint = endpoint
                if self._intermediates is not None:  # the schedule outlives this endpoint: so do its signers
                    self._signers = endpoint.signers
            return

    def stop(self) -> None:
        with self._lock:
            self._generation += 1
            self._superseded.set()
            if self._endpoint is not None:
                self._endpoint.stop()
                self._endpoint = None
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            if self._telemetry is not None:
                self._telemetry.stop()
                self._telemetry = None


def run_plugin() -> int:
    """Serve the composer until SPIRE stops it (call from the entry point's main thread)."""
    broker = HostServiceBroker()
    metrics = PluginMetrics()
    state: PluginState | None = None

    def intermediates() -> IntermediateWatcher:
        current = state.current() if state is not None else None
        if current is None:
            raise NotConfiguredError("spire-pqc: not configured")
        return current.intermediates

    supervisor = EndpointSupervisor(broker, metrics, intermediates)
    state = PluginState(on_configured=supervisor.reconfigure, metrics=metrics)
    metrics.register(BindingCounters(lambda: _binding_counts(state)))
    services: list[PluginService[Any]] = [
        PluginService(
            COMPOSER_SERVICE,
            cc_grpc.add_CredentialComposerServicer_to_server,
            CredentialComposerServicer(state, metrics),
        ),
        PluginService(CONFIG_SERVICE, config_pb2_grpc.add_ConfigServicer_to_server, ConfigServicer(state)),
    ]
    try:
        return serve_plugin(PLUGIN_TYPE, services, broker=broker, on_deinit=supervisor.stop)
    finally:
        supervisor.stop()
        state.close()
        s = state.stats
        log.info(
            "plugin stopped: %d bindings added, %d skipped (unusable key), %d failed, %d health checks",
            s.bindings, s.skipped_unusable_key, s.failed, s.skipped_health_check,
        )  # fmt: skip


def _binding_counts(state: PluginState) -> dict[str, int]:
    s = state.stats
    return {"added": s.bindings, "skipped": s.skipped_unusable_key, "failed": s.failed}
