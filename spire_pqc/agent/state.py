"""The node agent's state directory: each workload's PQC keys and certificates, kept across restarts.

Why: the PQC CA certifies keys once per classical SVID serial (docs/trust-model.md), and SPIRE hands a
restarted node agent the very same classical SVIDs. An agent that forgot its PQC keys could neither
serve its workloads nor get new credentials (the CA refuses a second key set as a duplicate) until
every classical SVID rotated. So the agent keeps, per classical SVID, the PQC keys it generated and
the certificates it obtained, and a restarted (or crashed) agent serves them at once.

Layout of ``agent.state_dir`` (mode 0700, owned by the agent's user; anything else is refused)::

    lock                                  flock(2)ed by the running agent; holds its pid
    <sha256 of the classical leaf>.cred   one per classical SVID, mode 0600

A ``.cred`` file is two lines: a JSON object and ``sha256:<hex digest of the first line>``. The JSON
holds ``format``, ``spiffe_id``, ``classical_leaf_sha256``, ``classical_not_after`` (Unix seconds),
``mldsa65_key`` and ``mlkem768_key`` (seed-form PKCS#8, base64) and, once issued,
``pqc_svid_chain``, ``kem_certificate_chain`` and ``pqc_bundle`` (base64 DER). It is written
atomically (temp file, fsync, rename) twice: with the keys alone *before* the first issue request,
so that a crash after the CA saw the keys cannot lose them (a retry with the same keys gets the same
certificates from the CA's ledger), then with the certificates. It is removed when the classical SVID
expires.

What is trusted, and why: only the agent's own user can write the directory (checked at start). A
file that is too large, torn, fails its checksum, or does not parse is logged once and removed, never
served. Certificates read back are verified as a hybrid SVID against the classical SVID SPIRE gives
*now* (:func:`restore`): the binding in that SPIRE-issued leaf must verify under the intermediate
that signed them and their RelatedCertificate must name that leaf, so a planted certificate is never
served. Keys without certificates yet cannot be checked against anything: whoever can write the
directory chooses them — the reason it must stay private to the agent's user.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, ValidationError

from spire_pqc._internal.files import atomic_write, private_directory, read_private
from spire_pqc.agent.model import PqcCredentials
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import ConfigError, CorruptKeyFileError, InvalidKeyError, KeyFileError, SpirePqcError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import X509Svid

log = logging.getLogger(__name__)

FORMAT: Literal["spire-pqc/agent-credentials/v1"] = "spire-pqc/agent-credentials/v1"
LOCK = "lock"
SUFFIX = ".cred"
MAX_RECORD_BYTES = 256 * 1024  # a record is ~25 KB (ML-DSA-65 certificates); anything far larger is not ours
_NAME = re.compile(r"^([0-9a-f]{64})\.cred$")
_MAX_CHAIN = 8
_MAX_CERT = 64 * 1024  # bytes of one DER certificate, as in the CA's request limits

_Der = Annotated[Base64Bytes, Field(max_length=_MAX_CERT)]


class _Record(BaseModel):
    """The JSON line of a ``.cred`` file, parsed strictly (unknown fields and wrong types refused)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    format: Literal["spire-pqc/agent-credentials/v1"]
    spiffe_id: Annotated[str, Field(min_length=1, max_length=2048)]
    classical_leaf_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    classical_not_after: Annotated[int, Field(ge=0, lt=1 << 40)]
    mldsa65_key: Annotated[Base64Bytes, Field(max_length=256)]
    mlkem768_key: Annotated[Base64Bytes, Field(max_length=256)]
    pqc_svid_chain: Annotated[tuple[_Der, ...], Field(max_length=_MAX_CHAIN)] = ()
    kem_certificate_chain: Annotated[tuple[_Der, ...], Field(max_length=_MAX_CHAIN)] = ()
    pqc_bundle: Annotated[tuple[_Der, ...], Field(max_length=_MAX_CHAIN)] = ()


