"""Locate and run the OpenSSL >= 3.5 command line that ``scripts/install-openssl.sh`` installs.

The host is Debian 12 (OpenSSL 3.0, no ML-KEM/ML-DSA), so the interop tests and ``spire-pqc bench crypto``
use Debian 13's OpenSSL through the wrapper ``$SPIRE_PQC_CACHE/bin/openssl35``, which starts trixie's
``openssl`` through trixie's own dynamic loader (``ld-linux-x86-64.so.2 --library-path …``), beside
bookworm's libc.

Reading the environment here is deliberate and limited to *finding a tool*: ``SPIRE_PQC_OPENSSL`` (a path,
or a command name on ``PATH``) overrides the default location.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spire_pqc.errors import NotConfiguredError, UnavailableError

ENV_OVERRIDE = "SPIRE_PQC_OPENSSL"
ENV_CACHE = "SPIRE_PQC_CACHE"
MIN_VERSION = (3, 5)
DEFAULT_TIMEOUT = 60.0
_INSTALL_HINT = (
    "run `make openssl` (scripts/install-openssl.sh) or set SPIRE_PQC_OPENSSL to an OpenSSL >= 3.5"
)
_VERSION_RE = re.compile(r"^OpenSSL (\d+)\.(\d+)\.(\d+)")


def default_location() -> Path:
    """Where the wrapper is expected: ``$SPIRE_PQC_OPENSSL``, else ``$SPIRE_PQC_CACHE/bin/openssl35``."""
    override = os.environ.get(ENV_OVERRIDE, "").strip()
    if override:
        # A bare name (e.g. "openssl" on a trixie host) is looked up on PATH; a path is taken as it is.
        found = shutil.which(override) if os.sep not in override else None
        return Path(found or override)
    cache = os.environ.get(ENV_CACHE, "").strip() or str(Path.home() / ".cache" / "spire-pqc")
    return Path(cache) / "bin" / "openssl35"


def parse_version(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` from ``openssl version`` output such as ``OpenSSL 3.5.9 29 Sep 2026 (...)``."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not an `openssl version` line: {text.strip()[:80]!r}")
    major, minor, patch = (int(group) for group in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class OpenSSLCli:
    """A verified OpenSSL >= 3.5 command line. Build it with :func:`find_openssl35`."""

    path: Path
    version: tuple[int, int, int]
    version_text: str

    def run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``openssl35 *args`` (``stdin`` fed to it) and capture its output.

        A timeout, and with ``check`` a non-zero exit, raise :class:`UnavailableError` with the command and
        the end of its stderr. ``env`` adds variables to the inherited environment.
        """
        command = [str(self.path), *args]
        full_env = {**os.environ, **env} if env is not None else None
        try:
            result = subprocess.run(
                command, input=stdin, capture_output=True, timeout=timeout, check=False, cwd=cwd, env=full_env
            )
        except subprocess.TimeoutExpired as exc:
            raise UnavailableError(f"`openssl {' '.join(args)}` timed out after {timeout:g} s") from exc
        except OSError as exc:
            raise UnavailableError(f"cannot run {self.path}: {exc}") from exc
        if check and result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()[-2000:]
            raise UnavailableError(f"`openssl {' '.join(args)}` exited with {result.returncode}: {stderr}")
        return result

    def run_text(self, args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Run a command that must succeed and return its stdout as text."""
        return self.run(args, timeout=timeout).stdout.decode(errors="replace")


def find_openssl35(path: Path | None = None, *, timeout: float = 10.0) -> OpenSSLCli:
    """Return the OpenSSL >= 3.5 command line at ``path`` (default: :func:`default_location`).

    Raises :class:`NotConfiguredError`, saying to run ``make openssl``, when it is missing, does not run,
    or is older than 3.5.
    """
    exe = path if path is not None else default_location()
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise NotConfiguredError(f"OpenSSL >= 3.5 command line not found at {exe}: {_INSTALL_HINT}")
    try:
        result = subprocess.run([str(exe), "version"], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotConfiguredError(f"{exe} does not run ({exc}): {_INSTALL_HINT}") from exc
    text = result.stdout.decode(errors="replace").strip()
    try:
        version = parse_version(text)
    except ValueError:
        stderr = result.stderr.decode(errors="replace").strip()[-500:]
        raise NotConfiguredError(
            f"{exe} version failed (exit {result.returncode}): {stderr or text}: {_INSTALL_HINT}"
        ) from None
    if version[:2] < MIN_VERSION:
        raise NotConfiguredError(f"{exe} is {text}, but OpenSSL >= 3.5 is needed: {_INSTALL_HINT}")
    return OpenSSLCli(path=exe, version=version, version_text=text)
