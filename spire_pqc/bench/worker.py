"""Benchmark child processes that talk JSON lines: the one mechanism the benches share.

A PQ backend is chosen once per process, so a bench that compares backends runs one child per
backend (``SPIRE_PQC_BACKEND`` set in its environment) and asks it to measure, one request at a
time, so only one process measures at a time. The protocol, one JSON object per line:

* the child writes a greeting first: ``{"ready": {...}}`` or ``{"unavailable": reason}`` (its backend
  could not be loaded; it then exits);
* for every line the parent writes (a JSON request), the child writes one JSON reply;
* the child exits at the end of its input.

Child side: :func:`serve`. Parent side: :class:`Worker`. :func:`last_json_line` reads the result a
one-shot child (``bench soak``'s attackers) printed last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spire_pqc.errors import BackendUnavailableError, UnavailableError

JsonObject = dict[str, Any]


def _emit(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(prepare: Callable[[], tuple[JsonObject, Callable[[JsonObject], JsonObject]]]) -> int:
    """Child main loop. ``prepare()`` loads what the child measures and returns its greeting and the
    request handler; a :class:`BackendUnavailableError` from it is reported as ``unavailable``."""
    try:
        ready, handle = prepare()
    except BackendUnavailableError as exc:
        _emit({"unavailable": str(exc)})
        return 0
    _emit({"ready": ready})
    for line in sys.stdin:
        if line.strip():
            _emit(handle(json.loads(line)))
    return 0


class Worker:
    """A child process ``python -m <module> <args>`` serving JSON-line requests (see :func:`serve`).

    ``ready`` holds the child's greeting, ``unavailable`` the reason it could not start its backend."""

    def __init__(
        self, module: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None
    ) -> None:
        self._argv = [sys.executable, "-m", module, *args]
        self._env = dict(os.environ if env is None else env)
        self._process: subprocess.Popen[str] | None = None
        self.ready: JsonObject = {}
        self.unavailable: str | None = None

    def start(self) -> Worker:
        self._process = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self._env
        )
        hello = self._read()
        if "unavailable" in hello:
            self.unavailable = str(hello["unavailable"])
        else:
            self.ready = dict(hello.get("ready") or {})
        return self

    def _read(self) -> JsonObject:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise UnavailableError(f"bench worker {' '.join(self._argv[2:])} exited ({self._process.wait()})")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise UnavailableError(f"bench worker {' '.join(self._argv[2:])} wrote {line[:80]!r}")
        return reply

    def ask(self, request: Mapping[str, Any]) -> JsonObject:
        """Send one request and wait for its reply."""
        if self._process is None or self._process.stdin is None or self.unavailable is not None:
            raise UnavailableError(f"bench worker {' '.join(self._argv[2:])} is not running")
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def last_json_line(output: str) -> JsonObject | None:
    """The last line of ``output`` that is a JSON object, or None."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            if isinstance(result, dict):
                return result
    return None
