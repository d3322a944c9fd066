"""Drives a private PostgreSQL cluster (``initdb`` + ``pg_ctl``) for tests and benchmarks.

The cluster lives in its own temporary directory, listens on a loopback port and a Unix socket in
that directory, and is stopped and removed by :meth:`PostgresCluster.close`. Nothing touches the
system's clusters. The binaries are Debian's ``postgresql-15`` (``make postgres`` installs it where
missing); ``$SPIRE_PQC_PG_BINDIR`` points elsewhere. ``initdb`` refuses to run as root, so when this
process is root the cluster runs as an unprivileged user (``postgres``, else ``nobody``).

Authentication: the superuser ``spire_pqc`` has a random password (SCRAM over TCP); connections over
the Unix socket are trusted, which only this cluster's own user and root can reach.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from spire_pqc.bench.spirelab import free_port

ENV_BINDIR = "SPIRE_PQC_PG_BINDIR"
SUPERUSER = "spire_pqc"
# Settings for tests: durability is not what they check, and fsync costs seconds on a busy disk.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresLabError(AssertionError):
    """The cluster could not be created, started or stopped (an AssertionError: reads well in tests)."""


def postgres_bindir() -> Path:
    override = os.environ.get(ENV_BINDIR, "").strip()
    candidates = [Path(override)] if override else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise PostgresLabError(
        "PostgreSQL's initdb/pg_ctl not found: run `make postgres` (installs Debian's postgresql-15) "
        f"or set {ENV_BINDIR}"
    )


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresLabError("running as root and no unprivileged 'postgres' or 'nobody' user for initdb")


class PostgresCluster:
    """A throwaway PostgreSQL cluster: ``start()``, ``create_database()``, ``stop()``, ``close()``."""

    def __init__(self, *, settings: dict[str, str] | None = None, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(24)
        self.workdir = Path(tempfile.mkdtemp(prefix="spq-pg-", dir="/tmp"))
        self.workdir.chmod(0o711)  # the cluster's user must reach data/ and sock/
        self.data = self.workdir / "data"
        self.sockets = self.workdir / "sock"
        self.log_path = self.workdir / "postgres.log"
        self.settings = dict(settings or {})
        self._user = _run_as()
        self._initialised = False

    # --- process control -------------------------------------------------------------------------

    def _as_cluster_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bindir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.workdir)}
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=self.workdir, check=False,
            **self._as_cluster_user(),
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresLabError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"{self.log_tail()}"
            )
        return result

    def _own(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def init(self) -> None:
        for directory in (self.data, self.sockets):
            directory.mkdir(mode=0o700)
            self._own(directory)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        log = self.log_path
        log.touch()
        self._own(log)
        self._initialised = True

    def start(self, *, timeout: float = 60) -> None:
        if not self._initialised:
            self.init()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockets),
            **self.settings,
        }
        rendered = " ".join(f"-c {key}={value}" for key, value in options.items())
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", str(int(timeout)),
            "-o", rendered, timeout=timeout + 30,
        )  # fmt: skip
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_conninfo("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresLabError(f"PostgreSQL not ready after {timeout}s: {exc}") from exc
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (the data stays: ``start()`` brings the same databases back)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60", timeout=90)

    def close(self) -> None:
        with contextlib.suppress(PostgresLabError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- databases and addresses -----------------------------------------------------------------

    def admin_conninfo(self, dbname: str) -> str:
        """Superuser over TCP with the password (for this process's own setup work)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} password={self.password} dbname={dbname}"

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_conninfo("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def dsn(self, dbname: str) -> str:
        """A ``postgresql://`` DSN without the password (spire-pqc's ``ledger_dsn``)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    def spire_connection_string(self, dbname: str) -> str:
        """SPIRE's DataStore "sql" ``connection_string`` (lib/pq key=value form)."""
        return (
            f"dbname={dbname} user={SUPERUSER} password={self.password} host=127.0.0.1 "
            f"port={self.port} sslmode=disable"
        )

    def write_password_file(self, path: Path) -> Path:
        """The password in a 0600 file (spire-pqc's ``ledger_password_file``)."""
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path
