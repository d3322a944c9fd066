"""SPIRE HA: two real spire-server v1.15.3 sharing one PostgreSQL 15, each with our plugin and its own
intermediate PQC CA under one PQC root (the sibling trusted), and one PostgreSQL ledger for both.

* the same classical SVID requested at both endpoints at once with different keys: one issuance,
  the other refused as ``duplicate`` (and logged as a security event); a nonce used at A is a
  replay at B;
* credentials through A, through B, and mixed (SPIRE's binding by one server, PQC by the other)
  verify against either server's bundle;
* PostgreSQL stopped: classical signing (with bindings) goes on, PQC issuance is UNAVAILABLE with
  reason ``unavailable`` at both endpoints, and resumes when PostgreSQL is back;
* hybrid JWT-SVIDs: each server signs with its own PQC JWT key, and a token of either validates
  with the keys of both merged (what an agent with both ``ca.addresses`` does at its bundle refresh);
* a spire-pqc agent with ``ca.addresses = [A, B]`` under rotation: A SIGKILLed → the next rotations
  get PQC credentials through B, classical SVIDs keep flowing; A restarted → it issues again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2
from spire_pqc.agent.caclient import refusal_of
from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.bench.postgres import FAST, PostgresCluster
from spire_pqc.bundle import BundleSet
from spire_pqc.errors import RefusalReason, TokenKeyError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle, merge_jwks
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import verify_hybrid_svid
from spire_pqc.workload.source import HybridX509Source
from spire_pqc.x509 import certs
from tests.integration.spire import SpireAgent, SpireServer, cleanup, free_port, short_tempdir
from tests.integration.test_spire_plugin import endpoint_client, load_svid, workload_request

pytestmark = [pytest.mark.spire, pytest.mark.timeout(900)]

TD = "example.org"
NODE_AGENT = f"spiffe://{TD}/node-agent"  # a caller of the endpoints in the request-level tests
DELEGATE = f"spiffe://{TD}/spire-pqc/agent"
NODE = f"spiffe://{TD}/node1"
WORKLOAD = f"spiffe://{TD}/app"


def cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", *args], check=True, capture_output=True, timeout=120
    )


@dataclass
class HA:
    workdir: Path
    pg: PostgresCluster
    a: SpireServer
    b: SpireServer
    root: Path
    metrics: dict[str, int]
    intermediates: dict[str, x509.Certificate]

    def servers(self) -> tuple[SpireServer, SpireServer]:
        return self.a, self.b

    def classical_bundles(self, server: SpireServer) -> BundleSet:
        return BundleSet.from_certificates(x509.load_pem_x509_certificates(server.bundle_pem()))

    def pqc_bundles(self) -> BundleSet:
        return BundleSet.from_certificates(x509.load_pem_x509_certificates(self.root.read_bytes()))

    def scrape(self, name: str) -> str:
        url = f"http://127.0.0.1:{self.metrics[name]}/metrics"
        body: bytes = urllib.request.urlopen(url, timeout=10).read()
        return body.decode()

    def mint(self, server: SpireServer, spiffe_id: str, name: str) -> tuple[list[x509.Certificate], Any]:
        out = self.workdir / "minted" / name
        result = server.mint(spiffe_id, out)
        assert result.returncode == 0, result.stdout + result.stderr
        return load_svid(out)


def _server(
    name: str, workdir: Path, pqc: Path, sibling: Path, pg: PostgresCluster, metrics: int
) -> SpireServer:
    endpoint = free_port()
    srv = SpireServer(
        workdir / name,
        composer_data={
            "intermediate_key_path": str(pqc / name / "intermediate.key.pem"),
            "intermediate_cert_path": str(pqc / name / "intermediate.crt.pem"),
            "pqc_bundle_path": str(pqc / "root" / "root.crt.pem"),
            "trusted_intermediates_path": str(sibling),
            "endpoint_listen_address": f"127.0.0.1:{endpoint}",
            "authorized_agents": [NODE_AGENT, DELEGATE],
            "ledger_dsn": pg.dsn("ledger"),
            "ledger_password_file": str(pg.write_password_file(workdir / f"{name}.ledger-password")),
            "metrics_listen_address": f"127.0.0.1:{metrics}",
            "freshness_window": "60s",
        },
        datastore_type="postgres",
        datastore_connection=pg.spire_connection_string("spire"),
    )
    srv.endpoint_port = endpoint
    return srv


def _until(what: str, check: Any, timeout: float = 180, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout}s (last error: {last!r})")


@pytest.fixture(scope="module")
def ha() -> Iterator[HA]:
    workdir = short_tempdir()
    pqc = workdir / "pqc"
    cli("ca", "init", "--trust-domain", TD, "--out-dir", str(pqc / "root"), "--no-encryption")
    intermediates = {}
    for name in ("a", "b"):
        cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(pqc / "root"),
            "--out-dir", str(pqc / name), "--no-encryption")  # fmt: skip
        intermediates[name] = x509.load_pem_x509_certificates(
            (pqc / name / "intermediate.crt.pem").read_bytes()
        )[0]
        (pqc / f"{name}.only.pem").write_bytes(intermediates[name].public_bytes(serialization.Encoding.PEM))
    pg = PostgresCluster(settings=FAST)
    pg.start()
    servers: list[SpireServer] = []
    try:
        pg.create_database("spire")
        pg.create_database("ledger")
        metrics = {"a": free_port(), "b": free_port()}
        a = _server("a", workdir, pqc, pqc / "b.only.pem", pg, metrics["a"])
        b = _server("b", workdir, pqc, pqc / "a.only.pem", pg, metrics["b"])
        for srv in (a, b):  # one after the other: SPIRE migrates the shared datastore on start
            srv.start()
            servers.append(srv)
        ha = HA(workdir, pg, a, b, pqc / "root" / "root.crt.pem", metrics, intermediates)
        # Each server publishes its own CA into the shared bundle; wait until both see both.
        for srv in (a, b):
            _until(
                "both CAs in the bundle",
                lambda s=srv: len(x509.load_pem_x509_certificates(s.bundle_pem())) >= 2,
            )
        # ...and until each endpoint trusts SVIDs signed by the other server (its bundle refresh).
        for srv, other in ((a, b), (b, a)):
            ha.mint(other, NODE_AGENT, f"caller-{other.port}")

            def cross_ok(srv: SpireServer = srv, other: SpireServer = other) -> bool:
                chain, key = ha.mint(other, f"{WORKLOAD}/warmup", f"warm-{srv.port}")
                client = endpoint_client(srv, ha.workdir / "minted" / f"caller-{other.port}")
                try:
                    client.issue(workload_request(chain, key))
                    return True
                finally:
                    client.bridge.close()

            _until(f"endpoint {srv.endpoint_port} trusting the other server", cross_ok, timeout=240, every=3)
        yield ha
    finally:
        for srv in servers:
            srv.stop()
        pg.close()
        cleanup(workdir)


def _client(ha: HA, server: SpireServer, caller_from: SpireServer) -> Any:
    """A node-agent client of ``server``'s endpoint (reads SPIRE's bundle: needs SPIRE's datastore up)."""
    caller = ha.workdir / "minted" / f"caller-{caller_from.port}"
    if not caller.exists():
        ha.mint(caller_from, NODE_AGENT, f"caller-{caller_from.port}")
    return endpoint_client(server, caller)


