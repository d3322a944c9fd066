"""Agent restarts with SPIRE-like sources (the same classical SVIDs after a restart), and /ready.

A :class:`SameSvidSource` plays SPIRE for a restarted node agent: it hands out the same classical SVID
again until told to rotate. One PQC CA (one issuance ledger) lives across the "restarts", as the
plugin does across node-agent restarts. The real-process versions (kill -9, real SPIRE) are in
tests/integration/test_agent_restart_spire.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spire_pqc._internal import wire
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import AgentConfig
from spire_pqc.agent.model import Caller, X509State
from spire_pqc.agent.notify import Broadcast
from spire_pqc.agent.server import Agent
from spire_pqc.agent.state import SUFFIX, decode
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import BundleUpdate, IssueRequest, IssueResponse
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import ConfigError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import X509Svid
from spire_pqc.workload.client import HybridUpdate, parse_hybrid_response
from spire_pqc.workload.source import HybridX509Source
from spire_pqc.x509 import certs
from tests.unit.agent._support import HEADER, ME, dev_config, first_reply, short_dir

TD = TrustDomain("example.org")
HYBRID = wire.FETCH_HYBRID_SVIDS
DER = serialization.Encoding.DER


class SameSvidSource:
    """An identity source that gives every caller the same classical SVID until :meth:`rotate`."""

    name = "same-svid"

    def __init__(self, authority: DevAuthority, svid: X509Svid) -> None:
        self._authority = authority
        self.svid = svid
        self._state: Broadcast[X509State] = Broadcast()

    @property
    def bundles(self) -> dict[TrustDomain, bytes]:
        return {TD: self._authority.classical.certificate.public_bytes(DER)}

    @property
    def ready(self) -> bool:
        return self._state.value is not None

    async def start(self) -> None:
        self._state.publish(X509State((self.svid,), self.bundles))

    async def close(self) -> None:
        self._state.close()

    def rotate(self, ttl: dt.timedelta = dt.timedelta(hours=1)) -> None:
        self.svid = new_svid(self._authority, ttl)
        self._state.publish(X509State((self.svid,), self.bundles))

    async def watch(self, caller: Caller) -> AsyncIterator[X509State]:
        async for state in self._state.updates():
            yield state

    def watch_service(self, spiffe_id: SpiffeId, selectors: Sequence[str]) -> AsyncIterator[X509State]:
        raise ConfigError("this identity source serves no tunnels")

    def local_ca_client(self) -> None:
        return None  # the agent is given its CA client


def new_svid(authority: DevAuthority, ttl: dt.timedelta = dt.timedelta(hours=1)) -> X509Svid:
    cert, key = authority.classical.issue_svid(SpiffeId.parse(ME), ttl=ttl)
    return X509Svid(SpiffeId.parse(ME), (cert,), key, "me")


class CountingCA:
    """The one PQC CA behind every agent of a test; ``lose_replies`` issues but drops the answer."""

    def __init__(self, authority: DevAuthority) -> None:
        bundles = BundleSet([X509Bundle(TD, [authority.classical.certificate])])
        self._local = LocalCAClient(PQCIssuer(authority.hierarchy.intermediate, TD, bundles))
        self.requests: list[IssueRequest] = []
        self.lose_replies = False
        self.down = False

    async def issue(self, request: IssueRequest) -> IssueResponse:
        self.requests.append(request)
        if self.down:
            raise UnavailableError("PQC CA unreachable (test)")
        response = await self._local.issue(request)
        if self.lose_replies:
            raise UnavailableError("the reply was lost (test)")
        return response

    async def fetch_bundle(self) -> BundleUpdate:
        """The bundle poll (pqc.bundle_refresh_interval): fails like issue() while down."""
        if self.down:
            raise UnavailableError("PQC CA unreachable (test)")
        return await self._local.fetch_bundle()

    async def close(self) -> None:
        return None


@dataclasses.dataclass
class Node:
    """What survives an agent restart: the state directory (config), SPIRE's SVID and the CA."""

    config: AgentConfig
    authority: DevAuthority
    svid: X509Svid
    ca: CountingCA

    def agent(self) -> tuple[Agent, SameSvidSource]:
        source = SameSvidSource(self.authority, self.svid)
        # A first request waits for the first attempt (up to 10 s on a loaded machine, at once normally).
        return Agent(self.config, source=source, ca_client=self.ca, first_pqc_wait=10.0), source

    @property
    def state_dir(self) -> Path:
        assert self.config.state_dir is not None
        return self.config.state_dir


@pytest.fixture
def node() -> Iterator[Node]:
    directory = short_dir()
    config = dataclasses.replace(
        dev_config(directory),
        retry_initial=dt.timedelta(seconds=0.02),
        retry_max=dt.timedelta(seconds=0.05),
        bundle_refresh_interval=dt.timedelta(seconds=0.2),  # a CA back up is seen at once
    )
    authority = DevAuthority.generate(TD)
    yield Node(config, authority, new_svid(authority), CountingCA(authority))
    shutil.rmtree(directory, ignore_errors=True)


