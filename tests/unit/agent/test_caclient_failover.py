"""The CA's exact refusal reason reaches the agent, and ca.addresses fail over with backoff.

The endpoints are the plugin's real CAServicer in real grpcio servers with mutual TLS on loopback;
the client is the agent's GrpcCAClient / FailoverCAClient.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2_grpc
from spire_pqc.agent.caclient import FailoverCAClient, GrpcCAClient, TLSIdentity
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.ledger import IssuanceLedger, open_ledger
from spire_pqc.ca.request import IssueRequest, IssueResponse, build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError, RefusalReason, UnavailableError
from spire_pqc.plugin.endpoint import CAServicer, ServerIdentity
from spire_pqc.plugin.metrics import PluginMetrics
from spire_pqc.spiffeid import SpiffeId
from tests.unit.credentials.pki import Domain, der, now_ms

PEM = serialization.Encoding.PEM
AGENT = SpiffeId.parse("spiffe://example.org/spire-pqc/agent")


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())  # type: ignore[no-any-return]


@dataclass
class Policy:
    allowed: bool = True

    def agent_allowed(self, spiffe_id: SpiffeId) -> bool:
        return self.allowed


class Identities:
    def __init__(self, bundle: tuple[Any, ...]) -> None:
        self.identity = ServerIdentity(chain=(), private_key_pem=b"", bundle=bundle)

    def current(self) -> ServerIdentity:
        return self.identity


@dataclass
class Endpoint:
    address: str
    server: grpc.Server
    servicer: CAServicer


@contextmanager
def endpoint(
    domain: Domain, ledger: IssuanceLedger, policy: Policy, *, trusted: tuple[Any, ...] = ()
) -> Iterator[Endpoint]:
    ca = domain.classical_ca
    cert, key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/spire/server"))

    def factory(bundles: BundleSet) -> PQCIssuer:
        return PQCIssuer(
            domain.hierarchy.intermediate,
            domain.trust_domain,
            bundles,
            ledger=ledger,
            trusted_binding_keys=trusted,
        )

    servicer = CAServicer(policy, Identities((ca.certificate,)), factory, PluginMetrics())  # type: ignore[arg-type]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ca_pb2_grpc.add_PQCCertificateAuthorityServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(_pem_key(key), cert.public_bytes(PEM))],
        root_certificates=ca.certificate.public_bytes(PEM),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield Endpoint(f"127.0.0.1:{port}", server, servicer)
    finally:
        server.stop(None).wait()


def identity_of(domain: Domain) -> TLSIdentity:
    ca = domain.classical_ca
    cert, key = ca.issue_svid(AGENT)
    return TLSIdentity(cert.public_bytes(PEM), _pem_key(key), ca.certificate.public_bytes(PEM))


@asynccontextmanager
async def client(domain: Domain, address: str) -> AsyncIterator[GrpcCAClient]:
    identity = identity_of(domain)

    async def current() -> TLSIdentity:
        return identity

    c = GrpcCAClient(address, current, timeout=20)
    try:
        yield c
    finally:
        await c.close()


def request_for(domain: Domain, leaf: Any, key: Any) -> IssueRequest:
    return build_request(
        (der(leaf),), key, MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate().public_key().spki(),
        timestamp_ms=now_ms(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.create("example.org")


@pytest.mark.asyncio
async def test_every_refusal_arrives_with_its_exact_reason(domain: Domain, tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite://{tmp_path / 'ledger.db'}")
    with endpoint(domain, ledger, Policy()) as ep:
        async with client(domain, ep.address) as ca:
            leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id("/app"))
            first = request_for(domain, leaf, key)
            await ca.issue(first)

            async def reason_of(request: IssueRequest) -> tuple[RefusalReason, str | None]:
                with pytest.raises(IssuanceError) as info:
                    await ca.issue(request)
                return info.value.reason, info.value.spiffe_id

            assert await reason_of(first) == (RefusalReason.REPLAY, "spiffe://example.org/app")
            assert await reason_of(request_for(domain, leaf, key)) == (
                RefusalReason.DUPLICATE,
                "spiffe://example.org/app",
            )
            forged = replace(request_for(domain, leaf, key), mldsa_proof=b"\x00" * 3309)
            assert (await reason_of(forged))[0] is RefusalReason.BAD_PROOF
            unbound, unbound_key = domain.classical_leaf(domain.spiffe_id("/x"), binding=None)
            assert (await reason_of(request_for(domain, unbound, unbound_key)))[0] is RefusalReason.BINDING
            stale = replace(request_for(domain, leaf, key), timestamp_ms=now_ms() - 3_600_000)
            assert (await reason_of(stale))[0] is RefusalReason.STALE
            assert (await reason_of(replace(first, nonce=b"short")))[0] is RefusalReason.MALFORMED
            metrics = ep.servicer.metrics
            assert metrics.value("spire_pqc_ca_issuance_total", result="issued", reason="none") == 1
            assert metrics.value("spire_pqc_ca_issuance_total", result="refused", reason="duplicate") == 1
            assert metrics.value("spire_pqc_ca_issuance_duration_seconds_count", result="issued") == 1
            assert metrics.value("spire_pqc_ca_issuance_duration_seconds_count", result="refused") == 6
    ledger.close()


@pytest.mark.asyncio
async def test_unauthorized_agent_and_ledger_down(domain: Domain, tmp_path: Path) -> None:
    leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id("/app"))
    with endpoint(domain, open_ledger("sqlite://:memory:"), Policy(allowed=False)) as ep:
        async with client(domain, ep.address) as ca:
            with pytest.raises(IssuanceError) as info:
                await ca.issue(request_for(domain, leaf, key))
            assert info.value.reason is RefusalReason.UNAUTHORIZED
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the ledger's directory should be")
    down = open_ledger(f"sqlite://{blocked / 'ledger.db'}")
    with endpoint(domain, down, Policy()) as ep:
        async with client(domain, ep.address) as ca:
            # The CA's ledger is down: a transient UnavailableError (retried), naming the database.
            with pytest.raises(
                UnavailableError, match=rf"UNAVAILABLE: unavailable .*sqlite://{blocked}/ledger.db"
            ):
                await ca.issue(request_for(domain, leaf, key))
        assert (
            ep.servicer.metrics.value("spire_pqc_ca_issuance_total", result="error", reason="unavailable")
            == 1
        )


@pytest.mark.asyncio
async def test_failover_to_the_second_endpoint_and_back(domain: Domain) -> None:
    shared = open_ledger("sqlite://:memory:")
    with endpoint(domain, shared, Policy()) as a, endpoint(domain, shared, Policy()) as b:
        identity = identity_of(domain)

        async def current() -> TLSIdentity:
            return identity

        clients = [(e.address, GrpcCAClient(e.address, current, timeout=10)) for e in (a, b)]
        failover = FailoverCAClient(clients, retry_initial=0.2, retry_max=0.4)
        try:
            leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id("/one"))
            await failover.issue(request_for(domain, leaf, key))
            assert (
                a.servicer.metrics.value("spire_pqc_ca_issuance_total", result="issued", reason="none") == 1
            )

            a.server.stop(None).wait()  # server A is gone: the same call goes to B
            leaf, key = domain.classical_ca.issue_svid(domain.spiffe_id("/two"))
            await failover.issue(request_for(domain, leaf, key))
            assert (
                b.servicer.metrics.value("spire_pqc_ca_issuance_total", result="issued", reason="none") == 1
            )

            # A refusal is the CA's answer, shared by every server: raised, never tried elsewhere.
            with pytest.raises(IssuanceError) as info:
                await failover.issue(request_for(domain, leaf, key))
            assert info.value.reason is RefusalReason.DUPLICATE
        finally:
            await failover.close()


class Scripted:
    """An in-process CAClient that answers from a script (for the ordering rules)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.down = name, log, False

    async def issue(self, request: IssueRequest) -> IssueResponse:
        self.log.append(self.name)
        if self.down:
            raise UnavailableError(f"{self.name} is down")
        return IssueResponse((b"pqc",), (b"kem",), ())

    async def close(self) -> None:
        return None


