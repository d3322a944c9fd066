"""Tunnel configuration: every problem of every tunnel reported at once; the example's tunnels load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spire_pqc.agent.config import load, parse
from spire_pqc.errors import ConfigError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agent" / "agent.toml"
SVC = "spiffe://example.org/svc"


def _config(tunnel: dict[str, Any], kind: str = "dev") -> dict[str, Any]:
    source: dict[str, Any] = {
        "kind": "dev",
        "dev": {"trust_domain": "example.org", "entries": [{"spiffe_id": SVC, "selectors": ["unix:uid:1"]}]},
    }
    extra: dict[str, Any] = {}
    if kind == "spire":
        source = {
            "kind": "spire",
            "spire": {"admin_socket_path": "/a.sock", "workload_socket_path": "/w.sock"},
        }
        extra = {"ca": {"address": "ca:8444"}}
    return {"agent": {"socket_path": "/tmp/a.sock"}, "source": source, "tunnel": tunnel, **extra}


def test_example_tunnels_load() -> None:
    tunnels = load(EXAMPLE).tunnels
    assert [(t.direction, t.name) for t in tunnels] == [
        ("outbound", "billing-to-ledger"),
        ("inbound", "billing-api"),
    ]
    out, inb = tunnels
    assert out.listen == ("127.0.0.1", 15001) and out.remote == ("ledger.internal", 15443)
    assert out.peer_ids == (SpiffeId.parse("spiffe://example.org/ledger"),)
    assert inb.listen == ("0.0.0.0", 15443) and inb.target == ("127.0.0.1", 8080)
    assert inb.allowed_ids == (SpiffeId.parse("spiffe://example.org/ledger"),) and inb.mode == "hybrid"


def test_every_tunnel_problem_is_reported_at_once() -> None:
    tunnel = {
        "outbound": [
            {"name": "a", "listen": "0.0.0.0:1", "remote": "nowhere", "spiffe_id": SVC, "mode": "tls"},
            {"name": "a", "listen": "127.0.0.1:2", "remote": "h:3", "peer_ids": ["http://x"], "spiffe_id": SVC},
        ],
        "inbound": [
            {"name": "c", "listen": "0.0.0.0:4", "target": "127.0.0.1:5", "spiffe_id": "spiffe://example.org/x"},
            {
                "name": "d", "listen": "127.0.0.1:2", "target": "127.0.0.1:6", "spiffe_id": SVC, "colour": 1,
                "allowed_ids": [SVC], "allowed_trust_domain": "example.org",
            },
        ],
        "sideways": [],
    }  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse(_config(tunnel))
    keys = [p.split(": ")[0] for p in info.value.problems]
    assert keys == [
        "tunnel.sideways",
        "tunnel.outbound[0].mode",
        "tunnel.outbound[0].listen",
        "tunnel.outbound[0].remote",
        "tunnel.outbound[0].peer_ids",
        "tunnel.outbound[1].peer_ids[0]",
        "tunnel.inbound[0].spiffe_id",
        "tunnel.inbound[0]",
        "tunnel.inbound[1].colour",
        "tunnel.inbound[1]",
        "tunnel",
        "tunnel",
    ]
    text = "\n".join(info.value.problems)
    assert "name 'a' is used by more than one tunnel" in text
    assert "127.0.0.1:2 is used by more than one tunnel" in text
    assert "not the SPIFFE ID of any [[source.dev.entries]]" in text


def test_outbound_may_listen_beyond_loopback_when_allowed() -> None:
    tunnel = {"outbound": [{"name": "o", "listen": "0.0.0.0:1", "remote": "h:2", "peer_ids": [SVC],
                            "spiffe_id": SVC, "allow_non_loopback": True}]}  # fmt: skip
    (out,) = parse(_config(tunnel)).tunnels
    assert out.allow_non_loopback and out.listen == ("0.0.0.0", 1)


def test_inbound_trust_domain() -> None:
    tunnel = {"inbound": [{"name": "i", "listen": "0.0.0.0:1", "target": "127.0.0.1:2", "spiffe_id": SVC,
                           "allowed_trust_domain": "example.org", "mode": "pq-tls"}]}  # fmt: skip
    (inb,) = parse(_config(tunnel)).tunnels
    assert inb.allowed_trust_domain == TrustDomain.parse("example.org") and inb.mode == "pq-tls"


def test_spire_source_tunnels_need_selectors() -> None:
    base = {"name": "i", "listen": "0.0.0.0:1", "target": "127.0.0.1:2", "spiffe_id": SVC,
            "allowed_trust_domain": "example.org"}  # fmt: skip
    tunnel = {"inbound": [base, {**base, "name": "j", "listen": "0.0.0.0:3", "selectors": ["uid"]}]}
    with pytest.raises(ConfigError) as info:
        parse(_config(tunnel, kind="spire"))
    assert [p.split(": ")[0] for p in info.value.problems] == [
        "tunnel.inbound[0].selectors",
        "tunnel.inbound[1].selectors",
    ]
    ok = {"inbound": [{**base, "selectors": ["unix:uid:1000", "unix:gid:1000"]}]}
    (inb,) = parse(_config(ok, kind="spire")).tunnels
    assert inb.selectors == {"unix:uid:1000", "unix:gid:1000"}


def test_dev_source_tunnels_take_no_selectors() -> None:
    tunnel = {"inbound": [{"name": "i", "listen": "0.0.0.0:1", "target": "127.0.0.1:2", "spiffe_id": SVC,
                           "allowed_trust_domain": "example.org", "selectors": ["unix:uid:1"]}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"tunnel.inbound\[0\].selectors: only with the spire source"):
        parse(_config(tunnel))
