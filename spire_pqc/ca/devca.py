"""The embedded development CA: a classical CA standing in for SPIRE, plus a local PQC CA.

Used by ``spire-pqc demo``, tests and first contact without SPIRE. Everything it makes is labelled
"dev" (subject O=spire-pqc-dev), and production configuration refuses it. Its classical SVIDs go
through the same composer code (:func:`spire_pqc.ca.composer.binding_extension`) as SPIRE's do.

:class:`DevAuthority` is everything a dev trust domain signs with (classical CA, PQC root and
intermediate, JWT key). :meth:`DevAuthority.load_or_create` keeps it in a directory, so a restarted
dev agent keeps its trust and several dev agents pointed at one directory trust each other (as two
nodes of one trust domain do). The directory is created complete or not at all: the files are
written into a private temporary directory that is then renamed into place, so of several agents
starting at once on an empty directory exactly one rename wins and the others load its result.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_pqc._internal.files import atomic_write, private_directory, read_private, read_public
from spire_pqc.ca.composer import binding_extension
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import CorruptKeyFileError, InvalidKeyError, KeyFileError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs

DEV_ORGANIZATION = "spire-pqc-dev"
# A kept dev CA outlives many agent restarts; an in-memory one only needs to outlive its process.
KEPT_LIFETIME = dt.timedelta(days=365)
EPHEMERAL_LIFETIME = dt.timedelta(days=30)

# The files of a dev CA directory (the PQC names are those of `spire-pqc ca init|intermediate`).
CLASSICAL_KEY, CLASSICAL_CERT = "classical-ca.key.pem", "classical-ca.crt.pem"
ROOT_KEY, ROOT_CERT = "root.key.pem", "root.crt.pem"
INTER_KEY, INTER_CERT = "intermediate.key.pem", "intermediate.crt.pem"
JWT_KEY = "jwt.key.pem"
FILES = (CLASSICAL_KEY, CLASSICAL_CERT, ROOT_KEY, ROOT_CERT, INTER_KEY, INTER_CERT, JWT_KEY)

_PEM = serialization.Encoding.PEM


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class PQCHierarchy:
    """A PQC root and one intermediate PQC CA of a trust domain."""

    root_key: MLDSA65PrivateKey
    root: x509.Certificate
    intermediate: IntermediateCA

    @classmethod
    def generate(
        cls, trust_domain: TrustDomain, *, lifetime: dt.timedelta = EPHEMERAL_LIFETIME
    ) -> PQCHierarchy:
        now = _utcnow()
        root_key = MLDSA65PrivateKey.generate()
        root = certs.build_pqc_root(
            root_key, str(trust_domain), not_before=now - dt.timedelta(minutes=5), not_after=now + lifetime
        )
        inter_key = MLDSA65PrivateKey.generate()
        inter = certs.build_intermediate(
            root, root_key, inter_key.public_key(), str(trust_domain),
            not_before=now - dt.timedelta(minutes=5), not_after=now + lifetime,
        )  # fmt: skip
        return cls(root_key, root, IntermediateCA(inter_key, inter, (root,)))


class DevClassicalCA:
    """An ECDSA P-256 CA that issues X509-SVIDs carrying the SvidBinding, like SPIRE + our plugin.

    A new CA (key and self-signed certificate) unless ``key`` and ``certificate`` are given.
    """

    def __init__(
        self,
        trust_domain: TrustDomain,
        binding_key: MLDSA65PrivateKey | None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        certificate: x509.Certificate | None = None,
        lifetime: dt.timedelta = EPHEMERAL_LIFETIME,
    ) -> None:
        self.trust_domain = trust_domain
        self._binding_key = binding_key
        if key is None or certificate is None:
            if key is not None or certificate is not None:
                raise ValueError("give both the dev CA key and its certificate, or neither")
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = self._self_signed(key, lifetime)
        elif certificate.public_key() != key.public_key():
            raise InvalidKeyError("dev classical CA key does not match its certificate")
        self._key = key
        self.certificate = certificate

    def _self_signed(self, key: ec.EllipticCurvePrivateKey, lifetime: dt.timedelta) -> x509.Certificate:
        now = _utcnow()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"{self.trust_domain} dev classical CA (NOT FOR PRODUCTION)"
                ),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.trust_domain.id_string())]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    def issue_svid(
        self, spiffe_id: SpiffeId, *, ttl: dt.timedelta = dt.timedelta(hours=1), with_binding: bool = True
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Issue a classical X509-SVID (ECDSA P-256 key generated here) with the binding extension."""
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        now = _utcnow()
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=10))
            .not_valid_after(min(now + ttl, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        if with_binding and self._binding_key is not None:
            ext = binding_extension(self._binding_key, str(spiffe_id), spki)
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(ext.oid), ext.value), critical=ext.critical
            )
        return builder.sign(self._key, hashes.SHA256()), key


