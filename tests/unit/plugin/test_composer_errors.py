"""The composer's failure policy when the intermediate key file turns into something unusable.

``on_error = "skip"`` must keep SPIRE signing (attributes unchanged, the skip logged and counted)
whatever is wrong with the key, and ``on_error = "fail"`` must fail with a precise message. The key
here is an encrypted PKCS#8 whose inner algorithm cryptography does not implement: its
UnsupportedAlgorithm used to escape every loader, so the composer failed SPIRE's signing even under
"skip" (issue 9). The same path through a real spire-server is in
tests/integration/test_spire_plugin.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc._internal.files import atomic_write
from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import credentialcomposer_pb2 as cc_pb2
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.crypto.keys import PasswordEncryption
from spire_pqc.errors import ConfigError
from spire_pqc.plugin.config import build_config
from spire_pqc.plugin.servicer import CredentialComposerServicer, PluginState
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.oids import ID_SPIRE_PQC_SVID_BINDING
from tests.unit.crypto._pkcs8 import encrypted_pem, unknown_algorithm_pkcs8

PASSWORD = b"correct horse"
SPIFFE_ID = "spiffe://example.org/workload"


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class AbortingContext:
    """What the composer uses of grpc.ServicerContext: abort()."""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


def pem(*certificates: object) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def hierarchy() -> PQCHierarchy:
    return PQCHierarchy.generate(TrustDomain.parse("example.org"))


def plugin_files(directory: Path, hierarchy: PQCHierarchy) -> dict[str, Path]:
    files = {
        "key": directory / "intermediate.key.pem",
        "password": directory / "password",
        "chain": directory / "intermediate.crt.pem",
        "root": directory / "root.crt.pem",
    }
    atomic_write(files["key"], hierarchy.intermediate.key.pem(PasswordEncryption(PASSWORD)))
    atomic_write(files["password"], PASSWORD + b"\n")
    files["chain"].write_bytes(pem(hierarchy.intermediate.certificate, hierarchy.root))
    files["root"].write_bytes(pem(hierarchy.root))
    return files


def hcl(files: dict[str, Path], on_error: str) -> str:
    return "\n".join(
        [
            f'intermediate_key_path = "{files["key"]}"',
            f'intermediate_key_password_file = "{files["password"]}"',
            f'intermediate_cert_path = "{files["chain"]}"',
            f'pqc_bundle_path = "{files["root"]}"',
            f'on_error = "{on_error}"',
        ]
    )


def compose_request() -> cc_pb2.ComposeWorkloadX509SVIDRequest:
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    request = cc_pb2.ComposeWorkloadX509SVIDRequest(spiffe_id=SPIFFE_ID, public_key=spki)
    request.attributes.dns_sans.append("web.example.org")
    return request


def swap_in_unknown_algorithm_key(path: Path) -> None:
    before = os.stat(path)
    atomic_write(path, encrypted_pem(unknown_algorithm_pkcs8(), PASSWORD))
    assert os.stat(path).st_ino != before.st_ino  # the composer notices a new file by its identity


def test_skip_keeps_signing_with_an_unknown_key_algorithm(
    tmp_path: Path, hierarchy: PQCHierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    files = plugin_files(tmp_path, hierarchy)
    state = PluginState()
    state.configure("example.org", hcl(files, "skip"))
    composer = CredentialComposerServicer(state)
    request = compose_request()

    bound = composer.ComposeWorkloadX509SVID(request, AbortingContext())  # type: ignore[arg-type]
    assert [e.oid for e in bound.attributes.extra_extensions] == [ID_SPIRE_PQC_SVID_BINDING]

    swap_in_unknown_algorithm_key(files["key"])
    unchanged = composer.ComposeWorkloadX509SVID(request, AbortingContext())  # type: ignore[arg-type]
    assert unchanged.attributes == request.attributes
    assert state.stats.skipped_unusable_key == 1
    assert state.stats.failed == 0
    skipped = [r for r in caplog.records if "WITHOUT SvidBinding" in r.getMessage()]
    assert len(skipped) == 1
    assert "1.3.6.1.4.1.99999.1" in skipped[0].getMessage()
    assert skipped[0].exc_info is None  # a broken key file is not a bug: one line, no traceback


def test_fail_policy_fails_with_the_precise_reason(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    files = plugin_files(tmp_path, hierarchy)
    state = PluginState()
    state.configure("example.org", hcl(files, "fail"))
    composer = CredentialComposerServicer(state)
    swap_in_unknown_algorithm_key(files["key"])
    with pytest.raises(Aborted) as aborted:
        composer.ComposeWorkloadX509SVID(compose_request(), AbortingContext())  # type: ignore[arg-type]
    assert aborted.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"cannot add SvidBinding for {SPIFFE_ID}" in aborted.value.details
    assert "cannot use the encrypted private key" in aborted.value.details
    assert state.stats.failed == 1


def test_configuration_with_an_unknown_key_algorithm_is_a_config_error(
    tmp_path: Path, hierarchy: PQCHierarchy
) -> None:
    files = plugin_files(tmp_path, hierarchy)
    swap_in_unknown_algorithm_key(files["key"])
    with pytest.raises(ConfigError) as refused:
        build_config("example.org", hcl(files, "skip"))
    assert any(
        p.startswith("intermediate_key_path:") and "cannot use the encrypted private key" in p
        for p in refused.value.problems
    ), refused.value.problems


def test_an_unexpected_exception_still_follows_the_policy(
    tmp_path: Path, hierarchy: PQCHierarchy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: an exception that is not spire-pqc's own (a bug) is still a skip under
    "skip", logged once with its traceback, and SPIRE keeps signing."""
    files = plugin_files(tmp_path, hierarchy)
    state = PluginState()
    state.configure("example.org", hcl(files, "skip"))
    composer = CredentialComposerServicer(state)

    def broken(*args: object) -> NoReturn:
        raise RuntimeError("a bug in the binding code")

    monkeypatch.setattr("spire_pqc.plugin.servicer.binding_extension", broken)
    request = compose_request()
    unchanged = composer.ComposeWorkloadX509SVID(request, AbortingContext())  # type: ignore[arg-type]
    assert unchanged.attributes == request.attributes
    assert state.stats.skipped_unusable_key == 1
    assert [r.exc_info is not None for r in caplog.records if "unexpected error" in r.getMessage()] == [True]
