"""An unmodified go-spiffe v2 Workload API client (built by the test with the Go toolchain) against our agent."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.agent._support import ME, TRUST_DOMAIN, dev_config, running_agent, short_dir

pytestmark = pytest.mark.timeout(600)

SOURCE = Path(__file__).parent / "gospiffe"


@pytest.fixture(scope="module")
def gospiffe_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "the Go toolchain is required for the go-spiffe interop test"
    binary = tmp_path_factory.mktemp("gospiffe") / "gospiffe-client"
    env = dict(os.environ, CGO_ENABLED="0")
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SOURCE,
        check=False,
        capture_output=True,
        text=True,
        timeout=480,
        env=env,
    )
    assert result.returncode == 0, f"go build failed:\n{result.stdout}{result.stderr}"
    return binary


@pytest.mark.asyncio
async def test_gospiffe_client_fetches_and_sees_rotation(gospiffe_client: Path) -> None:
    config = dev_config(short_dir(), ttl="2s")
    async with running_agent(config):
        proc = await asyncio.create_subprocess_exec(
            str(gospiffe_client), "watch", "-addr", f"unix://{config.socket_path}", "-updates", "3",
            "-timeout", "60s", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, stderr.decode()
    updates = [line.split() for line in stdout.decode().splitlines() if line.startswith("update ")]
    assert len(updates) == 3
    assert {u[2] for u in updates} == {ME}
    assert all(u[4] == TRUST_DOMAIN for u in updates)
    # A rotation is a new leaf: go-spiffe saw at least two different serials.
    assert len({u[3] for u in updates}) >= 2