def _issue_at(ha: HA, server: SpireServer, caller_from: SpireServer, request: Any) -> Any:
    client = _client(ha, server, caller_from)
    try:
        return client.issue(request)
    finally:
        client.bridge.close()


def _reason(error: grpc.RpcError) -> RefusalReason | None:
    refusal = refusal_of(error)  # type: ignore[arg-type]
    return refusal[0] if refusal is not None else None


def test_same_svid_at_both_endpoints_at_once_is_issued_once(ha: HA) -> None:
    rounds = 4
    for index in range(rounds):
        chain, key = ha.mint(ha.servers()[index % 2], f"{WORKLOAD}/race{index}", f"race{index}")
        requests = [workload_request(chain, key), workload_request(chain, key)]  # different PQC keys
        start = threading.Barrier(2)
        outcomes: list[object] = [None, None]

        def send(
            i: int,
            requests: list[Any] = requests,
            outcomes: list[object] = outcomes,
            start: threading.Barrier = start,
        ) -> None:
            start.wait(timeout=60)
            try:
                outcomes[i] = _issue_at(ha, ha.servers()[i], ha.a, requests[i])
            except grpc.RpcError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert len(refused) == 1, outcomes
        assert refused[0].code() == grpc.StatusCode.ALREADY_EXISTS
        assert _reason(refused[0]) is RefusalReason.DUPLICATE
    logs = ha.a.log_text() + ha.b.log_text()
    assert logs.count("security event: second PQC issuance with different keys refused") >= rounds
    duplicates = sum(
        float(line.rsplit(" ", 1)[1])
        for name in ("a", "b")
        for line in ha.scrape(name).splitlines()
        if line.startswith('spire_pqc_ca_issuance_total{reason="duplicate",result="refused"}')
    )
    assert duplicates >= rounds


def test_a_nonce_used_at_one_server_is_a_replay_at_the_other(ha: HA) -> None:
    chain, key = ha.mint(ha.a, f"{WORKLOAD}/replay", "replay")
    request = workload_request(chain, key)
    _issue_at(ha, ha.a, ha.a, request)
    with pytest.raises(grpc.RpcError) as info:
        _issue_at(ha, ha.b, ha.a, request)
    assert _reason(info.value) is RefusalReason.REPLAY


