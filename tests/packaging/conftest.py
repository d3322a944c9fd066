"""Fixtures of the packaging tests: the sdist and wheel built with the standard frontend, and a fresh
virtualenv outside the checkout with the wheel installed under the pinned constraints.

The build runs on a copy of the checkout's files (tracked and untracked-but-not-ignored, as
``git ls-files`` lists them), so it never writes into the working tree and sees exactly what a clean
clone would hold. pip's own cache (``~/.cache/pip``) is reused; nothing is fetched beyond PyPI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging._support import (
    CHECKOUT,
    Dists,
    InstalledVenv,
    checkout_files,
    interpreter_for_every_user,
)


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """``python -m build`` (sdist, then the wheel built *from the sdist*) on a copy of the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CHECKOUT / name, target)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (sdist,) = out.glob("spire_pqc-*.tar.gz")
    (wheel,) = out.glob("spire_pqc-*-py3-none-any.whl")
    return Dists(sdist=sdist, wheel=wheel)


@pytest.fixture(scope="session")
def installed(dists: Dists) -> Iterator[InstalledVenv]:
    """A fresh venv with only the wheel and its dependencies, usable by every local user (as an
    /opt/spire-pqc install is): made from an interpreter that other users may run, in a 0755 directory."""
    base = Path(tempfile.mkdtemp(prefix="spq-wheel-", dir="/tmp"))
    base.chmod(0o755)
    root, workdir = base / "venv", base / "outside"
    workdir.mkdir(mode=0o755)
    subprocess.run([str(interpreter_for_every_user()), "-m", "venv", str(root)], check=True, timeout=300)
    venv = InstalledVenv(root=root, workdir=workdir)
    result = venv.run(
        venv.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", CHECKOUT / "constraints.txt", dists.wheel, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    yield venv
    shutil.rmtree(base, ignore_errors=True)
