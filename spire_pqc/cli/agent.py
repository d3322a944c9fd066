"""`spire-pqc agent run|validate|status -c agent.toml`: the node agent daemon.

``status`` reads the running agent's status document from its health listener (``/status``).

This module owns the process: ``asyncio.run``, signal handling, log formatting and the descriptor
limit. The first SIGTERM or SIGINT starts a graceful stop (open streams end with UNAVAILABLE so
clients reconnect, keys are dropped, the socket is removed); a second one exits at once.
``--log-format json`` writes one JSON object per line (time, level, logger, message) for log
pipelines.

Local users can make the agent's listeners fail (issue 9): the soft RLIMIT_NOFILE is raised to the
hard limit at start, a failed accept() (asyncio logs each one with a traceback) becomes one line per
interval plus a counter, and the loggers of grpclib and asyncio get the agent's format and the same
rate limit, so no peer can fill the disk through the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import resource
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from spire_pqc._internal.ratelimit import LogLimiter, RateLimitFilter
from spire_pqc.agent.config import DevSourceConfig, load
from spire_pqc.agent.server import Agent
from spire_pqc.crypto.status import log_backend
from spire_pqc.errors import ConfigError, UnavailableError

log = logging.getLogger(__name__)
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message (selector_events.py)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: structured logs without a dependency."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("agent", help="the node agent (Workload API + hybrid extension)")
    sub = parser.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", type=Path, required=True, help="agent configuration (TOML)")
    run.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    run.set_defaults(handler=cmd_run, logs_backend_itself=True)
    validate = sub.add_parser("validate", help="check a configuration file and print every problem")
    validate.add_argument("-c", "--config", type=Path, required=True, help="agent configuration (TOML)")
    validate.set_defaults(handler=cmd_validate)
    status = sub.add_parser("status", help="the running agent's status document (from its health listener)")
    where = status.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", type=Path, help="agent configuration (TOML): health.listen_address")
    where.add_argument("--address", help="the agent's health listener, HOST:PORT")
    status.add_argument("--json", action="store_true", help="print the JSON document as served")
    status.set_defaults(handler=cmd_status)


def _health_url(args: argparse.Namespace, path: str) -> str:
    if args.address is not None:
        host, _, port = str(args.address).rpartition(":")
    else:
        config = load(args.config)
        if config.health_address is None:
            raise ConfigError(f"{args.config}: health.listen_address is not set: the agent serves no /status")
        host, port = config.health_address[0], str(config.health_address[1])
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    return f"http://{host}:{port}{path}"


def _human(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "n/a" if value is None else str(value)


def cmd_status(args: argparse.Namespace) -> int:
    url = _health_url(args, "/status")
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - http only, built above
            body = reply.read().decode()
    except (OSError, ValueError) as exc:
        raise UnavailableError(f"agent status at {url}: {getattr(exc, 'reason', exc)}") from None
    if args.json:
        print(body, end="" if body.endswith("\n") else "\n")
        return 0
    for key, value in json.loads(body).items():
        print(f"{key}: {_human(value)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:  # every problem, one per line (the daemon logs them on one line)
        count = len(exc.problems)
        print(f"{exc.source}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    kind = "dev (NOT FOR PRODUCTION)" if isinstance(config.source, DevSourceConfig) else "spire"
    print(f"{args.config}: valid; socket unix://{config.socket_path}, source {kind}")
    return 0


def _configure_log_format(log_format: str) -> None:
    logger = logging.getLogger("spire_pqc")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # a daemon reports its lifecycle even without -v
    if log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
    # Libraries below us log per connection or per request (grpclib: "Application error" with a
    # traceback); give them our handlers and at most one record per message per interval.
    for name in ("grpclib", "asyncio"):
        library = logging.getLogger(name)
        library.handlers[:] = logger.handlers
        library.propagate = False
        library.setLevel(logging.WARNING)
        library.addFilter(RateLimitFilter())


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection costs a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


class LoopErrors:
    """The event loop's exception handler: accept() failures are counted and logged once per interval.

    asyncio reports each failed accept() (EMFILE, ENFILE, ENOBUFS, ENOMEM) with a traceback and retries
    a second later, per listener; under a descriptor flood that is one traceback per second per
    listener for as long as it lasts. Everything else goes to asyncio's default handler.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._limiter = LogLimiter()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == _ACCEPT_FAILED and isinstance(exc, OSError):
            self._agent.metrics.accept_errors.inc()
            self._limiter.log(
                log, logging.ERROR, "accept",
                "accept() failed: %s (%d descriptors open, limit %d); new connections wait in the backlog",
                exc.strerror or exc, _open_descriptors(), resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )  # fmt: skip
            return
        loop.default_exception_handler(context)


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def _serve(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if stop.is_set():  # second signal: do not wait for the graceful stop
            logging.getLogger(__name__).warning("second %s: exiting now", signal.Signals(signum).name)
            sys.exit(128 + signum)
        logging.getLogger(__name__).info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    loop.set_exception_handler(LoopErrors(agent))
    try:
        await agent.start()
        await stop.wait()
    finally:
        await agent.close()
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def cmd_run(args: argparse.Namespace) -> int:
    _configure_log_format(args.log_format)
    log_backend(logging.getLogger(__name__))
    config = load(args.config)
    soft, hard = raise_descriptor_limit()
    log.info("descriptor limit %d (hard %d)", soft, hard)
    asyncio.run(_serve(Agent(config)))
    return 0
