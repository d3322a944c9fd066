"""A directory of ML-DSA-65 or ML-KEM-768 keys with a lifecycle: generation, storage, use, rotation
and retirement.

Layout of a store directory (mode 0700)::

    keystore.json            metadata: one record per key (validity, rotation, retirement)
    <key id>.pem             active private keys, seed-form PKCS#8 (encrypted if chosen)
    archive/<key id>.pem     retired keys: moved here, never deleted

Every file is written with :func:`~spire_pqc._internal.files.atomic_write` (mode 0600, temp file +
fsync + rename) and read with :func:`~spire_pqc._internal.files.read_private`, which refuses files
that group or others can access. The metadata file is the commit point: a key file is written
before the record naming it, and a retirement is recorded before its file is moved (a move cut
short is finished the next time the store is opened). One process writes a store at a time.

Lifecycle:

* :meth:`KeyStore.rotate` generates a key valid for ``validity`` and makes it current; the previous
  current key stays usable for ``overlap`` (so signatures or ciphertexts made just before the
  rotation still verify or decrypt), never beyond its own ``not_after``.
* :meth:`KeyStore.current` is the key to sign or publish with now; :meth:`KeyStore.usable` adds the
  keys still in their overlap window (use them to verify or decapsulate).
* :meth:`KeyStore.retire` archives one key (e.g. after a compromise);
  :meth:`KeyStore.retire_unusable` archives every key whose validity or overlap has ended.

Example::

    store = KeyStore(path, MLDSA65, encryption=NoEncryption(), validity=timedelta(days=30),
                     overlap=timedelta(days=1))
    store.rotate_if_due(renew_before=timedelta(days=7))
    signature = store.current().sign(data, context=b"example/v1")
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from spire_pqc._internal.files import atomic_write, read_private
from spire_pqc.crypto.keys import KeyEncryption, NoEncryption, PasswordEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    ConfigError,
    CorruptKeyFileError,
    CryptoError,
    InvalidKeyError,
    KeyFilePermissionError,
)

logger = logging.getLogger(__name__)


class _PublicKey(Protocol):
    def key_id(self) -> bytes: ...


class StoredKey(Protocol):
    """What a store needs from a private key class (MLDSA65PrivateKey and MLKEM768PrivateKey)."""

    def public_key(self) -> _PublicKey: ...

    def pem(self, encryption: KeyEncryption) -> bytes: ...


K = TypeVar("K", bound=StoredKey)

METADATA_FILE = "keystore.json"
ARCHIVE_DIR = "archive"
_FORMAT = "spire-pqc-keystore/v1"


@dataclass(frozen=True)
class KeyType(Generic[K]):
    """Which key a store holds: its name, how to generate one and how to load its PEM."""

    name: str
    generate: Callable[[], K]
    load_pem: Callable[[bytes, bytes | None], K]


MLDSA65: KeyType[MLDSA65PrivateKey] = KeyType(
    "ML-DSA-65", MLDSA65PrivateKey.generate, lambda data, pw: MLDSA65PrivateKey.from_pem(data, password=pw)
)
MLKEM768: KeyType[MLKEM768PrivateKey] = KeyType(
    "ML-KEM-768", MLKEM768PrivateKey.generate, lambda data, pw: MLKEM768PrivateKey.from_pem(data, password=pw)
)


@dataclass(frozen=True)
class KeyRecord:
    """Metadata of one key. ``key_id`` is the hex SHA-256 of its SubjectPublicKeyInfo."""

    key_id: str
    created_at: datetime
    not_before: datetime
    not_after: datetime
    encrypted: bool
    superseded_at: datetime | None = None  # when a rotation replaced it as the current key
    usable_until: datetime | None = None  # end of the overlap window after that rotation
    retired_at: datetime | None = None
    retired_reason: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.key_id}.pem"

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    def usable_at(self, now: datetime) -> bool:
        """Inside its validity period, not retired, and (if superseded) inside the overlap window."""
        if self.retired or not self.not_before <= now < self.not_after:
            return False
        return self.usable_until is None or now < self.usable_until

    def current_at(self, now: datetime) -> bool:
        return self.superseded_at is None and self.usable_at(now)

    def ended_at(self, now: datetime) -> bool:
        """Can never be used again: validity or overlap window is over."""
        return now >= self.not_after or (self.usable_until is not None and now >= self.usable_until)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KeyStore(Generic[K]):
    """The keys of one type in one directory. See the module docstring for the lifecycle."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key_type: KeyType[K],
        *,
        encryption: KeyEncryption,
        validity: timedelta,
        overlap: timedelta,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Open the store in ``directory``, creating it (mode 0700) if needed.

        ``encryption`` (no default) is how new keys are written, and its password opens encrypted
        ones. ``clock`` returns timezone-aware datetimes; tests inject their own.
        """
        if not isinstance(encryption, NoEncryption | PasswordEncryption):
            raise TypeError("encryption must be NoEncryption() or PasswordEncryption(password)")
        if validity <= timedelta(0) or overlap < timedelta(0):
            raise ValueError("validity must be positive and overlap not negative")
        self.directory = Path(directory)
        self.key_type: KeyType[K] = key_type
        self._encryption = encryption
        self._validity = validity
        self._overlap = overlap
        self._clock = clock
        self._lock = threading.RLock()
        self._loaded: dict[str, K] = {}
        self._prepare_directory()
        self._records = self._read_metadata()
        self._finish_interrupted_retirements()

    # --- queries ---------------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        """Every key ever stored here (retired ones included), oldest first."""
        with self._lock:
            return list(self._records)

    def current_record(self) -> KeyRecord:
        """The record of the current key; CryptoError if no key is current now."""
        now = self._now()
        with self._lock:
            current = [r for r in self._records if r.current_at(now)]
        if not current:
            raise CryptoError(
                f"key store {self.directory}: no {self.key_type.name} key is current at {now.isoformat()}"
            )
        return current[-1]

    def current(self) -> K:
        """The key to use now (sign, publish). Raises CryptoError if none is current."""
        return self._load(self.current_record())

    def usable(self) -> list[K]:
        """The current key first, then keys still in their overlap window (for verify/decapsulate)."""
        now = self._now()
        with self._lock:
            records = [r for r in self._records if r.usable_at(now)]
        records.sort(key=lambda r: (r.superseded_at is None, r.created_at), reverse=True)
        return [self._load(r) for r in records]

    def get(self, key_id: str) -> K:
        """The key ``key_id`` if it is usable now; CryptoError naming why not otherwise."""
        record = self._record(key_id)
        now = self._now()
        if record.retired:
            raise CryptoError(f"key {key_id} was retired ({record.retired_reason}) and archived")
        if not record.usable_at(now):
            raise CryptoError(f"key {key_id} is not usable at {now.isoformat()} (validity or overlap ended)")
        return self._load(record)

    # --- lifecycle -------------------------------------------------------------------------------

    def rotate(self) -> KeyRecord:
        """Generate and store a new current key; the previous one keeps ``overlap`` to live."""
        with self._lock:
            now = self._now()
            key = self.key_type.generate()
            record = KeyRecord(
                key_id=key.public_key().key_id().hex(),
                created_at=now,
                not_before=now,
                not_after=now + self._validity,
                encrypted=isinstance(self._encryption, PasswordEncryption),
            )
            # Key file first, then the metadata naming it (the commit point).
            atomic_write(self.directory / record.file_name, key.pem(self._encryption), force=False)
            records = [
                replace(r, superseded_at=now, usable_until=min(now + self._overlap, r.not_after))
                if r.superseded_at is None and not r.retired
                else r
                for r in self._records
            ]
            records.append(record)
            self._write_metadata(records)
            self._records = records
            self._loaded[record.key_id] = key
        logger.info("key store %s: rotated to %s key %s", self.directory, self.key_type.name, record.key_id)
        return record

    def rotate_if_due(self, *, renew_before: timedelta) -> KeyRecord | None:
        """Rotate when no key is current or the current one ends within ``renew_before``."""
        with self._lock:
            now = self._now()
            try:
                current = self.current_record()
            except CryptoError:
                return self.rotate()
            if current.not_after - now <= renew_before:
                return self.rotate()
            return None

    def retire(self, key_id: str, *, reason: str) -> KeyRecord:
        """Retire one key now: record it, then move its file to ``archive/``. Idempotent."""
        with self._lock:
            record = self._record(key_id)
            if record.retired:
                return record
            retired = replace(record, retired_at=self._now(), retired_reason=reason)
            self._write_metadata([retired if r.key_id == key_id else r for r in self._records])
            self._records = [retired if r.key_id == key_id else r for r in self._records]
            self._loaded.pop(key_id, None)
            self._archive(retired)
        logger.info("key store %s: retired key %s (%s)", self.directory, key_id, reason)
        return retired

    def retire_unusable(self) -> list[KeyRecord]:
        """Retire every key whose validity period or overlap window has ended."""
        with self._lock:
            now = self._now()
            ended = [r for r in self._records if not r.retired and r.ended_at(now)]
            return [self.retire(r.key_id, reason="expired") for r in ended]

    # --- files -----------------------------------------------------------------------------------

    @property
    def metadata_path(self) -> Path:
        return self.directory / METADATA_FILE

    @property
    def archive_directory(self) -> Path:
        return self.directory / ARCHIVE_DIR

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = self.directory.stat().st_mode
        # Others who can write here could swap key files; refuse as read_private refuses files.
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise KeyFilePermissionError(
                f"key store directory mode {stat.S_IMODE(mode):04o} lets other users write to it; "
                "chmod 700 it",
                path=str(self.directory),
            )

    def _load(self, record: KeyRecord) -> K:
        with self._lock:
            cached = self._loaded.get(record.key_id)
            if cached is not None:
                return cached
            path = self.directory / record.file_name
            password = None
            if record.encrypted:
                if not isinstance(self._encryption, PasswordEncryption):
                    raise ConfigError(
                        f"key {record.key_id} is password-encrypted; open the store with PasswordEncryption",
                        source=str(self.directory),
                    )
                password = self._encryption.password
            data = read_private(path)
            try:
                key = self.key_type.load_pem(data, password)
            except InvalidKeyError as exc:
                raise CorruptKeyFileError(
                    f"not a usable {self.key_type.name} private key: {exc}", path=str(path)
                ) from exc
            if key.public_key().key_id().hex() != record.key_id:
                raise CorruptKeyFileError(
                    f"holds a different key than {METADATA_FILE} records", path=str(path)
                )
            self._loaded[record.key_id] = key
            return key

    def _archive(self, record: KeyRecord) -> None:
        source = self.directory / record.file_name
        if not source.exists():
            return
        self.archive_directory.mkdir(mode=0o700, exist_ok=True)
        os.replace(source, self.archive_directory / record.file_name)
        for directory in (self.archive_directory, self.directory):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _finish_interrupted_retirements(self) -> None:
        for record in self._records:
            if record.retired and (self.directory / record.file_name).exists():
                logger.warning(
                    "key store %s: finishing the archiving of retired key %s", self.directory, record.key_id
                )
                self._archive(record)

    def _record(self, key_id: str) -> KeyRecord:
        with self._lock:
            for record in self._records:
                if record.key_id == key_id:
                    return record
        raise CryptoError(f"key store {self.directory} has no key {key_id}")

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the key store clock must return timezone-aware datetimes")
        return now

    # --- metadata --------------------------------------------------------------------------------

    def _write_metadata(self, records: list[KeyRecord]) -> None:
        document = {
            "format": _FORMAT,
            "key_type": self.key_type.name,
            "keys": [_record_to_json(r) for r in records],
        }
        atomic_write(self.metadata_path, json.dumps(document, indent=2).encode() + b"\n")

    def _read_metadata(self) -> list[KeyRecord]:
        path = self.metadata_path
        if not path.exists():
            strays = sorted(p.name for p in self.directory.glob("*.pem"))
            if strays:
                logger.warning(
                    "key store %s: no %s; ignoring key files %s", self.directory, METADATA_FILE, strays
                )
            return []
        data = read_private(path)
        try:
            key_type, records = _parse_metadata(json.loads(data))
        except RecursionError:
            raise CorruptKeyFileError(
                "unreadable key store metadata: nested too deeply", path=str(path)
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptKeyFileError(f"unreadable key store metadata: {exc}", path=str(path)) from exc
        if key_type != self.key_type.name:
            raise ConfigError(
                f"holds {key_type} keys, opened as a {self.key_type.name} store", source=str(self.directory)
            )
        if len({r.key_id for r in records}) != len(records):
            raise CorruptKeyFileError("the same key id appears twice", path=str(path))
        return records


_TIME_FIELDS = ("created_at", "not_before", "not_after", "superseded_at", "usable_until", "retired_at")


def _parse_metadata(document: Any) -> tuple[str, list[KeyRecord]]:
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"not a {_FORMAT} document")
    return str(document["key_type"]), [_record_from_json(item) for item in document["keys"]]


def _record_to_json(record: KeyRecord) -> dict[str, Any]:
    item = asdict(record)
    for name in _TIME_FIELDS:
        if item[name] is not None:
            item[name] = item[name].isoformat()
    return item


def _record_from_json(item: Any) -> KeyRecord:
    if not isinstance(item, dict):
        raise TypeError("a key record must be an object")
    values = dict(item)
    for name in _TIME_FIELDS:
        value = values.get(name)
        if value is not None:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError(f"{name} has no time zone")
            values[name] = parsed
    for name in ("created_at", "not_before", "not_after"):
        if not isinstance(values.get(name), datetime):
            raise TypeError(f"{name} is missing")
    key_id = values.get("key_id")
    if not isinstance(key_id, str) or len(key_id) != 64 or not all(c in "0123456789abcdef" for c in key_id):
        raise ValueError(f"bad key_id {key_id!r}")
    if not isinstance(values.get("encrypted"), bool):
        raise TypeError("encrypted must be true or false")
    return KeyRecord(**values)