@dataclass(frozen=True)
class StoredCredentials:
    """One classical SVID's PQC keys (seed-form PKCS#8) and, once issued, its PQC certificates."""

    spiffe_id: str
    leaf_hash: bytes
    classical_not_after: dt.datetime
    mldsa_pkcs8: bytes = field(repr=False)
    mlkem_pkcs8: bytes = field(repr=False)
    pqc_chain: tuple[bytes, ...] = ()
    kem_chain: tuple[bytes, ...] = ()
    pqc_bundle: tuple[bytes, ...] = ()

    @classmethod
    def pending(
        cls, svid: X509Svid, mldsa: MLDSA65PrivateKey, mlkem: MLKEM768PrivateKey
    ) -> StoredCredentials:
        """The keys generated for ``svid``, kept before the CA is asked to certify them."""
        return cls(str(svid.spiffe_id), svid.leaf_hash, svid.not_after, mldsa.pkcs8(), mlkem.pkcs8())

    @classmethod
    def issued(cls, credentials: PqcCredentials) -> StoredCredentials:
        svid = credentials.classical
        return cls(
            str(svid.spiffe_id),
            svid.leaf_hash,
            svid.not_after,
            credentials.pqc_key.pkcs8(),
            credentials.kem_key.pkcs8(),
            credentials.pqc_chain,
            credentials.kem_chain,
            credentials.pqc_bundle,
        )

    @property
    def complete(self) -> bool:
        return bool(self.pqc_chain and self.kem_chain)

    @property
    def file_name(self) -> str:
        return self.leaf_hash.hex() + SUFFIX


def encode(record: StoredCredentials) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    body = {
        "format": FORMAT,
        "spiffe_id": record.spiffe_id,
        "classical_leaf_sha256": record.leaf_hash.hex(),
        "classical_not_after": int(record.classical_not_after.timestamp()),
        "mldsa65_key": b64(record.mldsa_pkcs8),
        "mlkem768_key": b64(record.mlkem_pkcs8),
        "pqc_svid_chain": [b64(c) for c in record.pqc_chain],
        "kem_certificate_chain": [b64(c) for c in record.kem_chain],
        "pqc_bundle": [b64(c) for c in record.pqc_bundle],
    }
    line = json.dumps(body, separators=(",", ":")).encode()
    return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"


def decode(data: bytes, *, path: str) -> StoredCredentials:
    """Parse a ``.cred`` file; raise CorruptKeyFileError saying what is wrong (never echoing its content)."""
    lines = data.split(b"\n")
    if len(lines) != 3 or lines[2] != b"" or not lines[1].startswith(b"sha256:"):
        raise CorruptKeyFileError("not a spire-pqc credentials record (torn or truncated?)", path=path)
    if hashlib.sha256(lines[0]).hexdigest().encode() != lines[1][len(b"sha256:") :]:
        raise CorruptKeyFileError("checksum mismatch (the record was altered or damaged)", path=path)
    try:
        raw = _Record.model_validate_json(lines[0])
    except ValidationError as exc:
        # Name the fields and the problem, never the values: they include private keys.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise CorruptKeyFileError(f"invalid record ({problems})", path=path) from None
    if Path(path).name != raw.classical_leaf_sha256 + SUFFIX:
        raise CorruptKeyFileError("record names another classical SVID than its file name", path=path)
    if bool(raw.pqc_svid_chain) != bool(raw.kem_certificate_chain):
        raise CorruptKeyFileError("record has one of the two certificate chains only", path=path)
    return StoredCredentials(
        spiffe_id=raw.spiffe_id,
        leaf_hash=bytes.fromhex(raw.classical_leaf_sha256),
        classical_not_after=dt.datetime.fromtimestamp(raw.classical_not_after, dt.UTC),
        mldsa_pkcs8=raw.mldsa65_key,
        mlkem_pkcs8=raw.mlkem768_key,
        pqc_chain=raw.pqc_svid_chain,
        kem_chain=raw.kem_certificate_chain,
        pqc_bundle=raw.pqc_bundle,
    )


@dataclass(frozen=True)
class Restored:
    """What a stored record gives back for a classical SVID: its keys, and its credentials if they verify."""

    mldsa: MLDSA65PrivateKey = field(repr=False)
    mlkem: MLKEM768PrivateKey = field(repr=False)
    credentials: PqcCredentials | None
    problem: str | None = None  # why stored certificates are not used (None when used or absent)


