"""Tunnel configuration: every problem of every tunnel reported at once; the example's tunnels load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spire_pqc.agent.config import LocalUsers, load, parse
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
            {"name": "a", "listen": "127.0.0.1:2", "remote": "h:3", "peer_ids": ["http://x"], "spiffe_id": SVC,
             "allowed_uids": ["*", 5], "allowed_gids": [-1, "no-such-group-here"]},
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
    # A rule between keys is reported at the key to change; every bad item of a list at its index.
    assert keys == [
        "tunnel.outbound[0].mode",
        "tunnel.outbound[0].allowed_uids",
        "tunnel.outbound[0].listen",
        "tunnel.outbound[0].remote",
        "tunnel.outbound[0].peer_ids",
        "tunnel.outbound[1].name",
        "tunnel.outbound[1].allowed_gids[0]",
        "tunnel.outbound[1].allowed_gids[1]",
        "tunnel.outbound[1].allowed_uids",
        "tunnel.outbound[1].peer_ids[0]",
        "tunnel.inbound[0].spiffe_id",
        "tunnel.inbound[0].allowed_trust_domain",
        "tunnel.inbound[1].listen",
        "tunnel.inbound[1].allowed_trust_domain",
        "tunnel.inbound[1].colour",
        "tunnel.sideways",
    ]
    text = "\n".join(info.value.problems)
    assert "tunnel.outbound[1].name: name 'a' is used by more than one tunnel" in text
    assert "tunnel.inbound[1].listen: listen address 127.0.0.1:2 is used by more than one tunnel" in text
    assert "not the SPIFFE ID of any [[source.dev.entries]]" in text
    assert "tunnel.outbound[0].allowed_uids: give allowed_uids and/or allowed_gids" in text
    assert (
        "tunnel.inbound[1].allowed_trust_domain: give exactly one of allowed_ids, allowed_trust_domain"
        in text
    )


def test_outbound_may_listen_beyond_loopback_when_allowed() -> None:
    tunnel = {"outbound": [{"name": "o", "listen": "0.0.0.0:1", "remote": "h:2", "peer_ids": [SVC],
                            "spiffe_id": SVC, "allow_non_loopback": True, "allowed_uids": "*"}]}  # fmt: skip
    (out,) = parse(_config(tunnel)).tunnels
    assert out.allow_non_loopback and out.listen == ("0.0.0.0", 1)
    assert out.local_users == LocalUsers(anyone=True)
    # Remote hosts have no local uid: a list of local users cannot admit them.
    tunnel["outbound"][0]["allowed_uids"] = [1000]
    with pytest.raises(
        ConfigError, match="allow_non_loopback: connections from other hosts have no local user"
    ):
        parse(_config(tunnel))


def test_outbound_local_users_by_number_name_and_unix_listener() -> None:
    base = {"name": "o", "remote": "h:2", "peer_ids": [SVC], "spiffe_id": SVC}
    tunnel = {
        "outbound": [
            {**base, "listen": "127.0.0.1:1", "allowed_uids": [0, "root", 4294967294]},
            {**base, "name": "p", "listen": "unix:///run/spire-pqc/p.sock", "allowed_gids": ["root", 7]},
            {**base, "name": "q", "listen": "unix:/run/q.sock", "allowed_uids": [1], "allowed_gids": [2]},
        ]
    }
    first, second, third = parse(_config(tunnel)).tunnels
    assert first.local_users == LocalUsers(uids=frozenset({0, 4294967294}))
    assert second.listen == Path("/run/spire-pqc/p.sock") and second.local_users == LocalUsers(
        gids=frozenset({0, 7})
    )
    assert third.listen == Path("/run/q.sock")
    assert (
        third.local_users is not None
        and third.local_users.allows(1)
        and third.local_users.allows(9, frozenset({2}))
    )
    assert not third.local_users.allows(9, frozenset({3})) and not third.local_users.allows(None)
    bad = {"outbound": [{**base, "listen": "unix:relative.sock", "allowed_uids": [1]},
                        {**base, "name": "p", "listen": "unix:/a\x00b", "allowed_uids": [1]}],
           "inbound": [{"name": "i", "listen": "unix:/x.sock", "target": "127.0.0.1:2", "spiffe_id": SVC,
                        "allowed_trust_domain": "example.org"}]}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse(_config(bad))
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "'relative.sock' must be an absolute path",
        "contains a NUL byte",
        "a Unix-socket listener is for outbound tunnels only",
    ]


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
        "tunnel.inbound[1].selectors[0]",
    ]
    ok = {"inbound": [{**base, "selectors": ["unix:uid:1000", "unix:gid:1000"]}]}
    (inb,) = parse(_config(ok, kind="spire")).tunnels
    assert inb.selectors == {"unix:uid:1000", "unix:gid:1000"}


def test_dev_source_tunnels_take_no_selectors() -> None:
    tunnel = {"inbound": [{"name": "i", "listen": "0.0.0.0:1", "target": "127.0.0.1:2", "spiffe_id": SVC,
                           "allowed_trust_domain": "example.org", "selectors": ["unix:uid:1"]}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"tunnel.inbound\[0\].selectors: only with the spire source"):
        parse(_config(tunnel))
