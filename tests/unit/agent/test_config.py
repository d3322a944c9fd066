"""Agent configuration: every problem reported at once, each naming its key; the example file loads;
any document or text gives a configuration or one ConfigError, within a time bound."""

from __future__ import annotations

import copy
import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.agent.config import AgentFile, DevSourceConfig, load, parse
from spire_pqc.config.reference import keys
from spire_pqc.errors import ConfigError
from tests.unit.credentials.fuzz import PROPERTY_DEEP

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
    # Known keys in the order of the reference (docs/configuration.md), then a table's unknown keys.
    assert keys == [
        "agent.socket_path",
        "agent.socket_mode",
        "agent.colour",
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


def test_limits_are_configured_and_bounded() -> None:
    base = {
        "agent": {"socket_path": "/run/a.sock"},
        "source": {"kind": "dev", "dev": {"trust_domain": "example.org"}},
    }
    limits = {"max_connections_per_uid": 8, "max_streams_per_uid": 9, "idle_timeout": "1m30s",
              "max_request_bytes_per_uid": "8MiB"}  # fmt: skip
    configured = parse({**base, "limits": limits}).limits
    assert (configured.max_connections_per_uid, configured.max_streams_per_uid) == (8, 9)
    assert configured.idle_timeout == dt.timedelta(seconds=90)
    assert configured.max_request_bytes_per_uid == 8 * 2**20
    assert configured.max_message_size == 4 * 2**20  # not configurable
    with pytest.raises(ConfigError) as info:
        parse({**base, "limits": {"max_request_bytes_per_uid": "1MiB", "max_message_size": 1}})
    assert info.value.problems == [
        "limits.max_request_bytes_per_uid: must be at least 4MiB: one request of the largest size must fit",
        "limits.max_message_size: unknown key (known: idle_timeout, max_connections_per_uid, "
        "max_request_bytes_per_uid, max_streams_per_uid)",
    ]


def test_one_duration_syntax_in_both_files() -> None:
    """The agent accepted 30 and 0.5 (seconds) while the plugin refused them: now both refuse, the same way."""
    from spire_pqc.plugin.config import build_config

    with pytest.raises(ConfigError) as agent:
        parse({"agent": {"socket_path": "/run/a.sock", "shutdown_grace": 30},
               "source": {"kind": "dev", "dev": {"trust_domain": "example.org", "svid_ttl": "0.5"}}})  # fmt: skip
    with pytest.raises(ConfigError) as plugin:
        build_config("example.org", 'freshness_window = 30\nmax_pqc_ttl = "0.5"')
    assert [p.split(": ", 1)[1] for p in agent.value.problems] == [
        "30 has no unit: write a duration with units like '30s', '5m', '1h30m' or '500ms' (a bare number is not a "
        "duration)",
        "'0.5' has no unit: write a duration with units like '30s', '5m', '1h30m' or '500ms'",
    ]
    durations = [p for p in plugin.value.problems if p.startswith(("freshness_window", "max_pqc_ttl"))]
    assert [p.split(": ", 1)[1] for p in durations] == [p.split(": ", 1)[1] for p in agent.value.problems]


# --- property tests: whatever the file says, a configuration or one ConfigError, quickly ----------

EXAMPLE_DOC = tomllib.loads(EXAMPLE.read_text())
KEY_PATHS = [row.path for row in keys(AgentFile)]

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        ["*", "0", "30", "30s", "unix:/x", "127.0.0.1:0", "spiffe://example.org/a", "0660", "1MiB"]
    ),
    st.datetimes(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _set(doc: Any, path: list[str], value: object) -> None:
    """Set (None: delete) ``path`` in ``doc``; ``name[]`` applies to every element of that array."""
    head, rest = path[0], path[1:]
    array = head.endswith("[]")
    head = head.removesuffix("[]").split(".<")[0]
    if not isinstance(doc, dict):
        return
    if not rest:
        if value is None:
            doc.pop(head, None)
        else:
            doc[head] = value
        return
    children = doc.setdefault(head, [] if array else {})
    for child in children if array and isinstance(children, list) else [children]:
        _set(child, rest, value)


@st.composite
def agent_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE_DOC)
    for path in draw(
        st.lists(st.sampled_from([*KEY_PATHS, "colour", "tunnel.sideways", "agent.colour"]), max_size=6)
    ):
        _set(doc, path.replace("[].", "[]\x00").replace(".", "\x00").split("\x00"), draw(_VALUES))
    return doc


