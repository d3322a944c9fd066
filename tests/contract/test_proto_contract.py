"""Our hand-written protos are wire-compatible with the upstream definitions they mirror.

Upstream files are never committed (they are not ours to copy). At test time ``go mod download`` fetches the
pinned modules through the Go module proxy; grpcio-tools compiles them and our ``proto/`` to descriptor
sets, and every service, method, message, field and enum value we define is compared with upstream's
(the pinned versions and why: proto/UPSTREAM.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc_tools  # type: ignore[import-untyped]
import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
OUR_PROTO = ROOT / "proto"
WELL_KNOWN = Path(grpc_tools.__file__).resolve().parent / "_proto"

PLUGIN_SDK = ("github.com/spiffe/spire-plugin-sdk", "v1.15.2")
GO_PLUGIN = ("github.com/hashicorp/go-plugin", "v1.8.0")
# The version SPIRE v1.15.3 requires (tools/spire/go.mod).
API_SDK = ("github.com/spiffe/spire-api-sdk", "v1.2.5-0.20260428072036-00f73a61093a")

# Packages that mirror an upstream definition. Everything else we define (spire_pqc.*) is our own API.
MIRRORED_PACKAGES = {
    "plugin",
    "spire.service.private.init.v1",
    "spire.service.common.config.v1",
    "spire.plugin.types",
    "spire.plugin.server.credentialcomposer.v1",
    "spire.hostservice.server.identityprovider.v1",
    "spire.hostservice.common.metrics.v1",
    "spire.api.types",
    "spire.api.agent.delegatedidentity.v1",
}
OWN_PACKAGES = {"spire_pqc.ca.v1", "spire_pqc.workload.v1"}

Fds = descriptor_pb2.FileDescriptorSet


# --- obtaining and compiling ------------------------------------------------------------------------------


def go_mod_download(module: str, version: str, workdir: Path) -> Path:
    """Download ``module@version`` with the Go toolchain and return its (read-only) module directory.

    Runs in an empty directory, outside any Go module, so no go.mod (and no toolchain directive) applies.
    """
    env = dict(os.environ)
    env["GO111MODULE"] = "on"
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
    try:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except FileNotFoundError:
        pytest.fail("the contract test needs the Go toolchain (`go`) on PATH to fetch upstream protos")
    info = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0 or "Error" in info or "Dir" not in info:
        pytest.fail(
            f"go mod download {module}@{version} failed (exit {result.returncode}): "
            f"{info.get('Error', '')} {result.stderr.strip()}"
        )
    return Path(info["Dir"])


def compile_protos(include_dirs: list[Path], files: list[str], out: Path) -> Fds:
    """Compile ``files`` (relative to one of ``include_dirs``) to a descriptor set with imports."""
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{d}" for d in include_dirs),
        f"-I{WELL_KNOWN}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *files,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"protoc failed for {files}:\n{result.stderr}"
    return Fds.FromString(out.read_bytes())


def protos_under(root: Path, sub: str) -> list[str]:
    """Every .proto below ``root/sub``, relative to ``root``."""
    return sorted(str(p.relative_to(root)) for p in (root / sub).rglob("*.proto"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Fds:
    """Descriptor set of the upstream definitions we mirror, fetched with ``go mod download``."""
    work = tmp_path_factory.mktemp("go-download")
    sdk = go_mod_download(*PLUGIN_SDK, work)
    go_plugin = go_mod_download(*GO_PLUGIN, work)
    api = go_mod_download(*API_SDK, work)
    # The SDK's own test protos (private/proto/test) are not compiled: they are not part of the API.
    includes = [sdk / "proto", sdk / "internal" / "proto", go_plugin / "internal" / "plugin", api / "proto"]
    files = [
        *protos_under(sdk / "proto", "spire"),
        *protos_under(sdk / "internal" / "proto", "spire"),
        "grpc_broker.proto",
        "grpc_controller.proto",
        "grpc_stdio.proto",
        *protos_under(api / "proto", "spire"),
    ]
    return compile_protos(includes, files, work / "upstream.pb")


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Fds:
    """Descriptor set of everything in proto/."""
    out = tmp_path_factory.mktemp("ours") / "ours.pb"
    return compile_protos([OUR_PROTO], protos_under(OUR_PROTO, "."), out)


# --- comparison -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    """Messages, enums and services of a descriptor set by fully qualified name (no leading dot)."""

    messages: dict[str, descriptor_pb2.DescriptorProto]
    enums: dict[str, descriptor_pb2.EnumDescriptorProto]
    services: dict[str, descriptor_pb2.ServiceDescriptorProto]
    syntax: dict[str, str]  # type full name -> syntax of the file that defines it
    package: dict[str, str]  # type or service full name -> its file's package


def _walk(
    prefix: str, msgs: list[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for m in msgs:
        name = f"{prefix}{m.name}"
        yield name, m
        yield from _walk(name + ".", list(m.nested_type))


def index(fds: Fds) -> Index:
    """Index every file of ``fds``."""
    idx = Index({}, {}, {}, {}, {})
    for f in fds.file:
        prefix = f"{f.package}." if f.package else ""
        syntax = f.syntax or "proto2"
        for e in f.enum_type:
            idx.enums[prefix + e.name] = e
            idx.syntax[prefix + e.name] = syntax
            idx.package[prefix + e.name] = f.package
        for name, m in _walk(prefix, list(f.message_type)):
            idx.messages[name] = m
            idx.syntax[name] = syntax
            idx.package[name] = f.package
            for e in m.enum_type:
                idx.enums[f"{name}.{e.name}"] = e
                idx.syntax[f"{name}.{e.name}"] = syntax
                idx.package[f"{name}.{e.name}"] = f.package
        for s in f.service:
            idx.services[prefix + s.name] = s
            idx.package[prefix + s.name] = f.package
    return idx


_FDP = descriptor_pb2.FieldDescriptorProto
_TYPE_NAMES = {v: k.removeprefix("TYPE_").lower() for k, v in _FDP.Type.items()}
_LABEL_NAMES = {v: k.removeprefix("LABEL_").lower() for k, v in _FDP.Label.items()}


def _field_sig(f: descriptor_pb2.FieldDescriptorProto) -> str:
    type_name = f" {f.type_name}" if f.type_name else ""
    opt = " proto3_optional" if f.proto3_optional else ""
    return f"#{f.number} {_LABEL_NAMES[f.label]} {_TYPE_NAMES[f.type]}{type_name}{opt}"


def compare(ours: Fds, upstream: Fds, packages: set[str]) -> list[str]:
    """Every way in which our definitions in ``packages`` differ from upstream's; empty when compatible."""
    mine, theirs = index(ours), index(upstream)
    diffs: list[str] = []
    for name, svc in sorted(mine.services.items()):
        if mine.package[name] not in packages:
            continue
        up_svc = theirs.services.get(name)
        if up_svc is None:
            diffs.append(f"service {name}: not defined upstream")
            continue
        up_methods = {m.name: m for m in up_svc.method}
        for m in svc.method:
            up = up_methods.get(m.name)
            if up is None:
                diffs.append(f"method {name}/{m.name}: not defined upstream")
                continue
            for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
                mine_value, up_value = getattr(m, attr), getattr(up, attr)
                if mine_value != up_value:
                    diffs.append(f"method {name}/{m.name}: {attr} is {mine_value!r}, upstream {up_value!r}")
    for name, msg in sorted(mine.messages.items()):
        if mine.package[name] not in packages:
            continue
        up_msg = theirs.messages.get(name)
        if up_msg is None:
            diffs.append(f"message {name}: not defined upstream")
            continue
        if mine.syntax[name] != theirs.syntax[name]:
            diffs.append(f"message {name}: syntax {mine.syntax[name]}, upstream {theirs.syntax[name]}")
        is_map, up_is_map = msg.options.map_entry, up_msg.options.map_entry
        if is_map != up_is_map:
            diffs.append(f"message {name}: map_entry {is_map}, upstream {up_is_map}")
        up_fields = {f.name: f for f in up_msg.field}
        up_by_number = {f.number: f for f in up_msg.field}
        for field in msg.field:
            up_field = up_fields.get(field.name)
            if up_field is None:
                other = up_by_number.get(field.number)
                hint = f" (upstream #{field.number} is {other.name!r})" if other is not None else ""
                diffs.append(f"field {name}.{field.name}: not defined upstream{hint}")
                continue
            where = f"field {name}.{field.name}"
            if _field_sig(field) != _field_sig(up_field):
                diffs.append(f"{where}: ours {_field_sig(field)}, upstream {_field_sig(up_field)}")
            in_oneof = field.HasField("oneof_index") and not field.proto3_optional
            up_in_oneof = up_field.HasField("oneof_index") and not up_field.proto3_optional
            if in_oneof != up_in_oneof:
                diffs.append(f"{where}: oneof membership {in_oneof}, upstream {up_in_oneof}")
    for name, enum in sorted(mine.enums.items()):
        if mine.package[name] not in packages:
            continue
        up_enum = theirs.enums.get(name)
        if up_enum is None:
            diffs.append(f"enum {name}: not defined upstream")
            continue
        up_values = {v.name: v.number for v in up_enum.value}
        for v in enum.value:
            if up_values.get(v.name) != v.number:
                diffs.append(f"enum value {name}.{v.name} = {v.number}: upstream {up_values.get(v.name)}")
    return diffs