def test_credentials_through_either_server_and_mixed_verify_everywhere(ha: HA) -> None:
    load = x509.load_der_x509_certificate
    for signer, issuer in ((ha.a, ha.a), (ha.b, ha.b), (ha.a, ha.b), (ha.b, ha.a)):
        chain, key = ha.mint(signer, WORKLOAD, f"rot-{signer.port}-{issuer.port}")
        response = _issue_at(ha, issuer, signer, workload_request(chain, key))
        pqc = [load(c) for c in response.pqc_svid_chain]
        kem = [load(c) for c in response.kem_certificate_chain]
        issuer_name = "a" if issuer is ha.a else "b"
        assert pqc[1] == ha.intermediates[issuer_name]
        for verifier in ha.servers():
            verified = verify_hybrid_svid(
                chain,
                pqc,
                kem,
                classical_bundles=ha.classical_bundles(verifier),
                pqc_bundles=ha.pqc_bundles(),
            )
            signer_name = "a" if signer is ha.a else "b"
            assert verified.binding_intermediate == certs.mldsa_public_key(ha.intermediates[signer_name])


def test_hybrid_jwt_svids_signed_at_either_server_validate_with_the_merged_keys(ha: HA) -> None:
    """Each server certifies its own PQC JWT signer under its own intermediate; each FetchPQCBundle
    carries its own key; merged as a node agent with both ``ca.addresses`` merges them, a token whose
    PQC part either server signed (SPIRE's classical part minted at that server) validates."""
    td = TrustDomain.parse(TD)
    tokens, jwks = [], []
    for server in ha.servers():
        classical = server.cli(
            "jwt", "mint", "-spiffeID", WORKLOAD, "-audience", "a", "-ttl", "5m"
        ).stdout.strip()
        client = _client(ha, server, server)
        try:
            signed = client.stub.SignJWTSVID(ca_pb2.SignJWTSVIDRequest(classical_token=classical), timeout=20)
            bundle = client.stub.FetchPQCBundle(ca_pb2.FetchPQCBundleRequest(), timeout=20)
        finally:
            client.bridge.close()
        tokens.append(HybridJwtSvid(classical, signed.pqc_token))
        jwks.append(bytes(bundle.pqc_jwt_bundle))
        assert PqcJwtBundle.parse(td, bundle.pqc_jwt_bundle) == PqcJwtBundle.parse(td, signed.pqc_jwt_bundle)
    own = [PqcJwtBundle.parse(td, j) for j in jwks]
    assert len(own[0]) == len(own[1]) == 1 and set(k.kid for k in own[0]).isdisjoint(k.kid for k in own[1])
    merged = PqcJwtBundle.parse(td, merge_jwks(jwks))
    assert len(merged) == 2
    spire_jwt = {td: ha.a.cli("bundle", "show", "-format", "spiffe").stdout.encode()}
    for index, token in enumerate(tokens):
        verified = validate(
            token, "a", jwt_bundles=spire_jwt, pqc_jwt_bundles={td: merged}, pqc_bundles=ha.pqc_bundles()
        )
        assert str(verified.spiffe_id) == WORKLOAD
        with pytest.raises(TokenKeyError):  # the other server's key alone does not do
            validate(token, "a", jwt_bundles=spire_jwt, pqc_jwt_bundles={td: own[1 - index]},
                     pqc_bundles=ha.pqc_bundles())  # fmt: skip


def _bindings_added(metrics: str) -> float:
    prefix = 'spire_pqc_plugin_bindings_total{result="added"} '
    return float(next(line for line in metrics.splitlines() if line.startswith(prefix))[len(prefix) :])


