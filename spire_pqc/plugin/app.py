"""Assembles the CredentialComposer plugin: servicers, shared state and the PQC CA endpoint."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import credentialcomposer_pb2_grpc as cc_grpc
from spire_pqc._proto.spire.service.common.config.v1 import config_pb2_grpc
from spire_pqc.errors import SpirePqcError
from spire_pqc.plugin.config import Config
from spire_pqc.plugin.endpoint import CAEndpoint
from spire_pqc.plugin.host import HostServiceBroker, PluginService, serve_plugin
from spire_pqc.plugin.hostservices import identity_fetcher
from spire_pqc.plugin.servicer import ConfigServicer, CredentialComposerServicer, PluginState

log = logging.getLogger(__name__)

PLUGIN_TYPE = "CredentialComposer"
COMPOSER_SERVICE = "spire.plugin.server.credentialcomposer.v1.CredentialComposer"
CONFIG_SERVICE = "spire.service.common.config.v1.Config"
ENDPOINT_RETRY_SECONDS = 2.0


class EndpointSupervisor:
    """Starts the PQC CA endpoint once SPIRE can tell the server's identity; restarts it on reconfigure.

    SPIRE loads plugins before its CA is ready, so the first identity fetch may fail: retry in the
    background instead of failing Configure (issuance is "fail soft", DESIGN.md §2).
    """

    def __init__(self, broker: HostServiceBroker) -> None:
        self._broker = broker
        self._lock = threading.Lock()
        self._endpoint: CAEndpoint | None = None
        self._generation = 0

    def reconfigure(self, config: Config) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            if self._endpoint is not None:
                self._endpoint.stop()
                self._endpoint = None
        if config.endpoint_listen_address is None:
            return
        threading.Thread(
            target=self._start, args=(config, generation), name="pqc-ca-endpoint", daemon=True
        ).start()

    def _start(self, config: Config, generation: int) -> None:
        attempt = 0
        while True:
            with self._lock:
                if generation != self._generation:
                    return
            try:
                endpoint = CAEndpoint(config, lambda: identity_fetcher(self._broker))
            except SpirePqcError as exc:
                attempt += 1
                if attempt == 1 or attempt % 15 == 0:
                    log.info("PQC CA endpoint waiting for SPIRE's server identity (%s)", exc)
                time.sleep(ENDPOINT_RETRY_SECONDS)
                continue
            with self._lock:
                if generation != self._generation:
                    endpoint.stop(0)
                    return
                endpoint.start()
                self._endpoint = endpoint
            return

    def stop(self) -> None:
        with self._lock:
            self._generation += 1
            if self._endpoint is not None:
                self._endpoint.stop()
                self._endpoint = None


def run_plugin() -> int:
    """Serve the composer until SPIRE stops it (call from the entry point's main thread)."""
    broker = HostServiceBroker()
    supervisor = EndpointSupervisor(broker)
    state = PluginState(on_configured=supervisor.reconfigure)
    services: list[PluginService[Any]] = [
        PluginService(
            COMPOSER_SERVICE,
            cc_grpc.add_CredentialComposerServicer_to_server,
            CredentialComposerServicer(state),
        ),
        PluginService(CONFIG_SERVICE, config_pb2_grpc.add_ConfigServicer_to_server, ConfigServicer(state)),
    ]
    try:
        return serve_plugin(PLUGIN_TYPE, services, broker=broker, on_deinit=supervisor.stop)
    finally:
        supervisor.stop()
        s = state.stats
        log.info(
            "plugin stopped: %d bindings added, %d skipped (unusable key), %d failed, %d health checks",
            s.bindings, s.skipped_unusable_key, s.failed, s.skipped_health_check,
        )  # fmt: skip
