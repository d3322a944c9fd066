"""What the packaging tests share: the checkout's file list, the built distributions and a venv outside
the checkout that runs the installed console scripts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
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


def _usable_by_others(path: Path) -> bool:
    """Other users can reach and run ``path``: o+x on the file and on every directory above it."""
    resolved = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (resolved, *resolved.parents))


def interpreter_for_every_user() -> Path:
    """A Python >= 3.11 that an unprivileged service user can execute: the system's python3 when it is
    recent enough (what an /opt/spire-pqc venv is made from), else the interpreter running the tests."""
    candidates = [Path("/usr/bin/python3"), Path(getattr(sys, "_base_executable", sys.executable))]
    for candidate in candidates:
        if not candidate.exists() or not _usable_by_others(candidate):
            continue
        probe = subprocess.run(
            [str(candidate), "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 11))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.stdout.strip() == "True":
            return candidate
    raise AssertionError(
        f"no Python >= 3.11 with venv that other users can run among {[str(c) for c in candidates]}: "
        "install Debian's python3 and python3-venv (apt-get install python3-venv)"
    )
