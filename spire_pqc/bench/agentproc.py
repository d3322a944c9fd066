"""Drives a real ``spire-pqc agent run`` process: config file, start, readiness, RSS, descriptors, logs.

Shared by the security tests and ``spire-pqc bench soak``: what they measure (resident memory, open
descriptors, bytes logged, Prometheus counters) must be the agent process's own, not the test's, so
the agent runs as its own process with its own stderr file. ``nofile`` sets the process's
RLIMIT_NOFILE before it starts, to check what the agent does with its descriptor budget.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from spire_pqc.bench.spirelab import free_port


class AgentProcessError(AssertionError):
    """The agent process did not start or stopped unexpectedly (an AssertionError: reads well in tests)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """The subset of TOML the agent configuration uses: tables, arrays of tables, scalars, arrays."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in data.items():
        name = prefix + _toml_key(key)
        if isinstance(value, Mapping):
            tables.append((name, value))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            arrays.append((name, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "".join(f"{line}\n" for line in lines)
    for name, table in tables:
        out += f"\n[{name}]\n" + to_toml(table, f"{name}.")
    for name, items in arrays:
        for item in items:
            out += f"\n[[{name}]]\n" + to_toml(item, f"{name}.")
    return out


def _process_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AgentProcessError(f"no {key} in /proc/{pid}/status")


@dataclass
class AgentProcess:
    """One agent process; ``config`` is the decoded TOML (the health port is filled in)."""

    workdir: Path
    config: dict[str, Any]
    nofile: tuple[int, int] | None = None
    health_port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return Path(self.config["agent"]["socket_path"])

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.toml"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise AgentProcessError("agent not started")
        return self.proc.pid

    def write_config(self) -> Path:
        self.config.setdefault("health", {})["listen_address"] = f"127.0.0.1:{self.health_port}"
        self.config_path.write_text(to_toml(self.config))
        return self.config_path

    def _limit_descriptors(self) -> None:  # runs in the child between fork and exec
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        self.write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spire_pqc.cli", "agent", "run", "-c", str(self.config_path),
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=self._limit_descriptors if self.nofile is not None else None,  # noqa: PLW1509
        )  # fmt: skip
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()  # `with` never reaches __exit__ when __enter__ raises: do not leak the process
                raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            if self.http("/ready")[0] == 200:
                return
            time.sleep(0.1)
        raise AgentProcessError(f"agent not ready after {timeout}s:\n{self.log_tail()}")

    def check_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise AgentProcessError(f"agent process exited ({code}):\n{self.log_tail()}")

    def http(self, path: str, *, timeout: float = 20.0) -> tuple[int, str]:
        """GET on the health port: (status, body); status 0 when the port does not answer."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except (OSError, urllib.error.URLError):
            return 0, ""

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.http("/metrics")
        if status != 200:
            raise AgentProcessError(f"/metrics answered {status}")
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def rss_kib(self) -> int:
        return _process_status(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        """The highest RSS the process ever had (VmHWM): growth that was freed again still shows."""
        return _process_status(self.pid, "VmHWM")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile_limits(self) -> tuple[int, int]:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise AgentProcessError("no 'Max open files' in /proc/<pid>/limits")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pause(self) -> None:
        """SIGSTOP: the kernel keeps completing connect(2) into the backlog, nothing is accepted."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused agent cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.returncode

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
