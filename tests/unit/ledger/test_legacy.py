"""The 0.1 JSON-lines ledger (plugin_data ledger_path): imported once, or refused saying how."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc.ca.ledger import LegacyImport, open_ledger, read_legacy
from spire_pqc.errors import ConfigError, ParseError
from spire_pqc.plugin.config import build_config
from tests.unit.credentials.pki import Domain, Minted

FRESHNESS = dt.timedelta(seconds=60)
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def minted() -> tuple[Domain, list[Minted]]:
    domain = Domain.create("example.org")
    return domain, [domain.mint(f"/app/{i}") for i in range(3)]


def line(m: Minted, *, keys: str = "a" * 64, expires: dt.datetime | None = None) -> str:
    """One line as spire-pqc 0.1's FileLedger wrote it."""

    def chain(items: list[object]) -> list[str]:
        return [base64.b64encode(c.public_bytes(DER)).decode() for c in items]  # type: ignore[attr-defined]

    leaf = m.classical_leaf
    return json.dumps(
        {
            "serial": f"{leaf.issuer.rfc4514_string()}|{leaf.serial_number:x}",
            "keys": keys,
            "expires": (expires or leaf.not_valid_after_utc).isoformat(),
            "pqc": chain(list(m.pqc_chain)),
            "kem": chain(list(m.kem_chain)),
            "bundle": chain([m.pqc_chain[-1]]),
        },
        separators=(",", ":"),
    )


def test_import_once_then_rename(
    tmp_path: Path, minted: tuple[Domain, list[Minted]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, ms = minted
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    path = tmp_path / "ledger.jsonl"
    path.write_text(
        f"{line(ms[0], keys='1' * 64)}\n\n{line(ms[1], keys='2' * 64)}\n{line(ms[2], expires=old)}\n"
    )
    with open_ledger(
        f"sqlite://{tmp_path / 'l.db'}", on_ready=LegacyImport(path, database="test", freshness=FRESHNESS)
    ) as ledger:
        assert ledger.size().issuances == 2  # the expired third entry is not carried over
        now = dt.datetime.now(dt.UTC)
        first = ledger.lookup(
            f"{ms[0].classical_leaf.issuer.rfc4514_string()}|{ms[0].classical_leaf.serial_number:x}", now=now
        )
        assert first is not None and first.keys_fingerprint == "1" * 64
        assert first.spiffe_id == str(ms[0].spiffe_id)
        assert first.expires == ms[0].classical_leaf.not_valid_after_utc + FRESHNESS
        assert first.response.pqc_svid_chain[0] == ms[0].pqc_chain[0].public_bytes(DER)
    assert not path.exists() and (tmp_path / "ledger.jsonl.imported").exists()
    assert "2 entries, 1 expired skipped, 0 conflicts" in caplog.text


def test_a_torn_last_line_is_skipped_with_a_warning(
    tmp_path: Path, minted: tuple[Domain, list[Minted]], caplog: pytest.LogCaptureFixture
) -> None:
    _, ms = minted
    path = tmp_path / "ledger.jsonl"
    path.write_text(line(ms[0]) + "\n" + line(ms[1])[:200])  # the crash came mid-append
    assert [e.number for e in read_legacy(path, freshness=FRESHNESS)] == [1]
    assert "last line 2 is torn" in caplog.text


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b"\xff\xfe not utf-8", "line 2 is corrupt (UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "line 2 is corrupt (RecursionError"),
        (b'{"serial": 1}', "line 2 is corrupt"),
        (b"[1, 2]", "line 2 is corrupt (TypeError: not a JSON object"),
        (b'{"serial":"x","keys":"' + b"a" * 64 + b'","expires":"2030-01-01T00:00:00+00:00","pqc":["!!"],'
         b'"kem":[],"bundle":[]}', "line 2 is corrupt"),
    ],
)  # fmt: skip
def test_a_corrupt_line_is_a_parse_error_naming_it(
    tmp_path: Path, minted: tuple[Domain, list[Minted]], damage: bytes, message: str
) -> None:
    _, ms = minted
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(line(ms[0]).encode() + b"\n" + damage + b"\n" + line(ms[1]).encode() + b"\n")
    with pytest.raises(ParseError, match=message.replace("(", r"\(")):
        list(read_legacy(path, freshness=FRESHNESS))


def test_conflicting_entries_keep_the_first_and_say_so(
    tmp_path: Path, minted: tuple[Domain, list[Minted]], caplog: pytest.LogCaptureFixture
) -> None:
    _, ms = minted
    path = tmp_path / "ledger.jsonl"
    path.write_text(f"{line(ms[0], keys='1' * 64)}\n{line(ms[0], keys='2' * 64)}\n")
    with open_ledger(
        "sqlite://:memory:", on_ready=LegacyImport(path, database="test", freshness=FRESHNESS)
    ) as ledger:
        assert ledger.size().issuances == 1
    assert "security event" in caplog.text and "line 2" in caplog.text


# --- plugin_data ---------------------------------------------------------------------------------


def plugin_data(domain: Domain, tmp_path: Path, **extra: str) -> str:
    from spire_pqc.crypto.keys import NoEncryption
    from tests.unit.credentials.pki import pem

    key = tmp_path / "key.pem"
    key.write_bytes(domain.intermediate_key.pem(NoEncryption()))
    key.chmod(0o600)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem([domain.intermediate, domain.hierarchy.root]))
    root = tmp_path / "root.pem"
    root.write_bytes(pem([domain.hierarchy.root]))
    values = {
        "intermediate_key_path": str(key),
        "intermediate_cert_path": str(chain),
        "pqc_bundle_path": str(root),
        **extra,
    }
    return "\n".join(f'{k} = "{v}"' for k, v in values.items())


