"""spire_pqc.crypto.keystore: lifecycle, restart, overlap, retirement, permissions, atomicity."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spire_pqc.crypto.keys import KeyEncryption, NoEncryption, PasswordEncryption
from spire_pqc.crypto.keystore import METADATA_FILE, MLDSA65, MLKEM768, KeyStore
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    ConfigError,
    CorruptKeyFileError,
    CryptoError,
    KeyFileError,
    KeyFilePermissionError,
)

DAY = timedelta(days=1)
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def open_dsa(
    directory: Path, clock: FakeClock, encryption: KeyEncryption | None = None
) -> KeyStore[MLDSA65PrivateKey]:
    return KeyStore(
        directory,
        MLDSA65,
        encryption=encryption or NoEncryption(),
        validity=30 * DAY,
        overlap=DAY,
        clock=clock,
    )


def all_files(directory: Path) -> list[Path]:
    return [Path(root, name) for root, _, names in os.walk(directory) for name in names]


def test_empty_store_has_no_current_key(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path / "keys", clock)
    with pytest.raises(CryptoError, match="no ML-DSA-65 key is current"):
        store.current()
    assert store.usable() == []
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


def test_restart_gives_the_same_current_key(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    record = store.rotate()
    signature = store.current().sign(b"data", context=b"keystore/test")

    reopened = open_dsa(tmp_path, clock)
    assert reopened.current_record() == record
    assert reopened.current().seed() == store.current().seed()
    reopened.current().public_key().verify(signature, b"data", context=b"keystore/test")
    assert record.key_id == store.current().public_key().key_id().hex()
    assert record.not_before == START and record.not_after == START + 30 * DAY


def test_files_are_private_and_no_temp_files_remain(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    first = store.rotate()
    clock.advance(DAY)
    store.rotate()
    clock.advance(2 * DAY)
    store.retire_unusable()
    files = all_files(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == sorted(
        [METADATA_FILE, f"archive/{first.key_id}.pem", f"{store.current_record().key_id}.pem"]
    )
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "archive").stat().st_mode) == 0o700


def test_failed_metadata_write_leaves_no_temp_file_and_old_state(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_dsa(tmp_path, clock)
    before = store.rotate()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)  # the metadata's atomic rename fails
    with pytest.raises(OSError, match="simulated"):
        store.rotate()
    monkeypatch.undo()

    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]
    assert store.current_record() == before
    reopened = open_dsa(tmp_path, clock)
    assert reopened.current_record() == before
    assert json.loads((tmp_path / METADATA_FILE).read_text())["keys"][0]["key_id"] == before.key_id


def test_group_readable_key_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    record = open_dsa(tmp_path, clock).rotate()
    key_file = tmp_path / f"{record.key_id}.pem"
    key_file.chmod(0o640)
    with pytest.raises(KeyFilePermissionError, match="chmod 600") as info:
        open_dsa(tmp_path, clock).current()
    assert info.value.path == str(key_file)


def test_readable_metadata_and_writable_directory_are_refused(tmp_path: Path, clock: FakeClock) -> None:
    open_dsa(tmp_path, clock).rotate()
    (tmp_path / METADATA_FILE).chmod(0o644)
    with pytest.raises(KeyFilePermissionError, match=METADATA_FILE):
        open_dsa(tmp_path, clock)
    (tmp_path / METADATA_FILE).chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(KeyFilePermissionError, match="chmod 700"):
            open_dsa(tmp_path, clock)
    finally:
        tmp_path.chmod(0o700)


def test_overlap_window_after_rotation(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    old = store.rotate()
    old_key = store.current()
    signature = old_key.sign(b"before rotation", context=b"c")

    clock.advance(10 * DAY)
    new = store.rotate()
    assert store.current_record().key_id == new.key_id
    assert [k.public_key().key_id().hex() for k in store.usable()] == [new.key_id, old.key_id]
    # A signature made just before the rotation still verifies with a usable key.
    store.get(old.key_id).public_key().verify(signature, b"before rotation", context=b"c")

    clock.advance(DAY - timedelta(seconds=1))
    assert store.get(old.key_id).seed() == old_key.seed()
    clock.advance(timedelta(seconds=1))
    with pytest.raises(CryptoError, match="not usable"):
        store.get(old.key_id)
    assert [k.public_key().key_id().hex() for k in store.usable()] == [new.key_id]
    # The overlap is persisted: a restart sees the same window.
    assert open_dsa(tmp_path, clock).records()[0].usable_until == START + 11 * DAY


def test_overlap_never_extends_past_not_after(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    old = store.rotate()
    clock.advance(30 * DAY - timedelta(hours=1))
    store.rotate()
    assert store.records()[0].usable_until == old.not_after


def test_retirement_archives_and_never_deletes(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    old = store.rotate()
    old_seed = store.current().seed()
    clock.advance(DAY)
    store.rotate()
    assert store.retire_unusable() == []  # still in its overlap window
    clock.advance(DAY)
    retired = store.retire_unusable()
    assert [r.key_id for r in retired] == [old.key_id]
    assert retired[0].retired_at == clock.now and retired[0].retired_reason == "expired"

    archived = tmp_path / "archive" / f"{old.key_id}.pem"
    assert not (tmp_path / f"{old.key_id}.pem").exists()
    assert MLDSA65PrivateKey.from_pem(archived.read_bytes()).seed() == old_seed
    with pytest.raises(CryptoError, match="retired"):
        store.get(old.key_id)
    reopened = open_dsa(tmp_path, clock)
    assert [r.key_id for r in reopened.records() if r.retired] == [old.key_id]
    assert store.retire(old.key_id, reason="again") == retired[0]  # idempotent


def test_retiring_the_current_key_fails_closed_until_rotation(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    record = store.rotate()
    store.retire(record.key_id, reason="compromised")
    with pytest.raises(CryptoError, match="no ML-DSA-65 key is current"):
        store.current()
    assert store.rotate().key_id != record.key_id
    assert store.records()[0].retired_reason == "compromised"


def test_validity_and_rotate_if_due(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock)
    first = store.rotate_if_due(renew_before=7 * DAY)
    assert first is not None
    clock.advance(DAY)
    assert store.rotate_if_due(renew_before=7 * DAY) is None
    clock.advance(22 * DAY)  # 7 days left
    second = store.rotate_if_due(renew_before=7 * DAY)
    assert second is not None and second.key_id != first.key_id
    clock.advance(31 * DAY)  # the current key expired without rotation: fail closed
    with pytest.raises(CryptoError, match="no ML-DSA-65 key is current"):
        store.current()
    assert store.rotate_if_due(renew_before=7 * DAY) is not None


def test_corrupt_key_file_names_the_path(tmp_path: Path, clock: FakeClock) -> None:
    record = open_dsa(tmp_path, clock).rotate()
    key_file = tmp_path / f"{record.key_id}.pem"
    key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CorruptKeyFileError) as info:
        open_dsa(tmp_path, clock).current()
    assert info.value.path == str(key_file)
    assert str(key_file) in str(info.value)


def test_key_file_holding_another_key_is_corrupt(tmp_path: Path, clock: FakeClock) -> None:
    record = open_dsa(tmp_path, clock).rotate()
    other = MLDSA65PrivateKey.generate().pem(NoEncryption())
    (tmp_path / f"{record.key_id}.pem").write_bytes(other)
    with pytest.raises(CorruptKeyFileError, match="different key"):
        open_dsa(tmp_path, clock).current()


def test_missing_key_file_is_a_key_file_error(tmp_path: Path, clock: FakeClock) -> None:
    record = open_dsa(tmp_path, clock).rotate()
    (tmp_path / f"{record.key_id}.pem").unlink()
    with pytest.raises(KeyFileError, match="no such key file"):
        open_dsa(tmp_path, clock).current()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"format": "other"}',
        b'{"format": "spire-pqc-keystore/v1", "key_type": "ML-DSA-65"}',
        b'{"format": "spire-pqc-keystore/v1", "key_type": "ML-DSA-65", "keys": 5}',
        b'{"format": "spire-pqc-keystore/v1", "key_type": "ML-DSA-65", "keys": [' + b"[" * 100_000 + b"]",
        b"\xff\xfe{",
    ],
    ids=["syntax", "not-object", "wrong-format", "no-keys", "keys-not-a-list", "deeply-nested", "not-utf8"],
)
def test_corrupt_metadata_names_the_path(tmp_path: Path, clock: FakeClock, content: bytes) -> None:
    (tmp_path / METADATA_FILE).write_bytes(content)
    (tmp_path / METADATA_FILE).chmod(0o600)
    with pytest.raises(CorruptKeyFileError, match=METADATA_FILE) as info:
        open_dsa(tmp_path, clock)
    assert info.value.path == str(tmp_path / METADATA_FILE)


def test_corrupt_record_fields(tmp_path: Path, clock: FakeClock) -> None:
    open_dsa(tmp_path, clock).rotate()
    document = json.loads((tmp_path / METADATA_FILE).read_text())
    for field, value in (("not_after", "yesterday"), ("key_id", "../escape"), ("not_before", None)):
        broken = json.loads(json.dumps(document))
        broken["keys"][0][field] = value
        (tmp_path / METADATA_FILE).write_text(json.dumps(broken))
        with pytest.raises(CorruptKeyFileError, match=METADATA_FILE):
            open_dsa(tmp_path, clock)


def test_opening_as_the_wrong_key_type(tmp_path: Path, clock: FakeClock) -> None:
    open_dsa(tmp_path, clock).rotate()
    with pytest.raises(ConfigError, match="holds ML-DSA-65 keys"):
        KeyStore(tmp_path, MLKEM768, encryption=NoEncryption(), validity=DAY, overlap=DAY, clock=clock)


def test_password_encrypted_store(tmp_path: Path, clock: FakeClock) -> None:
    store = open_dsa(tmp_path, clock, PasswordEncryption(b"s3cret"))
    record = store.rotate()
    seed = store.current().seed()
    content = (tmp_path / f"{record.key_id}.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in content
    assert open_dsa(tmp_path, clock, PasswordEncryption(b"s3cret")).current().seed() == seed
    with pytest.raises(CorruptKeyFileError, match="wrong password"):
        open_dsa(tmp_path, clock, PasswordEncryption(b"wrong")).current()
    with pytest.raises(ConfigError, match="password-encrypted"):
        open_dsa(tmp_path, clock, NoEncryption()).current()


def test_mlkem_store_with_overlap(tmp_path: Path, clock: FakeClock) -> None:
    store: KeyStore[MLKEM768PrivateKey] = KeyStore(
        tmp_path, MLKEM768, encryption=NoEncryption(), validity=7 * DAY, overlap=DAY, clock=clock
    )
    old = store.rotate()
    shared, ciphertext = store.current().public_key().encapsulate()
    clock.advance(DAY)
    store.rotate()
    # A ciphertext sent to the previous key is still decapsulated during the overlap, after a restart.
    reopened: KeyStore[MLKEM768PrivateKey] = KeyStore(
        tmp_path, MLKEM768, encryption=NoEncryption(), validity=7 * DAY, overlap=DAY, clock=clock
    )
    assert reopened.get(old.key_id).decapsulate(ciphertext) == shared
    assert len(reopened.usable()) == 2


def test_interrupted_retirement_is_finished_on_open(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_dsa(tmp_path, clock)
    record = store.rotate()
    real_replace = os.replace

    def fail_moves_to_archive(src: str, dst: str) -> None:
        if "archive" in str(dst):
            raise OSError("crash before the move (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_moves_to_archive)
    with pytest.raises(OSError, match="simulated"):
        store.retire(record.key_id, reason="rotation test")
    monkeypatch.undo()
    assert (tmp_path / f"{record.key_id}.pem").exists()

    reopened = open_dsa(tmp_path, clock)
    assert reopened.records()[0].retired
    assert not (tmp_path / f"{record.key_id}.pem").exists()
    assert (tmp_path / "archive" / f"{record.key_id}.pem").exists()


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="NoEncryption"):
        KeyStore(tmp_path, MLDSA65, encryption=None, validity=DAY, overlap=DAY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="validity"):
        KeyStore(tmp_path, MLDSA65, encryption=NoEncryption(), validity=timedelta(0), overlap=DAY)
    naive = KeyStore(
        tmp_path,
        MLDSA65,
        encryption=NoEncryption(),
        validity=DAY,
        overlap=DAY,
        clock=lambda: datetime(2026, 1, 1),
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.rotate()
