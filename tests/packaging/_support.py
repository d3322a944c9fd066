"""What the packaging tests share: the checkout's file list, the built distributions and a venv outside
the checkout that runs the installed console scripts."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class InstalledVenv:
    """A virtualenv with the wheel installed; ``run`` starts its commands outside the checkout."""

    root: Path
    workdir: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self) -> dict[str, str]:
        """A minimal environment: the venv's bin first, no PYTHONPATH, no trace of the dev venv."""
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
        }
        for passthrough in ("SPIRE_PQC_CACHE", "SPIRE_PQC_OPENSSL", "TMPDIR"):
            if passthrough in os.environ:
                env[passthrough] = os.environ[passthrough]
        return env

    def run(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if not Path(command[0]).is_absolute():
            command[0] = str(self.bin / command[0])
        return subprocess.run(
            command, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )  # fmt: skip


def checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(CHECKOUT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [name for name in listed.split("\0") if name and (CHECKOUT / name).is_file()]
