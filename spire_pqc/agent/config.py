"""The node agent's configuration: a TOML file → a frozen, validated :class:`AgentConfig`.

:func:`load` (file) and :func:`parse` (already-decoded TOML) collect *every* problem, each naming its
key (``source.dev.entries[2].spiffe_id: ...``), and raise one :class:`~spire_pqc.errors.ConfigError`
listing them all, so an operator fixes a file in one pass. Unknown keys are problems too: a typo
must not silently fall back to a default. ``examples/agent/agent.toml`` documents every key.
"""

from __future__ import annotations

import datetime as dt
import grp
import ipaddress
import pwd
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spire_pqc.errors import ConfigError, SpiffeIdError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "AgentConfig",
    "CAClientConfig",
    "DevEntry",
    "DevSourceConfig",
    "Limits",
    "LocalUsers",
    "SpireSourceConfig",
    "TunnelConfig",
    "load",
    "parse",
    "parse_duration",
]

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_SELECTOR = re.compile(r"^[a-z0-9_-]+:.+$")
DEFAULT_SOCKET_MODE = 0o666


def parse_duration(value: object) -> dt.timedelta:
    """``30`` (seconds), ``"30s"``, ``"5m"``, ``"1h30m"``, ``"0.5s"``; must be positive."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value and (m := _DURATION.match(value)):
        hours, minutes, secs = m.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    else:
        raise ValueError(f"{value!r} is not a duration like 30, '30s', '5m' or '1h30m'")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be positive")
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class DevEntry:
    """A registration entry of the dev source: all ``selectors`` must match the caller."""

    spiffe_id: SpiffeId
    selectors: frozenset[str]
    hint: str = ""


@dataclass(frozen=True)
class DevSourceConfig:
    """The embedded development source (dev classical CA + in-process PQC CA). Never for production."""

    trust_domain: TrustDomain
    svid_ttl: dt.timedelta
    entries: tuple[DevEntry, ...]
    # Lifetime of the dev JWT-SVIDs (each FetchJWTSVID signs new ones).
    jwt_svid_ttl: dt.timedelta = dt.timedelta(minutes=5)
    # Where the dev CAs are kept across restarts (shared by dev agents that must trust each other);
    # None: generated in memory at every start (programmatic use only; the loader always sets it).
    ca_dir: Path | None = None


@dataclass(frozen=True)
class SpireSourceConfig:
    """SPIRE's Delegated Identity API on the SPIRE agent's admin socket."""

    admin_socket_path: Path
    # The SPIRE agent's Workload API, from which this agent takes its own SVID (for mTLS to the PQC CA).
    workload_socket_path: Path
    # Which of the SVIDs SPIRE gives this agent is its own identity (default: the first, SPIRE's default).
    agent_id: SpiffeId | None = None


@dataclass(frozen=True)
class CAClientConfig:
    """The PQC CA endpoint(s) (spire_pqc.ca.v1.PQCCertificateAuthority), reached over mTLS.

    Several addresses (SPIRE HA: one endpoint per SPIRE server) are tried in order, a failed one
    moved behind the others for a backoff delay (:class:`spire_pqc.agent.caclient.FailoverCAClient`).
    """

    addresses: tuple[str, ...]
    # SPIFFE ID the endpoint must present (default: spiffe://<td>/spire/server, SPIRE's server SVID).
    server_id: SpiffeId | None
    timeout: dt.timedelta

    @property
    def address(self) -> str:
        """The first (preferred) endpoint."""
        return self.addresses[0]


# --- limits on what local users can make the agent hold (issue 9; README "Security") ----------

MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # grpc-go's default receive limit, which SPIRE keeps
MAX_ID = 4294967294  # the largest valid uid/gid ((uid_t)-1 means "no change" to the kernel)


@dataclass(frozen=True)
class Limits:
    """``[limits]``: what one local uid can make the agent hold (enforced by agent.connections)."""

    max_connections_per_uid: int = 256
    max_streams_per_uid: int = 1024
    idle_timeout: dt.timedelta = dt.timedelta(seconds=30)
    max_message_size: int = MAX_MESSAGE_SIZE  # not configurable: the Workload API's messages are small
    max_request_bytes_per_uid: int = 4 * MAX_MESSAGE_SIZE  # request bodies being read at once, per uid


@dataclass(frozen=True)
class LocalUsers:
    """The local users allowed to use an outbound tunnel: by uid, by gid, or (``anyone``) everyone."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    anyone: bool = False

    def allows(self, uid: int | None, gids: frozenset[int] = frozenset()) -> bool:
        if self.anyone:
            return True
        return uid is not None and (uid in self.uids or bool(gids & self.gids))

    def describe(self) -> str:
        if self.anyone:
            return "any local user"
        parts = [f"uids {sorted(self.uids)}"] if self.uids else []
        parts += [f"gids {sorted(self.gids)}"] if self.gids else []
        return " or ".join(parts)


