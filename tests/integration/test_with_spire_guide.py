"""docs/with-spire.md, followed literally: its numbered shell blocks run in order, in one bash, as root,
against the real SPIRE v1.15.3 binaries and this checkout's spire-pqc. Only the variables the guide declares
in step 0 are given (paths, free ports, and ``nobody``/``nogroup`` as the node agent's existing user and
group, so that the test adds no user to the machine)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.spire import cleanup, free_port, short_tempdir, spire_bin

pytestmark = [pytest.mark.spire, pytest.mark.timeout(900)]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "with-spire.md"
STEP = re.compile(r"^## (\d+)\. (.+)$")


def guide_steps(text: str) -> list[tuple[int, str, str]]:
    """(number, title, shell block) of each numbered step: exactly one ```sh block per step."""
    steps: list[tuple[int, str, str]] = []
    blocks: list[str] = []
    current: tuple[int, str] | None = None
    lines = iter(text.splitlines())
    for line in lines:
        heading = STEP.match(line)
        if heading:
            if current is not None:
                assert len(blocks) == 1, f"step {current[0]} has {len(blocks)} shell blocks"
                steps.append((*current, blocks[0]))
            current, blocks = (int(heading[1]), heading[2]), []
        elif line.strip() == "```sh":
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner)
            blocks.append("\n".join(body))
    if current is not None:
        assert len(blocks) == 1, f"step {current[0]} has {len(blocks)} shell blocks"
        steps.append((*current, blocks[0]))
    return steps


def test_the_guide_has_one_shell_block_per_numbered_step() -> None:
    steps = guide_steps(GUIDE.read_text())
    assert [n for n, _, _ in steps] == list(range(len(steps))) and len(steps) >= 10
    declared = set(re.findall(r': "\$\{(\w+):=', steps[0][2]))
    assert {"SPIRE_BIN", "SPQ_BIN", "GUIDE_DIR", "AGENT_USER", "ADMIN_GROUP"} <= declared


def _kill_started(directory: Path) -> None:
    """Stop what the guide started (its pid files), if its own last step did not: only a process whose
    command line still names the guide's directory (a pid may have been reused since)."""
    for pid_file in directory.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if str(directory).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def test_following_the_guide_gives_a_workload_a_verified_hybrid_svid() -> None:
    steps = guide_steps(GUIDE.read_text())
    directory = short_tempdir()
    directory.chmod(0o755)  # the guide's directory is inside: the node agent's user must reach it
    env = dict(os.environ)
    env.update(
        SPIRE_BIN=str(spire_bin("spire-server").parent),
        SPQ_BIN=str(Path(sys.executable).parent),  # this checkout's venv: spire-pqc, spire-pqc-composer
        GUIDE_DIR=str(directory / "guide"),
        SERVER_PORT=str(free_port()),
        CA_PORT=str(free_port()),
        HEALTH_PORT=str(free_port()),
        AGENT_USER="nobody",
        ADMIN_GROUP="nogroup",
    )
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    script = "set -euo pipefail\n" + "\n".join(
        f"echo {shlex.quote(f'=== step {n}. {title}')}\n{block}" for n, title, block in steps
    )
    try:
        result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                                timeout=800, check=False)  # fmt: skip
        out = result.stdout + result.stderr
        logs = "\n".join(
            f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for log in (directory / "guide").rglob("*.log")
        )
        assert result.returncode == 0, out[-6000:] + logs[-6000:]
        assert f"=== step {steps[-1][0]}." in out
        td = "example.org"
        # Step 8: the workload's hybrid SVID, written and verified; step 9: doctor found nothing wrong.
        assert f"spiffe://{td}/app: written to {directory / 'guide' / 'app-svid'}" in out, out[-4000:]
        assert "no problems found" in result.stderr, out[-4000:]
        assert "FAIL" not in result.stdout, out[-4000:]
        # The node agent ran as the guide's user, and kept the workload's keys in its state directory.
        state = directory / "guide" / "spire-pqc" / "state"
        assert state.stat().st_uid == 65534 and any(p.is_file() for p in state.rglob("*"))
        assert {p.name for p in (directory / "guide" / "app-svid").iterdir()} >= {
            "svid.pem", "svid.key", "pqc_svid.pem", "pqc_svid.key", "kem.pem", "kem.key", "bundle.pem",
            "pqc_bundle.pem",
        }  # fmt: skip
    finally:
        _kill_started(directory / "guide")
        cleanup(directory)
