"""`spire-pqc ca init`, `ca intermediate`, `svid inspect` and `demo`, run as a user would.

Commands run in-process through :func:`spire_pqc.cli.main.main` (exit status returned, output
captured), and `demo` once more as a real subprocess (`python -m spire_pqc.cli`).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spire_pqc.cli.main import main
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import InvalidKeyError
from spire_pqc.x509 import certs
from spire_pqc.x509.path import verify_pqc_chain

TD = "example.org"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() installs a stderr handler on the package logger; do not leak it into other tests."""
    logger = logging.getLogger("spire_pqc")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def secret(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def init_root(capsys: pytest.CaptureFixture[str], out: Path, *extra: str | Path) -> None:
    status, _, err = run(
        capsys, "ca", "init", "--trust-domain", TD, "--out-dir", out, *(extra or ("--no-encryption",))
    )
    assert status == 0, err


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


# --- ca init -----------------------------------------------------------------------------------


def test_ca_init_creates_root_with_private_key_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        capsys, "ca", "init", "--trust-domain", TD, "--out-dir", tmp_path, "--no-encryption"
    )
    assert status == 0, err
    key_path, cert_path = tmp_path / "root.key.pem", tmp_path / "root.crt.pem"
    assert mode(key_path) == 0o600
    assert mode(cert_path) == 0o644
    assert str(cert_path) in out and str(key_path) in out
    key = MLDSA65PrivateKey.from_pem(key_path.read_bytes())
    root = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certs.mldsa_public_key(root) == key.public_key()
    assert certs.check_mldsa_signature(root, key.public_key())  # self-signed with ML-DSA-65
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 1
    san = root.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]


def test_ca_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_root(capsys, tmp_path)
    key_before = (tmp_path / "root.key.pem").read_bytes()
    status, _, err = run(capsys, "ca", "init", "--trust-domain", TD, "--out-dir", tmp_path, "--no-encryption")
    assert status == 1
    assert "refusing to overwrite without --force" in err
    assert (tmp_path / "root.key.pem").read_bytes() == key_before
    init_root(capsys, tmp_path, "--no-encryption", "--force")
    assert (tmp_path / "root.key.pem").read_bytes() != key_before
    assert mode(tmp_path / "root.key.pem") == 0o600


def test_ca_init_needs_an_explicit_key_protection_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ca", "init", "--trust-domain", TD, "--out-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "--password-file" in capsys.readouterr().err
    assert not (tmp_path / "root.key.pem").exists()


# --- ca intermediate ---------------------------------------------------------------------------


def test_ca_intermediate_under_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root_dir, out = tmp_path / "root", tmp_path / "inter"
    init_root(capsys, root_dir)
    status, out_text, err = run(
        capsys,
        "ca",
        "intermediate",
        "--trust-domain",
        TD,
        "--root-dir",
        root_dir,
        "--out-dir",
        out,
        "--no-encryption",
    )
    assert status == 0, err
    assert mode(out / "intermediate.key.pem") == 0o600
    inter, root = load_chain(out / "intermediate.crt.pem")
    assert root == x509.load_pem_x509_certificate((root_dir / "root.crt.pem").read_bytes())
    key = MLDSA65PrivateKey.from_pem((out / "intermediate.key.pem").read_bytes())
    assert certs.mldsa_public_key(inter) == key.public_key()
    assert verify_pqc_chain([inter], [root], at=dt.datetime.now(dt.UTC), spiffe_id=None) == [root]
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert "cross-certificate" not in out_text
    assert not (out / "intermediate.cross.crt.pem").exists()
    # A second run does not replace the intermediate key silently.
    status, _, err = run(
        capsys,
        "ca",
        "intermediate",
        "--trust-domain",
        TD,
        "--root-dir",
        root_dir,
        "--out-dir",
        out,
        "--no-encryption",
    )
    assert status == 1
    assert "refusing to overwrite" in err
    assert MLDSA65PrivateKey.from_pem((out / "intermediate.key.pem").read_bytes()).seed() == key.seed()


def test_password_file_encrypts_and_intermediate_then_needs_root_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_dir, out = tmp_path / "root", tmp_path / "inter"
    password = secret(tmp_path / "root.pw", b"correct horse battery staple\n")
    init_root(capsys, root_dir, "--password-file", password)
    key_pem = (root_dir / "root.key.pem").read_bytes()
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key_pem
    assert b"correct horse" not in key_pem
    with pytest.raises(InvalidKeyError):
        MLDSA65PrivateKey.from_pem(key_pem)
    with pytest.raises(InvalidKeyError):
        MLDSA65PrivateKey.from_pem(key_pem, password=b"wrong")
    root_key = MLDSA65PrivateKey.from_pem(
        key_pem, password=b"correct horse battery staple"
    )  # newline stripped
    assert certs.mldsa_public_key(load_chain(root_dir / "root.crt.pem")[0]) == root_key.public_key()

    base: list[str | Path] = [
        "ca",
        "intermediate",
        "--trust-domain",
        TD,
        "--root-dir",
        root_dir,
        "--out-dir",
        out,
        "--no-encryption",
    ]
    status, _, err = run(capsys, *base)
    assert status == 1
    assert "password is required" in err
    assert not (out / "intermediate.key.pem").exists()
    status, _, err = run(capsys, *base, "--root-password-file", secret(tmp_path / "bad.pw", b"wrong\n"))
    assert status == 1
    assert "cannot decrypt" in err
    status, _, err = run(capsys, *base, "--root-password-file", password)
    assert status == 0, err
    assert verify_pqc_chain(
        load_chain(out / "intermediate.crt.pem")[:1],
        load_chain(root_dir / "root.crt.pem"),
        at=dt.datetime.now(dt.UTC),
        spiffe_id=None,
    )


