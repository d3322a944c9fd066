"""The dev source's kept CA directory: private, complete or absent, one winner among racing agents."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc.agent.config import parse
from spire_pqc.ca.devca import FILES, DevAuthority
from spire_pqc.errors import ConfigError, CorruptKeyFileError, KeyFileError, KeyFilePermissionError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import verify_svid_binding

TD = TrustDomain("example.org")
DER = serialization.Encoding.DER


def fingerprint(authority: DevAuthority) -> tuple[bytes, ...]:
    return (
        authority.classical.certificate.public_bytes(DER),
        authority.hierarchy.root.public_bytes(DER),
        authority.hierarchy.intermediate.certificate.public_bytes(DER),
        authority.jwt_key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def test_created_private_then_loaded_unchanged(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "dev-ca"
    created = DevAuthority.load_or_create(directory, TD)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)
    assert all(stat.S_IMODE((directory / name).stat().st_mode) == 0o600 for name in FILES)
    again = DevAuthority.load_or_create(directory, TD)
    assert fingerprint(again) == fingerprint(created)
    # The loaded CAs work: the classical CA's SVIDs carry a binding by the kept intermediate.
    cert, _ = again.classical.issue_svid(SpiffeId.parse("spiffe://example.org/w"))
    verify_svid_binding(cert, [created.hierarchy.intermediate.public_key])
    assert cert.issuer == created.classical.certificate.subject
    assert not [p for p in directory.parent.iterdir() if p.name.endswith(".tmp")]  # no staging leftovers


def _race(directory: str, barrier: Any, out: Any) -> None:
    barrier.wait(60)  # every racer looks at the empty directory at (nearly) the same time
    saw_empty = not any(Path(directory).iterdir())
    authority = DevAuthority.load_or_create(directory, TD)
    out.put((fingerprint(authority)[1], saw_empty))


def test_agents_starting_at_once_on_an_empty_directory_share_one_ca(tmp_path: Path) -> None:
    directory = tmp_path / "dev-ca"
    directory.mkdir(mode=0o700)  # an operator may create the (empty) directory beforehand
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    barrier = context.Barrier(6)
    racers = [context.Process(target=_race, args=(str(directory), barrier, out)) for _ in range(6)]
    for racer in racers:
        racer.start()
    results = [out.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    roots = [root for root, _ in results]
    assert sum(saw_empty for _, saw_empty in results) >= 2  # a real race: several created a CA
    assert len(set(roots)) == 1  # one winner; the others loaded its CA
    assert fingerprint(DevAuthority.load(directory, TD))[1] == roots[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unsafe_incomplete_foreign_or_corrupt_directories_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dev-ca"
    DevAuthority.load_or_create(directory, TD)
    with pytest.raises(KeyFileError, match=r"spiffe://example\.org, not of spiffe://other\.org"):
        DevAuthority.load_or_create(directory, TrustDomain("other.org"))
    os.chmod(directory, 0o755)
    with pytest.raises(KeyFilePermissionError, match="chmod 700"):
        DevAuthority.load_or_create(directory, TD)
    os.chmod(directory, 0o700)
    key = directory / "intermediate.key.pem"
    original = key.read_bytes()
    key.write_bytes(original[:40])
    with pytest.raises(CorruptKeyFileError, match=r"intermediate\.key\.pem"):
        DevAuthority.load_or_create(directory, TD)
    key.write_bytes(original)
    os.chmod(key, 0o644)
    with pytest.raises(KeyFilePermissionError, match=r"intermediate\.key\.pem"):
        DevAuthority.load_or_create(directory, TD)
    key.unlink()
    with pytest.raises(KeyFileError, match="no such key file"):  # incomplete: never silently replaced
        DevAuthority.load_or_create(directory, TD)


def test_config_defaults_keep_state_beside_the_socket() -> None:
    agent = {"socket_path": "/run/spire-pqc/agent.sock"}
    config = parse({"agent": agent, "source": {"kind": "dev", "dev": {"trust_domain": "example.org"}}})
    assert config.state_dir == Path("/run/spire-pqc/agent-state")
    assert config.source.ca_dir == Path("/run/spire-pqc/agent-state/dev-ca")  # type: ignore[union-attr]
    config = parse(
        {
            "agent": {**agent, "state_dir": "/var/lib/spire-pqc/agent"},
            "source": {"kind": "dev", "dev": {"trust_domain": "example.org", "ca_dir": "/srv/shared-dev-ca"}},
        }
    )
    assert config.state_dir == Path("/var/lib/spire-pqc/agent")
    assert config.source.ca_dir == Path("/srv/shared-dev-ca")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"agent.state_dir: 'state' must be an absolute path.*"
                                        r"source.dev.ca_dir: 'ca' must be an absolute path"):  # fmt: skip
        parse(
            {
                "agent": {**agent, "state_dir": "state"},
                "source": {"kind": "dev", "dev": {"trust_domain": "example.org", "ca_dir": "ca"}},
            }
        )