@dataclass(frozen=True)
class TunnelConfig:
    """One tunnel (DESIGN.md §4): ``outbound`` (loopback plaintext → channel to ``remote``) or ``inbound``."""

    direction: str  # "outbound" | "inbound"
    name: str
    listen: tuple[str, int] | Path  # host:port, or the path of a Unix socket (outbound only)
    spiffe_id: SpiffeId  # the local service whose hybrid SVID the tunnel presents
    mode: str = "hybrid"
    remote: tuple[str, int] | None = None  # outbound
    peer_ids: tuple[SpiffeId, ...] = ()  # outbound: the remote must be one of these
    target: tuple[str, int] | None = None  # inbound: local plaintext address
    allowed_ids: tuple[SpiffeId, ...] = ()  # inbound: exactly one of allowed_ids / allowed_trust_domain
    allowed_trust_domain: TrustDomain | None = None
    allow_non_loopback: bool = False  # outbound: let non-local processes use this node's identity
    # spire source: the local service's selectors, for Delegated Identity SubscribeToX509SVIDs.
    selectors: frozenset[str] = frozenset()
    # outbound: who may connect to the listener (required; whoever connects speaks as spiffe_id).
    local_users: LocalUsers | None = None


@dataclass(frozen=True)
class AgentConfig:
    socket_path: Path
    socket_mode: int
    production: bool
    source: DevSourceConfig | SpireSourceConfig
    ca: CAClientConfig | None
    retry_initial: dt.timedelta
    retry_max: dt.timedelta
    health_address: tuple[str, int] | None
    shutdown_grace: dt.timedelta
    pqc_federated_bundles: Mapping[TrustDomain, Path]
    tunnels: tuple[TunnelConfig, ...] = ()
    # Root-only directory of the workloads' PQC keys and certificates, kept across agent restarts
    # (spire_pqc.agent.state); None keeps them in memory only (programmatic use; the loader sets it).
    state_dir: Path | None = None
    limits: Limits = Limits()


