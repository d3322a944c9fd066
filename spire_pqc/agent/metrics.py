"""The agent's metrics: prometheus_client families in one registry per agent.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never the process-global one), so several
agents can live in one process (tests, benchmarks) without their numbers mixing. Components update
the metric objects directly (``metrics.issuance.labels(result="success").inc()``); state that lives
elsewhere (tunnel counters, open connections) is read at scrape time by a collector or a gauge
function. :meth:`Metrics.render` is the Prometheus text exposition served on ``/metrics``.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector

from spire_pqc.crypto.status import register_backend_metric
from spire_pqc.errors import (
    AuthorizationError,
    HandshakeError,
    NoHybridGroupError,
    ProofMissingError,
    ProofSignatureError,
    VerificationError,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds from a new classical SVID to its PQC credentials: ~10 ms in-process, up to minutes while the
# CA is unreachable.
CLOSE_REASONS = ("per_uid_cap", "idle_timeout", "health_per_uid_cap")
REFUSAL_REASONS = (
    "missing_header",
    "caller_unknown",
    "pid_reused",
    "message_too_large",
    "too_many_bytes",
    "malformed_request",
    "request_timeout",
    "too_many_streams",
)
ROTATION_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# One PQ primitive: ~0.05-1 ms on a server core; 0.1 is the guide's alert threshold.
PQC_OPERATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# TCP connect to channel ready: ~5-20 ms on loopback, more across a WAN or a loaded node.
CHANNEL_SETUP_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MODES = ("hybrid", "spiffe", "pq-tls")
CHANNEL_FAILURE_REASONS = (
    "no-hybrid-group", "untrusted-chain", "unauthorized-id", "pq-proof", "handshake", "timeout", "io",
)  # fmt: skip
VERIFICATION_CHECKS = ("pq-proof", "chain", "binding", "svid")


def channel_failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed channel establishment (a closed set: docs/metrics.md)."""
    if isinstance(exc, NoHybridGroupError):
        return "no-hybrid-group"
    if isinstance(exc, ProofMissingError | ProofSignatureError):
        return "pq-proof"
    if isinstance(exc, AuthorizationError):
        return "unauthorized-id"
    if isinstance(exc, VerificationError):
        return "untrusted-chain"
    if isinstance(exc, TimeoutError) or (isinstance(exc, HandshakeError) and "within" in str(exc)):
        return "timeout"
    if isinstance(exc, OSError | asyncio.IncompleteReadError | EOFError):
        return "io"
    return "handshake"


