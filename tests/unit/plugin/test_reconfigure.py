"""Configure is safe to call again at any time (SPIRE's SIGUSR1 with ``plugin_data_file``).

A refused configuration leaves the running one in place, and two configurations applied at once
cannot leave the composer's state from one and the endpoint/metrics (``on_configured``) from the
other. The same through a real spire-server and SIGUSR1: tests/integration/test_spire_plugin.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.errors import ConfigError
from spire_pqc.plugin.config import Config
from spire_pqc.plugin.servicer import PluginState
from tests.unit.plugin.test_composer_errors import hcl, hierarchy, plugin_files

__all__ = ["hierarchy"]  # the module-scoped fixture, shared with test_composer_errors


def test_a_refused_configuration_keeps_the_running_one(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    applied: list[Config] = []
    state = PluginState(on_configured=applied.append)
    files = plugin_files(tmp_path, hierarchy)
    first = state.configure("example.org", hcl(files, "skip"))
    with pytest.raises(ConfigError, match="on_error: must be one of skip, fail, got 'sometimes'"):
        state.configure("example.org", hcl(files, "sometimes"))
    current = state.current()
    assert current is not None and current.config is first
    assert applied == [first]
    again = state.configure("example.org", hcl(files, "fail"))
    assert state.current().config is again and applied == [first, again]  # type: ignore[union-attr]


def test_concurrent_configurations_are_applied_one_at_a_time(tmp_path: Path, hierarchy: PQCHierarchy) -> None:
    """The first on_configured call lingers (as an endpoint restart may): a second Configure arriving
    meanwhile must not swap its state in under it, or the endpoint would serve another configuration."""
    entered: list[Config] = []
    applied: list[Config] = []
    overtaken = threading.Event()

    def on_configured(config: Config) -> None:
        entered.append(config)
        if len(entered) == 1:
            overtaken.wait(1.0)  # give a concurrent Configure up to 1 s to finish before this one
        applied.append(config)
        if len(entered) == 2:
            overtaken.set()

    state = PluginState(on_configured=on_configured)
    files = plugin_files(tmp_path, hierarchy)
    results: dict[str, Config] = {}

    def configure(on_error: str) -> None:
        results[on_error] = state.configure("example.org", hcl(files, on_error))

    first = threading.Thread(target=configure, args=("skip",))
    first.start()
    while state.current() is None:
        time.sleep(0.005)
    second = threading.Thread(target=configure, args=("fail",))
    second.start()
    first.join(30)
    second.join(30)
    assert [c.on_error for c in applied] == ["skip", "fail"]
    assert state.current().config is applied[-1]  # type: ignore[union-attr]