class _Collector:
    """Reads typed values out of nested tables and records every problem with its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(
        self, data: Mapping[str, Any], key: str, prefix: str, *, required: bool = False
    ) -> Mapping[str, Any]:
        value = data.get(key)
        where = f"{prefix}{key}"
        if value is None:
            if required:
                self.problem(where, "missing table")
            return {}
        if not isinstance(value, Mapping):
            self.problem(where, "must be a table")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in sorted(set(data) - allowed):
            self.problem(f"{prefix}{key}", "unknown key")

    def string(self, data: Mapping[str, Any], key: str, prefix: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.problem(f"{prefix}{key}", "missing (required)")
            return None
        if not isinstance(value, str) or not value:
            self.problem(f"{prefix}{key}", "must be a non-empty string")
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{prefix}{key}", "must be true or false")
            return default
        return value

    def duration(self, data: Mapping[str, Any], key: str, prefix: str, default: dt.timedelta) -> dt.timedelta:
        if key not in data:
            return default
        try:
            return parse_duration(data[key])
        except ValueError as exc:
            self.problem(f"{prefix}{key}", str(exc))
            return default

    def absolute_path(
        self, data: Mapping[str, Any], key: str, prefix: str, *, required: bool = False
    ) -> Path | None:
        text = self.string(data, key, prefix, required=required)
        if text is None:
            return None
        return self.path_text(text, f"{prefix}{key}")

    def path_text(self, text: str, key: str) -> Path | None:
        if "\x00" in text:
            self.problem(key, "contains a NUL byte")
            return None
        path = Path(text)
        if not path.is_absolute():
            self.problem(key, f"{text!r} must be an absolute path")
            return None
        return path

    def positive_int(self, data: Mapping[str, Any], key: str, prefix: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(f"{prefix}{key}", "must be a positive integer")
            return default
        return value


def _socket_mode(c: _Collector, value: object) -> int:
    # TOML has no octal strings by default; accept "0660" (string) or 0o660 (TOML octal integer).
    if isinstance(value, bool):
        c.problem("agent.socket_mode", "must be an octal string like '0660'")
        return DEFAULT_SOCKET_MODE
    if isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            c.problem("agent.socket_mode", f"{value!r} is not an octal mode like '0660'")
            return DEFAULT_SOCKET_MODE
    elif isinstance(value, int):
        mode = value
    else:
        c.problem("agent.socket_mode", "must be an octal string like '0660'")
        return DEFAULT_SOCKET_MODE
    if not 0 <= mode <= 0o777:
        c.problem("agent.socket_mode", f"{oct(mode)} is not a permission mode (0..0777)")
        return DEFAULT_SOCKET_MODE
    return mode


def _address(c: _Collector, key: str, text: str, *, loopback_only: bool = True) -> tuple[str, int] | None:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        c.problem(key, f"{text!r} is not host:port")
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback_only and not loopback:
        # Health and metrics reveal which identities the node serves: keep them local by default.
        c.problem(key, f"{text!r} must be a loopback address (127.0.0.1, ::1 or localhost)")
        return None
    return host, int(port_text)


def _dev_source(c: _Collector, data: Mapping[str, Any], state_dir: Path | None) -> DevSourceConfig | None:
    prefix = "source.dev."
    c.unknown(data, {"trust_domain", "svid_ttl", "jwt_svid_ttl", "entries", "ca_dir"}, prefix)
    ca_dir = _dev_ca_dir(c, data, state_dir)
    td_text = c.string(data, "trust_domain", prefix, required=True)
    trust_domain = None
    if td_text is not None:
        try:
            trust_domain = TrustDomain.parse(td_text)
        except SpiffeIdError as exc:
            c.problem(f"{prefix}trust_domain", str(exc))
    ttl = c.duration(data, "svid_ttl", prefix, dt.timedelta(hours=1))
    jwt_ttl = c.duration(data, "jwt_svid_ttl", prefix, dt.timedelta(minutes=5))
    raw_entries = data.get("entries", [])
    entries: list[DevEntry] = []
    if not isinstance(raw_entries, list):
        c.problem(f"{prefix}entries", "must be an array of tables ([[source.dev.entries]])")
        raw_entries = []
    for index, raw in enumerate(raw_entries):
        where = f"{prefix}entries[{index}]."
        if not isinstance(raw, Mapping):
            c.problem(f"{prefix}entries[{index}]", "must be a table")
            continue
        c.unknown(raw, {"spiffe_id", "selectors", "hint"}, where)
        sid_text = c.string(raw, "spiffe_id", where, required=True)
        spiffe_id = None
        if sid_text is not None:
            try:
                spiffe_id = SpiffeId.parse(sid_text)
            except SpiffeIdError as exc:
                c.problem(f"{where}spiffe_id", str(exc))
            else:
                if spiffe_id.is_root:
                    c.problem(f"{where}spiffe_id", "a workload SPIFFE ID needs a path")
                    spiffe_id = None
                elif trust_domain is not None and spiffe_id.trust_domain != trust_domain:
                    c.problem(f"{where}spiffe_id", f"not in trust domain {trust_domain}")
                    spiffe_id = None
        selectors = raw.get("selectors")
        if not isinstance(selectors, list) or not selectors:
            c.problem(f"{where}selectors", "must be a non-empty array like ['unix:uid:1000']")
            selectors = None
        else:
            bad = [s for s in selectors if not isinstance(s, str) or not _SELECTOR.match(s)]
            if bad:
                c.problem(
                    f"{where}selectors", f"{bad!r}: each selector is 'type:value', e.g. 'unix:uid:1000'"
                )
                selectors = None
        hint = raw.get("hint", "")
        if not isinstance(hint, str) or len(hint.encode()) > 1024:
            c.problem(f"{where}hint", "must be a string of at most 1024 bytes")
            hint = ""
        if spiffe_id is not None and selectors is not None:
            entries.append(DevEntry(spiffe_id, frozenset(selectors), hint))
    hints = [e.hint for e in entries if e.hint]
    for hint in sorted({h for h in hints if hints.count(h) > 1}):
        # The Workload API requires hints to be unique within a response.
        c.problem(f"{prefix}entries", f"hint {hint!r} is used by more than one entry")
    if trust_domain is None:
        return None
    return DevSourceConfig(trust_domain, ttl, tuple(entries), jwt_ttl, ca_dir)


def _spire_source(c: _Collector, data: Mapping[str, Any]) -> SpireSourceConfig | None:
    prefix = "source.spire."
    c.unknown(data, {"admin_socket_path", "workload_socket_path", "agent_id"}, prefix)
    admin = c.absolute_path(data, "admin_socket_path", prefix, required=True)
    workload = c.absolute_path(data, "workload_socket_path", prefix, required=True)
    agent_id = None
    agent_id_text = c.string(data, "agent_id", prefix)
    if agent_id_text is not None:
        try:
            agent_id = SpiffeId.parse(agent_id_text)
        except SpiffeIdError as exc:
            c.problem(f"{prefix}agent_id", str(exc))
    return (
        SpireSourceConfig(admin, workload, agent_id) if admin is not None and workload is not None else None
    )


def _ca(c: _Collector, data: Mapping[str, Any]) -> CAClientConfig | None:
    if not data:
        return None
    prefix = "ca."
    c.unknown(data, {"address", "addresses", "server_id", "timeout"}, prefix)
    single = c.string(data, "address", prefix)
    many = data.get("addresses")
    addresses: list[str] = []
    if single is not None and many is not None:
        c.problem(f"{prefix}addresses", "set either ca.address or ca.addresses, not both")
    elif many is not None:
        if not isinstance(many, list) or not many or not all(isinstance(a, str) and a for a in many):
            c.problem(f"{prefix}addresses", "must be a non-empty array of 'host:port' strings")
        else:
            addresses = list(many)
    elif single is not None:
        addresses = [single]
    else:
        c.problem(f"{prefix}addresses", "missing (required): the PQC CA endpoint(s) as 'host:port'")
    key = f"{prefix}address" if single is not None else f"{prefix}addresses"
    for index, address in enumerate(addresses):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            where = key if single is not None else f"{key}[{index}]"
            c.problem(where, f"{address!r} is not host:port")
    for address in sorted({a for a in addresses if addresses.count(a) > 1}):
        c.problem(key, f"{address!r} is listed more than once")
    server_id_text = c.string(data, "server_id", prefix)
    server_id = None
    if server_id_text is not None:
        try:
            server_id = SpiffeId.parse(server_id_text)
        except SpiffeIdError as exc:
            c.problem(f"{prefix}server_id", str(exc))
    timeout = c.duration(data, "timeout", prefix, dt.timedelta(seconds=10))
    return CAClientConfig(tuple(addresses), server_id, timeout) if addresses else None


_MODES = ("hybrid", "spiffe", "pq-tls")  # spire_pqc.channel.Mode (agent config does not import the channel)
_TUNNEL_KEYS = {
    "outbound": {
        "name",
        "listen",
        "remote",
        "peer_ids",
        "mode",
        "spiffe_id",
        "selectors",
        "allow_non_loopback",
        "allowed_uids",
        "allowed_gids",
    },
    "inbound": {
        "name",
        "listen",
        "target",
        "allowed_ids",
        "allowed_trust_domain",
        "mode",
        "spiffe_id",
        "selectors",
    },
}


def _spiffe_id(c: _Collector, key: str, value: object) -> SpiffeId | None:
    if not isinstance(value, str):
        c.problem(key, "must be a SPIFFE ID string")
        return None
    try:
        sid = SpiffeId.parse(value)
    except SpiffeIdError as exc:
        c.problem(key, str(exc))
        return None
    if sid.is_root:
        c.problem(key, "a workload SPIFFE ID needs a path")
        return None
    return sid


def _id_list(c: _Collector, data: Mapping[str, Any], key: str, prefix: str) -> tuple[SpiffeId, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        c.problem(f"{prefix}{key}", "must be a non-empty array of SPIFFE IDs")
        return ()
    ids = [_spiffe_id(c, f"{prefix}{key}[{i}]", v) for i, v in enumerate(value)]
    return tuple(i for i in ids if i is not None)


def _tunnel_selectors(c: _Collector, raw: Mapping[str, Any], where: str, spire: bool) -> frozenset[str]:
    key = f"{where}selectors"
    if not spire:
        if "selectors" in raw:
            c.problem(key, "only with the spire source (the dev source uses the entry of spiffe_id)")
        return frozenset()
    value = raw.get("selectors")
    if value is None:
        c.problem(key, "missing (required with the spire source): the local service's SPIRE selectors")
        return frozenset()
    if not isinstance(value, list) or not value:
        c.problem(key, "must be a non-empty array like ['unix:uid:1000']")
        return frozenset()
    bad = [v for v in value if not isinstance(v, str) or not _SELECTOR.match(v)]
    if bad:
        c.problem(key, f"{bad!r}: each selector is 'type:value', e.g. 'unix:uid:1000'")
        return frozenset()
    return frozenset(value)


def _local_ids(c: _Collector, key: str, value: object, *, groups: bool) -> tuple[frozenset[int], bool] | None:
    """``allowed_uids`` / ``allowed_gids``: numbers or names (resolved now), or ``"*"`` alone."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int | str) and not isinstance(v, bool) for v in items):
        c.problem(key, 'must be a list of numeric ids or names, or "*" (every local user)')
        return None
    if "*" in items:
        if len(items) > 1:
            c.problem(key, '"*" (every local user) stands alone')
            return None
        return frozenset(), True
    ids = set()
    for item in items:
        assert isinstance(item, int | str)
        if isinstance(item, int):
            if not 0 <= item <= MAX_ID:
                c.problem(key, f"{item} is not a valid {'gid' if groups else 'uid'}")
                continue
            ids.add(item)
            continue
        try:
            ids.add(grp.getgrnam(item).gr_gid if groups else pwd.getpwnam(item).pw_uid)
        except (KeyError, ValueError):
            c.problem(key, f"no local {'group' if groups else 'user'} named {item!r}")
    return frozenset(ids), False