def test_postgres_stopped_classical_goes_on_pqc_unavailable_then_resumes(ha: HA) -> None:
    # The test's own clients read SPIRE's bundle (`bundle show`), which needs SPIRE's datastore: make
    # them while PostgreSQL is up. (The plugin's endpoint gets the bundle from SPIRE's IdentityProvider.)
    clients = [_client(ha, srv, ha.a) for srv in ha.servers()]
    # The SVID whose PQC issuance is tried during the outage: signed by SPIRE before it, but never issued.
    chain, key = ha.mint(ha.a, f"{WORKLOAD}/during-outage", "outage")
    assert any(e.oid.dotted_string == "2.25.1713860176.1" for e in chain[0].extensions)
    added = _bindings_added(ha.scrape("a"))
    ha.pg.stop()
    try:
        # SPIRE still signs, and our composer still adds its binding (it needs no database). The
        # `x509 mint` command may fail all the same: after MintX509SVID it asks for the bundle
        # (GetBundle), which reads SPIRE's datastore once SPIRE's cached copy is stale, so whether it
        # exits 0 depends on timing. What SPIRE signed is counted by the composer.
        signed = ha.a.mint(f"{WORKLOAD}/signed-in-outage", ha.workdir / "minted" / "signed-in-outage")
        if signed.returncode != 0:
            assert "bundle" in (signed.stdout + signed.stderr).lower(), signed.stdout + signed.stderr
        assert _bindings_added(ha.scrape("a")) >= added + 1
        for client in clients:
            with pytest.raises(grpc.RpcError) as info:
                client.issue(workload_request(chain, key))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _reason(info.value) is RefusalReason.UNAVAILABLE
            assert f"issuance ledger postgresql://spire_pqc@127.0.0.1:{ha.pg.port}/ledger" in (
                info.value.details() or ""
            )
        assert "spire_pqc_ca_ledger_up 0.0" in ha.scrape("a")
        log = ha.a.log_text()
        assert f"issuance ledger postgresql://spire_pqc@127.0.0.1:{ha.pg.port}/ledger is unavailable" in log
        assert ha.pg.password not in log and ha.pg.password not in ha.b.log_text()
    finally:
        for client in clients:
            client.bridge.close()
        ha.pg.start()
    _until(
        "PQC issuance after PostgreSQL returned",
        lambda: _issue_at(ha, ha.a, ha.a, workload_request(chain, key)),
        timeout=120,
    )
    assert "spire_pqc_ca_ledger_up 1.0" in ha.scrape("a")


@pytest.mark.asyncio
async def test_sigkill_a_mid_rotation_pqc_continues_through_b_and_a_rejoins(ha: HA) -> None:
    workdir = ha.workdir / "agentstack"
    spire_agent = SpireAgent(workdir, ha.b, authorized_delegates=[DELEGATE])  # SPIRE's agent uses B
    token = await asyncio.to_thread(ha.b.join_token, NODE)
    for spiffe_id, ttl in ((DELEGATE, 3600), (WORKLOAD, 20)):
        await asyncio.to_thread(
            ha.b.cli, "entry", "create", "-parentID", NODE, "-spiffeID", spiffe_id,
            "-selector", f"unix:uid:{os.getuid()}", "-x509SVIDTTL", str(ttl),
        )  # fmt: skip
    await asyncio.to_thread(spire_agent.start, token)
    try:
        result = await asyncio.to_thread(spire_agent.fetch_x509, workdir / "fetched")
        assert result.returncode == 0, result.stdout + result.stderr
        config = parse(
            {
                "agent": {"socket_path": str(workdir / "pqc.sock"), "shutdown_grace": "1s"},
                "source": {
                    "kind": "spire",
                    "spire": {
                        "admin_socket_path": str(spire_agent.admin_socket),
                        "workload_socket_path": str(spire_agent.socket),
                        "agent_id": DELEGATE,
                    },
                },
                "ca": {"addresses": [f"127.0.0.1:{ha.a.endpoint_port}", f"127.0.0.1:{ha.b.endpoint_port}"]},
                "pqc": {"retry_initial": "0.5s", "retry_max": "3s"},
            }
        )
        async with Agent(config, first_pqc_wait=60.0) as agent:
            deadline = time.monotonic() + 90
            while not agent.ready:
                assert time.monotonic() < deadline, "the spire-pqc agent never became ready"
                await asyncio.sleep(0.2)
            source = HybridX509Source(address=f"unix://{config.socket_path}")
            await source.start(timeout=120)
            try:
                await _rotations_issued_by(ha, source, "a", count=1)
                ha.a.kill()  # mid-traffic: the agent is issuing every rotation
                killed = time.monotonic()
                await _rotations_issued_by(ha, source, "b", count=2)
                assert time.monotonic() - killed < 90
                await asyncio.to_thread(ha.a.start)
                await _rotations_issued_by(ha, source, "a", count=1, timeout=240)
            finally:
                await source.close()
    finally:
        spire_agent.stop()
        if ha.a.proc is None or ha.a.proc.poll() is not None:
            ha.a.start()


async def _rotations_issued_by(
    ha: HA, source: HybridX509Source, name: str, *, count: int, timeout: float = 150
) -> None:
    """Wait for ``count`` new classical SVIDs whose PQC credentials came from server ``name``; each
    verifies completely (classical flowing, PQC through that server, nothing left without PQC)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        current = next((s for s in source.svids if str(s.spiffe_id) == WORKLOAD), None)
        if current is not None and current.pqc_chain[1] == ha.intermediates[name]:
            serial = current.classical_chain[0].serial_number
            if serial not in seen:
                current.verify(classical_bundles=ha.classical_bundles(ha.b), pqc_bundles=ha.pqc_bundles())
                seen.add(serial)
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(seen)} of {count} rotations issued by server {name}"
        try:
            await source.wait_until_updated(timeout=min(remaining, 10.0))
        except TimeoutError:
            continue