def test_password_file_readable_by_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "root.pw"
    password.write_bytes(b"pw\n")
    password.chmod(0o644)
    status, _, err = run(
        capsys, "ca", "init", "--trust-domain", TD, "--out-dir", tmp_path, "--password-file", password
    )
    assert status == 1
    assert "chmod 600" in err
    assert not (tmp_path / "root.key.pem").exists()


def classical_root(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "classical root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "classical-root.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = secret(
        tmp_path / "classical-root.key",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return cert_path, key_path, cert


def test_cross_certification_by_a_classical_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root_dir, out = tmp_path / "root", tmp_path / "inter"
    init_root(capsys, root_dir)
    cert_path, key_path, ecdsa_root = classical_root(tmp_path)
    status, out_text, err = run(
        capsys, "ca", "intermediate", "--trust-domain", TD, "--root-dir", root_dir, "--out-dir", out,
        "--no-encryption", "--classical-root-cert", cert_path, "--classical-root-key", key_path,
    )  # fmt: skip
    assert status == 0, err
    assert "cross-certificate" in out_text
    cross = x509.load_pem_x509_certificate((out / "intermediate.cross.crt.pem").read_bytes())
    inter = load_chain(out / "intermediate.crt.pem")[0]
    cross.verify_directly_issued_by(ecdsa_root)  # raises unless the ECDSA root signed it
    assert cross.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert certs.spki_der(cross) == certs.spki_der(inter)  # the same ML-DSA-65 public key
    assert cross.subject == inter.subject
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_cross_certification_needs_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root_dir = tmp_path / "root"
    init_root(capsys, root_dir)
    cert_path, _, _ = classical_root(tmp_path)
    status, _, err = run(
        capsys, "ca", "intermediate", "--trust-domain", TD, "--root-dir", root_dir, "--out-dir", tmp_path / "i",
        "--no-encryption", "--classical-root-cert", cert_path,
    )  # fmt: skip
    assert status == 1
    assert "go together" in err


# --- svid inspect on demo output ---------------------------------------------------------------


@pytest.fixture
def demos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """Two demo output directories (two independent dev trust-domain hierarchies)."""
    dirs = []
    for name in ("one", "two"):
        status, out, err = run(capsys, "demo", "--out-dir", tmp_path / name)
        assert status == 0, err
        assert "verification: OK" in out
        assert "replayed request refused: replay" in out
        assert "second issuance for the same classical SVID refused: duplicate" in out
        dirs.append(tmp_path / name)
    return dirs[0], dirs[1]


def test_demo_writes_keys_0600(demos: tuple[Path, Path]) -> None:
    out = demos[0]
    for key in ("svid.key", "pqc_svid.key", "kem.key"):
        assert mode(out / key) == 0o600
    for public in ("svid.pem", "pqc_svid.pem", "kem.pem", "bundle.pem", "pqc_bundle.pem"):
        assert mode(out / public) == 0o644


def test_svid_inspect_ok(demos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "svid", "inspect", "--dir", demos[0])
    assert status == 0
    assert "verification: OK — hybrid SVID of spiffe://example.org/demo/workload" in out
    assert "ML-DSA-65" in out and "ML-KEM-768" in out
    assert "RelatedCertificate: SHA-256" in out and "(matches the classical SVID)" in out


def test_svid_inspect_fails_on_another_svids_pqc_svid(
    demos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = demos
    shutil.copy(two / "pqc_svid.pem", one / "pqc_svid.pem")
    status, out, _ = run(capsys, "svid", "inspect", "--dir", one)
    assert status == 1
    assert "verification: FAILED — check 'chain'" in out
    assert "spiffe://example.org/demo/workload" in out


def test_svid_inspect_fails_on_pqc_credentials_of_another_classical_svid(
    demos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Take all PQC files (and their bundle) from the other demo: the chains verify, the binding to
    this classical SVID does not."""
    one, two = demos
    for name in ("pqc_svid.pem", "kem.pem", "pqc_bundle.pem"):
        shutil.copy(two / name, one / name)
    status, out, _ = run(capsys, "svid", "inspect", "--dir", one)
    assert status == 1
    assert "verification: FAILED — check 'related-certificate'" in out
    assert "(DOES NOT match the classical SVID)" in out


def test_svid_inspect_at_a_later_time_fails_validity(
    demos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=400)).isoformat()
    status, out, _ = run(capsys, "svid", "inspect", "--dir", demos[0], "--at", later)
    assert status == 1
    assert "verification: FAILED — check 'validity'" in out


def test_demo_subprocess_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "demo", "--out-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DEV MODE" in result.stdout
    assert "verification: OK" in result.stdout
    assert (tmp_path / "demo" / "pqc_svid.pem").exists()
