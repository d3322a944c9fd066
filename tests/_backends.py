"""Running tests on both PQ backends.

The backend is chosen once per process in production (so a process never mixes them). Tests need
both, so the ``pq_backend`` fixture swaps the private ``_backend._selected`` for the duration of one
test with ``monkeypatch`` (restored afterwards) - a test-only hook that adds nothing to the package.
Both backend objects are built once per session: the liboqs one loads the library from
``OQS_INSTALL_PATH`` (default: what ``make liboqs`` builds). The backend's own selection through
``SPIRE_PQC_BACKEND`` is exercised separately, in child processes (tests/unit/crypto/test_backends.py
and the real-process tests of the agent and the plugin).

liboqs is built from the tarball in the repository, so a missing build is a failure naming the
command that builds it, never a skip.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spire_pqc.crypto import _backend

BACKENDS = ("openssl", "liboqs")
LIBOQS_VERSION = "0.16.0"
BUILD_COMMAND = "make liboqs  (scripts/build-liboqs.sh: builds third_party/liboqs/liboqs-0.16.0.tar.gz)"


def liboqs_install_path() -> Path:
    """``OQS_INSTALL_PATH`` if set, else the prefix ``make liboqs`` installs to."""
    explicit = os.environ.get("OQS_INSTALL_PATH")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("SPIRE_PQC_CACHE") or Path.home() / ".cache" / "spire-pqc")
    return cache / f"liboqs-{LIBOQS_VERSION}"


def require_liboqs() -> Path:
    """The liboqs install prefix; fails the test (with the build command) when the library is missing."""
    prefix = liboqs_install_path()
    if not (prefix / "lib" / "liboqs.so").exists():
        pytest.fail(f"liboqs is not built in {prefix} (OQS_INSTALL_PATH); run: {BUILD_COMMAND}")
    return prefix


def liboqs_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must run on the liboqs backend."""
    env = dict(os.environ, OQS_INSTALL_PATH=str(require_liboqs()), SPIRE_PQC_BACKEND="liboqs")
    env.update(extra)
    return env


@functools.cache
def _liboqs_backend() -> _backend.Backend:
    prefix = require_liboqs()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OQS_INSTALL_PATH", str(prefix))
        return _backend._build("liboqs")


def backend_instance(name: str) -> _backend.Backend:
    if name == "liboqs":
        return _liboqs_backend()
    return _backend._build(name)


@pytest.fixture(params=BACKENDS)
def pq_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test on each backend; yields its name."""
    name: str = request.param
    monkeypatch.setattr(_backend, "_selected", backend_instance(name))
    yield name
