"""The intermediate PQC CAs of one plugin: *next*, *active*, *retiring*, *retired* and *revoked*.

Pure (files are read by :func:`load_directory`, moved by :func:`archive`; no threads, no gRPC). The
plugin polls its ``intermediates_dir`` and asks :func:`schedule` which intermediate signs now.

Layout of an intermediates directory (each subdirectory is what ``spire-pqc ca intermediate
--out-dir DIR/NAME`` writes)::

    NAME/intermediate.crt.pem    the intermediate, then the PQC root
    NAME/intermediate.key.pem    its ML-DSA-65 key (mode 0600)
    NAME/activate-at             optional: RFC 3339 time to activate it (``--activate-at``)
    archive/NAME-<key id>/       retired intermediates, moved here whole (never deleted)

Schedule: intermediates (revoked ones left out) are ordered by notBefore. The first is active from
its notBefore; each later one activates at its ``activate-at`` time if it has one, else once its
predecessor has lived ``activation`` (a fraction) of its life, and never before its own notBefore.
The active one is the last whose activation has come and that is still valid; later ones are
*next* (published: the CA accepts their bindings already, so every server and agent has seen them
before they sign). An earlier one is *retiring* until everything it signed has expired: it stopped
signing when its successor activated, and nothing it signed outlives that by more than the largest
X509-SVID lifetime (``svid_ttl``) or its own notAfter. Then it is *retired* (its key is archived).
"""

from __future__ import annotations

import datetime as dt
import enum
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from spire_pqc._internal.files import read_private, read_public
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import ConfigError, SpirePqcError, VerificationError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.load import load_pem_certificates
from spire_pqc.x509.path import verify_pqc_chain

__all__ = [
    "ACTIVATE_AT_FILE",
    "ARCHIVE",
    "CERT_FILE",
    "KEY_FILE",
    "Intermediate",
    "IntermediateSet",
    "Scheduled",
    "State",
    "archive",
    "load_directory",
    "load_intermediate",
    "schedule",
]

CERT_FILE = "intermediate.crt.pem"
KEY_FILE = "intermediate.key.pem"
ACTIVATE_AT_FILE = "activate-at"
ARCHIVE = "archive"


class State(enum.StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Intermediate:
    """One intermediate PQC CA as loaded: its CA (key, certificate, chain) and where it came from."""

    ca: IntermediateCA
    cert_path: Path
    key_path: Path
    activate_at: dt.datetime | None = None
    in_directory: bool = True  # False: the plugin_data's intermediate_cert_path (never archived)

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the intermediate's SubjectPublicKeyInfo (the SvidBinding's issuerKeyId)."""
        return self.ca.public_key.key_id().hex()

    @property
    def not_before(self) -> dt.datetime:
        return self.ca.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.ca.certificate.not_valid_after_utc

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class Scheduled:
    """An intermediate's place in the schedule at one instant."""

    intermediate: Intermediate
    state: State
    activates_at: dt.datetime | None  # None: revoked, or too late to ever be active
    superseded_at: dt.datetime | None  # when its successor activated (it stopped signing)
    covers_until: dt.datetime | None  # when the last thing it signed expires (retiring/retired)

    @property
    def key_id(self) -> str:
        return self.intermediate.key_id


@dataclass(frozen=True)
class IntermediateSet:
    """The schedule at ``at``: every intermediate with its state; ``active`` signs."""

    at: dt.datetime
    entries: tuple[Scheduled, ...]
    activation: float

    @property
    def active(self) -> Scheduled | None:
        return next((e for e in self.entries if e.state is State.ACTIVE), None)

    def in_state(self, *states: State) -> list[Scheduled]:
        return [e for e in self.entries if e.state in states]

    def binding_keys(self) -> list[MLDSA65PublicKey]:
        """Keys whose SvidBindings the CA accepts: active, next (published) and retiring."""
        return [e.intermediate.ca.public_key for e in self.in_state(State.ACTIVE, State.NEXT, State.RETIRING)]

    def trusted_certificates(self) -> list[x509.Certificate]:
        """The certificates of the non-active trusted intermediates (sent with a chain they bound)."""
        return [e.intermediate.ca.certificate for e in self.in_state(State.NEXT, State.RETIRING)]

    def rotation_overdue(self) -> bool:
        """The active intermediate is past its activation point for a successor and none is next."""
        active = self.active
        if active is None:
            return True
        if self.in_state(State.NEXT):
            return False
        inter = active.intermediate
        return self.at >= inter.not_before + inter.lifetime * self.activation