# --- tests ------------------------------------------------------------------------------------------------


def test_ours_is_wire_compatible_with_upstream(ours: Fds, upstream: Fds) -> None:
    diffs = compare(ours, upstream, MIRRORED_PACKAGES)
    assert not diffs, "proto/ differs from upstream:\n  " + "\n  ".join(diffs)


def test_every_package_we_define_is_mirrored_or_our_own(ours: Fds) -> None:
    # A new package must be added to one of the two lists, so a mirror cannot escape the comparison.
    defined = {f.package for f in ours.file if f.name.split("/")[0] != "google"}
    assert defined == MIRRORED_PACKAGES | OWN_PACKAGES


def test_the_spire_services_the_plugin_needs_are_defined(ours: Fds) -> None:
    services = index(ours).services
    expected = {
        "plugin.GRPCBroker": {"StartStream"},
        "plugin.GRPCController": {"Shutdown"},
        "plugin.GRPCStdio": {"StreamStdio"},
        "spire.service.private.init.v1.Init": {"Init", "Deinit"},
        "spire.service.common.config.v1.Config": {"Configure", "Validate"},
        "spire.plugin.server.credentialcomposer.v1.CredentialComposer": {
            "ComposeServerX509CA",
            "ComposeServerX509SVID",
            "ComposeAgentX509SVID",
            "ComposeWorkloadX509SVID",
            "ComposeWorkloadJWTSVID",
        },
        "spire.hostservice.server.identityprovider.v1.IdentityProvider": {"FetchX509Identity"},
        "spire.hostservice.common.metrics.v1.Metrics": {"SetGauge", "IncrCounter"},
        "spire.api.agent.delegatedidentity.v1.DelegatedIdentity": {
            "SubscribeToX509SVIDs",
            "SubscribeToX509Bundles",
            "FetchJWTSVIDs",
            "SubscribeToJWTBundles",
        },
    }
    for service, methods in expected.items():
        assert service in services, service
        assert {m.name for m in services[service].method} == methods, service


