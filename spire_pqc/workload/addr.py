"""The Workload API endpoint address: ``SPIFFE_ENDPOINT_SOCKET`` or an explicit value.

SPIFFE Workload Endpoint (``spiffe/spiffe:standards/SPIFFE_Workload_Endpoint.md``): an RFC 3986 URI, either
``unix:///absolute/path`` (``unix:/absolute/path`` is the same URI without the empty authority) or
``tcp://<IP literal>:<port>``. Explicit configuration wins; the environment variable is the fallback.
A ``unix://`` URI with an authority (``unix://run/agent.sock``: the host would be ``run``) is refused
with a message that shows the fix, since this is the mistake users make (ghostunnel#421).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from spire_pqc.errors import ConfigError

ENV_VAR = "SPIFFE_ENDPOINT_SOCKET"


@dataclass(frozen=True)
class Endpoint:
    """Where the Workload API listens: a Unix socket ``path``, or ``host``:``port``."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_endpoint(address: str) -> Endpoint:
    """Parse and validate an endpoint URI; raise ConfigError saying what is wrong."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{address!r}: {why}", source="Workload API address")

    if not address:
        raise bad("empty")
    parts = urlsplit(address)
    if parts.query or parts.fragment or "?" in address or "#" in address:
        raise bad("must not have a query or fragment")
    if parts.username or parts.password:
        raise bad("must not have userinfo")
    if parts.scheme == "unix":
        if parts.netloc:
            raise bad(
                f"a unix URI has no authority; write unix:///{parts.netloc}{parts.path} for an absolute path"
            )
        if not parts.path.startswith("/"):
            raise bad("the socket path must be absolute (unix:///path/to/socket)")
        return Endpoint(path=parts.path)
    if parts.scheme == "tcp":
        if parts.path:
            raise bad("a tcp URI has no path (tcp://IP:port)")
        try:
            host = ipaddress.ip_address(parts.hostname or "")
            port = parts.port
        except ValueError as exc:
            raise bad(f"tcp URIs need an IP literal and a port: {exc}") from exc
        if port is None or port == 0:
            raise bad("tcp URIs need a port")
        return Endpoint(host=str(host), port=port)
    if not parts.scheme:
        raise bad("a scheme is required: unix:///path/to/socket or tcp://IP:port")
    raise bad(f"scheme {parts.scheme!r} is not unix or tcp")


def resolve_endpoint(address: str | None = None, *, environ: Mapping[str, str] | None = None) -> Endpoint:
    """``address`` if given, else ``SPIFFE_ENDPOINT_SOCKET``; ConfigError if neither is set."""
    if address is None:
        env = os.environ if environ is None else environ
        address = env.get(ENV_VAR)
        if not address:
            raise ConfigError(
                f"no Workload API address given and {ENV_VAR} is not set", source="Workload API address"
            )
    return parse_endpoint(address)