def restore(
    record: StoredCredentials,
    svid: X509Svid,
    classical_bundles: Mapping[TrustDomain, bytes],
    *,
    at: dt.datetime,
) -> Restored:
    """The record's keys and, if they verify as a hybrid SVID with ``svid`` now, its credentials.

    Blocking (ML-DSA/ML-KEM key expansion, verification): run it with ``run_crypto``. Raises
    CorruptKeyFileError when the keys themselves are unusable or the record is not ``svid``'s.
    """
    where = record.file_name
    if record.leaf_hash != svid.leaf_hash or record.spiffe_id != str(svid.spiffe_id):
        raise CorruptKeyFileError(f"record is not for {svid.spiffe_id}'s current SVID", path=where)
    try:
        mldsa = MLDSA65PrivateKey.from_pkcs8(record.mldsa_pkcs8)
        mlkem = MLKEM768PrivateKey.from_pkcs8(record.mlkem_pkcs8)
    except InvalidKeyError as exc:
        raise CorruptKeyFileError(f"unusable PQC key: {exc}", path=where) from exc
    if not record.complete:
        return Restored(mldsa, mlkem, None)
    credentials = PqcCredentials(
        classical=svid,
        pqc_chain=record.pqc_chain,
        pqc_key=mldsa,
        kem_chain=record.kem_chain,
        kem_key=mlkem,
        pqc_bundle=record.pqc_bundle,
        obtained=at,
    )
    td = svid.spiffe_id.trust_domain
    try:
        classical = BundleSet(X509Bundle.from_der(t, der) for t, der in classical_bundles.items())
        pqc = BundleSet([X509Bundle.from_der(td, b"".join(record.pqc_bundle))])
        credentials.hybrid_svid().verify(classical_bundles=classical, pqc_bundles=pqc, at=at)
    except SpirePqcError as exc:
        return Restored(mldsa, mlkem, None, problem=str(exc))
    return Restored(mldsa, mlkem, credentials)


class StateDirectory:
    """The records of ``agent.state_dir`` as loaded at :meth:`open`, and the files of new ones.

    :meth:`open` and :meth:`save` do blocking file I/O (the agent calls them in a thread); :meth:`get`,
    :meth:`discard` and :meth:`prune` only read memory and unlink, and run on the event loop. One agent
    per directory: :meth:`open` takes an exclusive lock (released on close or when the process dies,
    even by SIGKILL) and refuses a directory another running agent holds.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._records: dict[bytes, StoredCredentials] = {}
        self._lock_fd: int | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def open(self) -> int:
        """Check and lock the directory, load every record (dropping bad ones); return how many loaded."""
        try:
            private_directory(self.path)
        except KeyFileError as exc:
            raise ConfigError(str(exc), source="agent.state_dir") from exc
        self._lock()
        now = dt.datetime.now(dt.UTC)
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            self._load_entry(entry, now)
        return len(self._records)

    def _lock(self) -> None:
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot open the lock file: {exc.strerror}", source="agent.state_dir"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{self.path} is in use by another running spire-pqc agent (pid {holder}); every agent "
                "needs its own state directory",
                source="agent.state_dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _load_entry(self, entry: os.DirEntry[str], now: dt.datetime) -> None:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            return  # e.g. the dev CA directory (source.dev.ca_dir defaults to a subdirectory)
        match = _NAME.match(name)
        if match is None:
            if name.startswith(".") and name.endswith(".tmp"):
                # The temporary file of a write interrupted by a crash: never renamed, never valid.
                self._unlink(Path(entry.path))
            elif name != LOCK:
                log.warning("state directory %s: ignoring unexpected file %r", self.path, name)
            return
        try:
            record = decode(read_private(entry.path, max_size=MAX_RECORD_BYTES), path=entry.path)
        except KeyFileError as exc:  # unreadable, group/other-accessible, corrupt
            log.warning("discarding stored PQC credentials: %s", exc)
            self._unlink(Path(entry.path))
            return
        if record.classical_not_after <= now:
            self._unlink(Path(entry.path))  # its classical SVID expired while the agent was down
            return
        self._records[bytes.fromhex(match.group(1))] = record

    def close(self) -> None:
        """Release the lock; the records stay on disk for the next start."""
        self._records.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- records ----------------------------------------------------------------------------------

    def get(self, leaf_hash: bytes) -> StoredCredentials | None:
        return self._records.get(leaf_hash)

    def __len__(self) -> int:
        return len(self._records)

    def save(self, record: StoredCredentials) -> None:
        """Write ``record`` atomically (0600); raises OSError when the disk refuses (full, read-only).

        Only the file is touched (safe in a worker thread): the records loaded at :meth:`open` are
        the only ones :meth:`get` needs to answer, and whoever saves removes its own file later.
        """
        atomic_write(self.path / record.file_name, encode(record), mode=0o600)

    def discard(self, leaf_hash: bytes) -> None:
        """Forget one classical SVID's record and remove its file."""
        self._records.pop(leaf_hash, None)
        self._unlink(self.path / (leaf_hash.hex() + SUFFIX))

    def prune(self, now: dt.datetime) -> None:
        """Remove the records whose classical SVID expired (including never-claimed ones)."""
        for leaf_hash in [h for h, r in self._records.items() if r.classical_not_after <= now]:
            self.discard(leaf_hash)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # never written (a slot superseded before its keys were kept), or already gone
        except OSError as exc:
            log.warning("state directory %s: cannot remove %s: %s", self.path, path.name, exc.strerror)
