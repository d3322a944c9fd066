"""The CredentialComposer plugin loaded and exercised by a real spire-server (and spire-agent) v1.15.3."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL

from spire_pqc._internal.files import atomic_write
from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.agent.caclient import issue_request_message
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.request import IssueRequest, build_request
from spire_pqc.channel.bridge import TLSBridge
from spire_pqc.crypto.keys import PasswordEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import BindingError
from spire_pqc.spiffeid import match_id
from spire_pqc.svid import X509Svid, verify_hybrid_svid, verify_svid_binding
from tests.integration.spire import SpireAgent, SpireServer, cleanup, free_port, short_tempdir, spire_bin
from tests.unit.crypto._pkcs8 import encrypted_pem, unknown_algorithm_pkcs8

pytestmark = [pytest.mark.spire, pytest.mark.timeout(900)]

TD = "example.org"
NODE_AGENT = f"spiffe://{TD}/node-agent"


@dataclass
class PQC:
    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / "intermediate.key.pem"

    @property
    def chain(self) -> Path:
        return self.directory / "intermediate.crt.pem"

    @property
    def root(self) -> Path:
        return self.directory / "root.crt.pem"

    def intermediate_key(self) -> MLDSA65PrivateKey:
        return MLDSA65PrivateKey.from_pem(self.key.read_bytes())

    def plugin_data(self, **extra: object) -> dict[str, object]:
        data: dict[str, object] = {
            "intermediate_key_path": str(self.key),
            "intermediate_cert_path": str(self.chain),
            "pqc_bundle_path": str(self.root),
        }
        data.update(extra)
        return data


def spire_pqc_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def pqc(tmp_path_factory: pytest.TempPathFactory) -> PQC:
    directory = tmp_path_factory.mktemp("pqc")
    spire_pqc_cli("ca", "init", "--trust-domain", TD, "--out-dir", str(directory), "--no-encryption")
    spire_pqc_cli(
        "ca", "intermediate", "--trust-domain", TD,
        "--root-dir", str(directory), "--out-dir", str(directory), "--no-encryption",
    )  # fmt: skip
    return PQC(directory)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    cleanup(path)


@pytest.fixture(scope="module")
def server(pqc: PQC) -> Iterator[SpireServer]:
    """One spire-server with the plugin and its PQC CA endpoint, shared by the read-only tests."""
    path = short_tempdir()
    endpoint_port = free_port()
    srv = SpireServer(
        path,
        composer_data=pqc.plugin_data(
            endpoint_listen_address=f"127.0.0.1:{endpoint_port}",
            authorized_agents=[NODE_AGENT],
            ledger_dsn=f"sqlite://{path / 'ledger.db'}",
        ),
    )
    srv.endpoint_port = endpoint_port
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        cleanup(path)


def load_svid(directory: Path) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    chain = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), password=None)
    return chain, key


def mint(srv: SpireServer, spiffe_id: str, out: Path) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    result = srv.mint(spiffe_id, out)
    assert result.returncode == 0, result.stdout + result.stderr
    return load_svid(out)


# --- loading and configuration -----------------------------------------------------------------


def test_spire_server_validate_loads_the_plugin(pqc: PQC, workdir: Path) -> None:
    result = SpireServer(workdir, composer_data=pqc.plugin_data()).validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_the_checkout_wrapper_loads_the_plugin_too(pqc: PQC, workdir: Path) -> None:
    """plugins/spire-pqc-composer (the shell wrapper for a source checkout) execs the same plugin."""
    wrapper = Path(__file__).resolve().parents[2] / "plugins" / "spire-pqc-composer" / "spire-pqc-composer"
    result = SpireServer(workdir, composer_data=pqc.plugin_data(), plugin_cmd=wrapper).validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_spire_server_validate_shows_every_plugin_data_problem(pqc: PQC, workdir: Path) -> None:
    bad: dict[str, object] = {
        "intermediate_key_path": str(workdir / "missing.pem"),
        "intermediate_cert_path": str(pqc.chain),
        "on_error": "maybe",
        "freshness_window": "soon",
        "colour": "blue",
    }
    result = SpireServer(workdir, composer_data=bad).validate()
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for expected in (
        "spire-pqc: colour: unknown key",
        "spire-pqc: pqc_bundle_path: required",
        "spire-pqc: on_error: must be one of skip, fail",
        "spire-pqc: freshness_window: 'soon' is not a duration",
        f"spire-pqc: intermediate_key_path: {workdir / 'missing.pem'}: no such key file",
    ):
        assert expected in out, out


def test_spire_server_run_reports_our_precise_error(pqc: PQC, workdir: Path) -> None:
    srv = SpireServer(workdir, composer_data=pqc.plugin_data(on_error="sometimes"))
    srv.start(wait=False)
    assert srv.proc is not None
    try:
        srv.proc.wait(timeout=60)
    finally:
        srv.stop()
    assert srv.proc.returncode != 0
    assert "on_error: must be one of skip, fail, got 'sometimes'" in srv.log_text()


def _metrics_answer(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return bool(response.status == 200 and b"spire_pqc_plugin_" in response.read())
    except OSError:
        return False


def _eventually(condition: Callable[[], bool], timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_sigusr1_reconfigures_from_plugin_data_file(pqc: PQC, workdir: Path) -> None:
    """SPIRE >= 1.10 re-reads plugin_data_file on SIGUSR1 and calls Configure again on a running plugin."""
    srv = SpireServer(workdir, composer_data=pqc.plugin_data(), composer_data_file=True)
    srv.start()
    try:
        port = free_port()
        assert not _metrics_answer(port)
        srv.write_plugin_data(pqc.plugin_data(metrics_listen_address=f"127.0.0.1:{port}"))
        srv.reload()
        assert _eventually(lambda: _metrics_answer(port)), srv.log_tail()
        # A refused configuration keeps the running one: SPIRE logs our message, the plugin serves on.
        srv.write_plugin_data(pqc.plugin_data(metrics_listen_address=f"127.0.0.1:{port}", on_error="maybe"))
        srv.reload()
        assert _eventually(lambda: "on_error: must be one of skip, fail, got 'maybe'" in srv.log_text()), (
            srv.log_tail()
        )
        assert _metrics_answer(port)
        chain, _ = mint(srv, f"spiffe://{TD}/after-reload", workdir / "m")
        verify_svid_binding(chain[0], [pqc.intermediate_key().public_key()])
        assert srv.proc is not None and srv.proc.poll() is None
    finally:
        srv.stop()


def test_group_readable_key_file_is_refused(pqc: PQC, workdir: Path) -> None:
    loose = workdir / "loose.key.pem"
    loose.write_bytes(pqc.key.read_bytes())
    loose.chmod(0o644)
    result = SpireServer(workdir, composer_data=pqc.plugin_data(intermediate_key_path=str(loose))).validate()
    assert result.returncode != 0
    assert "mode 0644 lets other users access a private key" in result.stdout + result.stderr


# --- composing ---------------------------------------------------------------------------------


def test_x509_mint_svid_carries_a_verifying_binding(server: SpireServer, pqc: PQC, workdir: Path) -> None:
    chain, _ = mint(server, f"spiffe://{TD}/minted", workdir / "m")
    signer = verify_svid_binding(chain[0], [pqc.intermediate_key().public_key()])
    assert signer == pqc.intermediate_key().public_key()
    other = MLDSA65PrivateKey.generate().public_key()
    with pytest.raises(BindingError, match="untrusted intermediate"):
        verify_svid_binding(chain[0], [other])


def test_agent_hands_a_workload_an_svid_with_binding(server: SpireServer, pqc: PQC, workdir: Path) -> None:
    token = server.join_token(f"spiffe://{TD}/node1")
    server.cli("entry", "create", "-parentID", f"spiffe://{TD}/node1", "-spiffeID", f"spiffe://{TD}/app",
               "-selector", f"unix:uid:{os.getuid()}")  # fmt: skip
    agent = SpireAgent(workdir, server)
    try:
        agent.start(token)
        result = agent.fetch_x509(workdir / "fetched")
        assert result.returncode == 0, result.stdout + result.stderr + agent.log_tail()
    finally:
        agent.stop()
    chain = x509.load_pem_x509_certificates((workdir / "fetched" / "svid.0.pem").read_bytes())
    assert (
        verify_svid_binding(chain[0], [pqc.intermediate_key().public_key()])
        == pqc.intermediate_key().public_key()
    )


# --- the PQC CA endpoint -----------------------------------------------------------------------


@dataclass
class EndpointClient:
    bridge: TLSBridge
    stub: ca_pb2_grpc.PQCCertificateAuthorityStub

    def issue(self, request: IssueRequest) -> ca_pb2.IssuePQCSVIDResponse:
        message = issue_request_message(request)
        return self.stub.IssuePQCSVID(message, timeout=20)


def endpoint_client(server: SpireServer, caller_dir: Path) -> EndpointClient:
    chain, key = load_svid(caller_dir)
    bundles = BundleSet.from_certificates(x509.load_pem_x509_certificates(server.bundle_pem()))
    identity = X509Svid.of(chain, key)
    bridge = TLSBridge(
        ("127.0.0.1", server.endpoint_port),
        lambda: identity,
        lambda: bundles,
        match_id(f"spiffe://{TD}/spire/server"),
    )
    return EndpointClient(
        bridge, ca_pb2_grpc.PQCCertificateAuthorityStub(grpc.insecure_channel(bridge.target))
    )


def workload_request(chain: list[x509.Certificate], key: PrivateKeyTypes) -> IssueRequest:
    return build_request(
        tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
        key,
        MLDSA65PrivateKey.generate(),
        MLKEM768PrivateKey.generate().public_key().spki(),
        timestamp_ms=int(time.time() * 1000),
    )


def wait_for_endpoint(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"PQC CA endpoint not listening on {port}")


def test_node_agent_obtains_pqc_svid_and_kem_certificate(server: SpireServer, workdir: Path) -> None:
    wait_for_endpoint(server.endpoint_port)
    mint(server, NODE_AGENT, workdir / "agent")
    chain, key = mint(server, f"spiffe://{TD}/payments", workdir / "wl")
    client = endpoint_client(server, workdir / "agent")
    try:
        request = workload_request(chain, key)
        response = client.issue(request)
        load = x509.load_der_x509_certificate
        pqc_chain = [load(c) for c in response.pqc_svid_chain]
        kem_chain = [load(c) for c in response.kem_certificate_chain]
        result = verify_hybrid_svid(
            chain, pqc_chain, kem_chain,
            classical_bundles=BundleSet.from_certificates(x509.load_pem_x509_certificates(server.bundle_pem())),
            pqc_bundles=BundleSet.from_certificates([load(c) for c in response.pqc_bundle]),
        )  # fmt: skip
        assert str(result.spiffe_id) == f"spiffe://{TD}/payments"
        assert pqc_chain[0].not_valid_after_utc <= chain[0].not_valid_after_utc

        # The same request again is a replay.
        with pytest.raises(grpc.RpcError) as replay:
            client.issue(request)
        assert replay.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "replay" in (replay.value.details() or "")

        # A fresh request for the same classical SVID with other keys is a duplicate (security event).
        with pytest.raises(grpc.RpcError) as duplicate:
            client.issue(workload_request(chain, key))
        assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "duplicate" in (duplicate.value.details() or "")
        assert "security event" in server.log_text()
    finally:
        client.bridge.close()


def test_unauthorised_caller_is_refused(server: SpireServer, workdir: Path) -> None:
    wait_for_endpoint(server.endpoint_port)
    mint(server, f"spiffe://{TD}/intruder", workdir / "intruder")
    chain, key = mint(server, f"spiffe://{TD}/victim", workdir / "wl")
    client = endpoint_client(server, workdir / "intruder")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.issue(workload_request(chain, key))
    finally:
        client.bridge.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"spiffe://{TD}/intruder is not an authorised node agent" in (refused.value.details() or "")


def test_forged_proof_is_refused(server: SpireServer, workdir: Path) -> None:
    wait_for_endpoint(server.endpoint_port)
    mint(server, NODE_AGENT, workdir / "agent")
    chain, key = mint(server, f"spiffe://{TD}/forged", workdir / "wl")
    request = workload_request(chain, key)
    forged = IssueRequest(
        **{**request.__dict__, "mldsa_proof": MLDSA65PrivateKey.generate().sign(b"x", context=b"y")}
    )
    client = endpoint_client(server, workdir / "agent")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.issue(forged)
    finally:
        client.bridge.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "bad-proof" in (refused.value.details() or "")


def test_pyopenssl_client_restricted_to_x25519mlkem768_handshakes(server: SpireServer) -> None:
    wait_for_endpoint(server.endpoint_port)
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    set_groups = SSL._lib.SSL_CTX_set1_curves_list  # type: ignore[attr-defined]
    assert set_groups(ctx._context, b"X25519MLKEM768") == 1
    ctx.set_alpn_protos([b"h2"])
    with socket.create_connection(("127.0.0.1", server.endpoint_port)) as sock:
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        conn.do_handshake()
        assert conn.get_group_name() == "X25519MLKEM768"
        assert conn.get_protocol_version_name() == "TLSv1.3"
        peer = conn.get_peer_cert_chain(as_cryptography=True)
        assert peer
        assert "spiffe://example.org/spire/server" in str(peer[0].extensions)


# --- failure policy ----------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def plugin_pid(srv: SpireServer) -> int:
    assert srv.proc is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        # The console script (spire-pqc-composer) or the checkout's wrapper (python -m spire_pqc.cli.plugin).
        if parent == srv.proc.pid and (
            b"spire-pqc-composer" in cmdline or b"spire_pqc.cli.plugin" in cmdline
        ):
            return int(entry.name)
    raise AssertionError("plugin process not found")


def test_key_removed_default_policy_keeps_signing(pqc: PQC, workdir: Path) -> None:
    key = workdir / "inter.key.pem"
    key.write_bytes(pqc.key.read_bytes())
    key.chmod(0o600)
    srv = SpireServer(workdir, composer_data=pqc.plugin_data(intermediate_key_path=str(key)))
    srv.start()
    try:
        with_binding, _ = mint(srv, f"spiffe://{TD}/before", workdir / "a")
        verify_svid_binding(with_binding[0], [pqc.intermediate_key().public_key()])
        key.unlink()
        without, _ = mint(srv, f"spiffe://{TD}/after", workdir / "b")
        with pytest.raises(BindingError, match="no SvidBinding"):
            verify_svid_binding(without[0], [pqc.intermediate_key().public_key()])
        assert "WITHOUT SvidBinding (on_error=skip" in srv.log_text()
    finally:
        srv.stop()


def test_key_of_unknown_algorithm_default_policy_keeps_signing(pqc: PQC, workdir: Path) -> None:
    """An encrypted key file whose inner algorithm cryptography does not know (its UnsupportedAlgorithm
    used to escape the loader and fail SPIRE's signing under on_error = "skip"; issue 9)."""
    key, password_file, password = workdir / "inter.key.pem", workdir / "password", b"correct horse"
    atomic_write(key, pqc.intermediate_key().pem(PasswordEncryption(password)))
    atomic_write(password_file, password + b"\n")
    srv = SpireServer(
        workdir,
        composer_data=pqc.plugin_data(
            intermediate_key_path=str(key), intermediate_key_password_file=str(password_file)
        ),
    )
    srv.start()
    try:
        with_binding, _ = mint(srv, f"spiffe://{TD}/before", workdir / "a")
        verify_svid_binding(with_binding[0], [pqc.intermediate_key().public_key()])
        atomic_write(key, encrypted_pem(unknown_algorithm_pkcs8(), password))
        without, _ = mint(srv, f"spiffe://{TD}/after", workdir / "b")
        with pytest.raises(BindingError, match="no SvidBinding"):
            verify_svid_binding(without[0], [pqc.intermediate_key().public_key()])
        log = srv.log_text()
        assert "WITHOUT SvidBinding (on_error=skip" in log
        assert "cannot use the encrypted private key" in log
        assert "Traceback" not in log
    finally:
        srv.stop()


def test_key_removed_fail_policy_stops_signing_but_not_health_checks(pqc: PQC, workdir: Path) -> None:
    key = workdir / "inter.key.pem"
    key.write_bytes(pqc.key.read_bytes())
    key.chmod(0o600)
    srv = SpireServer(
        workdir,
        composer_data=pqc.plugin_data(intermediate_key_path=str(key), on_error="fail"),
        extra_env={"SPIRE_PQC_DEBUG": "1"},
    )
    srv.start()
    try:
        mint(srv, f"spiffe://{TD}/before", workdir / "a")
        key.unlink()
        result = srv.mint(f"spiffe://{TD}/after", workdir / "b")
        assert result.returncode != 0
        assert f"spire-pqc: cannot add SvidBinding for spiffe://{TD}/after" in result.stdout + result.stderr
        # SPIRE's CA health check signs spiffe://<td>/for/health/check/only every minute; it must
        # reach the composer and pass even now.
        marks = srv.log_text().count("health check SVID passed through")
        deadline = time.monotonic() + 150
        while (
            srv.log_text().count("health check SVID passed through") == marks and time.monotonic() < deadline
        ):
            time.sleep(2)
        log = srv.log_text()
        assert log.count("health check SVID passed through") > marks, (
            "no CA health check reached the composer"
        )
        failures = [
            line for line in log.splitlines() if "for/health/check/only" in line and "level=error" in line
        ]
        assert failures == []
        assert srv.cli("healthcheck").returncode == 0
    finally:
        srv.stop()


@pytest.mark.slow
def test_thousand_mints_with_flat_plugin_memory(pqc: PQC, workdir: Path) -> None:
    srv = SpireServer(workdir, composer_data=pqc.plugin_data())
    srv.start()
    trusted = [pqc.intermediate_key().public_key()]
    try:
        pid = plugin_pid(srv)
        samples = {}
        for index in range(1000):
            chain, _ = mint(srv, f"spiffe://{TD}/bulk/{index}", workdir / "bulk")
            verify_svid_binding(chain[0], trusted)
            if index in (99, 999):
                samples[index] = _rss_kib(pid)
        growth = samples[999] - samples[99]
        print(
            f"\nplugin RSS after 100 mints {samples[99]} KiB, after 1000 {samples[999]} KiB (+{growth} KiB)"
        )
        assert growth < 8 * 1024, f"plugin RSS grew by {growth} KiB over 900 mints"
    finally:
        srv.stop()


def test_plugin_checksum_mismatch_is_refused_by_spire(pqc: PQC, workdir: Path) -> None:
    srv = SpireServer(workdir, composer_data=pqc.plugin_data())
    config = srv.write_config().read_text()
    digest = hashlib.sha256(b"not the plugin").hexdigest()
    srv.config_path.write_text(
        "\n".join(
            f'        plugin_checksum = "{digest}"' if "plugin_checksum" in line else line
            for line in config.splitlines()
        )
    )
    result = subprocess.run(
        [str(spire_bin("spire-server")), "validate", "-config", str(srv.config_path)],
        capture_output=True, text=True, timeout=60, env=srv.env(), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "checksums did not match" in result.stdout + result.stderr


def test_spire_server_validate_leaves_no_plugin_directory(pqc: PQC, workdir: Path) -> None:
    """`spire-server validate` kills the plugin without a Shutdown: nothing of ours may stay in TMPDIR."""
    tmp = workdir / "tmp"
    tmp.mkdir()
    for _ in range(2):
        result = SpireServer(
            workdir, composer_data=pqc.plugin_data(), extra_env={"TMPDIR": str(tmp)}
        ).validate()
        assert result.returncode == 0, result.stdout + result.stderr
    time.sleep(0.5)
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("spq-")]
