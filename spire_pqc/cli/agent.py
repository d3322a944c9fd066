"""`spire-pqc agent run|validate -c agent.toml`: the node agent daemon.

This module owns the process: ``asyncio.run``, signal handling and log formatting. The first SIGTERM
or SIGINT starts a graceful stop (open streams end with UNAVAILABLE so clients reconnect, keys are
dropped, the socket is removed); a second one exits at once. ``--log-format json`` writes one JSON
object per line (time, level, logger, message) for log pipelines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
from pathlib import Path

from spire_pqc.agent.config import DevSourceConfig, load
from spire_pqc.agent.server import Agent
from spire_pqc.crypto.status import log_backend


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


def cmd_validate(args: argparse.Namespace) -> int:
    config = load(args.config)  # ConfigError (every problem) is printed by main()
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
    asyncio.run(_serve(Agent(config)))
    return 0