def _local_users(
    c: _Collector, raw: Mapping[str, Any], where: str, allow_non_loopback: bool
) -> LocalUsers | None:
    if "allowed_uids" not in raw and "allowed_gids" not in raw:
        c.problem(
            where[:-1],
            'give allowed_uids and/or allowed_gids: the local users who may use this tunnel ("*" for every '
            "local user); whoever connects to it speaks with the tunnel's SPIFFE ID",
        )
        return None
    uids = gids = frozenset[int]()
    anyone = False
    for key, groups in (("allowed_uids", False), ("allowed_gids", True)):
        if key in raw:
            found = _local_ids(c, f"{where}{key}", raw[key], groups=groups)
            if found is None:
                return None
            ids, star = found
            anyone = anyone or star
            if groups:
                gids = ids
            else:
                uids = ids
    if allow_non_loopback and not anyone:
        c.problem(
            f"{where}allow_non_loopback",
            'connections from other hosts have no local user: it needs allowed_uids = "*"',
        )
    return LocalUsers(uids, gids, anyone)


def _listen(
    c: _Collector, key: str, text: str, *, direction: str, local_only: bool
) -> tuple[str, int] | Path | None:
    if text.startswith("unix:"):
        if direction != "outbound":
            c.problem(key, "a Unix-socket listener is for outbound tunnels only")
            return None
        path = text.removeprefix("unix:")
        path = "/" + path.lstrip("/") if path.startswith("//") else path
        return c.path_text(path, key)
    return _address(c, key, text, loopback_only=local_only)