def schedule(
    intermediates: Sequence[Intermediate],
    *,
    at: dt.datetime,
    activation: float,
    svid_ttl: dt.timedelta,
    revoked: Collection[str] = (),
) -> IntermediateSet:
    """Which intermediate signs at ``at``, and the state of every other one (module docstring)."""
    if not 0.0 < activation <= 1.0:
        raise ValueError("activation must be a fraction in (0, 1]")
    unique: dict[str, Intermediate] = {}
    for inter in intermediates:
        unique.setdefault(inter.key_id, inter)
    revoked_set = {k.lower() for k in revoked}
    entries: list[Scheduled] = [
        Scheduled(i, State.REVOKED, None, None, None) for i in unique.values() if i.key_id in revoked_set
    ]
    usable = sorted(
        (i for i in unique.values() if i.key_id not in revoked_set), key=lambda i: (i.not_before, i.key_id)
    )
    activations: list[dt.datetime | None] = []
    previous: Intermediate | None = None
    previous_at: dt.datetime | None = None
    for inter in usable:
        start = inter.not_before
        if previous is not None and previous_at is not None:
            planned = inter.activate_at or previous.not_before + previous.lifetime * activation
            start = max(start, planned, previous_at)
        if start >= inter.not_after:
            activations.append(None)  # would never sign: left out of the chain of successors
            continue
        activations.append(start)
        previous, previous_at = inter, start
    active_index = None
    for index, (inter, begins) in enumerate(zip(usable, activations, strict=True)):
        if begins is not None and begins <= at < inter.not_after:
            active_index = index
    for index, (inter, when) in enumerate(zip(usable, activations, strict=True)):
        # When the next one that ever signs took over.
        successor = next((w for w in activations[index + 1 :] if w is not None), None)
        if index == active_index:
            entries.append(Scheduled(inter, State.ACTIVE, when, None, None))
            continue
        if when is None or inter.not_after <= at:
            covers = min(inter.not_after, successor + svid_ttl) if successor is not None else inter.not_after
            entries.append(Scheduled(inter, State.RETIRED, when, successor, covers))
            continue
        if active_index is None or index > active_index or when > at:
            entries.append(Scheduled(inter, State.NEXT, when, None, None))
            continue
        covers = min(inter.not_after, (successor or at) + svid_ttl)
        state = State.RETIRING if at < covers else State.RETIRED
        entries.append(Scheduled(inter, state, when, successor, covers))
    order = {State.ACTIVE: 0, State.NEXT: 1, State.RETIRING: 2, State.RETIRED: 3, State.REVOKED: 4}
    entries.sort(key=lambda e: (order[e.state], e.intermediate.not_before))
    return IntermediateSet(at, tuple(entries), activation)


# --- files -----------------------------------------------------------------------------------------


def load_intermediate(
    cert_path: Path,
    key_path: Path,
    *,
    roots: Sequence[x509.Certificate],
    trust_domain: TrustDomain,
    password: bytes | None,
    at: dt.datetime,
    activate_at: dt.datetime | None = None,
    in_directory: bool = True,
) -> Intermediate:
    """Load and check one intermediate: chains to ``roots``, names the trust domain, key matches."""
    chain = load_pem_certificates(read_public(cert_path), what=str(cert_path))
    try:
        # A next intermediate may not be valid yet: check its chain as of its own notBefore then.
        verify_pqc_chain([chain[0]], list(roots), at=max(at, chain[0].not_valid_before_utc), spiffe_id=None)
    except VerificationError as exc:
        raise ConfigError(
            f"{cert_path}: does not chain to the PQC bundle: {exc}", source=str(cert_path)
        ) from None
    uris = _san_uris(chain[0])
    if trust_domain.id_string() not in uris:
        raise ConfigError(
            f"{cert_path}: certificate is for {', '.join(uris) or 'no trust domain'}, not "
            f"{trust_domain.id_string()}",
            source=str(cert_path),
        )
    key = MLDSA65PrivateKey.from_pem(read_private(key_path), password=password)
    ca = IntermediateCA(key, chain[0], tuple(chain[1:]) or tuple(roots))
    return Intermediate(ca, cert_path, key_path, activate_at, in_directory)


def load_directory(
    directory: Path,
    *,
    roots: Sequence[x509.Certificate],
    trust_domain: TrustDomain,
    password: bytes | None,
    at: dt.datetime,
) -> tuple[list[Intermediate], list[str]]:
    """Every intermediate in ``directory`` (archive excluded), and a problem per one that is unusable."""
    loaded: list[Intermediate] = []
    problems: list[str] = []
    try:
        names = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name != ARCHIVE)
    except OSError as exc:
        return [], [f"{directory}: cannot list ({exc.strerror})"]
    for name in names:
        sub = directory / name
        if not (sub / CERT_FILE).exists() and not (sub / KEY_FILE).exists():
            continue  # not an intermediate (yet): an operator may still be copying it in
        try:
            activate_at = _activate_at(sub / ACTIVATE_AT_FILE)
            loaded.append(
                load_intermediate(
                    sub / CERT_FILE, sub / KEY_FILE, roots=roots, trust_domain=trust_domain,
                    password=password, at=at, activate_at=activate_at,
                )
            )  # fmt: skip
        except SpirePqcError as exc:
            problems.append(f"{name}: {exc}")
    return loaded, problems


def _activate_at(path: Path) -> dt.datetime | None:
    if not path.exists():
        return None
    text = read_public(path, max_size=256).decode("ascii", "replace").strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{path}: not an RFC 3339 time: {text!r}", source=str(path)) from None
    if when.tzinfo is None:
        raise ConfigError(f"{path}: the time needs a time zone (Z or +hh:mm)", source=str(path))
    return when.astimezone(dt.UTC)


def archive(inter: Intermediate, directory: Path) -> Path:
    """Move a retired intermediate's subdirectory (its key with it, still 0600) under ``archive/``."""
    source = inter.key_path.parent
    target_dir = directory / ARCHIVE
    target_dir.mkdir(mode=0o700, exist_ok=True)
    target = target_dir / f"{source.name}-{inter.key_id[:16]}"
    os.replace(source, target)
    for path in (target_dir, directory):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))
