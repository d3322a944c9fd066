"""The PQC CA endpoint, served by the plugin process (docs/architecture.md; wire format: docs/formats.md).

gRPC over TLS 1.3 with mutual authentication by X509-SVIDs. The server's certificate and the trust
bundle come from SPIRE's IdentityProvider host service and are refreshed periodically, so SPIRE's
rotations of the server SVID and CA are picked up without a restart (grpcio's dynamic server
credentials). grpcio's TLS stack negotiates X25519MLKEM768 with every client that offers it.

Authorization: the caller's TLS client certificate must be an X509-SVID of the trust domain
(verified against the current bundle) whose SPIFFE ID matches ``authorized_agents``; then the
request itself is checked by :class:`spire_pqc.ca.issuer.PQCIssuer`.

Every refusal carries its :class:`~spire_pqc.errors.RefusalReason` twice: as a gRPC status code
(``_STATUS_BY_REASON``: UNAVAILABLE means "retry", ALREADY_EXISTS "never retry this") and, exactly,
as a ``spire_pqc.ca.v1.IssuanceRefusal`` in the google.rpc.Status details.

The endpoint owns the issuance ledger (:func:`spire_pqc.ca.ledger.open_ledger` on ``ledger_dsn``)
and its pruner. The ledger connects lazily: with its database down the endpoint still serves, and
refuses issuance with UNAVAILABLE until the database answers again.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from spire_pqc._internal.buckets import TokenBuckets
from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.issuer import IntermediateCA, PQCIssuer
from spire_pqc.ca.jwtsigning import JwtSigning, ScheduleSigners
from spire_pqc.ca.ledger import LegacyImport, Pruner, SqlLedger, open_ledger
from spire_pqc.ca.request import IssueRequest
from spire_pqc.errors import (
    ConfigError,
    IssuanceError,
    RefusalReason,
    SpirePqcError,
    TokenMalformedError,
    VerificationError,
)
from spire_pqc.federation.endpoint import ServerSvid
from spire_pqc.plugin.bundlepub import BundleEndpointThread, PqcBundlePublisher, svid_of
from spire_pqc.plugin.config import Config
from spire_pqc.plugin.intermediates import IntermediateWatcher
from spire_pqc.plugin.metrics import PluginMetrics, issuance_outcome
from spire_pqc.svid import verify_classical_svid

log = logging.getLogger(__name__)

REFRESH_INTERVAL = dt.timedelta(seconds=30)
WORKERS = 4
#: SignJWTSVID per node agent: a sustained rate and a burst (one ML-DSA-65 signature each). Well above
#: what a node's workloads ask for (SPIRE caches JWT-SVIDs), low enough that one agent cannot take the
#: CA's signing capacity from the others. Beyond it: RESOURCE_EXHAUSTED, which agents retry.
JWT_SIGN_RATE = 100.0
JWT_SIGN_BURST = 200

_STATUS_BY_REASON = {
    RefusalReason.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalReason.STALE: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.UNTRUSTED_SVID: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.BINDING: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.BAD_PROOF: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.REPLAY: grpc.StatusCode.ALREADY_EXISTS,
    RefusalReason.DUPLICATE: grpc.StatusCode.ALREADY_EXISTS,
    RefusalReason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    RefusalReason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.UNAUTHORIZED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.BAD_RESPONSE: grpc.StatusCode.INTERNAL,
    RefusalReason.REFUSED: grpc.StatusCode.PERMISSION_DENIED,
}


def refusal_status(reason: RefusalReason, message: str, spiffe_id: str | None = None) -> grpc.Status:
    """The gRPC status of a refusal: code by reason, and the exact reason in the status details."""
    detail = any_pb2.Any()
    refusal = ca_pb2.IssuanceRefusal(spiffe_id=spiffe_id or "")
    if reason.name in _WIRE:  # REFUSED and BAD_RESPONSE never leave a CA: they stay UNSPECIFIED
        refusal.reason = ca_pb2.RefusalReason.Value(f"REFUSAL_REASON_{reason.name}")  # type: ignore[assignment]
    detail.Pack(refusal)
    status = status_pb2.Status(code=_STATUS_BY_REASON[reason].value[0], message=message, details=[detail])
    return rpc_status.to_status(status)


_WIRE = {name.removeprefix("REFUSAL_REASON_") for name in ca_pb2.RefusalReason.keys()}  # noqa: SIM118


def _refuse(
    context: grpc.ServicerContext, reason: RefusalReason, message: str, spiffe_id: str | None = None
) -> NoReturn:
    context.abort_with_status(refusal_status(reason, message, spiffe_id))
    raise AssertionError("abort_with_status returned")  # grpcio raises; this line is never reached


@dataclass(frozen=True)
class ServerIdentity:
    """The plugin's TLS identity (SPIRE's server SVID) and the trust domain's classical bundle."""

    chain: tuple[x509.Certificate, ...]
    private_key_pem: bytes
    bundle: tuple[x509.Certificate, ...]
    # The trust domain's classical JWT bundle (JWK Set): what SignJWTSVID checks tokens against.
    jwt_bundle: bytes = b'{"keys": []}'

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def bundle_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.bundle)