def _tunnel(
    c: _Collector, direction: str, index: int, raw: object, identities: set[SpiffeId] | None, spire: bool
) -> TunnelConfig | None:
    where = f"tunnel.{direction}[{index}]."
    if not isinstance(raw, Mapping):
        c.problem(where[:-1], "must be a table")
        return None
    c.unknown(raw, _TUNNEL_KEYS[direction], where)
    name = c.string(raw, "name", where, required=True)
    mode = c.string(raw, "mode", where) or "hybrid"
    if mode not in _MODES:
        c.problem(f"{where}mode", f"{mode!r} is not one of {', '.join(_MODES)}")
    sid = None
    if "spiffe_id" not in raw:
        c.problem(f"{where}spiffe_id", "missing (required): the local service identity the tunnel presents")
    else:
        sid = _spiffe_id(c, f"{where}spiffe_id", raw["spiffe_id"])
        if sid is not None and identities is not None and sid not in identities:
            c.problem(f"{where}spiffe_id", f"{sid} is not the SPIFFE ID of any [[source.dev.entries]]")
    selectors = _tunnel_selectors(c, raw, where, spire)
    allow_non_loopback = False
    local_users = None
    if direction == "outbound":
        allow_non_loopback = c.boolean(raw, "allow_non_loopback", where, False)
        local_users = _local_users(c, raw, where, allow_non_loopback)
    listen_text = c.string(raw, "listen", where, required=True)
    listen = None
    if listen_text is not None:
        # Outbound: whoever reaches the plaintext listener speaks with this node's identity.
        local_only = direction == "outbound" and not allow_non_loopback
        listen = _listen(c, f"{where}listen", listen_text, direction=direction, local_only=local_only)
    remote = target = None
    peer_ids: tuple[SpiffeId, ...] = ()
    allowed_ids: tuple[SpiffeId, ...] = ()
    allowed_td = None
    if direction == "outbound":
        remote_text = c.string(raw, "remote", where, required=True)
        if remote_text is not None:
            remote = _address(c, f"{where}remote", remote_text, loopback_only=False)
        found = _id_list(c, raw, "peer_ids", where)
        if found is None:
            c.problem(f"{where}peer_ids", "missing (required): the SPIFFE ID(s) the remote must present")
        peer_ids = found or ()
    else:
        target_text = c.string(raw, "target", where, required=True)
        if target_text is not None:
            target = _address(c, f"{where}target", target_text, loopback_only=False)
        allowed_ids = _id_list(c, raw, "allowed_ids", where) or ()
        td_text = c.string(raw, "allowed_trust_domain", where)
        if td_text is not None:
            try:
                allowed_td = TrustDomain.parse(td_text)
            except SpiffeIdError as exc:
                c.problem(f"{where}allowed_trust_domain", str(exc))
        if ("allowed_ids" in raw) == ("allowed_trust_domain" in raw):
            c.problem(where[:-1], "give exactly one of allowed_ids, allowed_trust_domain")
    if name is None or listen is None or sid is None:
        return None
    return TunnelConfig(
        direction,
        name,
        listen,
        sid,
        mode,
        remote,
        peer_ids,
        target,
        allowed_ids,
        allowed_td,
        allow_non_loopback,
        selectors,
        local_users,
    )


