"""docs/configuration.md and the READMEs agree with the models the validators use.

The key tables are generated from the models (scripts/gen_config_docs.py): every key of a model is
documented, and every documented key exists. Keys mentioned in prose anywhere in the documentation
(``agent.state_dir``, ``ledger_dsn``) must exist too, so a renamed or removed key cannot linger there.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from spire_pqc.agent.config import AgentFile
from spire_pqc.config.reference import keys, sections_of, tables
from spire_pqc.plugin.config import PluginData

ROOT = Path(__file__).resolve().parents[3]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("plugins/*/README.md")])
AGENT_TABLES = tuple(AgentFile.model_fields)
# Backticked agent keys: `agent.state_dir`, `tunnel.outbound[].listen`, `pqc.federated_bundles`, …
AGENT_KEY = re.compile(rf"`((?:{'|'.join(AGENT_TABLES)})(?:\.[a-z_]+|\[\d*\])+)")
# Backticked plugin keys, recognised by the words they start with.
PLUGIN_KEY = re.compile(
    r"`((?:intermediate_|pqc_bundle_path|trusted_intermediates|endpoint_listen|authorized_agents|freshness_"
    r"|max_pqc|ledger_|metrics_listen|on_error)[a-z_]*)`"
)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_current() -> None:
    stale = []
    for path, (text, fresh) in _generator().regenerated().items():
        if text != fresh:
            name = str(path.relative_to(ROOT))
            stale.append(
                "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), name, name))
            )
    assert not stale, "run `python scripts/gen_config_docs.py`:\n" + "\n".join(stale)


def test_every_key_of_both_models_is_in_the_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    generated = sections_of(reference)
    for row in keys(AgentFile):
        assert f"| `{row.name}` |" in generated["agent-reference"], row.path
    for table in tables(AgentFile):
        assert f"`{table.header}`" in generated["agent-reference"], table.header
    for row in keys(PluginData):
        assert f"| `{row.name}` |" in generated["plugin-reference"], row.path
    readme = sections_of((ROOT / "README.md").read_text())
    assert [f"`{r.path}`" in readme["agent-keys"] for r in keys(AgentFile)] == [True] * len(keys(AgentFile))
    assert all(f"`{r.path}`" in readme["plugin-keys"] for r in keys(PluginData))


def _agent_keys() -> set[str]:
    known = {row.path.replace("[]", "") for row in keys(AgentFile)}
    known |= {table.name for table in tables(AgentFile)}
    known |= {p.split(".<")[0] for p in known if ".<" in p}  # pqc.federated_bundles
    return known


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_key_mentioned_in_the_documentation_exists(path: Path) -> None:
    text = path.read_text()
    agent = {re.sub(r"\[\d*\]", "", m) for m in AGENT_KEY.findall(text)}
    unknown = sorted(agent - _agent_keys() - {"agent.toml"})  # the file's name is no key
    assert not unknown, f"{path.name} mentions agent keys that do not exist: {unknown}"
    plugin = set(PLUGIN_KEY.findall(text)) - set(PluginData.model_fields)
    assert not plugin, f"{path.name} mentions plugin_data keys that do not exist: {sorted(plugin)}"
