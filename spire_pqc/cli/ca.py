"""`spire-pqc ca init`, `ca intermediate` (offline PQC CA tooling) and `ca status` (the plugin's schedule)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc._internal.files import atomic_write, read_private, read_public
from spire_pqc.ca.intermediates import ACTIVATE_AT_FILE
from spire_pqc.cli import ca_status
from spire_pqc.crypto.keys import KeyEncryption, NoEncryption, PasswordEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ConfigError, CorruptKeyFileError, InvalidKeyError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509 import certs

ROOT_KEY, ROOT_CERT = "root.key.pem", "root.crt.pem"
INTER_KEY, INTER_CERT, CROSS_CERT = (
    "intermediate.key.pem",
    "intermediate.crt.pem",
    "intermediate.cross.crt.pem",
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("ca", help="create the PQC root and intermediate PQC CAs")
    sub = parser.add_subparsers(dest="ca_command", required=True, metavar="ACTION")

    init = sub.add_parser("init", help="create the ML-DSA-65 PQC root of a trust domain")
    init.add_argument("--trust-domain", required=True)
    init.add_argument("--out-dir", type=Path, required=True)
    init.add_argument("--days", type=int, default=3650)
    _key_options(init)
    init.set_defaults(handler=cmd_init)

    inter = sub.add_parser("intermediate", help="issue an intermediate PQC CA under the PQC root")
    inter.add_argument("--trust-domain", required=True)
    inter.add_argument("--root-dir", type=Path, required=True, help="directory written by `ca init`")
    inter.add_argument("--out-dir", type=Path, required=True)
    inter.add_argument("--days", type=int, default=365)
    inter.add_argument("--root-password-file", type=Path, help="password of an encrypted root key")
    inter.add_argument(
        "--classical-root-cert", type=Path, help="also cross-certify with this ECDSA root (PEM)"
    )
    inter.add_argument(
        "--classical-root-key", type=Path, help="private key of --classical-root-cert (PEM, 0600)"
    )
    inter.add_argument(
        "--activate-at",
        help="RFC 3339 time at which the plugin starts signing with it (written to OUT_DIR/activate-at); "
        "default: at the plugin's intermediate_activation fraction of the active one's life",
    )
    _key_options(inter)
    inter.set_defaults(handler=cmd_intermediate)
    ca_status.register(sub)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--password-file", type=Path, help="encrypt the new private key with this password")
    group.add_argument(
        "--no-encryption", action="store_true", help="store the new private key unencrypted (mode 0600)"
    )


def _encryption(args: argparse.Namespace) -> KeyEncryption:
    if args.no_encryption:
        return NoEncryption()
    return PasswordEncryption(_password(args.password_file))


def _password(path: Path) -> bytes:
    password = read_private(path).rstrip(b"\r\n")
    if not password:
        raise ConfigError(f"{path}: password file is empty", source="--password-file")
    return password


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cmd_init(args: argparse.Namespace) -> int:
    td = TrustDomain.parse(args.trust_domain)
    out: Path = args.out_dir
    for name in (ROOT_KEY, ROOT_CERT):
        if (out / name).exists() and not args.force:
            raise ConfigError(f"{out / name} exists; refusing to overwrite without --force", source="ca init")
    key = MLDSA65PrivateKey.generate()
    now = _now()
    root = certs.build_pqc_root(key, str(td), not_before=now, not_after=now + dt.timedelta(days=args.days))
    atomic_write(out / ROOT_KEY, key.pem(_encryption(args)), mode=0o600, force=args.force)
    atomic_write(out / ROOT_CERT, _pem(root), mode=0o644, force=args.force)
    print(f"PQC root for {td.id_string()} (ML-DSA-65, key id {key.public_key().key_id().hex()[:16]})")
    print(f"  certificate: {out / ROOT_CERT}  (the PQC bundle of {td})")
    print(f"  private key: {out / ROOT_KEY}  (mode 0600; keep it offline)")
    return 0


def load_root(root_dir: Path, password: bytes | None) -> tuple[MLDSA65PrivateKey, x509.Certificate]:
    key_path, cert_path = root_dir / ROOT_KEY, root_dir / ROOT_CERT
    try:
        key = MLDSA65PrivateKey.from_pem(read_private(key_path), password=password)
    except InvalidKeyError as exc:
        raise CorruptKeyFileError(str(exc), path=str(key_path)) from exc
    try:
        cert = x509.load_pem_x509_certificate(read_public(cert_path))
    except ValueError as exc:
        raise CorruptKeyFileError(f"not a PEM certificate ({exc})", path=str(cert_path)) from exc
    if certs.mldsa_public_key(cert) != key.public_key():
        raise CorruptKeyFileError("root key does not match the root certificate", path=str(key_path))
    return key, cert


def _activate_at(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--activate-at {text!r} is not an RFC 3339 time", source="ca intermediate"
        ) from None
    if when.tzinfo is None:
        raise ConfigError("--activate-at needs a time zone (Z or +hh:mm)", source="ca intermediate")
    return when.astimezone(dt.UTC)


def cmd_intermediate(args: argparse.Namespace) -> int:
    td = TrustDomain.parse(args.trust_domain)
    out: Path = args.out_dir
    names = [INTER_KEY, INTER_CERT] + ([CROSS_CERT] if args.classical_root_cert else [])
    for name in names:
        if (out / name).exists() and not args.force:
            raise ConfigError(
                f"{out / name} exists; refusing to overwrite without --force", source="ca intermediate"
            )
    if bool(args.classical_root_cert) != bool(args.classical_root_key):
        raise ConfigError(
            "--classical-root-cert and --classical-root-key go together", source="ca intermediate"
        )
    activate_at = _activate_at(args.activate_at) if args.activate_at else None
    root_password = _password(args.root_password_file) if args.root_password_file else None
    root_key, root = load_root(args.root_dir, root_password)
    key = MLDSA65PrivateKey.generate()
    now = _now()
    not_after = now + dt.timedelta(days=args.days)
    inter = certs.build_intermediate(
        root, root_key, key.public_key(), str(td), not_before=now, not_after=not_after
    )
    cross = None
    if args.classical_root_cert:
        classical_cert = x509.load_pem_x509_certificate(read_public(args.classical_root_cert))
        classical_key = serialization.load_pem_private_key(
            read_private(args.classical_root_key), password=None
        )
        if not isinstance(classical_key, ec.EllipticCurvePrivateKey):
            raise ConfigError("--classical-root-key must be an ECDSA key", source="ca intermediate")
        cross = certs.cross_certify_intermediate(
            classical_cert, classical_key, key.public_key(), str(td), not_before=now, not_after=not_after
        )
    atomic_write(out / INTER_KEY, key.pem(_encryption(args)), mode=0o600, force=args.force)
    atomic_write(out / INTER_CERT, _pem(inter) + _pem(root), mode=0o644, force=args.force)
    if cross is not None:
        atomic_write(out / CROSS_CERT, _pem(cross), mode=0o644, force=args.force)
    if activate_at is not None:
        atomic_write(out / ACTIVATE_AT_FILE, activate_at.isoformat().encode() + b"\n", mode=0o644, force=True)
    print(f"intermediate PQC CA for {td.id_string()} (key id {key.public_key().key_id().hex()[:16]})")
    print(f"  certificate chain: {out / INTER_CERT}  (intermediate, then root)")
    print(f"  private key:       {out / INTER_KEY}  (mode 0600; give it to the plugin)")
    if cross is not None:
        print(f"  cross-certificate: {out / CROSS_CERT}  (signed by the classical root)")
    return 0