def _tunnels(
    c: _Collector, data: Mapping[str, Any], identity_source: DevSourceConfig | SpireSourceConfig | None
) -> tuple[TunnelConfig, ...]:
    c.unknown(data, {"outbound", "inbound"}, "tunnel.")
    identities = None
    if isinstance(identity_source, DevSourceConfig):
        identities = {e.spiffe_id for e in identity_source.entries}
    tunnels: list[TunnelConfig] = []
    for direction in ("outbound", "inbound"):
        raw_list = data.get(direction, [])
        if not isinstance(raw_list, list):
            c.problem(f"tunnel.{direction}", f"must be an array of tables ([[tunnel.{direction}]])")
            continue
        for index, raw in enumerate(raw_list):
            spire = isinstance(identity_source, SpireSourceConfig)
            tunnel = _tunnel(c, direction, index, raw, identities, spire)
            if tunnel is not None:
                tunnels.append(tunnel)
    # Duplicate names are reported even among tunnels with other problems (one pass fixes all).
    names = [
        raw["name"]
        for direction in ("outbound", "inbound")
        if isinstance(data.get(direction), list)
        for raw in data[direction]
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str)
    ]
    for name in sorted({n for n in names if names.count(n) > 1}):
        c.problem("tunnel", f"name {name!r} is used by more than one tunnel")
    listens = [
        str(t.listen) if isinstance(t.listen, Path) else f"{t.listen[0]}:{t.listen[1]}"
        for t in tunnels
        if isinstance(t.listen, Path) or t.listen[1] != 0
    ]
    for address in sorted({a for a in listens if listens.count(a) > 1}):
        c.problem("tunnel", f"listen address {address} is used by more than one tunnel")
    return tuple(tunnels)


