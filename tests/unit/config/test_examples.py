"""Every configuration the repository ships loads through the real validators, and the examples agree.

Agent files go through ``spire_pqc.agent.config.load`` (what ``spire-pqc agent validate`` and ``run``
use); the example ``server.conf``'s ``plugin_data`` goes through the plugin's own builder with its files
made real (the same file through a real ``spire-server validate``: tests/integration/
test_config_examples.py). The Kubernetes ConfigMap's ``agent.toml`` and the Helm values' ``plugin_data``
are loaded by tests/packaging/test_kubernetes.py. A new configuration file anywhere under examples/,
plugins/ or packaging/ fails :func:`test_every_shipped_configuration_is_covered` until it is loaded here
or there.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import hcl
import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.files import atomic_write
from spire_pqc.agent.config import DevSourceConfig, SpireSourceConfig, load
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.config import parse_address
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.plugin.config import AgentPattern, build_config
from spire_pqc.spiffeid import SpiffeId, TrustDomain

ROOT = Path(__file__).resolve().parents[3]
AGENT_EXAMPLES = {
    "examples/agent/agent.toml": DevSourceConfig,
    "examples/agent/agent-spire.toml": SpireSourceConfig,
    "examples/hybrid-echo/agent.toml": DevSourceConfig,
    "examples/hello-world/agent.toml": DevSourceConfig,
}
SERVER_CONF = "plugins/spire-pqc-composer/server.conf"
COVERED_ELSEWHERE = {"packaging/kubernetes/agent/configmap.yaml", "packaging/kubernetes/spire-values.yaml"}


def _agent_file(name: str, tmp_path: Path) -> Path:
    text = (ROOT / name).read_text()
    # examples/hybrid-echo/run.sh fills these in with sed; do the same.
    text = text.replace("@SOCKET@", str(tmp_path / "agent.sock")).replace("@UID@", str(os.getuid()))
    path = tmp_path / Path(name).name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(AGENT_EXAMPLES))
def test_agent_examples_load(name: str, tmp_path: Path) -> None:
    config = load(_agent_file(name, tmp_path))
    assert isinstance(config.source, AGENT_EXAMPLES[name])
    if isinstance(config.source, SpireSourceConfig):
        assert config.production and config.ca is not None
        assert all(t.selectors for t in config.tunnels), "with the spire source every tunnel needs selectors"


def _server_conf() -> dict[str, Any]:
    conf: dict[str, Any] = hcl.loads((ROOT / SERVER_CONF).read_text())
    return conf


def _plugin_data() -> dict[str, Any]:
    data: dict[str, Any] = _server_conf()["plugins"]["CredentialComposer"]["spire_pqc"]["plugin_data"]
    return data


def test_example_server_conf_plugin_data_is_accepted(tmp_path: Path) -> None:
    trust_domain = _server_conf()["server"]["trust_domain"]
    hierarchy = PQCHierarchy.generate(TrustDomain.parse(trust_domain))
    data = _plugin_data()
    pem = serialization.Encoding.PEM
    root = hierarchy.root.public_bytes(pem)
    files = {
        "intermediate_key_path": hierarchy.intermediate.key.pem(NoEncryption()),
        "intermediate_cert_path": hierarchy.intermediate.certificate.public_bytes(pem) + root,
        "pqc_bundle_path": root,
    }
    for key, content in files.items():
        path = tmp_path / Path(data[key]).name
        atomic_write(path, content)  # 0600, as the key must be
        data[key] = str(path)
    config = build_config(trust_domain, json.dumps(data))  # HCL v1 reads JSON too
    assert config.endpoint_listen_address == "0.0.0.0:8443"
    assert config.metrics_listen_address == ("127.0.0.1", 9989)
    assert config.ledger_dsn.kind == "sqlite"


def test_the_examples_agree_on_the_pqc_ca_endpoint(tmp_path: Path) -> None:
    """The spire-source agent reaches the example server's endpoint and is one of its authorized agents."""
    agent = load(_agent_file("examples/agent/agent-spire.toml", tmp_path))
    plugin_data = _plugin_data()
    assert agent.ca is not None
    _, endpoint_port = parse_address(plugin_data["endpoint_listen_address"])
    assert {parse_address(a)[1] for a in agent.ca.addresses} == {endpoint_port}
    assert isinstance(agent.source, SpireSourceConfig) and agent.source.agent_id is not None
    patterns = [AgentPattern.parse(p) for p in plugin_data["authorized_agents"]]
    assert any(p.matches(agent.source.agent_id) for p in patterns)
    assert agent.ca.server_id == SpiffeId.parse(
        f"spiffe://{_server_conf()['server']['trust_domain']}/spire/server"
    )


def test_every_shipped_configuration_is_covered() -> None:
    shipped = {
        str(p.relative_to(ROOT))
        for pattern in (
            "examples/**/*.toml",
            "plugins/**/*.conf",
            "packaging/**/*.toml",
            "packaging/**/*.conf",
        )
        for p in ROOT.glob(pattern)
    }
    shipped |= {
        str(p.relative_to(ROOT))
        for p in ROOT.glob("packaging/**/*.yaml")
        if re.search(r"^\s*(agent\.toml|plugin_data):", p.read_text(), re.MULTILINE)  # a configuration inside
    }
    shipped -= {
        "packaging/systemd/spire-pqc.sysusers.conf",
        "packaging/systemd/spire-server.service.d/spire-pqc.conf",
    }
    assert shipped == set(AGENT_EXAMPLES) | {SERVER_CONF} | COVERED_ELSEWHERE
