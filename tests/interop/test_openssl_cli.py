"""Interop with the OpenSSL >= 3.5 command line (Debian trixie's, installed by `make openssl`).

The wrapper must be present: a missing or too old OpenSSL fails these tests (never skips them), with a
message saying to run `make openssl`. OpenSSL is an independent implementation of FIPS 203/204 and of the
RFC 9881 / RFC 9935 key formats, so keys, signatures and ciphertexts crossing in both directions check our
encodings and our context-string handling against it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spire_pqc.bench.crypto import openssl_speed
from spire_pqc.bench.openssl_cli import OpenSSLCli, find_openssl35
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidKeyError, InvalidSignatureError, NotConfiguredError

pytestmark = pytest.mark.openssl35

CONTEXT = b"spire-pqc/interop/v1"


@pytest.fixture(scope="module")
def openssl() -> OpenSSLCli:
    try:
        return find_openssl35()
    except NotConfiguredError as exc:
        problem = str(exc)  # says to run `make openssl`
    pytest.fail(problem, pytrace=False)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the wrapper itself ------------------------------------------------------------------------


def test_version_is_at_least_3_5(openssl: OpenSSLCli) -> None:
    text = openssl.run_text(["version"])
    assert re.match(r"OpenSSL 3\.(?:[5-9]|\d\d)\.\d+|OpenSSL [4-9]\.", text), text
    assert openssl.version[:2] >= (3, 5)
    # The wrapper runs trixie's libcrypto, not the host's 3.0 (the "Library:" part would say otherwise).
    assert "Library: OpenSSL 3.0" not in text


def test_lists_ml_kem_ml_dsa_and_the_hybrid_group(openssl: OpenSSLCli) -> None:
    assert "ML-KEM-768" in openssl.run_text(["list", "-kem-algorithms"])
    assert "ML-DSA-65" in openssl.run_text(["list", "-signature-algorithms"])
    assert "X25519MLKEM768" in openssl.run_text(["list", "-tls-groups"]).split(":")


def test_missing_wrapper_is_reported_with_the_make_target(tmp_path: Path) -> None:
    with pytest.raises(NotConfiguredError, match="make openssl"):
        find_openssl35(tmp_path / "no-such-openssl")


# --- ML-DSA-65 ---------------------------------------------------------------------------------


def test_openssl_default_ml_dsa_key_is_refused_seed_only_key_loads(
    openssl: OpenSSLCli, tmp_path: Path
) -> None:
    # OpenSSL 3.5 writes the "both" form (seed + expanded key) by default; we accept only seed form
    # (docs/formats.md, "Private keys"), which OpenSSL writes when asked with ml-dsa.output_formats=seed-only.
    default_pem = openssl.run(["genpkey", "-algorithm", "ML-DSA-65"]).stdout
    with pytest.raises(InvalidKeyError, match="seed"):
        MLDSA65PrivateKey.from_pem(default_pem)

    key_file = tmp_path / "seed.pem"
    openssl.run(["genpkey", "-algorithm", "ML-DSA-65", "-provparam", "ml-dsa.output_formats=seed-only",
                 "-out", str(key_file)])  # fmt: skip
    ours = MLDSA65PrivateKey.from_pem(key_file.read_bytes())
    their_public = openssl.run(["pkey", "-in", str(key_file), "-pubout"]).stdout
    assert MLDSA65PublicKey.from_pem(their_public) == ours.public_key()
    # Same key, so our PKCS#8 is byte-identical to OpenSSL's seed-only output.
    assert ours.pem(NoEncryption()) == key_file.read_bytes()


def test_openssl_signature_verifies_with_ours(openssl: OpenSSLCli, tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    openssl.run(["genpkey", "-algorithm", "ML-DSA-65", "-provparam", "ml-dsa.output_formats=seed-only",
                 "-out", str(key_file)])  # fmt: skip
    message = _write(tmp_path / "msg", b"signed by openssl, verified by spire-pqc")
    signature = openssl.run(["pkeyutl", "-sign", "-inkey", str(key_file), "-in", str(message),
                             "-pkeyopt", f"context-string:{CONTEXT.decode()}"]).stdout  # fmt: skip
    public = MLDSA65PrivateKey.from_pem(key_file.read_bytes()).public_key()

    public.verify(signature, message.read_bytes(), context=CONTEXT)
    with pytest.raises(InvalidSignatureError):
        public.verify(signature, message.read_bytes(), context=b"")
    with pytest.raises(InvalidSignatureError):
        public.verify(signature, message.read_bytes() + b"!", context=CONTEXT)


def test_our_signature_verifies_with_openssl(openssl: OpenSSLCli, tmp_path: Path) -> None:
    key = MLDSA65PrivateKey.generate()
    public_file = _write(tmp_path / "pub.pem", key.public_key().pem())
    message = _write(tmp_path / "msg", b"signed by spire-pqc, verified by openssl")
    signature = _write(tmp_path / "sig", key.sign(message.read_bytes(), context=CONTEXT))

    def verify(context: str, message_file: Path = message) -> int:
        return openssl.run(["pkeyutl", "-verify", "-pubin", "-inkey", str(public_file), "-in", str(message_file),
                            "-sigfile", str(signature), "-pkeyopt", f"context-string:{context}"],
                           check=False).returncode  # fmt: skip

    assert verify(CONTEXT.decode()) == 0
    assert verify("spire-pqc/other/v1") != 0
    assert verify(CONTEXT.decode(), _write(tmp_path / "other", b"another message")) != 0


# --- ML-KEM-768 --------------------------------------------------------------------------------


def test_openssl_encapsulates_to_our_key(openssl: OpenSSLCli, tmp_path: Path) -> None:
    ours = MLKEM768PrivateKey.generate()
    public_file = _write(tmp_path / "kem.pub.pem", ours.public_key().pem())
    ciphertext, secret = tmp_path / "ct", tmp_path / "ss"
    openssl.run(["pkeyutl", "-encap", "-pubin", "-inkey", str(public_file), "-out", str(ciphertext),
                 "-secret", str(secret)])  # fmt: skip
    assert len(secret.read_bytes()) == 32
    assert ours.decapsulate(ciphertext.read_bytes()) == secret.read_bytes()


def test_we_encapsulate_to_an_openssl_key(openssl: OpenSSLCli, tmp_path: Path) -> None:
    key_file = tmp_path / "kem.pem"
    openssl.run(["genpkey", "-algorithm", "ML-KEM-768", "-provparam", "ml-kem.output_formats=seed-only",
                 "-out", str(key_file)])  # fmt: skip
    public = MLKEM768PublicKey.from_pem(openssl.run(["pkey", "-in", str(key_file), "-pubout"]).stdout)
    # The seed-only PKCS#8 (d || z) loads with ours and derives the same encapsulation key.
    assert MLKEM768PrivateKey.from_pem(key_file.read_bytes()).public_key() == public

    secret, ciphertext = public.encapsulate()
    ciphertext_file = _write(tmp_path / "ct", ciphertext)
    theirs = openssl.run(["pkeyutl", "-decap", "-inkey", str(key_file), "-in", str(ciphertext_file)]).stdout
    assert theirs == secret

    # A ciphertext that is not ours decapsulates to a different (implicit-rejection) secret in OpenSSL too.
    tampered = _write(tmp_path / "ct2", bytes([ciphertext[0] ^ 1]) + ciphertext[1:])
    assert openssl.run(["pkeyutl", "-decap", "-inkey", str(key_file), "-in", str(tampered)]).stdout != secret


# --- the benchmark baseline --------------------------------------------------------------------


def test_speed_output_of_this_openssl_parses(openssl: OpenSSLCli) -> None:
    # The unit tests parse a captured run; this checks that the installed version still prints that format.
    rates = openssl_speed(openssl, seconds=1)
    for key in [("ML-KEM-768", "encaps"), ("ML-DSA-65", "sign"), ("X25519MLKEM768", "decaps"),
                ("X25519", "derive"), ("ECDSA-P256", "verify")]:  # fmt: skip
        assert rates[key] > 10, key  # any real machine does more than 10 of these per CPU-second
    assert rates[("ML-DSA-65", "sign")] < rates[("ML-DSA-65", "verify")]
    exchange = rates[("X25519MLKEM768", "exchange")]
    assert exchange < min(rates[("X25519MLKEM768", op)] for op in ("keygen", "encaps", "decaps"))