# --- state kept across restarts: agent.state_dir, source.dev.ca_dir ------------------------------

STATE_DIR_NAME = "agent-state"  # default agent.state_dir: beside the socket, e.g. /run/spire-pqc/agent-state
DEV_CA_DIR_NAME = "dev-ca"  # default source.dev.ca_dir: inside agent.state_dir


def _state_dir(c: _Collector, agent: Mapping[str, Any], socket_path: Path | None) -> Path | None:
    state_dir = c.absolute_path(agent, "state_dir", "agent.")
    if state_dir is None and "state_dir" not in agent and socket_path is not None:
        state_dir = socket_path.parent / STATE_DIR_NAME
    if state_dir is not None and socket_path is not None and state_dir == socket_path:
        c.problem("agent.state_dir", "must not be the socket path")
    return state_dir


def _dev_ca_dir(c: _Collector, data: Mapping[str, Any], state_dir: Path | None) -> Path | None:
    ca_dir = c.absolute_path(data, "ca_dir", "source.dev.")
    if ca_dir is None and "ca_dir" not in data and state_dir is not None:
        ca_dir = state_dir / DEV_CA_DIR_NAME
    return ca_dir


def _limits(c: _Collector, data: Mapping[str, Any]) -> Limits:
    prefix = "limits."
    c.unknown(data, {"max_connections_per_uid", "max_streams_per_uid", "idle_timeout"}, prefix)
    default = Limits()
    return Limits(
        max_connections_per_uid=c.positive_int(
            data, "max_connections_per_uid", prefix, default.max_connections_per_uid
        ),
        max_streams_per_uid=c.positive_int(data, "max_streams_per_uid", prefix, default.max_streams_per_uid),
        idle_timeout=c.duration(data, "idle_timeout", prefix, default.idle_timeout),
    )