@PROPERTY_DEEP  # each example within 5 s (a document takes milliseconds)
@given(doc=agent_documents())
def test_any_document_gives_a_configuration_or_a_config_error(doc: dict[str, Any]) -> None:
    try:
        config = parse(doc)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert config.socket_path.is_absolute()


@PROPERTY_DEEP
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_text_gives_a_configuration_or_a_config_error(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "any.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with pytest.raises(ConfigError):  # no text this short is a whole agent configuration
        load(path)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "x = " + "1" * 5000,
            "not valid TOML: Exceeds the limit (4300 digits)",
        ),  # tomllib let a ValueError out
        ("x = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("x = 1\n" * 200_000, "larger than 1048576 bytes"),
    ],
)
def test_hostile_files_are_configuration_errors(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(why)):
        load(path)


def _spire(**extra: Any) -> dict[str, Any]:
    return {
        "agent": {"socket_path": "/run/spire-pqc/agent.sock"},
        "source": {
            "kind": "spire",
            "spire": {"admin_socket_path": "/run/a.sock", "workload_socket_path": "/run/w.sock"},
        },
        "ca": {"address": "127.0.0.1:8443"},
        **extra,
    }


FEDERATION = {
    "address": "spire.partner.example:8444",
    "endpoint_spiffe_id": "spiffe://partner.example/spire/server",
    "initial_bundle": "/etc/spire-pqc/partner-root.pem",
}


def test_federation_tables_are_configured_and_checked() -> None:
    config = parse(_spire(federation={"partner.example": FEDERATION}))
    (td, fed), *_ = config.federation.items()
    assert (td.name, fed.address, fed.path, str(fed.endpoint_spiffe_id)) == (
        "partner.example", ("spire.partner.example", 8444), "/", "spiffe://partner.example/spire/server"
    )  # fmt: skip
    cases = {
        "endpoint of another trust domain": (
            _spire(federation={"partner.example": {**FEDERATION, "endpoint_spiffe_id": "spiffe://other.example/x"}}),
            "federation: partner.example: endpoint_spiffe_id spiffe://other.example/x is not in trust domain",
        ),
        "also a static file": (
            _spire(federation={"partner.example": FEDERATION},
                   pqc={"federated_bundles": {"partner.example": "/etc/p.pem"}}),
            "federation: partner.example: also in pqc.federated_bundles",
        ),
        "dev source": (
            {"agent": {"socket_path": "/run/x.sock"}, "federation": {"partner.example": FEDERATION},
             "source": {"kind": "dev", "dev": {"trust_domain": "example.org", "entries": []}}},
            "federation: the dev source has no federated trust domains",
        ),
        "missing keys": (
            _spire(federation={"partner.example": {"address": "h:1"}}),
            "federation.partner.example.endpoint_spiffe_id",
        ),
    }  # fmt: skip
    for name, (document, expected) in cases.items():
        with pytest.raises(ConfigError) as info:
            parse(document)
        assert any(expected in p for p in info.value.problems), (name, info.value.problems)


def test_ca_ready_window_must_be_longer_than_a_bundle_poll() -> None:
    """Otherwise the agent would not be ready between two polls of an idle node."""
    base = {
        "agent": {"socket_path": "/run/a.sock"},
        "source": {"kind": "dev", "dev": {"trust_domain": "example.org"}},
    }
    with pytest.raises(ConfigError) as info:
        parse({**base, "pqc": {"bundle_refresh_interval": "2m"}})  # the default window is 90s
    assert info.value.problems == [
        "pqc.ca_ready_window: must be longer than pqc.bundle_refresh_interval (120s): otherwise the agent "
        "is not ready between two polls"
    ]
    config = parse({**base, "pqc": {"bundle_refresh_interval": "2m", "ca_ready_window": "5m"}})
    assert config.ca_ready_window.total_seconds() == 300
