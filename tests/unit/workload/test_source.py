"""HybridX509Source against a real agent: verified SVIDs, rotation, reconnect, environment variable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spire_pqc.agent.server import Agent
from spire_pqc.cli.svid_fetch import _output_directory
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import AuthorizationError, KeyFilePermissionError
from spire_pqc.svid import verify_hybrid_svid
from spire_pqc.workload.client import WorkloadClient
from spire_pqc.workload.source import HybridX509Source
from tests.unit.agent._support import ME, dev_config, running_agent, short_dir


@pytest.mark.asyncio
async def test_source_serves_verified_svid_and_follows_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_agent() as agent:
        monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{agent.socket_path}")
        async with HybridX509Source() as source:
            svid = source.svid
            assert str(svid.spiffe_id) == ME and svid.hint == "me"
            verify_hybrid_svid(
                svid.classical_chain, svid.pqc_chain, svid.kem_chain,
                classical_bundles=source.classical_bundles, pqc_bundles=source.pqc_bundles,
            )  # fmt: skip
            before = source.version
            waiter = asyncio.create_task(source.wait_until_updated(10))
            await agent.source.rotate_now()  # type: ignore[attr-defined]
            await waiter
            assert source.version > before
            assert source.svid.classical_chain[0] != svid.classical_chain[0]
            assert source.svid.pqc_key.seed() != svid.pqc_key.seed()


@pytest.mark.asyncio
async def test_source_reconnects_after_agent_restart() -> None:
    directory = short_dir()
    config = dev_config(directory)
    first = Agent(config)
    await first.start()
    source = HybridX509Source(address=f"unix://{config.socket_path}", retry_initial=0.05, retry_max=0.2)
    try:
        await source.start(timeout=10)
        old_classical, old_pqc = source.classical_bundles, source.pqc_bundles
        old_serial = source.svid.classical_chain[0].serial_number
        version = source.version
        await first.close()
        async with Agent(config):
            await source.wait_until_updated(20, since=version)
            # The dev source issued new SVIDs, under the dev CAs it kept in its state directory: what
            # the workload trusted before the restart still verifies them.
            assert source.svid.classical_chain[0].serial_number != old_serial
            source.svid.verify(classical_bundles=old_classical, pqc_bundles=old_pqc)
    finally:
        await source.close()


@pytest.mark.asyncio
async def test_client_one_shot_calls() -> None:
    async with running_agent() as agent, WorkloadClient(f"unix://{agent.socket_path}") as client:
        context = await client.fetch_x509_context()
        assert [str(s.spiffe_id) for s in context.svids] == [ME]
        hybrid = await client.fetch_hybrid_svids()
        assert hybrid.svids[0].classical_chain == context.svids[0].chain
        async with contextlib.aclosing(client.watch_pqc_bundles()) as stream:
            bundles = await anext(stream)
        assert [td.name for td in bundles.trust_domains] == ["example.org"]


@pytest.mark.asyncio
async def test_a_caller_without_an_entry_gets_no_identity_issued() -> None:
    """The agent answers PermissionDenied ("no identity issued"): start() says so with a typed
    AuthorizationError, not a TimeoutError (it keeps retrying until then, as the Workload API asks)."""
    config = dev_config(short_dir(), selectors=["unix:uid:4294967294"])  # an entry for nobody's uid
    async with running_agent(config) as agent:
        source = HybridX509Source(address=f"unix://{agent.socket_path}", retry_initial=0.05, retry_max=0.2)
        try:
            with pytest.raises(
                AuthorizationError, match=r"^no identity issued for this process by the agent "
            ):
                await source.start(timeout=2)
        finally:
            await source.close()


async def _svid_fetch(socket: Path, out: Path, *extra: str) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spire_pqc.cli", "svid", "fetch", "--socket", f"unix://{socket}",
        "--write", str(out), *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
async def test_svid_fetch_without_an_entry_or_in_time_says_so_without_a_traceback(tmp_path: Path) -> None:
    """No registration entry matches the caller: the agent's "no identity issued", typed, exit 1; no answer
    within --timeout: which agent, and where to look; never a TimeoutError's traceback."""
    config = dev_config(short_dir(), selectors=["unix:uid:4294967294"])  # an entry for nobody's uid
    async with running_agent(config) as agent:
        code, out, err = await _svid_fetch(agent.socket_path, tmp_path / "none")
        assert (code, out) == (1, "") and "Traceback" not in err, err
        assert err.strip() == (
            f"spire-pqc: error: Workload API at unix://{agent.socket_path}: PERMISSION_DENIED: no identity issued"
        )
        code, out, err = await _svid_fetch(agent.socket_path, tmp_path / "none", "--timeout", "0.000001")
        assert (code, out) == (1, "") and "Traceback" not in err, err
        assert err.startswith(
            f"spire-pqc: error: no hybrid SVID from the agent at unix://{agent.socket_path} "
        )
    assert not (tmp_path / "none").exists()


@pytest.mark.asyncio
async def test_svid_fetch_writes_the_hybrid_svid_that_svid_inspect_verifies(tmp_path: Path) -> None:
    """`spire-pqc svid fetch --write DIR` against a running agent: three chains, keys 0600, bundles; then
    `spire-pqc svid inspect --dir DIR` verifies what was written."""
    out = tmp_path / "svid"
    async with running_agent() as agent:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "spire_pqc.cli", "svid", "fetch", "--socket", f"unix://{agent.socket_path}",
            "--write", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().startswith(f"{ME}: written to {out}")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {
        "svid.pem": 0o644, "svid.key": 0o600, "pqc_svid.pem": 0o644, "pqc_svid.key": 0o600,
        "kem.pem": 0o644, "kem.key": 0o600, "bundle.pem": 0o644, "pqc_bundle.pem": 0o644,
    }  # fmt: skip
    inspect = subprocess.run([sys.executable, "-m", "spire_pqc.cli", "svid", "inspect", "--dir", str(out)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr
    assert MLDSA65PrivateKey.from_pem((out / "pqc_svid.key").read_bytes())


def test_svid_fetch_refuses_an_output_directory_another_user_controls(tmp_path: Path) -> None:
    """The planted-symlink and shared-directory attacks on `svid fetch --write`: each refused, naming the
    directory, before anything is written."""
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    planted = tmp_path / "out-link"
    planted.symlink_to(victim)
    with pytest.raises(KeyFilePermissionError, match="symbolic link") as link:
        _output_directory(planted)
    assert link.value.path == str(planted)

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(KeyFilePermissionError, match="chmod go-w"):
        _output_directory(shared)

    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(KeyFilePermissionError, match="not a directory"):
        _output_directory(not_a_dir)

    if os.geteuid() == 0:  # only root can hand a directory to another uid
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
        with pytest.raises(KeyFilePermissionError, match="owned by uid 65534"):
            _output_directory(foreign)

    fresh = tmp_path / "new" / "svid"
    _output_directory(fresh)
    assert fresh.is_dir() and not fresh.stat().st_mode & 0o022
    assert list(victim.iterdir()) == []