def parse(data: Mapping[str, Any], *, source: str = "agent configuration") -> AgentConfig:
    """Validate decoded TOML; raise ConfigError listing every problem."""
    c = _Collector()
    c.unknown(data, {"agent", "source", "ca", "pqc", "health", "tunnel", "limits"}, "")
    agent = c.table(data, "agent", "", required=True)
    c.unknown(agent, {"socket_path", "socket_mode", "production", "shutdown_grace", "state_dir"}, "agent.")
    socket_path = c.absolute_path(agent, "socket_path", "agent.", required=True)
    state_dir = _state_dir(c, agent, socket_path)
    socket_mode = _socket_mode(c, agent.get("socket_mode", "0666"))
    production = c.boolean(agent, "production", "agent.", False)
    grace = c.duration(agent, "shutdown_grace", "agent.", dt.timedelta(seconds=5))

    src = c.table(data, "source", "", required=True)
    c.unknown(src, {"kind", "dev", "spire"}, "source.")
    kind = c.string(src, "kind", "source.", required=True)
    identity_source: DevSourceConfig | SpireSourceConfig | None = None
    if kind == "dev":
        identity_source = _dev_source(c, c.table(src, "dev", "source.", required=True), state_dir)
        if production:
            c.problem("source.kind", "the dev source is refused when agent.production = true")
    elif kind == "spire":
        identity_source = _spire_source(c, c.table(src, "spire", "source.", required=True))
    elif kind is not None:
        c.problem("source.kind", f"{kind!r} is not one of 'dev', 'spire'")

    ca = _ca(c, c.table(data, "ca", ""))
    if kind == "spire" and ca is None:
        c.problem("ca", "the spire source needs a [ca] table (the PQC CA endpoint address)")
    if kind == "dev" and ca is not None:
        c.problem("ca", "the dev source uses its own in-process PQC CA; remove [ca]")

    pqc = c.table(data, "pqc", "")
    c.unknown(pqc, {"retry_initial", "retry_max", "federated_bundles"}, "pqc.")
    retry_initial = c.duration(pqc, "retry_initial", "pqc.", dt.timedelta(seconds=1))
    retry_max = c.duration(pqc, "retry_max", "pqc.", dt.timedelta(seconds=60))
    if retry_max < retry_initial:
        c.problem("pqc.retry_max", "must not be smaller than pqc.retry_initial")
    federated: dict[TrustDomain, Path] = {}
    for name, path in c.table(pqc, "federated_bundles", "pqc.").items():
        key = f"pqc.federated_bundles.{name}"
        try:
            td = TrustDomain.parse(name)
        except SpiffeIdError as exc:
            c.problem(key, str(exc))
            continue
        if not isinstance(path, str):
            c.problem(key, "must be the absolute path of a PEM file of PQC roots")
            continue
        found = c.path_text(path, key)
        if found is not None:
            federated[td] = found

    health = c.table(data, "health", "")
    c.unknown(health, {"listen_address"}, "health.")
    address_text = c.string(health, "listen_address", "health.")
    health_address = _address(c, "health.listen_address", address_text) if address_text else None

    tunnels = _tunnels(c, c.table(data, "tunnel", ""), identity_source)
    limits = _limits(c, c.table(data, "limits", ""))

    if c.problems:
        raise ConfigError(c.problems, source=source)
    assert socket_path is not None and identity_source is not None
    return AgentConfig(
        socket_path=socket_path,
        socket_mode=socket_mode,
        production=production,
        source=identity_source,
        ca=ca,
        retry_initial=retry_initial,
        retry_max=retry_max,
        health_address=health_address,
        shutdown_grace=grace,
        pqc_federated_bundles=federated,
        tunnels=tunnels,
        state_dir=state_dir,
        limits=limits,
    )


def load(path: str | Path) -> AgentConfig:
    """Read and validate a TOML configuration file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from exc
    except RecursionError:
        raise ConfigError("not valid TOML: arrays or tables nested too deeply", source=str(path)) from None
    return parse(data, source=str(path))