class Metrics:
    """The agent's metric families; :meth:`render` is called per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.identities_served = Counter(
            "spire_pqc_agent_identities_served",
            "SVIDs sent to workloads, by service.",
            ["service"],
            registry=r,
        )
        self.issuance = Counter(
            "spire_pqc_agent_pqc_issuance",
            "PQC issuance requests by result: success, failure (retried), duplicate (refused for good: "
            "the CA certified other keys for that classical SVID; counted once, never retried).",
            ["result"],
            registry=r,
        )
        self.open_streams = Gauge(
            "spire_pqc_agent_open_streams",
            "Open Workload API and hybrid streams, by RPC.",
            ["rpc"],
            registry=r,
        )
        self.rotation_lag = Histogram(
            "spire_pqc_agent_rotation_lag_seconds",
            "Seconds from a new classical SVID to its PQC credentials.",
            buckets=ROTATION_LAG_BUCKETS,
            registry=r,
        )
        self.pqc_identities = Gauge(
            "spire_pqc_agent_pqc_identities", "Classical SVIDs with PQC credentials held.", registry=r
        )
        self.connections = Gauge("spire_pqc_agent_connections", "Open client connections.", registry=r)
        # --- the state directory and refusals (agent restarts) ---
        self.refused_identities = Gauge(
            "spire_pqc_agent_pqc_refused_identities",
            "SPIFFE IDs left without PQC credentials because the CA refused their classical SVID as a "
            "duplicate (until the next classical SVID).",
            registry=r,
        )
        self.revoked_identities = Gauge(
            "spire_pqc_agent_pqc_revoked_identities",
            "SPIFFE IDs whose PQC credentials a revoked intermediate signed and that have no re-issued "
            "ones yet (they are not served meanwhile).",
            registry=r,
        )
        self.state = Counter(
            "spire_pqc_agent_state",
            "State directory events: restored (credentials served from it without a CA request), "
            "discarded (a record that was corrupt or did not verify), write-failed.",
            ["event"],
            registry=r,
        )
        for result in ("success", "failure", "duplicate"):
            self.issuance.labels(result=result)  # exported as 0 before the first attempt
        for event in ("restored", "discarded", "write-failed"):
            self.state.labels(event=event)
        register_backend_metric(r)  # spire_pqc_crypto_backend_info{backend=…,version=…} 1
        # What local users made the agent refuse (README "Security"): every event is counted here,
        # while the log gets at most one line per kind and interval.
        self.connections_closed = Counter(
            "spire_pqc_agent_connections_closed",
            "Connections the agent closed on its own, by reason.",
            ["reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "spire_pqc_agent_requests_refused",
            "Requests refused before they were served, by reason.",
            ["reason"],
            registry=r,
        )
        self.accept_errors = Counter(
            "spire_pqc_agent_accept_errors",
            "Failed accept() calls on the agent's listeners (e.g. out of descriptors).",
            registry=r,
        )
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason=reason)
        for reason in REFUSAL_REASONS:
            self.requests_refused.labels(reason=reason)
        # --- channels, signatures, PQ primitives, rotations (the PQC guide's monitoring section) ---
        self.channel_establishments = Counter(
            "spire_pqc_agent_channel_establishments",
            "Channel handshakes completed by the agent's tunnels (both directions), by mode, result and reason.",
            ["mode", "result", "reason"],
            registry=r,
        )
        self.channel_setup = Histogram(
            "spire_pqc_agent_channel_setup_duration_seconds",
            "Seconds from TCP connect to channel ready (PQ proofs verified in hybrid mode), successful channels.",
            ["mode"],
            buckets=CHANNEL_SETUP_BUCKETS,
            registry=r,
        )
        self.signature_verifications = Counter(
            "spire_pqc_agent_signature_verifications",
            "ML-DSA-65 verifications done by the agent, by result and check (pq-proof, chain, binding, svid).",
            ["result", "check"],
            registry=r,
        )
        self.pqc_operations = Histogram(
            "spire_pqc_agent_pqc_operation_duration_seconds",
            "Wall time of one post-quantum primitive, by operation, algorithm and backend.",
            ["operation", "algorithm", "backend"],
            buckets=PQC_OPERATION_BUCKETS,
            registry=r,
        )
        self.rotations = Counter(
            "spire_pqc_agent_rotations",
            "PQC key rotations (one per new classical SVID), by result; failure: keys could not be "
            "generated or stored, or the issued credentials did not verify.",
            ["result"],
            registry=r,
        )
        for mode in MODES:
            self.channel_establishments.labels(mode=mode, result="success", reason="none")
            for reason in CHANNEL_FAILURE_REASONS:
                self.channel_establishments.labels(mode=mode, result="failure", reason=reason)
        for result in ("success", "failure"):
            self.rotations.labels(result=result)
            for check in VERIFICATION_CHECKS:
                self.signature_verifications.labels(result=result, check=check)

    def observe_channel(self, mode: str, error: BaseException | None, seconds: float) -> None:
        """One channel establishment (``error`` None: success, taking ``seconds``), with the ML-DSA
        verification it implies: the peer's PQ proof (hybrid) or its PQC chain (pq-tls)."""
        check = {"hybrid": "pq-proof", "pq-tls": "chain"}.get(mode)
        if error is None:
            self.channel_establishments.labels(mode=mode, result="success", reason="none").inc()
            self.channel_setup.labels(mode=mode).observe(seconds)
            if check is not None:
                self.signature_verifications.labels(result="success", check=check).inc()
            return
        reason = channel_failure_reason(error)
        self.channel_establishments.labels(mode=mode, result="failure", reason=reason).inc()
        if check is not None and (
            isinstance(error, ProofSignatureError) or (mode == "pq-tls" and reason == "untrusted-chain")
        ):
            self.signature_verifications.labels(result="failure", check=check).inc()

    def observe_pqc_operation(self, operation: str, algorithm: str, backend: str, seconds: float) -> None:
        """A :mod:`spire_pqc.crypto.timing` observer."""
        self.pqc_operations.labels(operation=operation, algorithm=algorithm, backend=backend).observe(seconds)

    def register(self, collector: Collector) -> None:
        """Add a collector that reads state kept elsewhere at scrape time (e.g. tunnel counters)."""
        self.registry.register(collector)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when absent), e.g. ``value("…_total", result="success")``."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def open_stream_count(self) -> int:
        return int(sum(s.value for family in self.open_streams.collect() for s in family.samples))

    def render(self) -> str:
        return generate_latest(self.registry).decode()
