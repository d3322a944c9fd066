"""The generated modules live under spire_pqc._proto only, and every proto file in proto/ has its module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import importlib, json, pkgutil, sys
import spire_pqc._proto as root
names = sorted(m.name for m in pkgutil.walk_packages(root.__path__, "spire_pqc._proto."))
for name in names:
    importlib.import_module(name)
tops = sorted({k.split(".")[0] for k in sys.modules})
from spire_pqc._proto.plugin import grpc_broker_pb2
print(json.dumps({"names": names, "tops": tops, "module": grpc_broker_pb2.ConnInfo.__module__}))
"""


def _probe() -> dict[str, object]:
    # A fresh interpreter, so modules imported by other tests cannot hide a stray top-level package.
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_generated_modules_import_without_top_level_proto_packages() -> None:
    probe = _probe()
    tops = probe["tops"]
    assert isinstance(tops, list)
    assert "plugin" not in tops
    assert "spire" not in tops
    assert probe["module"] == "spire_pqc._proto.plugin.grpc_broker_pb2"


def test_every_proto_has_a_generated_module() -> None:
    names = _probe()["names"]
    assert isinstance(names, list)
    for proto in sorted((ROOT / "proto").rglob("*.proto")):
        module = (
            "spire_pqc._proto." + ".".join(proto.relative_to(ROOT / "proto").with_suffix("").parts) + "_pb2"
        )
        assert module in names, f"{proto} has no generated module; run `make proto`"