async def fetch(agent: Agent) -> HybridUpdate:
    reply = await first_reply(
        agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
    )
    return parse_hybrid_response(reply)


async def eventually(predicate: object, what: str, timeout: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def pqc_leaf(update: HybridUpdate) -> bytes:
    return update.svids[0].pqc_chain[0].public_bytes(DER)


@pytest.mark.asyncio
async def test_restarted_agent_serves_kept_credentials_without_asking_the_ca(node: Node) -> None:
    first, _ = node.agent()
    async with first:
        before = await fetch(first)
    assert len(node.ca.requests) == 1
    node.ca.down = True  # the restarted agent must not need the CA at all
    second, _ = node.agent()
    async with second:
        after = await fetch(second)
        assert pqc_leaf(after) == pqc_leaf(before)
        assert after.svids[0].pqc_key.seed() == before.svids[0].pqc_key.seed()
        after.svids[0].verify(classical_bundles=after.classical_bundles, pqc_bundles=after.pqc_bundles)
        assert len(node.ca.requests) == 1
        assert second.metrics.value("spire_pqc_agent_state_total", event="restored") == 1
        # Served, but nothing can be renewed or issued while the CA is down: not ready, and /status says why.
        assert not second.ready
        ca = second.status()["ca"]
        assert ca["answering"] is False and ca["last_success"] is None
        assert ca["last_error"] == "PQC CA unreachable (test)"
        node.ca.down = False
        await eventually(lambda: second.ready, "ready once the CA answers a bundle poll")
        assert second.status()["ca"]["last_error"] is None
        assert len(node.ca.requests) == 1  # the poll, not an issuance


@pytest.mark.asyncio
async def test_keys_kept_before_the_request_survive_a_lost_reply(node: Node) -> None:
    """The CA issued, the reply was lost, the agent crashed: the restarted one asks with the same keys and
    gets the same certificates (the CA's ledger), never a duplicate refusal."""
    node.ca.lose_replies = True
    first, _ = node.agent()
    async with first:
        with pytest.raises(GRPCError):
            await fetch(first)
    node.ca.lose_replies = False
    second, _ = node.agent()
    async with second:
        update = await fetch(second)
        assert {r.mldsa_spki for r in node.ca.requests} == {update.svids[0].pqc_key.public_key().spki()}
        assert second.metrics.value("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 0
        assert second.metrics.value("spire_pqc_agent_pqc_issuance_total", result="success") == 1


@pytest.mark.asyncio
async def test_lost_state_gives_one_duplicate_refusal_surfaced_to_the_workload(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = node.agent()
    async with first:
        await fetch(first)
    for record in node.state_dir.glob(f"*{SUFFIX}"):
        record.unlink()  # an operator wiped the state directory (or it was lost)
    caplog.set_level(logging.INFO)
    second, source = node.agent()
    async with second:
        with pytest.raises(GRPCError) as info:
            await fetch(second)
        assert info.value.status is Status.UNAVAILABLE
        message = info.value.message or ""
        assert "duplicate" in message and "not retried" in message, message
        await asyncio.sleep(0.5)  # ~25 retry periods: none may happen
        assert len(node.ca.requests) == 2
        metrics = second.metrics
        assert metrics.value("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 1
        assert metrics.value("spire_pqc_agent_pqc_refused_identities") == 1
        assert not second.ready
        # The SDK reports why, instead of a bare TimeoutError.
        sdk = HybridX509Source(address=f"unix://{second.socket_path}", retry_initial=0.05, retry_max=0.1)
        try:
            with pytest.raises(UnavailableError, match="duplicate"):
                await sdk.start(timeout=1.0)
            assert len(node.ca.requests) == 2
            # The next classical SVID gets credentials, and the stream delivers them.
            source.rotate()
            await sdk.wait_until_updated(10, since=0)
            assert sdk.svid.classical_chain[0].serial_number == source.svid.leaf.serial_number
        finally:
            await sdk.close()
        await eventually(lambda: second.ready, "ready")
        assert metrics.value("spire_pqc_agent_pqc_refused_identities") == 0
    security_events = [r for r in caplog.records if "security event" in r.getMessage()]
    agent_errors = [r for r in caplog.records if r.levelno == logging.ERROR and "duplicate" in r.getMessage()]
    assert len(security_events) == 1 and len(agent_errors) == 1


@pytest.mark.asyncio
async def test_tampered_certificates_are_replaced_by_the_genuine_ones(node: Node) -> None:
    """Whoever plants certificates of another PQC hierarchy for the kept keys (with a valid checksum)
    gets them refused; the agent asks the CA again with the same keys and serves the genuine ones."""
    first, _ = node.agent()
    async with first:
        genuine = await fetch(first)
    (path,) = node.state_dir.glob(f"*{SUFFIX}")
    record = decode(path.read_bytes(), path=str(path))
    attacker = DevAuthority.generate(TD).hierarchy
    inter = attacker.intermediate
    now = dt.datetime.now(dt.UTC)
    leaf = node.svid.chain_der_list[0]
    window = {"not_before": now - dt.timedelta(minutes=1), "not_after": node.svid.not_after}
    pqc = certs.build_pqc_svid(inter.certificate, inter.key, MLDSA65PrivateKey.from_pkcs8(record.mldsa_pkcs8)
                               .public_key(), ME, trust_domain=TD.name, classical_leaf_der=leaf, **window)  # fmt: skip
    kem = certs.build_kem_certificate(inter.certificate, inter.key, MLKEM768PrivateKey.from_pkcs8(
        record.mlkem_pkcs8).public_key(), ME, trust_domain=TD.name, classical_leaf_der=leaf, **window)  # fmt: skip
    body = json.loads(path.read_bytes().split(b"\n")[0])

    def b64(cert: x509.Certificate) -> str:
        return base64.b64encode(cert.public_bytes(DER)).decode()

    body.update(
        pqc_svid_chain=[b64(pqc), b64(inter.certificate)],
        kem_certificate_chain=[b64(kem), b64(inter.certificate)],
        pqc_bundle=[b64(attacker.root)],
    )
    line = json.dumps(body).encode()
    path.write_bytes(line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n")
    second, _ = node.agent()
    async with second:
        served = await fetch(second)
        assert pqc_leaf(served) == pqc_leaf(genuine) != pqc.public_bytes(DER)
        assert second.metrics.value("spire_pqc_agent_state_total", event="discarded") == 1
        assert len(node.ca.requests) == 2  # asked again with the same keys: the ledger's certificates
        assert second.metrics.value("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 0


@pytest.mark.asyncio
async def test_ready_says_whether_pqc_credentials_are_served(node: Node) -> None:
    agent, _ = node.agent()
    async with agent:
        await eventually(lambda: agent.ready, "ready: the CA answered the first bundle poll")
        node.ca.down = True
        with pytest.raises(GRPCError):
            await fetch(agent)  # a workload asks; the CA is unreachable
        assert not agent.ready  # a caller has no PQC credentials
        node.ca.down = False
        await eventually(lambda: agent.ready, "ready once the CA answers")
        await fetch(agent)


@pytest.mark.asyncio
async def test_ready_follows_the_ca_last_answer_within_the_window(node: Node) -> None:
    """Credentials are served, but the CA stops answering: /ready turns 503 once its last good answer is
    older than pqc.ca_ready_window, and 200 again at its next answer; /status names the CA's error."""
    window = dt.timedelta(seconds=1.5)
    node.config = dataclasses.replace(
        node.config, bundle_refresh_interval=dt.timedelta(seconds=0.2), ca_ready_window=window
    )
    agent, _ = node.agent()
    async with agent:
        await fetch(agent)
        await eventually(lambda: agent.ready, "ready")
        node.ca.down = True
        went_down = time.monotonic()
        await asyncio.sleep(0.5)
        assert agent.ready  # within the window: one lost poll does not flap readiness
        await eventually(lambda: not agent.ready, "not ready after the window", timeout=10)
        assert time.monotonic() - went_down >= window.total_seconds() - 0.25
        ca = agent.status()["ca"]
        assert ca["answering"] is False and ca["ready_window_seconds"] == 1.5
        assert ca["last_error"] == "PQC CA unreachable (test)" and ca["last_success"] is not None
        assert agent.provisioner.serving()  # still serving the credentials it has
        node.ca.down = False
        await eventually(lambda: agent.ready, "ready again at the CA's next answer")
        assert agent.status()["ca"]["last_error"] is None


@pytest.mark.asyncio
async def test_records_go_when_their_classical_svid_expires(node: Node) -> None:
    agent, source = node.agent()
    async with agent:
        source.rotate(ttl=dt.timedelta(seconds=2))
        short = source.svid
        await fetch(agent)  # a workload asks for it
        await eventually((node.state_dir / f"{short.leaf_hash.hex()}{SUFFIX}").exists, "kept")
        await asyncio.sleep(max(0.0, (short.not_after - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
        source.rotate()  # the next state prunes what expired
        await fetch(agent)
        names = {p.name for p in node.state_dir.glob(f"*{SUFFIX}")}
        assert f"{short.leaf_hash.hex()}{SUFFIX}" not in names
        assert f"{source.svid.leaf_hash.hex()}{SUFFIX}" in names
