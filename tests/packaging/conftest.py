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

import pytest

from tests.packaging._support import CHECKOUT, Dists, InstalledVenv, checkout_files


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
def installed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    """A fresh venv (from the base interpreter, not the dev venv) with only the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("venv")
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(root)], check=True, timeout=300)
    venv = InstalledVenv(root=root, workdir=tmp_path_factory.mktemp("outside"))
    result = venv.run(
        venv.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", CHECKOUT / "constraints.txt", dists.wheel, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return venv
