"""packaging/kubernetes: the node-agent DaemonSet and the server-side Service validated offline against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), the pieces held consistent
with each other and with SPIRE's Helm chart values, the agent configuration accepted by the agent, and the
Helm values' plugin_data loaded by a real spire-server from a JSON configuration, as the chart renders it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from spire_pqc.bench.spirelab import free_port, plugin_command, spire_bin
from spire_pqc.cli.main import build_parser
from tests.packaging._support import CHECKOUT

KUBERNETES = CHECKOUT / "packaging" / "kubernetes"
VALUES = KUBERNETES / "spire-values.yaml"
# The oldest Kubernetes release SPIRE's chart 0.30 still supports and the newest the validator knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Defaults of SPIRE's chart (spiffe/helm-charts-hardened, charts/spire/charts/spire-agent/values.yaml).
CHART_AGENT_SOCKET_PATH = "/run/spire/agent-sockets/spire-agent.sock"
CHART_SERVER_POD_LABELS = {"app.kubernetes.io/name": "server", "app.kubernetes.io/instance": "spire"}


def _documents(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((directory / name).read_text()) if d)
    return documents


def _all_documents() -> list[dict[str, Any]]:
    return _documents(KUBERNETES / "agent") + _documents(KUBERNETES / "server")


def _one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _all_documents() if d["kind"] == kind]
    return found


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return values


def _agent_config() -> dict[str, Any]:
    return tomllib.loads(_one("ConfigMap")["data"]["agent.toml"])


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    documents = _all_documents()
    assert {d["kind"] for d in documents} == {"ServiceAccount", "ConfigMap", "DaemonSet", "Service"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The negative control: a misspelt field fails strict validation."""
    daemonset = _one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


def test_kustomizations_list_every_manifest() -> None:
    for directory in (KUBERNETES / "agent", KUBERNETES / "server"):
        listed = set(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])
        present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, directory


def test_agent_configuration_in_the_configmap_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(_one("ConfigMap")["data"]["agent.toml"])
    result = subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "agent", "validate", "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_daemonset_mounts_what_the_configuration_uses() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = _agent_config()

    def host_dir_of(path: str) -> str:
        directory = str(PurePosixPath(path).parent)
        assert directory in mounts, f"{path}: its directory is not mounted in the agent container"
        return str(volumes[mounts[directory]]["hostPath"]["path"])

    socket_host_dir = host_dir_of(config["agent"]["socket_path"])
    admin_host_dir = host_dir_of(config["source"]["spire"]["admin_socket_path"])
    workload_host_dir = host_dir_of(config["source"]["spire"]["workload_socket_path"])
    spire_agent = _values()["spire-agent"]
    assert admin_host_dir == spire_agent["sockets"]["hostBasePath"] + "/csi.spiffe.io/admin"
    assert spire_agent["sockets"]["admin"] == {"enabled": True, "mountOnHost": True}
    assert workload_host_dir == str(PurePosixPath(CHART_AGENT_SOCKET_PATH).parent)
    assert socket_host_dir == "/run/spire-pqc/sockets"
    # The state directory (workloads' PQC private keys) is its own hostPath, not under the socket
    # directory that workload pods mount.
    state_dir = config["agent"]["state_dir"]
    assert volumes[mounts[state_dir]]["hostPath"]["path"] == "/var/lib/spire-pqc"
    assert not state_dir.startswith(str(PurePosixPath(config["agent"]["socket_path"]).parent))
    assert config["agent"]["production"] is True
    assert pod["hostPID"] is True
    # The container runs the agent from the image's entry point with arguments the CLI accepts.
    parsed = build_parser().parse_args(container["args"])
    assert (parsed.command, parsed.agent_command) == ("agent", "run")
    assert container["args"][container["args"].index("-c") + 1] == "/etc/spire-pqc/agent.toml"
    assert mounts["/etc/spire-pqc"] == "config"
    # No privileges for the agent itself.
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0