def test_a_changed_field_number_is_reported(ours: Fds, upstream: Fds) -> None:
    broken = Fds()
    broken.CopyFrom(ours)
    for f in broken.file:
        for m in f.message_type:
            if f.package == "spire.service.private.init.v1" and m.name == "InitResponse":
                m.field[0].number = 7
    assert compare(broken, upstream, MIRRORED_PACKAGES) == [
        "field spire.service.private.init.v1.InitResponse.plugin_service_names: "
        "ours #7 repeated string, upstream #1 repeated string"
    ]


def test_changed_types_streaming_and_unknown_names_are_reported(ours: Fds, upstream: Fds) -> None:
    broken = Fds()
    broken.CopyFrom(ours)
    for f in broken.file:
        if f.package == "plugin":
            for s in f.service:
                if s.name == "GRPCBroker":
                    s.method[0].server_streaming = False
        if f.package == "spire.plugin.types":
            for m in f.message_type:
                if m.name == "Bundle":
                    m.field[4].type = descriptor_pb2.FieldDescriptorProto.TYPE_INT64  # sequence_number
                if m.name == "JWTKey":
                    m.name = "JwtKey"
    diffs = compare(broken, upstream, MIRRORED_PACKAGES)
    assert "method plugin.GRPCBroker/StartStream: server_streaming is False, upstream True" in diffs
    assert (
        "field spire.plugin.types.Bundle.sequence_number: ours #5 optional int64, upstream #5 optional uint64"
        in diffs
    )
    assert "message spire.plugin.types.JwtKey: not defined upstream" in diffs
    # Bundle.jwt_authorities still names .spire.plugin.types.JWTKey, so only the renamed message is reported.
    assert len(diffs) == 3, diffs


def test_pinned_versions_match_spire_and_upstream_md() -> None:
    go_mod = (ROOT / "tools" / "spire" / "go.mod").read_text()
    for module, version in (GO_PLUGIN, API_SDK):
        assert re.search(rf"^\s*{re.escape(module)} {re.escape(version)}\b", go_mod, re.M), (
            f"tools/spire/go.mod no longer requires {module} {version}: re-check proto/ and bump the contract"
        )
    upstream_md = (OUR_PROTO / "UPSTREAM.md").read_text()
    for module, version in (PLUGIN_SDK, GO_PLUGIN, API_SDK):
        assert f"{module}@{version}" in upstream_md, f"{module}@{version} missing from proto/UPSTREAM.md"
