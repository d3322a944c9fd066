"""`spire-pqc svid inspect`: show a hybrid SVID or certificate chains to a person, and verify them."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from spire_pqc._internal.files import read_public
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.cli import svid_fetch
from spire_pqc.errors import ParseError, SpirePqcError, VerificationError
from spire_pqc.svid import (
    verify_classical_svid,
    verify_hybrid_svid,
    verify_kem_certificate,
    verify_pqc_svid,
)
from spire_pqc.x509 import certs
from spire_pqc.x509.binding import parse_binding
from spire_pqc.x509.oids import ML_DSA_65, ML_KEM_768, RELATED_CERT, SVID_BINDING
from spire_pqc.x509.related import parse_related_certificate, related_hash

#: File names of a hybrid SVID directory (written by `spire-pqc demo` and the agent's file output).
LAYOUT = {
    "classical": "svid.pem",
    "pqc": "pqc_svid.pem",
    "kem": "kem.pem",
    "bundle": "bundle.pem",
    "pqc_bundle": "pqc_bundle.pem",
}

_ALGORITHMS = {
    ML_DSA_65.dotted_string: "ML-DSA-65",
    ML_KEM_768.dotted_string: "ML-KEM-768",
    "1.2.840.10045.2.1": "EC",
    "1.2.840.113549.1.1.1": "RSA",
    "1.3.101.112": "Ed25519",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("svid", help="inspect and verify SVIDs")
    sub = parser.add_subparsers(dest="svid_command", required=True, metavar="ACTION")
    inspect = sub.add_parser("inspect", help="print a hybrid SVID or certificate chains and verify them")
    inspect.add_argument("chains", nargs="*", type=Path, help="PEM chain files to print (leaf first)")
    inspect.add_argument(
        "--dir", type=Path, help="a hybrid SVID directory (" + ", ".join(LAYOUT.values()) + ")"
    )
    for role in ("classical", "pqc", "kem", "bundle", "pqc_bundle"):
        inspect.add_argument(f"--{role.replace('_', '-')}", type=Path, dest=role)
    inspect.add_argument("--at", help="verify at this ISO-8601 time instead of now")
    inspect.set_defaults(handler=cmd_inspect)
    svid_fetch.register(sub)


def load_chain(path: Path) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(read_public(path))
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is not a ValueError
        raise ParseError(f"{path}: not a PEM certificate chain ({exc})") from exc
    return chain


def load_bundle_set(path: Path) -> BundleSet:
    """A bundle file's CA certificates, grouped by the trust domain in their URI SAN."""
    return BundleSet.from_certificates(load_chain(path))


def _algorithm(oid: str) -> str:
    return _ALGORITHMS.get(oid, oid)


def describe(cert: x509.Certificate, role: str, classical_leaf: x509.Certificate | None = None) -> list[str]:
    spki = certs.spki_der(cert)
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ca = f"CA (pathLen {bc.path_length})" if bc.ca else "leaf"
    except x509.ExtensionNotFound:
        ca = "leaf"
    lines = [
        f"{role}: {cert.subject.rfc4514_string() or '(empty subject)'}",
        f"  SPIFFE ID / URI SAN: {', '.join(uris) or '(none)'}   [{ca}]",
        f"  key: {_algorithm(cert.public_key_algorithm_oid.dotted_string)} (SPKI {len(spki)} B)   "
        f"signature: {_algorithm(cert.signature_algorithm_oid.dotted_string)} ({len(cert.signature)} B)   "
        f"certificate: {len(cert.public_bytes(Encoding.DER))} B",
        f"  valid: {cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()}   "
        f"serial: {cert.serial_number:x}",
    ]
    for ext in cert.extensions:
        if ext.oid == SVID_BINDING and isinstance(ext.value, x509.UnrecognizedExtension):
            try:
                binding = parse_binding(ext.value.value)
                lines.append(f"  SvidBinding: ML-DSA-65 by intermediate {binding.issuer_key_id.hex()[:16]}…")
            except ParseError as exc:
                lines.append(f"  SvidBinding: MALFORMED ({exc})")
        if ext.oid == RELATED_CERT and isinstance(ext.value, x509.UnrecognizedExtension):
            try:
                digest = parse_related_certificate(ext.value.value)
            except ParseError as exc:
                lines.append(f"  RelatedCertificate: MALFORMED ({exc})")
                continue
            state = ""
            if classical_leaf is not None:
                matches = digest == related_hash(classical_leaf.public_bytes(Encoding.DER))
                state = " (matches the classical SVID)" if matches else " (DOES NOT match the classical SVID)"
            lines.append(f"  RelatedCertificate: SHA-256 {digest.hex()[:16]}…{state}")
    return lines