def test_one_spiffe_id_for_the_node_agent_everywhere() -> None:
    values = _values()
    daemonset = _one("DaemonSet")
    pod_meta = daemonset["spec"]["template"]["metadata"]
    namespace = daemonset["metadata"]["namespace"]
    account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    trust_domain = values["global"]["spire"]["trustDomain"]
    identity = values["spire-server"]["controllerManager"]["identities"]["clusterSPIFFEIDs"][
        "spire-pqc-agent"
    ]
    rendered = (
        identity["spiffeIDTemplate"]
        .replace("{{ .TrustDomain }}", trust_domain)
        .replace("{{ .PodMeta.Namespace }}", namespace)
        .replace("{{ .PodSpec.ServiceAccountName }}", account)
    )
    assert identity["podSelector"]["matchLabels"].items() <= pod_meta["labels"].items()
    assert identity["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    assert _one("ServiceAccount")["metadata"]["name"] == account
    plugin_data = values["spire-server"]["customPlugins"]["credentialComposer"]["spire_pqc"]["plugin_data"]
    assert values["spire-agent"]["authorizedDelegates"] == [rendered]
    assert plugin_data["authorized_agents"] == [rendered]
    assert _agent_config()["source"]["spire"]["agent_id"] == rendered


def test_the_agent_reaches_the_endpoint_through_the_service() -> None:
    service = _one("Service")
    (port,) = service["spec"]["ports"]
    plugin_data = _values()["spire-server"]["customPlugins"]["credentialComposer"]["spire_pqc"]["plugin_data"]
    assert int(plugin_data["endpoint_listen_address"].rsplit(":", 1)[1]) == port["targetPort"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert _agent_config()["ca"]["address"] == f"{name}.{namespace}.svc.cluster.local:{port['port']}"
    assert service["spec"]["selector"] == CHART_SERVER_POD_LABELS
    mounts = _values()["spire-server"]["extraVolumeMounts"]
    (ca_mount,) = [m for m in mounts if m["name"] == "spire-pqc-ca"]
    for key in ("intermediate_key_path", "intermediate_cert_path", "pqc_bundle_path"):
        assert PurePosixPath(plugin_data[key]).parent == PurePosixPath(ca_mount["mountPath"]), key


# --- the Helm values' plugin_data, loaded by a real spire-server -----------------------------------


def _chart_style_server_conf(workdir: Path, plugin: dict[str, Any]) -> dict[str, Any]:
    """server.conf as SPIRE's chart renders it: JSON, plugins as {type: [{name: {...}}]}."""
    server = workdir / "server"
    server.mkdir(parents=True)
    return {
        "server": {
            "bind_address": "127.0.0.1",
            "bind_port": str(free_port()),
            "socket_path": str(workdir / "server.sock"),
            "trust_domain": _values()["global"]["spire"]["trustDomain"],
            "data_dir": str(server),
            "log_level": "DEBUG",
        },
        "plugins": {
            "DataStore": [{"sql": {"plugin_data": {
                "database_type": "sqlite3", "connection_string": str(server / "datastore.sqlite3")}}}],
            "KeyManager": [{"memory": {"plugin_data": {}}}],
            "NodeAttestor": [{"join_token": {"plugin_data": {}}}],
            "CredentialComposer": [{"spire_pqc": plugin}],
        },
    }  # fmt: skip


@pytest.mark.spire
def test_helm_plugin_data_loads_in_a_real_spire_server(tmp_path: Path) -> None:
    trust_domain = _values()["global"]["spire"]["trustDomain"]
    plugin = json.loads(
        json.dumps(_values()["spire-server"]["customPlugins"]["credentialComposer"]["spire_pqc"])
    )
    ca = tmp_path / "ca"
    for args in (("init",), ("intermediate", "--root-dir", str(ca))):
        subprocess.run(
            [sys.executable, "-m", "spire_pqc.cli", "ca", *args, "--trust-domain", trust_domain,
             "--out-dir", str(ca), "--no-encryption"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    # The chart's paths, rebased onto this test's files; everything else exactly as in the values.
    data = plugin["plugin_data"]
    mount = str(PurePosixPath(data["intermediate_key_path"]).parent)
    for key in ("intermediate_key_path", "intermediate_cert_path", "pqc_bundle_path"):
        data[key] = data[key].replace(mount, str(ca))
    data["ledger_dsn"] = f"sqlite://{tmp_path}/ledger.db"
    data["endpoint_listen_address"] = f"127.0.0.1:{free_port()}"
    command = plugin_command()
    plugin["plugin_cmd"] = str(command)
    plugin["plugin_checksum"] = hashlib.sha256(command.read_bytes()).hexdigest()
    config = tmp_path / "server.conf"
    config.write_text(json.dumps(_chart_style_server_conf(tmp_path, plugin), indent=2))
    result = subprocess.run(
        [str(spire_bin("spire-server")), "validate", "-config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
    # The negative control: a key the plugin does not know is reported through SPIRE.
    data["colour"] = "blue"
    config.write_text(json.dumps(_chart_style_server_conf(tmp_path / "again", plugin), indent=2))
    result = subprocess.run(
        [str(spire_bin("spire-server")), "validate", "-config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "colour" in result.stdout + result.stderr