@pytest.mark.asyncio
async def test_a_failed_endpoint_waits_behind_the_others_for_its_backoff() -> None:
    now = [0.0]
    calls: list[str] = []
    a, b, c = Scripted("a", calls), Scripted("b", calls), Scripted("c", calls)
    failover = FailoverCAClient(
        [("a", a), ("b", b), ("c", c)], retry_initial=10, retry_max=40, clock=lambda: now[0]
    )
    request = None

    async def issue() -> list[str]:
        calls.clear()
        await failover.issue(request)  # type: ignore[arg-type]
        return list(calls)

    assert await issue() == ["a"]
    a.down = True
    assert await issue() == ["a", "b"]
    assert await issue() == ["b"]  # a is backing off: not asked first
    now[0] += 11
    assert await issue() == ["a", "b"]  # its delay is over: asked again, still down
    a.down = False
    now[0] += 41
    assert await issue() == ["a"]  # back: first again, backoff reset
    a.down = b.down = c.down = True
    with pytest.raises(
        UnavailableError, match="no PQC CA endpoint answered: a is down; b is down; c is down"
    ):
        await issue()
    assert calls == ["a", "b", "c"]
    with pytest.raises(UnavailableError):
        await asyncio.wait_for(issue(), 5)
    assert sorted(calls) == ["a", "b", "c"]  # all backing off: every one is still tried


def test_config_accepts_addresses(tmp_path: Path) -> None:
    from spire_pqc.agent.config import parse

    base = {
        "agent": {"socket_path": "/run/a.sock"},
        "source": {
            "kind": "spire",
            "spire": {"admin_socket_path": "/run/admin.sock", "workload_socket_path": "/run/w.sock"},
        },
    }
    config = parse({**base, "ca": {"addresses": ["10.0.0.1:8443", "10.0.0.2:8443"]}})
    assert config.ca is not None and config.ca.addresses == ("10.0.0.1:8443", "10.0.0.2:8443")
    assert parse({**base, "ca": {"address": "10.0.0.1:8443"}}).ca.addresses == ("10.0.0.1:8443",)  # type: ignore[union-attr]
    from spire_pqc.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse({**base, "ca": {"addresses": ["a:1", "a:1", "nope"]}})
    assert info.value.problems == [
        "ca.addresses[2]: 'nope' is not host:port",
        "ca.addresses: 'a:1' is listed more than once",
    ]
    with pytest.raises(ConfigError, match=r"either ca\.address or ca\.addresses"):
        parse({**base, "ca": {"address": "a:1", "addresses": ["b:2"]}})
