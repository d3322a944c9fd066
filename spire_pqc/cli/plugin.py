"""Entry point of the SPIRE CredentialComposer plugin process (what `plugin_cmd` runs).

It owns the process: hclog JSON logging on stderr (SPIRE's host parses it), no stdout output before
the go-plugin handshake line, SIGINT ignored (SPIRE controls shutdown).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "plugin", help="run as SPIRE's CredentialComposer plugin (started by spire-server)"
    )
    parser.set_defaults(handler=lambda args: run(), logs_backend_itself=True)


def run() -> int:
    from spire_pqc.crypto.status import log_backend
    from spire_pqc.plugin.app import run_plugin
    from spire_pqc.plugin.hclog import HclogHandler

    handler = HclogHandler(sys.stderr)
    root = logging.getLogger("spire_pqc")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if os.environ.get("SPIRE_PQC_DEBUG") else logging.INFO)
    root.propagate = False
    # Before the go-plugin handshake: loading a backend writes nothing to stdout (see crypto._liboqs).
    log_backend(logging.getLogger("spire_pqc.plugin"))
    return run_plugin()


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