IdentityFetcher = Callable[[], ServerIdentity]


class _IdentityCache:
    """Latest identity from SPIRE, refreshed at most every REFRESH_INTERVAL."""

    def __init__(self, fetch: IdentityFetcher) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._identity = fetch()
        self._fetched = dt.datetime.now(dt.UTC)
        self._served: ServerIdentity | None = None

    def current(self) -> ServerIdentity:
        with self._lock:
            now = dt.datetime.now(dt.UTC)
            # Refresh every REFRESH_INTERVAL, and sooner once half of the served SVID's remaining life
            # is gone: with a short SPIRE ca_ttl the server SVID can live less than the interval.
            remaining = (
                self._identity.chain[0].not_valid_after_utc - self._fetched
                if self._identity.chain
                else REFRESH_INTERVAL
            )
            if now - self._fetched >= min(REFRESH_INTERVAL, remaining / 2):
                try:
                    self._identity = self._fetch()
                except SpirePqcError as exc:  # keep serving the previous identity; SPIRE may be busy
                    log.warning("could not refresh the server identity from SPIRE: %s", exc)
                self._fetched = dt.datetime.now(dt.UTC)
            return self._identity

    def certificate_configuration(self) -> Any:
        """grpcio's fetcher callback: a new configuration only when the identity changed."""
        identity = self.current()
        if identity is self._served:
            return None
        self._served = identity
        return _server_configuration(identity)


def _server_configuration(identity: ServerIdentity) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(identity.private_key_pem, identity.chain_pem())], root_certificates=identity.bundle_pem()
    )


