"""Intermediate rotation in the plugin (issue 12): next → active → retiring → retired (archived).

The plugin's real Configure and ComposeWorkloadX509SVID servicers run on real files: an operator's
``spire-pqc ca intermediate --out-dir DIR/NAME`` output dropped into ``intermediates_dir`` is picked up
without a restart, signs from its activation, and the one it replaced is archived (key kept, 0600)
once what it signed has expired. The same through a real spire-server:
tests/integration/test_ca_lifecycle_spire.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.files import atomic_write
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.intermediates import ARCHIVE, CERT_FILE, KEY_FILE, Intermediate, State, schedule
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ConfigError
from spire_pqc.plugin.config import build_config
from spire_pqc.plugin.metrics import PluginMetrics
from spire_pqc.plugin.servicer import CredentialComposerServicer, PluginState
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509 import certs
from spire_pqc.x509.binding import parse_binding
from tests.unit.plugin.test_composer_errors import AbortingContext, compose_request

TD = TrustDomain.parse("example.org")
# The fixed instant of the pure schedule tests; the tests that run the watcher on the real clock
# issue relative to the moment they run (a module-level instant is minutes old by then in a full run).
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def hierarchy() -> PQCHierarchy:
    return PQCHierarchy.generate(TD)


def issue(
    hierarchy: PQCHierarchy,
    directory: Path,
    name: str,
    *,
    start: dt.timedelta,
    life: dt.timedelta,
    base: dt.datetime | None = None,
) -> Intermediate:
    """What `spire-pqc ca intermediate --out-dir directory/name` writes, valid from base+start for
    life (base: now)."""
    base = base if base is not None else dt.datetime.now(dt.UTC).replace(microsecond=0)
    key = MLDSA65PrivateKey.generate()
    cert = certs.build_intermediate(
        hierarchy.root, hierarchy.root_key, key.public_key(), str(TD),
        not_before=base + start, not_after=base + start + life,
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    atomic_write(directory / name / KEY_FILE, key.pem(NoEncryption()))
    atomic_write(
        directory / name / CERT_FILE, cert.public_bytes(pem) + hierarchy.root.public_bytes(pem), mode=0o644
    )
    return Intermediate(
        IntermediateCA(key, cert, (hierarchy.root,)),
        directory / name / CERT_FILE,
        directory / name / KEY_FILE,
    )


def hcl(root: Path, directory: Path, **extra: str) -> str:
    lines = [f'pqc_bundle_path = "{root}"', f'intermediates_dir = "{directory}"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines)


def setup(tmp_path: Path, hierarchy: PQCHierarchy) -> tuple[Path, Path]:
    root = tmp_path / "root.crt.pem"
    root.write_bytes(hierarchy.root.public_bytes(serialization.Encoding.PEM))
    directory = tmp_path / "intermediates"
    directory.mkdir(mode=0o700)
    return root, directory


def binder(state: PluginState) -> str:
    composer = CredentialComposerServicer(state)
    out = composer.ComposeWorkloadX509SVID(compose_request(), AbortingContext())  # type: ignore[arg-type]
    (extension,) = out.attributes.extra_extensions
    return parse_binding(extension.value).issuer_key_id.hex()


# --- the schedule --------------------------------------------------------------------------------


def test_schedule_next_activates_at_the_fraction_then_the_old_one_retires(
    hierarchy: PQCHierarchy, tmp_path: Path
) -> None:
    hour = dt.timedelta(hours=1)
    a = issue(hierarchy, tmp_path, "a", start=-hour, life=4 * hour, base=NOW)  # its midpoint: NOW + 1h
    b = issue(hierarchy, tmp_path, "b", start=-hour / 2, life=4 * hour, base=NOW)

    def at(offset: dt.timedelta) -> dict[str, State]:
        current = schedule([b, a], at=NOW + offset, activation=0.5, svid_ttl=hour)
        return {e.key_id: e.state for e in current.entries}

    assert at(dt.timedelta(0)) == {a.key_id: State.ACTIVE, b.key_id: State.NEXT}
    assert at(hour + dt.timedelta(seconds=1)) == {a.key_id: State.RETIRING, b.key_id: State.ACTIVE}
    assert at(2 * hour + dt.timedelta(seconds=1)) == {a.key_id: State.RETIRED, b.key_id: State.ACTIVE}
    revoked = schedule([a, b], at=NOW, activation=0.5, svid_ttl=hour, revoked={a.key_id})
    assert revoked.active is not None and revoked.active.key_id == b.key_id
    assert [e.state for e in revoked.entries if e.key_id == a.key_id] == [State.REVOKED]
    assert a.ca.public_key not in revoked.binding_keys()


def test_schedule_warns_when_past_the_activation_point_with_no_next(
    hierarchy: PQCHierarchy, tmp_path: Path
) -> None:
    hour = dt.timedelta(hours=1)
    a = issue(hierarchy, tmp_path, "a", start=-hour, life=4 * hour, base=NOW)
    assert not schedule([a], at=NOW, activation=0.5, svid_ttl=hour).rotation_overdue()
    assert schedule([a], at=NOW + 2 * hour, activation=0.5, svid_ttl=hour).rotation_overdue()
    b = issue(hierarchy, tmp_path, "b", start=hour, life=4 * hour, base=NOW)
    assert not schedule([a, b], at=NOW + 2 * hour, activation=0.5, svid_ttl=hour).rotation_overdue()


# --- the running plugin --------------------------------------------------------------------------


def test_a_dropped_in_intermediate_is_picked_up_without_a_restart_and_signs_from_its_activation(
    tmp_path: Path, hierarchy: PQCHierarchy, caplog: pytest.LogCaptureFixture
) -> None:
    root, directory = setup(tmp_path, hierarchy)
    minute = dt.timedelta(minutes=1)
    # A is past half of its life already: the rotation is overdue until a next one arrives.
    a = issue(hierarchy, directory, "a", start=-2 * minute, life=3 * minute)
    metrics = PluginMetrics()
    state = PluginState(metrics=metrics)
    caplog.set_level(logging.INFO, logger="spire_pqc.plugin.intermediates")
    state.configure(
        "example.org", hcl(root, directory, intermediates_poll_interval='"100ms"', max_x509_svid_ttl='"1h"')
    )
    try:
        assert binder(state) == a.key_id
        assert metrics.value("spire_pqc_plugin_intermediate_rotation_overdue") == 1
        assert any("NO next intermediate is ready" in r.getMessage() for r in caplog.records)
        assert 0 < metrics.value("spire_pqc_plugin_intermediate_expiry_seconds") <= 60

        b = issue(hierarchy, directory, "b", start=-minute / 2, life=3 * minute)  # due at once: A is past 0.5
        deadline = time.monotonic() + 20
        while binder(state) != b.key_id:
            assert time.monotonic() < deadline, "the new intermediate was not picked up"
            time.sleep(0.05)
        current = state.current()
        assert current is not None
        states = {e.key_id: e.state for e in current.intermediates.current().entries}
        assert states == {a.key_id: State.RETIRING, b.key_id: State.ACTIVE}
        assert metrics.value("spire_pqc_plugin_intermediate_rotation_overdue") in (0, 1)  # next poll
        time.sleep(0.3)
        assert metrics.value("spire_pqc_plugin_intermediate_rotation_overdue") == 0
        assert metrics.value("spire_pqc_plugin_intermediates", state="retiring") == 1
        assert (directory / "a" / KEY_FILE).exists()  # retiring: not archived yet
    finally:
        state.close()


def test_a_retired_intermediate_is_archived_with_its_key_never_deleted(
    tmp_path: Path, hierarchy: PQCHierarchy
) -> None:
    root, directory = setup(tmp_path, hierarchy)
    minute = dt.timedelta(minutes=1)
    a = issue(hierarchy, directory, "a", start=-2 * minute, life=3 * minute)
    b = issue(hierarchy, directory, "b", start=-minute, life=3 * minute)  # active since NOW - 30s
    state = PluginState()
    # What A signed lived at most 1s: it retired 29s ago.
    state.configure("example.org", hcl(root, directory, max_x509_svid_ttl='"1s"'))
    try:
        assert binder(state) == b.key_id
        archived = list((directory / ARCHIVE).iterdir())
        assert [p.name for p in archived] == [f"a-{a.key_id[:16]}"]
        key = archived[0] / KEY_FILE
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert MLDSA65PrivateKey.from_pem(key.read_bytes()).public_key() == a.ca.public_key
        assert not (directory / "a").exists()
    finally:
        state.close()


def test_a_revoked_intermediate_never_signs(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    root, directory = setup(tmp_path, hierarchy)
    minute = dt.timedelta(minutes=1)
    a = issue(hierarchy, directory, "a", start=-minute, life=10 * minute)
    b = issue(hierarchy, directory, "b", start=-minute / 2, life=10 * minute)  # next: A is not at 0.5 yet
    state = PluginState()
    try:
        state.configure("example.org", hcl(root, directory))
        assert binder(state) == a.key_id
        state.configure("example.org", hcl(root, directory, revoked_intermediates=f'["{a.key_id}"]'))
        assert binder(state) == b.key_id
        with pytest.raises(ConfigError, match="no intermediate is usable now"):
            build_config(
                "example.org", hcl(root, directory, revoked_intermediates=f'["{a.key_id}", "{b.key_id}"]')
            )
        with pytest.raises(ConfigError, match=r"revoked_intermediates\[0\]: .* is not a key id"):
            build_config("example.org", hcl(root, directory, revoked_intermediates='["abc"]'))
    finally:
        state.close()


def test_without_any_intermediate_the_configuration_says_what_to_set(
    tmp_path: Path, hierarchy: PQCHierarchy
) -> None:
    root, _directory = setup(tmp_path, hierarchy)
    with pytest.raises(ConfigError, match=r"intermediate_cert_path: required \(or set intermediates_dir\)"):
        build_config("example.org", f'pqc_bundle_path = "{root}"')


def test_ca_status_shows_every_intermediate_with_its_state(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    root, directory = setup(tmp_path, hierarchy)
    minute = dt.timedelta(minutes=1)
    a = issue(hierarchy, directory, "a", start=-2 * minute, life=3 * minute)
    b = issue(hierarchy, directory, "b", start=-minute / 2, life=3 * minute)
    data = tmp_path / "plugin.hcl"
    data.write_text(hcl(root, directory, max_x509_svid_ttl='"1h"'))
    command = [sys.executable, "-m", "spire_pqc.cli.main", "ca", "status", "--plugin-data", str(data)]
    out = subprocess.run(
        [*command, "--trust-domain", "example.org", "--json"], capture_output=True, check=True
    )
    status = json.loads(out.stdout)
    by_id = {i["key_id"]: i for i in status["intermediates"]}
    assert by_id[a.key_id]["state"] == "retiring" and by_id[b.key_id]["state"] == "active"
    assert by_id[a.key_id]["covers_until"] is not None
    assert status["rotation_overdue"] is False
    human = subprocess.run(
        [*command, "--trust-domain", "example.org"], capture_output=True, check=True, text=True
    )
    assert f"{b.key_id[:16]}  active" in human.stdout
    assert "retiring" in human.stdout and "signs new bindings and PQC certificates" in human.stdout


def test_a_root_added_to_the_bundle_file_is_picked_up_with_intermediates_under_it(
    tmp_path: Path, hierarchy: PQCHierarchy
) -> None:
    """Root rotation needs no restart: pqc_bundle_path is read again with intermediates_dir."""
    root, directory = setup(tmp_path, hierarchy)
    minute = dt.timedelta(minutes=1)
    issue(hierarchy, directory, "a", start=-2 * minute, life=3 * minute)
    state = PluginState()
    state.configure("example.org", hcl(root, directory, intermediates_poll_interval='"100ms"'))
    try:
        current = state.current()
        assert current is not None
        assert len(current.intermediates.roots()) == 1
        second = PQCHierarchy.generate(TD)
        with root.open("ab") as bundle:
            bundle.write(second.root.public_bytes(serialization.Encoding.PEM))
        under_second = issue(second, directory, "b", start=-minute / 2, life=3 * minute)  # due at once
        deadline = time.monotonic() + 20
        while binder(state) != under_second.key_id:
            assert time.monotonic() < deadline, "the new root and its intermediate were not picked up"
            time.sleep(0.05)
        assert len(current.intermediates.roots()) == 2
    finally:
        state.close()


def test_ca_status_shows_the_schedule_when_nothing_can_sign(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    root, directory = setup(tmp_path, hierarchy)
    a = issue(hierarchy, directory, "a", start=dt.timedelta(hours=1), life=dt.timedelta(hours=2))  # not yet
    data = tmp_path / "plugin.hcl"
    data.write_text(hcl(root, directory))
    command = [sys.executable, "-m", "spire_pqc.cli.main", "ca", "status", "--plugin-data", str(data)]
    out = subprocess.run(
        [*command, "--trust-domain", "example.org"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert f"{a.key_id[:16]}  next" in out.stdout
    assert "no intermediate can sign now" in out.stdout
