"""`spire-pqc` command line: the entry point owns argv, logging, signals and asyncio.run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from spire_pqc import __version__
from spire_pqc.crypto.status import log_backend
from spire_pqc.errors import SpirePqcError


def build_parser() -> argparse.ArgumentParser:
    from spire_pqc.cli import bench, ca, demo, svid

    parser = argparse.ArgumentParser(
        prog="spire-pqc",
        description="Post-quantum (ML-DSA-65 / ML-KEM-768) credentials for SPIFFE workloads.",
    )
    parser.add_argument("--version", action="version", version=f"spire-pqc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ca.register(commands)
    svid.register(commands)
    demo.register(commands)
    bench.register(commands)
    _register_optional(commands)
    return parser


def _register_optional(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands whose modules arrive with later components (agent, plugin)."""
    import importlib

    for name in ("agent", "plugin", "doctor"):
        try:
            module = importlib.import_module(f"spire_pqc.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"spire_pqc.cli.{name}":
                raise
            continue
        module.register(commands)


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("spire_pqc")
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if not getattr(args, "logs_backend_itself", False):  # daemons log it with their own log setup
        log_backend(logging.getLogger("spire_pqc.cli"))
    try:
        result: int = args.handler(args)
    except SpirePqcError as exc:
        print(f"spire-pqc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
