"""Drives real spire-server / spire-agent / spire-pqc agent processes (loopback and Unix sockets only).

Used by the integration tests and by `spire-pqc bench composer`. The binaries come from
`make spire` (scripts/build-spire.sh) in ~/.cache/spire-pqc; a missing binary raises with the
command that builds it. Nothing here depends on a source checkout: the plugin executable is the
``spire-pqc-composer`` console script installed beside the running interpreter (or
``$SPIRE_PQC_PLUGIN_CMD``), so the same code runs from an installed wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SPIRE_VERSION = "v1.15.3"
ENV_PLUGIN_CMD = "SPIRE_PQC_PLUGIN_CMD"


class SpireLabError(AssertionError):
    """A SPIRE process did not start or a SPIRE command failed (an AssertionError: reads well in tests)."""


def spire_bin(name: str) -> Path:
    cache = Path(os.environ.get("SPIRE_PQC_CACHE", Path.home() / ".cache" / "spire-pqc"))
    path = cache / f"spire-{SPIRE_VERSION}" / "bin" / name
    if not path.exists():
        raise SpireLabError(
            f"{path} is missing: run `make spire` (builds SPIRE {SPIRE_VERSION} from its Go module)"
        )
    return path


def plugin_command() -> Path:
    """The executable spire-server runs as ``plugin_cmd``.

    ``$SPIRE_PQC_PLUGIN_CMD`` when set, else the ``spire-pqc-composer`` console script that pip
    installed beside this interpreter (a virtualenv's ``bin/``), else the one on ``PATH``.
    """
    override = os.environ.get(ENV_PLUGIN_CMD, "").strip()
    if override:
        return Path(override)
    beside = Path(sys.executable).parent / "spire-pqc-composer"
    if beside.exists():
        return beside
    found = shutil.which("spire-pqc-composer")
    if found:
        return Path(found)
    raise SpireLabError(
        f"spire-pqc-composer not found beside {sys.executable} nor on PATH: install spire-pqc "
        f"(pip install spire-pqc) or set {ENV_PLUGIN_CMD}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_tempdir() -> Path:
    # sun_path holds ~107 bytes: keep socket directories short.
    return Path(tempfile.mkdtemp(prefix="sp", dir="/tmp"))


def hcl_block(values: dict[str, object], indent: str = "        ") -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, list):
            rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        else:
            rendered = f'"{value}"'
        lines.append(f"{indent}{key} = {rendered}")
    return "\n".join(lines)


@dataclass
class SpireServer:
    workdir: Path
    trust_domain: str = "example.org"
    composer_data: dict[str, object] | None = None
    # True: composer_data goes to a file named by plugin_data_file (SIGUSR1 makes SPIRE re-read it).
    composer_data_file: bool = False
    plugin_checksum: bool = True
    plugin_cmd: Path = field(default_factory=plugin_command)
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    endpoint_port: int = 0
    # SPIRE's DataStore "sql": "sqlite3" (a file in workdir) or "postgres" with a lib/pq connection
    # string; two servers given the same PostgreSQL database form a SPIRE HA pair.
    datastore_type: str = "sqlite3"
    datastore_connection: str = ""
    # SPIRE's ca_ttl ("" keeps SPIRE's default of 24h); a short one makes SPIRE rotate its CA.
    ca_ttl: str = ""
    # SPIRE's own federation: serve a bundle endpoint on this port and follow these trust domains
    # (name -> (bundle endpoint URL, endpoint SPIFFE ID), https_spiffe profile).
    federation_port: int = 0
    federates_with: dict[str, tuple[str, str]] = field(default_factory=dict)
    # SPIRE's own telemetry: a Prometheus endpoint on this loopback port (0: none).
    telemetry_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "server.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def plugin_data_path(self) -> Path:
        return self.workdir / "spire-pqc.plugin_data.hcl"

    def write_plugin_data(self, values: dict[str, object]) -> None:
        """Write ``plugin_data_file`` (``composer_data_file``); :meth:`reload` makes SPIRE apply it."""
        self.composer_data = values
        self.plugin_data_path.write_text(hcl_block(values, "") + "\n")

    def reload(self) -> None:
        """SIGUSR1: spire-server re-reads plugin_data_file and calls Configure if its content changed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def write_config(self) -> Path:
        composer = ""
        if self.composer_data is not None:
            checksum = ""
            if self.plugin_checksum:
                import hashlib

                digest = hashlib.sha256(self.plugin_cmd.read_bytes()).hexdigest()
                checksum = f'\n        plugin_checksum = "{digest}"'
            if self.composer_data_file:
                self.write_plugin_data(self.composer_data)
                data = f'plugin_data_file = "{self.plugin_data_path}"'
            else:
                data = f"plugin_data {{\n{hcl_block(self.composer_data, '            ')}\n        }}"
            composer = f"""
    CredentialComposer "spire_pqc" {{
        plugin_cmd = "{self.plugin_cmd}"{checksum}
        {data}
    }}"""
        ca_ttl = f'\n    ca_ttl = "{self.ca_ttl}"' if self.ca_ttl else ""
        (self.workdir / "server").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""server {{
    bind_address = "127.0.0.1"
    bind_port = "{self.port}"
    socket_path = "{self.socket}"
    trust_domain = "{self.trust_domain}"
    data_dir = "{self.workdir}/server"
    log_level = "DEBUG"
    default_x509_svid_ttl = "1h"{ca_ttl}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "{self.datastore_type}"
            connection_string = "{self.datastore_connection or f"{self.workdir}/server/datastore.sqlite3"}"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{self.workdir}/server/keys.json"
        }}
    }}{composer}
}}
{self._telemetry_hcl()}"""
        )
        return self.config_path

    def _telemetry_hcl(self) -> str:
        if not self.telemetry_port:
            return ""
        return f"""
