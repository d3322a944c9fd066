"""SDK proto ⇄ domain facade: SPIRE's Config and CredentialComposer services.

* ``Configure`` / ``Validate`` share :func:`spire_pqc.plugin.config.build_config`; the new state
  is built completely, then swapped in under a lock.
* ``ComposeWorkloadX509SVID`` returns the request's attributes plus the SvidBinding extension.
  SPIRE's CA health check and unknown IDs never fail. If the intermediate key is unusable (file
  removed, unreadable, corrupt, of an unknown algorithm) the attributes come back unchanged, the
  skip is logged and counted — or, with ``on_error = "fail"``, SPIRE's signing fails with a precise
  message. An unexpected exception (a bug) follows the same policy, logged with its traceback.
* The other composer calls return UNIMPLEMENTED, which SPIRE treats as "keep the defaults".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import (
    credentialcomposer_pb2 as cc_pb2,
)
from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import (
    credentialcomposer_pb2_grpc as cc_grpc,
)
from spire_pqc._proto.spire.service.common.config.v1 import config_pb2, config_pb2_grpc
from spire_pqc.ca.composer import binding_extension, is_health_check
from spire_pqc.errors import ConfigError, SpirePqcError
from spire_pqc.plugin.config import Config, build_config
from spire_pqc.plugin.intermediates import IntermediateWatcher
from spire_pqc.plugin.metrics import PluginMetrics
from spire_pqc.spiffeid import SpiffeId

log = logging.getLogger(__name__)


@dataclass
class ComposerStats:
    """Counters the plugin logs and exposes (bindings added, skips, failures)."""

    bindings: int = 0
    skipped_health_check: int = 0
    skipped_unusable_key: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _State:
    config: Config
    intermediates: IntermediateWatcher


class PluginState:
    """The configured state shared by the servicers and the CA endpoint; swapped atomically."""

    def __init__(
        self,
        on_configured: Callable[[Config], None] | None = None,
        *,
        metrics: PluginMetrics | None = None,
    ) -> None:
        self._lock = threading.Lock()  # guards _state: readers never wait for a configuration
        self._configuring = threading.Lock()  # one configuration applied at a time
        self._state: _State | None = None
        self._on_configured = on_configured
        self._metrics = metrics
        self.stats = ComposerStats()

    def configure(self, core_trust_domain: str, hcl: str) -> Config:
        """Build the new state completely, then swap it in (a refused configuration changes nothing).

        Safe to call again at any time: SPIRE calls Configure again on SIGUSR1 when a
        ``plugin_data_file`` changed. Concurrent calls are applied one after the other, so the state
        the composer reads and what ``on_configured`` started (endpoint, metrics) always come from
        the same configuration; composing goes on with the previous state meanwhile.
        """
        with self._configuring:
            config = build_config(core_trust_domain, hcl)
            state = _State(config, IntermediateWatcher.from_config(config, self._metrics))
            with self._lock:
                previous, self._state = self._state, state
            if previous is not None:
                previous.intermediates.close()
            state.intermediates.start()
            log.info(
                "configured: trust domain %s, intermediate %s, endpoint %s, on_error=%s",
                config.trust_domain,
                config.intermediate.public_key.key_id().hex()[:16],
                config.endpoint_listen_address or "disabled",
                config.on_error,
            )
            if self._on_configured is not None:
                self._on_configured(config)
        return config

    def current(self) -> _State | None:
        with self._lock:
            return self._state

    def close(self) -> None:
        with self._lock:
            state = self._state
        if state is not None:
            state.intermediates.close()


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    def __init__(self, state: PluginState) -> None:
        self._state = state

    def Configure(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            self._state.configure(request.core_configuration.trust_domain, request.hcl_configuration)
        except ConfigError as exc:
            log.error("configuration rejected: %s", exc)  # noqa: TRY400 - the message is the whole story
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return config_pb2.ConfigureResponse()

    def Validate(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            build_config(request.core_configuration.trust_domain, request.hcl_configuration)
        except ConfigError as exc:
            return config_pb2.ValidateResponse(valid=False, notes=[f"spire-pqc: {p}" for p in exc.problems])
        return config_pb2.ValidateResponse(valid=True, notes=[])


class CredentialComposerServicer(cc_grpc.CredentialComposerServicer):
    def __init__(self, state: PluginState, metrics: PluginMetrics | None = None) -> None:
        self._state = state
        self._metrics = metrics or PluginMetrics()

    def _unimplemented(self, context: grpc.ServicerContext) -> Any:
        # SPIRE maps UNIMPLEMENTED to "keep the default attributes".
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "spire-pqc composes workload X509-SVIDs only")

    def ComposeServerX509CA(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented(context)

    def ComposeServerX509SVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented(context)

    def ComposeAgentX509SVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented(context)

    def ComposeWorkloadJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented(context)

    def ComposeWorkloadX509SVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        attributes = request.attributes
        stats = self._state.stats
        if is_health_check(request.spiffe_id):
            # SPIRE's CA health check signs this ID every cycle with a fixed key; never fail it.
            stats.skipped_health_check += 1
            log.debug("health check SVID passed through unchanged: %s", request.spiffe_id)
            return cc_pb2.ComposeWorkloadX509SVIDResponse(attributes=attributes)
        state = self._state.current()
        if state is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "spire-pqc: not configured")
        try:
            SpiffeId.parse(request.spiffe_id)
            started = time.perf_counter()
            _inter, key = state.intermediates.signing()
            extension = binding_extension(key, request.spiffe_id, bytes(request.public_key))
            self._metrics.binding_duration.observe(time.perf_counter() - started)
        except SpirePqcError as exc:
            return self._on_error(state.config, request, attributes, exc, context)
        except Exception as exc:  # a bug here must not stop SPIRE signing either (docs/trust-model.md)
            log.exception("unexpected error while composing the SvidBinding for %s", request.spiffe_id)
            return self._on_error(state.config, request, attributes, exc, context)
        out = cc_pb2.ComposeWorkloadX509SVIDResponse()
        out.attributes.CopyFrom(attributes)
        kept = [e for e in out.attributes.extra_extensions if e.oid != extension.oid]
        del out.attributes.extra_extensions[:]
        out.attributes.extra_extensions.extend(kept)
        out.attributes.extra_extensions.add(
            oid=extension.oid, value=extension.value, critical=extension.critical
        )
        stats.bindings += 1
        log.debug("SvidBinding added for %s", request.spiffe_id)
        return out

    def _on_error(
        self, config: Config, request: Any, attributes: Any, exc: Exception, context: grpc.ServicerContext
    ) -> Any:
        stats = self._state.stats
        if config.on_error == "fail":
            stats.failed += 1
            log.error("failing SVID signing for %s: cannot add SvidBinding: %s", request.spiffe_id, exc)
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"spire-pqc: cannot add SvidBinding for {request.spiffe_id}: {exc}",
            )
        stats.skipped_unusable_key += 1
        log.warning(
            "signing %s WITHOUT SvidBinding (on_error=skip; %d skipped so far): %s",
            request.spiffe_id,
            stats.skipped_unusable_key,
            exc,
        )
        return cc_pb2.ComposeWorkloadX509SVIDResponse(attributes=attributes)