class CAServicer(ca_pb2_grpc.PQCCertificateAuthorityServicer):
    def __init__(
        self,
        config: Config,
        identities: _IdentityCache,
        issuer_factory: Callable[[BundleSet], PQCIssuer],
        metrics: PluginMetrics | None = None,
        *,
        jwt: JwtSigning | None = None,
        jwt_rate: TokenBuckets | None = None,
        revoked: Callable[[], frozenset[str]] | None = None,
        roots: Callable[[], tuple[x509.Certificate, ...]] | None = None,
    ) -> None:
        self._config = config
        self._identities = identities
        self._issuer_factory = issuer_factory
        self._revoked = revoked
        self._roots = roots
        self.metrics = metrics or PluginMetrics()
        self._jwt = jwt
        self._jwt_rate = jwt_rate or TokenBuckets(JWT_SIGN_RATE, JWT_SIGN_BURST)
        self._log = LogLimiter()

    def _pqc_jwt_bundle(self) -> bytes:
        return self._jwt.jwks() if self._jwt is not None else b""

    def IssuePQCSVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        outcome = ["error", "internal"]  # (result, reason), set by _issue; an exception leaves this
        try:
            return self._issue(request, context, outcome)
        finally:
            self.metrics.observe_issuance(outcome[0], outcome[1], time.perf_counter() - started)

    def _issue(self, request: Any, context: grpc.ServicerContext, outcome: list[str]) -> Any:
        identity = self._identities.current()
        bundles = BundleSet.from_certificates(list(identity.bundle))
        caller = self._authorize(context, bundles, outcome)
        try:
            issuer = self._issuer_factory(bundles)
        except SpirePqcError as exc:  # no usable intermediate now: retry later, as with the ledger down
            outcome[:] = issuance_outcome(RefusalReason.UNAVAILABLE)
            log.error("issuance refused for agent %s: %s", caller, exc)  # noqa: TRY400
            _refuse(context, RefusalReason.UNAVAILABLE, f"no usable intermediate PQC CA: {exc}")
        domain_request = IssueRequest(
            classical_chain=tuple(bytes(c) for c in request.classical_svid_chain),
            mldsa_spki=bytes(request.mldsa65_public_key),
            mlkem_spki=bytes(request.mlkem768_public_key),
            timestamp_ms=int(request.timestamp_unix_ms),
            nonce=bytes(request.nonce),
            classical_proof=bytes(request.classical_proof),
            mldsa_proof=bytes(request.mldsa_proof),
        )
        try:
            issued = issuer.issue(domain_request)
        except IssuanceError as exc:
            outcome[:] = issuance_outcome(exc.reason)
            log.warning("issuance refused for agent %s: %s", caller, exc)
            _refuse(context, exc.reason, str(exc), exc.spiffe_id)
        outcome[:] = ("issued", "none")  # also a retry with the same keys, and a renewal of them
        log.info(
            "agent %s obtained PQC credentials for %s%s",
            caller,
            issued.spiffe_id,
            " (re-sent)" if issued.reissued else " (renewed, same keys)" if issued.renewed else "",
        )
        return ca_pb2.IssuePQCSVIDResponse(
            pqc_svid_chain=list(issued.response.pqc_svid_chain),
            kem_certificate_chain=list(issued.response.kem_certificate_chain),
            pqc_bundle=list(issued.response.pqc_bundle),
            pqc_jwt_bundle=self._pqc_jwt_bundle(),
            revoked_intermediates=sorted(issuer.revoked),
        )

    def SignJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The PQC part of a hybrid JWT-SVID. Authorised like issuance (an allowed node agent); the
        classical token's own signature under the trust domain's JWT bundle is what authorises
        signing its claims, so its subject need not be the caller (agents fetch for workloads)."""
        identity = self._identities.current()
        caller = self._authorize(context, BundleSet.from_certificates(list(identity.bundle)), [])
        if self._jwt is None:
            _refuse(context, RefusalReason.UNAVAILABLE, "this PQC CA does not sign JWT-SVIDs")
        if not self._jwt_rate.take(caller):
            self._log.log(
                log,
                logging.WARNING,
                f"jwt-rate {caller}",
                "agent %s exceeds the JWT-SVID signing rate",
                caller,
            )
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{caller} exceeds the JWT-SVID signing rate")
        try:
            token = str(request.classical_token)
            if not token.isascii():
                raise TokenMalformedError("the classical token is not ASCII")
            pqc_token = self._jwt.sign(token, identity.jwt_bundle)
        except VerificationError as exc:
            reason = (
                RefusalReason.MALFORMED
                if isinstance(exc, TokenMalformedError)
                else RefusalReason.UNTRUSTED_SVID
            )
            log.warning("PQC JWT signing refused for agent %s: %s", caller, exc)
            _refuse(context, reason, str(exc), exc.spiffe_id)
        except SpirePqcError as exc:  # no usable intermediate now: retry later, as for issuance
            log.error("PQC JWT signing unavailable for agent %s: %s", caller, exc)  # noqa: TRY400
            _refuse(context, RefusalReason.UNAVAILABLE, f"no usable intermediate PQC CA: {exc}")
        log.debug("agent %s obtained a PQC JWT-SVID part", caller)
        return ca_pb2.SignJWTSVIDResponse(
            pqc_token=pqc_token, pqc_jwt_bundle=self._jwt.jwks(), pqc_bundle=self._roots_der()
        )

    def _roots_der(self) -> list[bytes]:
        """The PQC bundle now (a root rotation is served as soon as the watcher read it)."""
        roots = self._roots() if self._roots is not None else ()
        if not roots:
            roots = self._jwt.pqc_roots if self._jwt is not None else self._config.pqc_roots
        return [c.public_bytes(serialization.Encoding.DER) for c in roots]

    def FetchPQCBundle(self, request: Any, context: grpc.ServicerContext) -> Any:
        identity = self._identities.current()
        self._authorize(context, BundleSet.from_certificates(list(identity.bundle)), [])
        revoked = self._revoked() if self._revoked is not None else self._config.revoked_intermediates
        return ca_pb2.FetchPQCBundleResponse(
            trust_domain=self._config.trust_domain.name,
            pqc_bundle=self._roots_der(),
            revoked_intermediates=sorted(revoked),
            pqc_jwt_bundle=self._pqc_jwt_bundle(),
            server_time_unix_ms=int(time.time() * 1000),
        )

    def _authorize(self, context: grpc.ServicerContext, bundles: BundleSet, outcome: list[str]) -> str:
        pems: list[bytes] = list(context.auth_context().get("x509_pem_cert") or [])  # type: ignore[arg-type]
        if not pems:
            outcome[:] = issuance_outcome(RefusalReason.UNAUTHENTICATED)
            _refuse(context, RefusalReason.UNAUTHENTICATED, "a client X509-SVID is required")
        try:
            leaf = x509.load_pem_x509_certificate(pems[0])
            caller = verify_classical_svid([leaf], bundles)
        except (ValueError, VerificationError) as exc:
            outcome[:] = issuance_outcome(RefusalReason.UNAUTHENTICATED)
            _refuse(
                context, RefusalReason.UNAUTHENTICATED, f"client certificate is not a valid X509-SVID: {exc}"
            )
        if not self._config.agent_allowed(caller):
            log.warning("security event: unauthorised caller %s refused by the PQC CA endpoint", caller)
            outcome[:] = issuance_outcome(RefusalReason.UNAUTHORIZED)
            _refuse(context, RefusalReason.UNAUTHORIZED, f"{caller} is not an authorised node agent")
        return str(caller)


def open_configured_ledger(config: Config) -> SqlLedger:
    """The ledger of ``ledger_dsn``; the 0.1 JSON-lines file (``ledger_path``) is imported on first use."""
    legacy = None
    if config.ledger_path is not None:
        legacy = LegacyImport(
            config.ledger_path, database=config.ledger_dsn.display, freshness=config.freshness_window
        )
    return open_ledger(config.ledger_dsn, password=config.ledger_password, on_ready=legacy)


def _bind_problem(address: str) -> str:
    """Why ``address`` cannot be bound (grpcio only says that it failed): bind it ourselves to see."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "address already in use (another process listens there)"
        return exc.strerror or str(exc)
    except ValueError:
        return "not a host:port"
    return "grpcio refused it"


