"""Agent configuration: every problem reported at once, each naming its key; the example file loads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from spire_pqc.agent.config import DevSourceConfig, load, parse, parse_duration
from spire_pqc.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agent" / "agent.toml"


def test_example_config_loads() -> None:
    config = load(EXAMPLE)
    assert isinstance(config.source, DevSourceConfig)
    assert config.socket_path.is_absolute()
    assert config.source.entries, "the example documents at least one entry"
    assert config.health_address is not None


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            {
                "agent": {"socket_path": "relative.sock", "socket_mode": "999", "colour": "blue"},
                "source": {
                    "kind": "dev",
                    "dev": {
                        "trust_domain": "Example.org",
                        "svid_ttl": "-3s",
                        "entries": [
                            {"spiffe_id": "spiffe://example.org", "selectors": ["unix:uid:1"]},
                            {"spiffe_id": "spiffe://example.org/a", "selectors": []},
                        ],
                    },
                },
                "health": {"listen_address": "0.0.0.0:8080"},
                "pqc": {"retry_initial": "10s", "retry_max": "1s"},
            }
        )
    keys = [p.split(":")[0] for p in info.value.problems]
    assert keys == [
        "agent.colour",
        "agent.socket_path",
        "agent.socket_mode",
        "source.dev.trust_domain",
        "source.dev.svid_ttl",
        "source.dev.entries[0].spiffe_id",
        "source.dev.entries[1].selectors",
        "pqc.retry_max",
        "health.listen_address",
    ]


def test_dev_source_refused_in_production() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            {
                "agent": {"socket_path": "/run/a.sock", "production": True},
                "source": {"kind": "dev", "dev": {"trust_domain": "example.org"}},
            }
        )
    assert info.value.problems == ["source.kind: the dev source is refused when agent.production = true"]


def test_spire_source_needs_ca_and_admin_socket() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"agent": {"socket_path": "/run/a.sock"}, "source": {"kind": "spire", "spire": {}}})
    assert [p.split(":")[0] for p in info.value.problems] == [
        "source.spire.admin_socket_path",
        "source.spire.workload_socket_path",
        "ca",
    ]


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_text("[agent\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "seconds"), [(30, 30), (0.5, 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("0.25s", 0.25)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5x", "0s", True, -1, "1d"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
