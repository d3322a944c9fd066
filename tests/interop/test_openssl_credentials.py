"""Our PQC certificates against the OpenSSL >= 3.5 command line, in both directions.

OpenSSL (Debian trixie's, through the `make openssl` wrapper) is an independent X.509 implementation
of RFC 9881 (ML-DSA in certificates) and RFC 9935 (ML-KEM in certificates). A missing or too old
OpenSSL fails these tests, with a message saying to run `make openssl`; they never skip.

What OpenSSL 3.5 accepts (observed with 3.5.9, and asserted below so a change is noticed):

* PQC root → intermediate → PQC SVID: ``openssl verify -x509_strict -CAfile root -untrusted inter``
  passes, with no purpose, with ``-purpose sslserver`` and with ``-purpose sslclient``.
* PQC root → intermediate → KEM certificate: passes with ``-x509_strict`` and no purpose (OpenSSL
  then checks no key usage of the leaf), with ``-purpose any`` and, notably, with ``-purpose
  sslserver`` (OpenSSL's TLS-server purpose accepts keyEncipherment, meant for RSA key transport).
  ``-purpose sslclient`` refuses it ("unsuitable certificate purpose": a TLS client needs
  digitalSignature or keyAgreement). Our own verifier never lets a KEM certificate authenticate
  anything (tests/unit/credentials: "kem-cert-as-pqc-svid").
* A self-signed ML-DSA-65 certificate from ``openssl req -x509`` carries no keyUsage by default;
  its signature verifies with ours, and our PQC chain verifier accepts it as a root: an absent
  keyUsage does not restrict the key (RFC 5280 §4.2.1.3), while a present one must include
  keyCertSign.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.bundle import BundleSet
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.errors import NotConfiguredError
from spire_pqc.svid import verify_pqc_svid
from spire_pqc.x509 import certs
from spire_pqc.x509.path import verify_pqc_chain

from ..unit.credentials.pki import Domain, Minted, pem

pytestmark = pytest.mark.openssl35

SPIFFE_ID = "spiffe://example.org/openssl/leaf"


@pytest.fixture(scope="module")
def openssl() -> OpenSSLCli:
    try:
        return find_openssl35()
    except NotConfiguredError as exc:
        problem = str(exc)  # says to run `make openssl`
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.create("example.org")


@pytest.fixture(scope="module")
def minted(domain: Domain) -> Minted:
    return domain.mint()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, domain: Domain, minted: Minted) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("openssl-credentials")
    contents = {
        "root": pem([domain.hierarchy.root]),
        "inter": pem([domain.intermediate]),
        "pqc": pem([minted.pqc_leaf]),
        "kem": pem([minted.kem_leaf]),
        "classical": pem([minted.classical_leaf]),
        "other-root": pem([Domain.create("example.org").hierarchy.root]),
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = out / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def verify(
    openssl: OpenSSLCli, files: dict[str, Path], leaf: str, *flags: str, root: str = "root"
) -> tuple[int, str]:
    result = openssl.run(
        ["verify", *flags, "-CAfile", str(files[root]), "-untrusted", str(files["inter"]), str(files[leaf])],
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


# --- OpenSSL verifies our chains -----------------------------------------------------------------


@pytest.mark.parametrize(
    "purpose", [(), ("-purpose", "sslserver"), ("-purpose", "sslclient"), ("-purpose", "any")]
)
def test_openssl_verifies_pqc_svid_chain(
    openssl: OpenSSLCli, files: dict[str, Path], purpose: tuple[str, ...]
) -> None:
    code, output = verify(openssl, files, "pqc", "-x509_strict", *purpose)
    assert code == 0, output
    assert f"{files['pqc']}: OK" in output


@pytest.mark.parametrize("purpose", [(), ("-purpose", "any"), ("-purpose", "sslserver")])
def test_openssl_verifies_kem_certificate_chain(
    openssl: OpenSSLCli, files: dict[str, Path], purpose: tuple[str, ...]
) -> None:
    code, output = verify(openssl, files, "kem", "-x509_strict", *purpose)
    assert code == 0, output
    assert f"{files['kem']}: OK" in output


def test_openssl_refuses_kem_certificate_as_tls_client(openssl: OpenSSLCli, files: dict[str, Path]) -> None:
    code, output = verify(openssl, files, "kem", "-x509_strict", "-purpose", "sslclient")
    assert code != 0
    assert "unsuitable certificate purpose" in output


def test_openssl_refuses_our_chain_under_another_root(openssl: OpenSSLCli, files: dict[str, Path]) -> None:
    """The positive results above mean something: the same chain under an unrelated root fails."""
    code, output = verify(openssl, files, "pqc", "-x509_strict", root="other-root")
    assert code != 0
    assert "unable to get" in output or "signature failure" in output, output


def test_openssl_shows_algorithms_and_uri_san(
    openssl: OpenSSLCli, files: dict[str, Path], minted: Minted
) -> None:
    pqc = openssl.run_text(["x509", "-text", "-noout", "-in", str(files["pqc"])])
    assert re.search(r"Public Key Algorithm: ML-DSA-65", pqc)
    assert re.search(r"Signature Algorithm: ML-DSA-65", pqc)
    assert f"URI:{minted.spiffe_id}" in pqc
    assert "Digital Signature" in pqc
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in pqc
    kem = openssl.run_text(["x509", "-text", "-noout", "-in", str(files["kem"])])
    assert "Public Key Algorithm: ML-KEM-768" in kem
    assert "Signature Algorithm: ML-DSA-65" in kem
    assert f"URI:{minted.spiffe_id}" in kem
    assert re.search(r"Key Usage: critical\s+Key Encipherment\s", kem)
    # The RFC 9763 RelatedCertificate extension is carried (OpenSSL prints it by OID).
    assert "1.3.6.1.5.5.7.1.36" in pqc and "1.3.6.1.5.5.7.1.36" in kem


def test_openssl_reads_our_public_key_as_we_encode_it(
    openssl: OpenSSLCli, files: dict[str, Path], minted: Minted
) -> None:
    spki_der = openssl.run(["x509", "-in", str(files["pqc"]), "-noout", "-pubkey"]).stdout
    der = openssl.run(["pkey", "-pubin", "-outform", "DER"], stdin=spki_der).stdout
    assert der == minted.mldsa_key.public_key().spki()


# --- we verify OpenSSL's certificates ----------------------------------------------------------


def openssl_root(openssl: OpenSSLCli, out: Path, *extra: str) -> tuple[Path, Path]:
    key, cert = out / "oroot.key", out / "oroot.pem"
    openssl.run([
        "req", "-x509", "-newkey", "ML-DSA-65", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
        "-subj", "/O=openssl/CN=openssl PQC root", "-addext", "subjectAltName=URI:spiffe://example.org", *extra,
    ])  # fmt: skip
    return key, cert


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_openssl_self_signed_mldsa_certificate_verifies_with_ours(
    openssl: OpenSSLCli, tmp_path: Path
) -> None:
    _, path = openssl_root(openssl, tmp_path)
    cert = load(path)
    assert cert.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"
    key = certs.mldsa_public_key(cert)
    assert certs.check_mldsa_signature(cert, key)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    # One flipped signature bit, and ours says no.
    raw = bytearray(cert.public_bytes(serialization.Encoding.DER))
    raw[-7] ^= 0x01
    assert not certs.check_mldsa_signature(x509.load_der_x509_certificate(bytes(raw)), key)
    # Without keyUsage (OpenSSL's default here) the CA key is unrestricted (RFC 5280 §4.2.1.3).
    assert verify_pqc_chain([cert], [cert], at=dt.datetime.now(dt.UTC), spiffe_id=None) == [cert]


def test_openssl_root_and_leaf_verify_as_pqc_svid(openssl: OpenSSLCli, tmp_path: Path) -> None:
    """OpenSSL makes the root and signs the leaf; our verifier accepts the chain and the SVID rules."""
    root_key, root_path = openssl_root(
        openssl,
        tmp_path,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    leaf_key, csr, leaf_path = tmp_path / "leaf.key", tmp_path / "leaf.csr", tmp_path / "leaf.pem"
    openssl.run(
        [
            "req",
            "-new",
            "-newkey",
            "ML-DSA-65",
            "-nodes",
            "-keyout",
            str(leaf_key),
            "-out",
            str(csr),
            "-subj",
            "/CN=leaf",
        ]
    )
    ext = tmp_path / "leaf.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:{SPIFFE_ID}\n"
    )
    openssl.run([
        "x509", "-req", "-in", str(csr), "-CA", str(root_path), "-CAkey", str(root_key), "-days", "1",
        "-extfile", str(ext), "-out", str(leaf_path),
    ])  # fmt: skip
    root, leaf = load(root_path), load(leaf_path)
    now = dt.datetime.now(dt.UTC)
    assert verify_pqc_chain([root], [root], at=now, spiffe_id=None) == [root]
    assert verify_pqc_chain([leaf], [root], at=now, spiffe_id=SPIFFE_ID) == [root]
    spiffe_id, path = verify_pqc_svid([leaf], BundleSet.from_certificates([root]), at=now)
    assert str(spiffe_id) == SPIFFE_ID
    assert path == [root]
    assert not certs.check_mldsa_signature(
        leaf, certs.mldsa_public_key(leaf)
    )  # signed by the root, not itself


def test_openssl_loads_our_seed_form_private_key(openssl: OpenSSLCli, tmp_path: Path, minted: Minted) -> None:
    key_path = tmp_path / "ours.key"
    key_path.write_bytes(minted.mldsa_key.pem(NoEncryption()))
    der = openssl.run(["pkey", "-in", str(key_path), "-pubout", "-outform", "DER"]).stdout
    assert der == minted.mldsa_key.public_key().spki()
