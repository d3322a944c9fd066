"""SPIFFE_ENDPOINT_SOCKET parsing per the SPIFFE Workload Endpoint specification."""

from __future__ import annotations

import pytest

from spire_pqc.errors import ConfigError
from spire_pqc.workload.addr import Endpoint, parse_endpoint, resolve_endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:///run/spire-pqc/agent.sock", Endpoint(path="/run/spire-pqc/agent.sock")),
        ("unix:/run/a.sock", Endpoint(path="/run/a.sock")),
        ("tcp://127.0.0.1:8081", Endpoint(host="127.0.0.1", port=8081)),
        ("tcp://[::1]:8081", Endpoint(host="::1", port=8081)),
    ],
)
def test_valid(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("unix://run/x.sock", "write unix:///run/x.sock"),
        ("/run/x.sock", "scheme is required"),
        ("unix:run/x.sock", "must be absolute"),
        ("unix:///run/x.sock?x=1", "query"),
        ("tcp://localhost:80", "IP literal"),
        ("tcp://127.0.0.1", "need a port"),
        ("tcp://127.0.0.1:80/path", "no path"),
        ("http://127.0.0.1:80", "not unix or tcp"),
        ("", "empty"),
    ],
)
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why.replace("?", r"\?")):
        parse_endpoint(text)


def test_explicit_wins_then_environment() -> None:
    env = {"SPIFFE_ENDPOINT_SOCKET": "unix:///env.sock"}
    assert resolve_endpoint("unix:///explicit.sock", environ=env).path == "/explicit.sock"
    assert resolve_endpoint(environ=env).path == "/env.sock"
    with pytest.raises(ConfigError, match="SPIFFE_ENDPOINT_SOCKET is not set"):
        resolve_endpoint(environ={})
