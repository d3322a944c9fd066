"""The shared value types: exactly the documented syntax, a precise message naming the key otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spire_pqc.config import (
    AbsolutePath,
    Address,
    Addresses,
    Flag,
    LoopbackAddress,
    PositiveInt,
    Selectors,
    Size,
    SocketMode,
    Table,
    Text,
    TrustDomainName,
    WorkloadId,
    key,
    validate,
)
from spire_pqc.errors import ConfigError
from spire_pqc.spiffeid import SpiffeId, TrustDomain


class Sample(Table):
    text: Text | None = key(None, doc="t")
    flag: Flag | None = key(None, doc="f")
    count: PositiveInt | None = key(None, doc="c")
    path: AbsolutePath | None = key(None, doc="p")
    mode: SocketMode | None = key(None, doc="m")
    address: Address | None = key(None, doc="a")
    loopback: LoopbackAddress | None = key(None, doc="l")
    addresses: Addresses | None = key(None, doc="as")
    size: Size | None = key(None, doc="s")
    workload: WorkloadId | None = key(None, doc="w")
    trust_domain: TrustDomainName | None = key(None, doc="td")
    selectors: Selectors | None = key(None, doc="sel")


def accepted(name: str, value: object) -> Any:
    return getattr(validate(Sample, {name: value}, source="test"), name)


def refused(name: str, value: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(Sample, {name: value}, source="test")
    return info.value.problems


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("text", "x", "x"),
        ("flag", False, False),
        ("count", 2**31 - 1, 2**31 - 1),
        ("path", "/run/a b/c.sock", Path("/run/a b/c.sock")),
        ("mode", "0660", 0o660),
        ("mode", 0o600, 0o600),
        ("address", "spire-server.example.org:8443", ("spire-server.example.org", 8443)),
        ("address", "[::1]:0", ("::1", 0)),
        ("address", "10.0.0.1:65535", ("10.0.0.1", 65535)),
        ("loopback", "localhost:9", ("localhost", 9)),
        ("loopback", "[::1]:9", ("::1", 9)),
        ("addresses", ["a:1", "b:1"], [("a", 1), ("b", 1)]),
        ("size", 4096, 4096),
        ("size", "16MiB", 16 * 2**20),
        ("size", "1GB", 10**9),
        ("workload", "spiffe://example.org/w", SpiffeId.parse("spiffe://example.org/w")),
        ("trust_domain", "example.org", TrustDomain.parse("example.org")),
        ("selectors", ["unix:uid:1000", "k8s:ns:a:b"], ["unix:uid:1000", "k8s:ns:a:b"]),
    ],
)
def test_accepts_the_documented_syntax(name: str, value: object, expected: object) -> None:
    assert accepted(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "problems"),
    [
        ("text", "", ["text: must be a non-empty string"]),
        ("text", 5, ["text: must be a non-empty string"]),
        ("flag", "true", ["flag: must be true or false"]),
        ("flag", 1, ["flag: must be true or false"]),
        ("count", 0, ["count: must be a positive integer (at most 2147483647)"]),
        ("count", True, ["count: must be a positive integer (at most 2147483647)"]),
        ("count", "5", ["count: must be a positive integer (at most 2147483647)"]),
        ("path", "relative/a.sock", ["path: 'relative/a.sock' must be an absolute path"]),
        ("path", "/a\x00b", ["path: contains a NUL byte"]),
        ("mode", "999", ["mode: '999' is not an octal mode like '0660'"]),
        ("mode", 0o1777, ["mode: 0o1777 is not a permission mode (0..0777)"]),
        ("address", "nope", ["address: 'nope' is not host:port"]),
        ("address", "h:65536", ["address: 'h:65536' is not host:port"]),
        ("address", "::1:80", ["address: '::1:80': write an IPv6 address in brackets, e.g. '[::1]:80'"]),
        ("address", "[host]:80", ["address: '[host]:80': only an IPv6 address goes in brackets"]),
        ("address", "a b:80", ["address: 'a b:80': 'a b' is not a host name or IP address"]),
        ("address", 8443, ["address: must be a 'host:port' string"]),
        (
            "loopback",
            "0.0.0.0:9",
            ["loopback: '0.0.0.0:9' must be a loopback address (127.0.0.1, ::1 or localhost)"],
        ),
        ("addresses", [], ["addresses: must be a non-empty array of 'host:port' strings"]),
        (
            "addresses",
            ["a:1", "x", "a:1", 7],
            [
                "addresses[1]: 'x' is not host:port",
                "addresses[3]: must be a 'host:port' string",
                "addresses: 'a:1' is listed more than once",
            ],
        ),
        (
            "size",
            "16 parsecs",
            ["size: '16 parsecs' is not a size like '16MiB', '512KiB' or a number of bytes"],
        ),
        ("size", 0, ["size: 0 is not a size between 1 byte and 1TiB"]),
        ("workload", "spiffe://example.org", ["workload: a workload SPIFFE ID needs a path"]),
        (
            "selectors",
            ["unix:uid:1", "uid"],
            ["selectors[1]: 'uid' is not a selector: write 'type:value', e.g. 'unix:uid:1000'"],
        ),
        (
            "selectors",
            "unix:uid:1",
            ["selectors: must be a non-empty array of selectors like 'unix:uid:1000'"],
        ),
    ],
)
def test_refuses_everything_else_precisely(name: str, value: object, problems: list[str]) -> None:
    assert refused(name, value) == problems


def test_quoted_values_are_bounded_and_nesting_is_not_quoted() -> None:
    (long,) = refused("mode", "9" * 10_000)
    assert len(long) < 200 and "10002 characters" in long
    deep: object = "x"
    for _ in range(5000):  # deeper than repr() can go
        deep = [deep]
    assert refused("flag", deep) == ["flag: must be true or false"]
    assert refused("address", deep) == ["address: must be a 'host:port' string"]