@dataclass(frozen=True)
class DevAuthority:
    """Everything a dev trust domain signs with: its classical CA, PQC hierarchy and JWT key (ES256)."""

    hierarchy: PQCHierarchy
    classical: DevClassicalCA
    jwt_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(
        cls, trust_domain: TrustDomain, *, lifetime: dt.timedelta = EPHEMERAL_LIFETIME
    ) -> DevAuthority:
        hierarchy = PQCHierarchy.generate(trust_domain, lifetime=lifetime)
        classical = DevClassicalCA(trust_domain, hierarchy.intermediate.key, lifetime=lifetime)
        return cls(hierarchy, classical, ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(
        cls, directory: str | os.PathLike[str], trust_domain: TrustDomain, *, now: dt.datetime | None = None
    ) -> DevAuthority:
        """The dev CA kept in ``directory``; made (atomically, by one of any racing callers) if absent.

        Blocking (file I/O and, on creation, key generation): call it off the event loop. Raises a
        :class:`~spire_pqc.errors.KeyFileError` naming the file when the directory is not private
        (mode 0700, owned by this user), incomplete, corrupt, of another trust domain, or expired.
        """
        target = Path(directory)
        if not _is_populated(target):
            created = cls.generate(trust_domain, lifetime=KEPT_LIFETIME)
            if created._publish(target):
                return created
        return cls.load(target, trust_domain, now=now)

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], trust_domain: TrustDomain, *, now: dt.datetime | None = None
    ) -> DevAuthority:
        target = private_directory(directory, create=False)
        when = now or dt.datetime.now(dt.UTC)
        cert = {name: _load_certificate(target / name) for name in (CLASSICAL_CERT, ROOT_CERT, INTER_CERT)}
        for name, certificate in cert.items():
            _check_dev_certificate(target / name, certificate, trust_domain, when)
        root_key = _load_mldsa_key(target / ROOT_KEY)
        inter_key = _load_mldsa_key(target / INTER_KEY)
        root, inter = cert[ROOT_CERT], cert[INTER_CERT]
        if certs.mldsa_public_key(root) != root_key.public_key():
            raise CorruptKeyFileError("does not match root.crt.pem", path=str(target / ROOT_KEY))
        if not certs.check_mldsa_signature(inter, root_key.public_key()):
            raise CorruptKeyFileError("not signed by the dev PQC root", path=str(target / INTER_CERT))
        try:
            intermediate = IntermediateCA(inter_key, inter, (root,))
            classical = DevClassicalCA(
                trust_domain,
                inter_key,
                key=_load_ec_key(target / CLASSICAL_KEY),
                certificate=cert[CLASSICAL_CERT],
            )
        except InvalidKeyError as exc:
            raise CorruptKeyFileError(str(exc), path=str(target)) from exc
        return cls(PQCHierarchy(root_key, root, intermediate), classical, _load_ec_key(target / JWT_KEY))

    def _publish(self, target: Path) -> bool:
        """Write into a private temporary directory, then rename it to ``target``; False if another won."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            self._write(staging)
            try:
                # rename(2) replaces only a missing or empty directory: one of several racers wins.
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise KeyFileError(
                    f"cannot create the dev CA directory: {exc.strerror}", path=str(target)
                ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _write(self, directory: Path) -> None:
        pkcs8 = serialization.PrivateFormat.PKCS8
        plain = serialization.NoEncryption()
        inter = self.hierarchy.intermediate
        files = {
            CLASSICAL_KEY: self.classical.private_key.private_bytes(_PEM, pkcs8, plain),
            CLASSICAL_CERT: self.classical.certificate.public_bytes(_PEM),
            ROOT_KEY: self.hierarchy.root_key.pem(NoEncryption()),
            ROOT_CERT: self.hierarchy.root.public_bytes(_PEM),
            INTER_KEY: inter.key.pem(NoEncryption()),
            INTER_CERT: inter.certificate.public_bytes(_PEM),
            JWT_KEY: self.jwt_key.private_bytes(_PEM, pkcs8, plain),
        }
        for name, data in files.items():
            atomic_write(directory / name, data, mode=0o600)


def _is_populated(directory: Path) -> bool:
    try:
        return any(directory.iterdir())
    except FileNotFoundError:
        return False
    except NotADirectoryError as exc:
        raise KeyFileError("not a directory", path=str(directory)) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot list: {exc.strerror}", path=str(directory)) from exc


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(read_public(path, max_size=1 << 20))
    except ValueError as exc:
        raise CorruptKeyFileError(f"not a PEM certificate ({exc})", path=str(path)) from exc


def _load_mldsa_key(path: Path) -> MLDSA65PrivateKey:
    try:
        return MLDSA65PrivateKey.from_pem(read_private(path), password=None)
    except InvalidKeyError as exc:
        raise CorruptKeyFileError(str(exc), path=str(path)) from exc


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except (ValueError, TypeError) as exc:
        raise CorruptKeyFileError(f"not an unencrypted PEM private key ({exc})", path=str(path)) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CorruptKeyFileError("not an ECDSA P-256 key", path=str(path))
    return key


def _check_dev_certificate(
    path: Path, certificate: x509.Certificate, trust_domain: TrustDomain, now: dt.datetime
) -> None:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise CorruptKeyFileError(f"no trust domain URI SAN ({exc})", path=str(path)) from exc
    if uris != [trust_domain.id_string()]:
        raise KeyFileError(
            f"belongs to the dev CA of {', '.join(uris) or 'no trust domain'}, not of "
            f"{trust_domain.id_string()}: point source.dev.ca_dir at another directory",
            path=str(path),
        )
    if certificate.not_valid_after_utc <= now:
        raise KeyFileError(
            f"the dev CA expired at {certificate.not_valid_after_utc.isoformat()}; remove its directory "
            "to make a new one (every agent sharing it must restart)",
            path=str(path),
        )
