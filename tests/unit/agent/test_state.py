"""The agent's state directory: record format, permissions, locking, and what a damaged or planted file does."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spire_pqc.agent.model import PqcCredentials
from spire_pqc.agent.state import (
    StateDirectory,
    StoredCredentials,
    decode,
    encode,
    restore,
)
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import ConfigError, CorruptKeyFileError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import X509Svid
from spire_pqc.x509 import certs

TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")


@dataclasses.dataclass
class Issued:
    authority: DevAuthority
    svid: X509Svid
    credentials: PqcCredentials

    @property
    def bundles(self) -> dict[TrustDomain, bytes]:
        return {TD: X509Bundle(TD, [self.authority.classical.certificate]).to_der()}


def issue(authority: DevAuthority | None = None) -> Issued:
    """A classical SVID from a dev CA and the PQC credentials its CA issued for new keys."""
    authority = authority or DevAuthority.generate(TD)
    cert, key = authority.classical.issue_svid(WORKLOAD)
    svid = X509Svid(WORKLOAD, (cert,), key)
    issuer = PQCIssuer(
        authority.hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [authority.classical.certificate])])
    )
    mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    request = build_request(
        svid.chain_der_list, key, mldsa, mlkem.public_key().spki(), timestamp_ms=int(now.timestamp() * 1000)
    )
    response = issuer.issue(request).response
    credentials = PqcCredentials(
        svid, response.pqc_svid_chain, mldsa, response.kem_certificate_chain, mlkem, response.pqc_bundle, now
    )
    return Issued(authority, svid, credentials)


@pytest.fixture(scope="module")
def issued() -> Issued:
    return issue()


def test_record_round_trip_and_restore(issued: Issued) -> None:
    record = StoredCredentials.issued(issued.credentials)
    data = encode(record)
    assert data.count(b"\n") == 2 and b'"format":"spire-pqc/agent-credentials/v1"' in data
    back = decode(data, path=f"/x/{record.file_name}")
    assert back == record and back.complete
    restored = restore(back, issued.svid, issued.bundles, at=dt.datetime.now(dt.UTC))
    assert restored.problem is None and restored.credentials is not None
    assert restored.credentials.pqc_chain == issued.credentials.pqc_chain
    assert restored.mldsa.seed() == issued.credentials.pqc_key.seed()
    assert restored.mlkem.seed() == issued.credentials.kem_key.seed()


def test_pending_record_gives_the_keys_back(issued: Issued) -> None:
    record = StoredCredentials.pending(issued.svid, issued.credentials.pqc_key, issued.credentials.kem_key)
    back = decode(encode(record), path=record.file_name)
    assert not back.complete
    restored = restore(back, issued.svid, issued.bundles, at=dt.datetime.now(dt.UTC))
    assert restored.credentials is None and restored.problem is None
    assert restored.mldsa.public_key() == issued.credentials.pqc_key.public_key()


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_damaged_records_are_refused_without_echoing_secrets(issued: Issued) -> None:
    record = StoredCredentials.issued(issued.credentials)
    data = encode(record)
    name = f"/s/{record.file_name}"
    secrets = [issued.credentials.pqc_key.seed().hex(), issued.credentials.kem_key.seed().hex()]
    secrets += [base64.b64encode(record.mldsa_pkcs8).decode(), base64.b64encode(record.mlkem_pkcs8).decode()]
    line = data.split(b"\n")[0]

    def resealed(body: dict[str, object]) -> bytes:
        raw = json.dumps(body).encode()
        return raw + b"\nsha256:" + hashlib.sha256(raw).hexdigest().encode() + b"\n"

    body = json.loads(line)
    cases = {
        "torn (truncated)": data[: len(data) // 2],
        "truncated by one byte": data[:-1],
        "a flipped bit in a key": _flip(data, line.index(b"mldsa65_key") + 20),
        "a flipped bit in the checksum": _flip(data, len(data) - 3),
        "empty": b"",
        "garbage": os.urandom(300),
        "unknown field": resealed({**body, "extra": 1}),
        "wrong key length": resealed({**body, "mldsa65_key": base64.b64encode(b"x" * 300).decode()}),
        "wrong type": resealed({**body, "classical_not_after": "soon"}),
        "other format": resealed({**body, "format": "spire-pqc/agent-credentials/v9"}),
        "one chain only": resealed({**body, "kem_certificate_chain": []}),
        "names another SVID": resealed({**body, "classical_leaf_sha256": "0" * 64}),
    }
    for what, bad in cases.items():
        with pytest.raises(CorruptKeyFileError) as info:
            decode(bad, path=name)
        message = str(info.value)
        assert name in message, what
        assert not any(s in message for s in secrets), f"{what}: the error echoes key material"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(CorruptKeyFileError):
        decode(data, path="/s/" + "a" * 64 + ".cred")


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_changed_byte_is_detected(index: int, value: int) -> None:
    record = StoredCredentials(
        "spiffe://example.org/w",
        bytes(range(32)),
        dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        MLDSA65PrivateKey.generate().pkcs8(),
        MLKEM768PrivateKey.generate().pkcs8(),
    )
    data = bytearray(encode(record))
    index %= len(data)
    if data[index] == value:
        return
    data[index] = value
    with pytest.raises(CorruptKeyFileError):
        decode(bytes(data), path=record.file_name)


def test_planted_certificates_are_not_served(issued: Issued) -> None:
    """Someone who can write the directory plants certificates for keys of their choice.

    Certificates of another classical SVID fail the RelatedCertificate check; certificates made for
    *this* classical leaf by another PQC hierarchy (with its root as the record's bundle) fail the
    binding check: the SPIRE-issued leaf names the real intermediate. Neither is served.
    """
    now = dt.datetime.now(dt.UTC)
    other = issue()  # same SPIFFE ID, another PQC hierarchy and classical SVID
    record = StoredCredentials.issued(issued.credentials)
    foreign = dataclasses.replace(
        record,
        pqc_chain=other.credentials.pqc_chain,
        kem_chain=other.credentials.kem_chain,
        pqc_bundle=other.credentials.pqc_bundle,
        mldsa_pkcs8=other.credentials.pqc_key.pkcs8(),
        mlkem_pkcs8=other.credentials.kem_key.pkcs8(),
    )
    restored = restore(foreign, issued.svid, issued.bundles, at=now)
    assert restored.credentials is None
    assert restored.problem is not None and "related-certificate" in restored.problem

    attacker = other.authority.hierarchy
    mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    leaf_der = issued.svid.chain_der_list[0]
    when = {"not_before": now - dt.timedelta(minutes=1), "not_after": issued.svid.not_after}
    inter = attacker.intermediate
    pqc = certs.build_pqc_svid(inter.certificate, inter.key, mldsa.public_key(), str(WORKLOAD),
                               trust_domain=TD.name, classical_leaf_der=leaf_der, **when)  # fmt: skip
    kem = certs.build_kem_certificate(inter.certificate, inter.key, mlkem.public_key(), str(WORKLOAD),
                                      trust_domain=TD.name, classical_leaf_der=leaf_der, **when)  # fmt: skip
    inter_der = inter.certificate.public_bytes(serialization.Encoding.DER)
    crafted = dataclasses.replace(
        record,
        mldsa_pkcs8=mldsa.pkcs8(),
        mlkem_pkcs8=mlkem.pkcs8(),
        pqc_chain=(pqc.public_bytes(serialization.Encoding.DER), inter_der),
        kem_chain=(kem.public_bytes(serialization.Encoding.DER), inter_der),
        pqc_bundle=(attacker.root.public_bytes(serialization.Encoding.DER),),
    )
    restored = restore(crafted, issued.svid, issued.bundles, at=now)
    assert restored.credentials is None
    assert restored.problem is not None and restored.problem.startswith("binding")

    # A record of another classical SVID is refused outright.
    with pytest.raises(CorruptKeyFileError, match="not for"):
        restore(StoredCredentials.issued(other.credentials), issued.svid, issued.bundles, at=now)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_directory_is_private_locked_and_cleaned(
    tmp_path: Path, issued: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state"
    state = StateDirectory(path)
    assert state.open() == 0
    try:
        assert _mode(path) == 0o700
        record = StoredCredentials.issued(issued.credentials)
        state.save(record)
        assert _mode(path / record.file_name) == 0o600
        # A second agent on the same directory is refused, naming the holder.
        with pytest.raises(
            ConfigError, match=f"in use by another running spire-pqc agent \\(pid {os.getpid()}\\)"
        ):
            StateDirectory(path).open()
    finally:
        state.close()

    # Damaged, foreign, leftover and expired files, then a restart.
    expired = dataclasses.replace(
        record, leaf_hash=b"\x01" * 32, classical_not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    (path / expired.file_name).write_bytes(encode(expired))
    os.chmod(path / expired.file_name, 0o600)
    torn = path / ("ab" * 32 + ".cred")
    torn.write_bytes(encode(record)[:100])
    os.chmod(torn, 0o600)
    readable = path / ("cd" * 32 + ".cred")
    readable.write_bytes(encode(dataclasses.replace(record, leaf_hash=bytes.fromhex("cd" * 32))))
    os.chmod(readable, 0o644)
    leftover = path / f".{record.file_name}.x1y2.tmp"
    leftover.write_bytes(b"half")
    (path / "notes.txt").write_text("operator notes")
    caplog.set_level(logging.WARNING, logger="spire_pqc.agent.state")
    again = StateDirectory(path)
    try:
        assert again.open() == 1
        assert again.get(record.leaf_hash) == record
    finally:
        again.close()
    remaining = sorted(p.name for p in path.iterdir())
    assert remaining == sorted([record.file_name, "lock", "notes.txt"])
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("checksum" in w or "torn" in w for w in warnings) == 1
    assert sum("lets other users access" in w for w in warnings) == 1
    assert sum("notes.txt" in w for w in warnings) == 1


def test_directory_others_can_use_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(ConfigError, match="chmod 700"):
        StateDirectory(open_dir).open()
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        StateDirectory(foreign).open()
    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic links are refused"):
        StateDirectory(tmp_path / "link").open()
    assert not any(open_dir.iterdir()) and not any(target.iterdir())


def test_prune_removes_expired_records(tmp_path: Path, issued: Issued) -> None:
    state = StateDirectory(tmp_path / "s")
    state.open()
    try:
        record = StoredCredentials.issued(issued.credentials)
        state.save(record)
        state.close()
        state.open()
        assert state.get(record.leaf_hash) is not None
        state.prune(record.classical_not_after + dt.timedelta(seconds=1))
        assert state.get(record.leaf_hash) is None
        assert not (tmp_path / "s" / record.file_name).exists()
    finally:
        state.close()


def test_discarding_a_record_never_written_is_silent(
    tmp_path: Path, issued: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot superseded before its keys were kept has no file: nothing to remove, nothing to warn about
    (the rotation soak logged one warning per such slot)."""
    state = StateDirectory(tmp_path / "s")
    state.open()
    try:
        with caplog.at_level(logging.WARNING, logger="spire_pqc.agent.state"):
            state.discard(StoredCredentials.issued(issued.credentials).leaf_hash)
        assert not caplog.records
    finally:
        state.close()
