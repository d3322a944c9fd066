"""`spire-pqc ca status`: the plugin's intermediate PQC CAs, their states and what each still covers."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from spire_pqc._internal.files import read_public
from spire_pqc.ca.intermediates import IntermediateSet, Scheduled, State, schedule
from spire_pqc.plugin.config import Config, build_config

_COVERS = {
    State.ACTIVE: "signs new bindings and PQC certificates",
    State.NEXT: "published: its bindings are accepted; signs from {activates}",
    State.RETIRING: "signs nothing; still trusted for what it signed, until {covers}",
    State.RETIRED: "nothing it signed is valid any more (its key is archived)",
    State.REVOKED: "revoked: never signs; what it signed is refused",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status", help="show the plugin's intermediate PQC CAs (next, active, retiring, retired, revoked)"
    )
    status.add_argument(
        "--plugin-data",
        type=Path,
        required=True,
        help="the plugin's plugin_data (HCL), e.g. its plugin_data_file",
    )
    status.add_argument("--trust-domain", required=True, help="SPIRE's trust_domain")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)


def current_schedule(config: Config, at: dt.datetime) -> IntermediateSet:
    return schedule(
        config.intermediates,
        at=at,
        activation=config.intermediate_activation,
        svid_ttl=config.max_x509_svid_ttl,
        revoked=config.revoked_intermediates,
    )


def cmd_status(args: argparse.Namespace) -> int:
    config = build_config(
        args.trust_domain, read_public(args.plugin_data).decode("utf-8"), require_active=False
    )
    current = current_schedule(config, dt.datetime.now(dt.UTC))
    if args.json:
        print(json.dumps(_document(current), indent=2))
        return 0 if current.active is not None else 1
    print(f"intermediate PQC CAs of {config.trust_domain.id_string()} at {current.at.isoformat()}:")
    for entry in current.entries:
        inter = entry.intermediate
        print(
            f"  {entry.key_id[:16]}  {entry.state.value:<8}  notAfter {inter.not_after.isoformat()}  "
            f"{_covers(entry)}"
        )
        print(f"    key id {entry.key_id}  ({inter.cert_path})")
    if current.active is None:
        print(
            "ERROR: no intermediate can sign now: PQC bindings and issuance have stopped (docs/runbooks.md)."
        )
        return 1
    if current.rotation_overdue():
        print("WARNING: no next intermediate is ready and the active one is past its successor's activation")
        print("  point: issue one now (docs/runbooks.md, 'Rotate the intermediate PQC CA').")
    return 0


def _covers(entry: Scheduled) -> str:
    return _COVERS[entry.state].format(
        activates=entry.activates_at.isoformat() if entry.activates_at else "never (it expires first)",
        covers=entry.covers_until.isoformat() if entry.covers_until else "?",
    )


def _document(current: IntermediateSet) -> dict[str, Any]:
    def time(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "at": current.at.isoformat(),
        "rotation_overdue": current.rotation_overdue(),
        "intermediates": [
            {
                "key_id": e.key_id,
                "state": e.state.value,
                "not_before": e.intermediate.not_before.isoformat(),
                "not_after": e.intermediate.not_after.isoformat(),
                "activates_at": time(e.activates_at),
                "superseded_at": time(e.superseded_at),
                "covers_until": time(e.covers_until),
                "covers": _covers(e),
                "certificate": str(e.intermediate.cert_path),
            }
            for e in current.entries
        ],
    }