telemetry {{
    Prometheus {{
        host = "127.0.0.1"
        port = {self.telemetry_port}
    }}
}}
"""

    def _federation_hcl(self) -> str:
        if not self.federation_port and not self.federates_with:
            return ""
        follows = "".join(
            f"""
        federates_with "{td}" {{
            bundle_endpoint_url = "{url}"
            bundle_endpoint_profile "https_spiffe" {{
                endpoint_spiffe_id = "{endpoint_id}"
            }}
        }}"""
            for td, (url, endpoint_id) in self.federates_with.items()
        )
        endpoint = ""
        if self.federation_port:
            endpoint = (
                f'\n        bundle_endpoint {{\n            address = "127.0.0.1"\n'
                f"            port = {self.federation_port}\n        }}"
            )
        return f"\n    federation {{{endpoint}{follows}\n    }}"

    def bundle_spiffe(self) -> str:
        """The trust domain's bundle in SPIFFE format (for ``bundle set`` at a federated server)."""
        return self.cli("bundle", "show", "-format", "spiffe").stdout

    def set_federated_bundle(self, trust_domain: str, spiffe_bundle: str) -> None:
        """``bundle set``: the initial bundle of a federated trust domain (https_spiffe bootstrap)."""
        path = self.workdir / f"federated-{trust_domain}.json"
        path.write_text(spiffe_bundle)
        self.cli("bundle", "set", "-format", "spiffe", "-id", f"spiffe://{trust_domain}", "-path", str(path))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # For the repository's shell wrapper (plugins/spire-pqc-composer): run this interpreter.
        env["SPIRE_PQC_PYTHON"] = sys.executable
        env.update(self.extra_env)
        return env

    def validate(self) -> subprocess.CompletedProcess[str]:
        self.write_config()
        return subprocess.run(
            [str(spire_bin("spire-server")), "validate", "-config", str(self.config_path)],
            capture_output=True, text=True, timeout=120, env=self.env(), check=False,
        )  # fmt: skip

    def start(self, *, wait: bool = True, timeout: float = 90) -> None:
        self.write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [str(spire_bin("spire-server")), "run", "-config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir,
        )  # fmt: skip
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SpireLabError(f"spire-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            probe = self.cli("healthcheck", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise SpireLabError(f"spire-server not healthy after {timeout}s:\n{self.log_tail()}")

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(spire_bin("spire-server")), args[0], *args[1:], "-socketPath", str(self.socket)],
            capture_output=True, text=True, timeout=timeout, env=self.env(), check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise SpireLabError(
                f"spire-server {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def mint(self, spiffe_id: str, out_dir: Path, *, ttl: str = "1h") -> subprocess.CompletedProcess[str]:
        out_dir.mkdir(parents=True, exist_ok=True)
        return self.cli(
            "x509", "mint", "-spiffeID", spiffe_id, "-ttl", ttl, "-write", str(out_dir), check=False
        )

    def bundle_pem(self) -> bytes:
        return self.cli("bundle", "show", "-format", "pem").stdout.encode()

    def join_token(self, spiffe_id: str) -> str:
        out = self.cli("token", "generate", "-spiffeID", spiffe_id).stdout
        return out.strip().split()[-1]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL spire-server and its plugins (a crash: no shutdown of any kind)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        children = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def plugin_pid(self) -> int:
        """The pid of the spire-pqc plugin process this server started."""
        assert self.proc is not None
        for pid in _children(self.proc.pid):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spire_pqc.cli.plugin" in cmdline or b"spire-pqc-composer" in cmdline:
                    return pid
        raise SpireLabError("the spire-pqc plugin process of this spire-server is not running")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


@dataclass
class SpireAgent:
    workdir: Path
    server: SpireServer
    authorized_delegates: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "agent.sock"

    # spire-agent refuses an admin socket in (a subdirectory of) the Workload API socket's directory.
    admin_dir: Path = field(default_factory=short_tempdir)

    @property
    def admin_socket(self) -> Path:
        return self.admin_dir / "admin.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def start(self, token: str | None, *, timeout: float = 90) -> None:
        """Start; ``token`` is the join token (None on a restart: the agent reuses its cached SVID)."""
        (self.workdir / "agent").mkdir(parents=True, exist_ok=True)
        self.admin_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = self.workdir / "bootstrap.crt"
        if token is not None or not bootstrap.exists():
            bootstrap.write_bytes(self.server.bundle_pem())
        delegates = ""
        if self.authorized_delegates:
            delegates = (
                f'\n    admin_socket_path = "{self.admin_socket}"\n    authorized_delegates = ['
                + ", ".join(f'"{d}"' for d in self.authorized_delegates)
                + "]"
            )
        config = self.workdir / "agent.conf"
        config.write_text(
            f"""agent {{
    data_dir = "{self.workdir}/agent"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{self.server.port}"
    socket_path = "{self.socket}"
    trust_bundle_path = "{bootstrap}"
    trust_domain = "{self.server.trust_domain}"{delegates}
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{self.workdir}/agent"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"""
        )
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [str(spire_bin("spire-agent")), "run", "-config", str(config), *(["-joinToken", token] if token else [])],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SpireLabError(f"spire-agent exited with {self.proc.returncode}:\n{self.log_tail()}")
            probe = subprocess.run(
                [str(spire_bin("spire-agent")), "healthcheck", "-socketPath", str(self.socket)],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise SpireLabError(f"spire-agent not healthy after {timeout}s:\n{self.log_tail()}")

    def fetch_x509(self, out_dir: Path, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                [str(spire_bin("spire-agent")), "api", "fetch", "x509",
                 "-socketPath", str(self.socket), "-write", str(out_dir)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            # The entry reaches the agent's cache on its next sync: retry until then.
            if result.returncode == 0 or time.monotonic() > deadline:
                return result
            time.sleep(1)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.admin_dir, ignore_errors=True)


@dataclass
class PqcAgent:
    """A ``spire-pqc agent run`` process (this interpreter) with its TOML configuration and log.

    ``config`` must set ``[health] listen_address = "127.0.0.1:<health_port>"``: readiness and
    metrics are read there, as an operator's probes would.
    """

    workdir: Path
    config: str
    health_port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic() of the last start
    _log: IO[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "spire-pqc-agent.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "spire-pqc-agent.log"

    def start(self, *, wait_live: bool = True, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()/kill()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spire_pqc.cli", "agent", "run", "-c", str(self.config_path),
             "--log-format", "json"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )  # fmt: skip
        if wait_live:
            self.wait_for(lambda: self.probe("/live") == 200, "/live", timeout)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> float:
        """Poll ``condition``; return the seconds it took; fail (with the log) if the agent exits."""
        started = time.monotonic()
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                raise SpireLabError(
                    f"spire-pqc agent exited with {self.proc.returncode} waiting for {what}:\n{self.log_tail()}"
                )
            if time.monotonic() - started > timeout:
                raise SpireLabError(f"spire-pqc agent: no {what} after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - started

    def wait_ready(self, timeout: float = 60) -> float:
        """Wait for ``/ready`` (PQC credentials served); return the seconds it took."""
        return self.wait_for(lambda: self.probe("/ready") == 200, "/ready", timeout)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def probe(self, path: str) -> int | None:
        """The status of ``path`` on the health port, or None while nothing answers."""
        try:
            return self.get(path)[0]
        except (OSError, urllib.error.URLError):
            return None

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when absent), e.g. ``metric("…_total", result="duplicate")``."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (the graceful stop); return the exit status."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._closed()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._closed()

    def _closed(self) -> int | None:
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc is not None else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running(*processes: SpireServer | SpireAgent | PqcAgent) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(processes):
            proc.stop()


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