def _paths(args: argparse.Namespace) -> dict[str, Path | None]:
    paths: dict[str, Path | None] = {role: getattr(args, role) for role in LAYOUT}
    if args.dir:
        for role, name in LAYOUT.items():
            if paths[role] is None and (args.dir / name).exists():
                paths[role] = args.dir / name
    return paths


def cmd_inspect(args: argparse.Namespace) -> int:
    at = dt.datetime.fromisoformat(args.at) if args.at else dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    paths = _paths(args)
    chains = {
        role: load_chain(p)
        for role, p in paths.items()
        if p is not None and role in ("classical", "pqc", "kem")
    }
    classical_leaf = chains["classical"][0] if "classical" in chains else None
    for role, chain in chains.items():
        for index, cert in enumerate(chain):
            print(
                "\n".join(describe(cert, f"{role}[{index}]", classical_leaf if role != "classical" else None))
            )
    for path in args.chains:
        for index, cert in enumerate(load_chain(path)):
            print("\n".join(describe(cert, f"{path.name}[{index}]", classical_leaf)))
    return _verify(chains, paths, at)


def _verify(chains: dict[str, list[x509.Certificate]], paths: dict[str, Path | None], at: dt.datetime) -> int:
    bundle_path, pqc_bundle_path = paths["bundle"], paths["pqc_bundle"]
    if not chains:
        return 0
    try:
        classical_bundles = load_bundle_set(bundle_path) if bundle_path else None
        pqc_bundles = load_bundle_set(pqc_bundle_path) if pqc_bundle_path else None
        if set(chains) == {"classical", "pqc", "kem"} and classical_bundles and pqc_bundles:
            result = verify_hybrid_svid(
                chains["classical"], chains["pqc"], chains["kem"],
                classical_bundles=classical_bundles, pqc_bundles=pqc_bundles, at=at,
            )  # fmt: skip
            print(
                f"verification: OK — hybrid SVID of {result.spiffe_id} (classical + ML-DSA-65 + ML-KEM-768, "
                f"binding by intermediate {result.binding_intermediate.key_id().hex()[:16]}…)"
            )
            return 0
        checked = _verify_partial(chains, classical_bundles, pqc_bundles, at)
    except VerificationError as exc:
        print(f"verification: FAILED — check '{exc.check}': {exc}")
        return 1
    except SpirePqcError as exc:
        print(f"verification: FAILED — {exc}")
        return 1
    if not checked:
        print("verification: not attempted (give --bundle and/or --pqc-bundle)")
        return 2
    return 0


def _verify_partial(
    chains: dict[str, list[x509.Certificate]],
    classical_bundles: BundleSet | None,
    pqc_bundles: BundleSet | None,
    at: dt.datetime,
) -> Sequence[str]:
    checked = []
    if "classical" in chains and classical_bundles:
        sid = verify_classical_svid(chains["classical"], classical_bundles, at=at)
        print(f"verification: classical X509-SVID of {sid}: OK")
        checked.append("classical")
    if "pqc" in chains and pqc_bundles:
        sid, _ = verify_pqc_svid(chains["pqc"], pqc_bundles, at=at)
        print(f"verification: PQC SVID of {sid}: OK")
        checked.append("pqc")
    if "kem" in chains and pqc_bundles:
        sid = verify_kem_certificate(chains["kem"], pqc_bundles, at=at)
        print(f"verification: KEM certificate of {sid}: OK")
        checked.append("kem")
    return checked


__all__ = ["LAYOUT", "X509Bundle", "describe", "load_bundle_set", "load_chain", "register"]