def test_ledger_path_without_a_database_is_refused_saying_how(
    tmp_path: Path, minted: tuple[Domain, list[Minted]]
) -> None:
    domain, ms = minted
    path = tmp_path / "ledger.jsonl"
    path.write_text(line(ms[0]) + "\n")
    with pytest.raises(ConfigError) as info:
        build_config("example.org", plugin_data(domain, tmp_path, ledger_path=str(path)))
    assert info.value.problems == [
        f'ledger_path: the JSON-lines ledger is replaced by a database; set ledger_dsn (e.g. "sqlite://'
        f'{tmp_path / "ledger.db"}") and keep ledger_path: its entries are imported at the first start, '
        "then the file is renamed *.imported"
    ]
    config = build_config(
        "example.org",
        plugin_data(domain, tmp_path, ledger_path=str(path), ledger_dsn=f"sqlite://{tmp_path}/l.db"),
    )
    assert config.ledger_path == path


def test_a_corrupt_ledger_path_fails_configuration_naming_the_line(
    tmp_path: Path, minted: tuple[Domain, list[Minted]]
) -> None:
    domain, ms = minted
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(line(ms[0]).encode() + b"\n\xff\n" + line(ms[1]).encode() + b"\n")
    with pytest.raises(ConfigError) as info:
        build_config(
            "example.org",
            plugin_data(domain, tmp_path, ledger_path=str(path), ledger_dsn=f"sqlite://{tmp_path}/l.db"),
        )
    (problem,) = info.value.problems
    assert problem.startswith(f"ledger_path: {path}: line 2 is corrupt (UnicodeDecodeError")
    assert "nothing was imported. Fix or delete that line" in problem


def test_ledger_keys_are_checked_together(tmp_path: Path, minted: tuple[Domain, list[Minted]]) -> None:
    domain, _ = minted
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        build_config(
            "example.org",
            plugin_data(
                domain, tmp_path,
                ledger_dsn="postgresql://spire:hunter2@db/ledger",
                ledger_password_file=str(secret),
                metrics_listen_address="0.0.0.0:9100",
                ledger_prune_interval="soon",
            ),
        )  # fmt: skip
    text = "\n".join(info.value.problems)
    assert "ledger_dsn: contains a password" in text
    assert "ledger_password_file:" in text and "mode 0644" in text
    assert "metrics_listen_address: '0.0.0.0:9100' must be a loopback address" in text
    assert "ledger_prune_interval: 'soon' is not a duration" in text
    assert "hunter2" not in text

    config = build_config(
        "example.org",
        plugin_data(
            domain, tmp_path,
            ledger_dsn="postgresql://spire@db/ledger", ledger_password_env="LEDGER_PW",
            metrics_listen_address="127.0.0.1:9100",
        ),
        environ={"LEDGER_PW": "hunter2"},
    )  # fmt: skip
    assert config.ledger_password == "hunter2"
    assert "hunter2" not in repr(config)
    assert config.metrics_listen_address == ("127.0.0.1", 9100)
    with pytest.raises(ConfigError, match="LEDGER_PW is not set"):
        build_config(
            "example.org",
            plugin_data(
                domain, tmp_path, ledger_dsn="postgresql://spire@db/ledger", ledger_password_env="LEDGER_PW"
            ),
            environ={},
        )