class CAEndpoint:
    """Owns the gRPC server of the PQC CA endpoint, the ledger and its pruner; start / stop."""

    def __init__(
        self,
        config: Config,
        fetch_identity: IdentityFetcher,
        *,
        metrics: PluginMetrics | None = None,
        intermediates: Callable[[], IntermediateWatcher] | None = None,
        signers: ScheduleSigners | None = None,
    ) -> None:
        """``signers``: the JWT signers to keep across reconfigurations (in-memory keys; a new set
        would sign at once with keys no agent has seen yet); made here when None or of another trust
        domain."""
        if config.endpoint_listen_address is None:
            raise ValueError("endpoint_listen_address is not configured")
        self._config = config
        self.metrics = metrics or PluginMetrics()
        self._identities = _IdentityCache(fetch_identity)
        self.ledger = open_configured_ledger(config)
        if config.ledger_dsn.in_memory:
            log.warning(
                "ledger_dsn is not set: the issuance ledger is in memory, so one issuance per classical "
                "SVID holds only until this plugin restarts and is not shared with other SPIRE servers"
            )
        self._pruner = Pruner(
            self.ledger,
            interval=config.ledger_prune_interval.total_seconds(),
            on_run=self.metrics.observe_prune,
        )
        ledger = self.ledger
        if intermediates is None:
            static = IntermediateWatcher.from_config(config)  # not polled: the configuration's schedule

            def intermediates() -> IntermediateWatcher:
                return static

        watch = intermediates

        def issuer_factory(bundles: BundleSet) -> PQCIssuer:
            # The schedule now: the active intermediate signs; next and retiring ones (and SPIRE HA
            # siblings) are accepted as binding signers and sent with the chains they bound.
            watcher = watch()
            current = watcher.current()
            inter, key = watcher.signing()
            return PQCIssuer(
                IntermediateCA(key, inter.ca.certificate, inter.ca.chain_to_root),
                config.trust_domain,
                bundles,
                sibling_intermediates=(*config.sibling_intermediates, *current.trusted_certificates()),
                revoked=watcher.revoked,
                pqc_roots=watcher.roots() or config.pqc_roots,
                ledger=ledger,
                freshness=config.freshness_window,
                max_ttl=config.max_pqc_ttl,
            )

        if signers is None or signers.trust_domain != config.trust_domain:
            signers = ScheduleSigners(
                config.trust_domain, lambda: watch().current(), lambda inter: watch().key(inter)
            )
        self.signers = signers
        jwt = JwtSigning(config.trust_domain, signers, config.pqc_roots)
        self.servicer = CAServicer(
            config,
            self._identities,
            issuer_factory,
            self.metrics,
            jwt=jwt,
            revoked=lambda: watch().revoked,
            roots=lambda: watch().roots(),
        )
        self.bundle_endpoint: BundleEndpointThread | None = None
        if config.bundle_endpoint_address is not None:
            publisher = PqcBundlePublisher(
                config.trust_domain,
                roots=lambda: watch().roots() or config.pqc_roots,
                signers=jwt.signers,
                refresh_hint=max(1, int(config.bundle_endpoint_refresh_hint.total_seconds())),
            )
            self.bundle_endpoint = BundleEndpointThread(
                config.bundle_endpoint_address,
                document=publisher.document,
                svid=self._server_svid,
                path=config.bundle_endpoint_path,
            )
        self._svid: tuple[ServerIdentity, ServerSvid] | None = None
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="spire-pqc-ca")
        )
        ca_pb2_grpc.add_PQCCertificateAuthorityServicer_to_server(self.servicer, self._server)
        credentials = grpc.dynamic_ssl_server_credentials(
            _server_configuration(self._identities.current()),
            self._identities.certificate_configuration,
            require_client_authentication=True,
        )
        try:
            self.port = self._server.add_secure_port(config.endpoint_listen_address, credentials)
        except RuntimeError:  # newer grpcio raises where older ones return 0
            self.port = 0
        if self.port == 0:
            self.ledger.close()
            raise ConfigError(
                f"endpoint_listen_address: cannot listen on {config.endpoint_listen_address}: "
                f"{_bind_problem(config.endpoint_listen_address)}"
            )

    def _server_svid(self) -> ServerSvid:
        """SPIRE's server SVID for the bundle endpoint (the key object kept while the identity is)."""
        identity = self._identities.current()
        if self._svid is None or self._svid[0] is not identity:
            self._svid = (identity, svid_of(identity.chain, identity.private_key_pem))
        return self._svid[1]

    def start(self) -> None:
        self._server.start()
        if self.bundle_endpoint is not None:
            try:
                self.bundle_endpoint.start()
            except OSError:
                self._server.stop(0)
                raise
            host, port = self._config.bundle_endpoint_address or ("", 0)
            log.info(
                "PQC bundle endpoint listening on %s:%d%s", host, port, self._config.bundle_endpoint_path
            )
        self._pruner.start()
        self.metrics.watch_ledger(lambda: self.ledger.available)
        log.info(
            "PQC CA endpoint listening on %s (mTLS, TLS 1.3); issuance ledger %s",
            self._config.endpoint_listen_address,
            self._config.ledger_dsn.display,
        )

    def stop(self, grace: float = 1.0) -> None:
        if self.bundle_endpoint is not None:
            self.bundle_endpoint.stop()
        self._server.stop(grace).wait()
        self._pruner.stop()
        self.ledger.close()
