"""The node agent's configuration: a TOML file → a frozen, validated :class:`AgentConfig`.

:class:`AgentFile` is the file's schema (pydantic models of its tables, built from the value types
shared with the plugin in :mod:`spire_pqc.config`); :func:`load` (a file) and :func:`parse` (decoded
TOML) validate it, reporting *every* problem at once, each naming its key
(``source.dev.entries[2].spiffe_id: ...``), and turn it into the :class:`AgentConfig` the agent runs
with. Unknown keys are problems too: a typo must not silently fall back to a default. The reference
of every key is docs/configuration.md, generated from these models.
"""

from __future__ import annotations

import datetime as dt
import functools
import grp
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationInfo, field_validator

from spire_pqc.config import (
    ADDRESS,
    AbsolutePath,
    Address,
    Addresses,
    Duration,
    Flag,
    KeyIds,
    Kind,
    LoopbackAddress,
    PositiveInt,
    Selectors,
    Size,
    SocketMode,
    SpiffeIdText,
    Table,
    Text,
    TrustDomainName,
    WorkloadId,
    WorkloadIds,
    absolute_path,
    array,
    checked,
    choice,
    first_use,
    format_address,
    is_loopback,
    key,
    parse_address,
    problem,
    read_toml,
    recall,
    registered,
    remember,
    shown,
    validate,
)
from spire_pqc.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "AgentConfig",
    "AgentFile",
    "CAClientConfig",
    "DevEntry",
    "DevSourceConfig",
    "Limits",
    "LocalUsers",
    "SpireSourceConfig",
    "TunnelConfig",
    "load",
    "parse",
]

DEFAULT_SOCKET_MODE = 0o666
STATE_DIR_NAME = "agent-state"  # default agent.state_dir: beside the socket, e.g. /run/spire-pqc/agent-state
DEV_CA_DIR_NAME = "dev-ca"  # default source.dev.ca_dir: inside agent.state_dir
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # grpc-go's default receive limit, which SPIRE keeps
MAX_ID = 4294967294  # the largest valid uid/gid ((uid_t)-1 means "no change" to the kernel)
MAX_HINT_BYTES = 1024
TUNNEL_MODES = ("hybrid", "spiffe", "pq-tls")  # spire_pqc.channel.Mode's values


# --- what the agent runs with -------------------------------------------------------------------


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
    """One tunnel (docs/architecture.md): ``outbound`` (loopback plaintext → channel to ``remote``) or
    ``inbound`` (channel listener → local plaintext ``target``)."""

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
class FederationConfig:
    """A remote trust domain's PQC bundle endpoint (``[federation."<td>"]``)."""

    address: tuple[str, int]
    path: str
    endpoint_spiffe_id: SpiffeId
    initial_bundle: Path


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
    federation: Mapping[TrustDomain, FederationConfig] = field(default_factory=dict)
    # Root-only directory of the workloads' PQC keys and certificates, kept across agent restarts
    # (spire_pqc.agent.state); None keeps them in memory only (programmatic use; the loader sets it).
    state_dir: Path | None = None
    limits: Limits = Limits()
    # Key ids of revoked intermediate PQC CAs (with those the CA sends): refused everywhere, re-issued.
    revoked_intermediates: frozenset[str] = frozenset()
    bundle_refresh_interval: dt.timedelta = dt.timedelta(seconds=30)
    # /ready is 503 when the PQC CA's last successful answer is older than this (agent.cacontact).
    ca_ready_window: dt.timedelta = dt.timedelta(seconds=90)
    # glibc malloc arenas for the whole process (spire_pqc._internal.malloc), set at agent start.
    malloc_arena_max: int = 1


# --- value types of the agent only ---------------------------------------------------------------


def _hint(value: object) -> str:
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_HINT_BYTES:
        raise ValueError(f"must be a string of at most {MAX_HINT_BYTES} bytes")
    return value


@dataclass(frozen=True)
class LocalIds:
    """``allowed_uids`` / ``allowed_gids`` as configured: ids (names resolved), or everyone."""

    ids: frozenset[int]
    anyone: bool


def _local_ids(*, groups: bool) -> PlainValidator:
    """``allowed_uids`` / ``allowed_gids``: ids or names (resolved now), one alone or an array, or ``"*"``."""
    listed = array(functools.partial(_local_id, groups=groups), of="numeric ids or names")

    def parse(value: object) -> LocalIds:
        if value in ("*", ["*"]):
            return LocalIds(frozenset(), anyone=True)
        if isinstance(value, list) and "*" in value:
            raise ValueError('"*" (every local user) stands alone')
        ids = listed(value) if isinstance(value, list) else [_local_id(value, groups=groups)]
        return LocalIds(frozenset(ids), anyone=False)

    return checked(parse)


def _local_id(item: object, *, groups: bool) -> int:
    what = "gid" if groups else "uid"
    if isinstance(item, bool) or not isinstance(item, int | str):
        raise ValueError(
            f'must be a {what}, a {"group" if groups else "user"} name, or "*" (every local user)'
        )
    if isinstance(item, int):
        if not 0 <= item <= MAX_ID:
            raise ValueError(f"{item} is not a valid {what}")
        return item
    try:  # names are resolved now: a name that does not exist is a typo, found at validation
        return grp.getgrnam(item).gr_gid if groups else pwd.getpwnam(item).pw_uid
    except (KeyError, ValueError):
        raise ValueError(f"no local {'group' if groups else 'user'} named {shown(item)}") from None


def _outbound_listen(value: object) -> tuple[str, int] | Path:
    if not isinstance(value, str):
        raise ValueError("must be a 'host:port' or 'unix:/path' string")
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        return absolute_path("/" + path.lstrip("/") if path.startswith("//") else path)
    return parse_address(value)


def _inbound_listen(value: object) -> tuple[str, int]:
    if isinstance(value, str) and value.startswith("unix:"):
        raise ValueError("a Unix-socket listener is for outbound tunnels only")
    if not isinstance(value, str):
        raise ValueError("must be a 'host:port' string")
    return parse_address(value)


UidList = Annotated[
    LocalIds,
    _local_ids(groups=False),
    Kind("uids", 'uids or user names: `[1000, "billing"]`, or `"*"` alone for every local user'),
]
GidList = Annotated[
    LocalIds,
    _local_ids(groups=True),
    Kind("gids", 'gids or group names: `["billing"]`, or `"*"` alone for every local user'),
]
Hint = Annotated[
    str, checked(_hint), Kind("hint", f"a string of at most {MAX_HINT_BYTES} bytes, possibly empty")
]
TunnelMode = Annotated[
    str, checked(choice(*TUNNEL_MODES)), Kind("tunnel mode", "`hybrid`, `spiffe` or `pq-tls`")
]
SourceKind = Annotated[str, checked(choice("dev", "spire")), Kind("source kind", "`dev` or `spire`")]
OutboundListen = Annotated[
    tuple[str, int] | Path,
    checked(_outbound_listen),
    Kind("listener", "`host:port`, or `unix:/absolute/path` for a Unix socket"),
]
InboundListen = Annotated[tuple[str, int], checked(_inbound_listen), ADDRESS]


# --- the file ------------------------------------------------------------------------------------


class AgentTable(Table):
    socket_path: AbsolutePath = key(
        doc="Unix socket serving the SPIFFE Workload API and the `HybridWorkload` extension. Workloads "
        "find it through `SPIFFE_ENDPOINT_SOCKET=unix:///…`."
    )
    socket_mode: SocketMode = key(
        DEFAULT_SOCKET_MODE,
        shown='`"0666"`',
        doc="permission bits of the socket. Callers are attested by their peer credentials "
        "(SO_PEERCRED), so any local user may connect; what each receives depends on its uid, gid and "
        "process.",
    )
    production: Flag = key(False, doc="`true` refuses the dev source (set it on every production node).")
    shutdown_grace: Duration = key(
        dt.timedelta(seconds=5),
        doc="on SIGTERM, how long open tunnel connections get to finish (new ones are refused at once; "
        "those still open then are reset) before open streams get their final UNAVAILABLE.",
    )
    state_dir: AbsolutePath | None = key(
        None,
        check_default=True,
        shown="`<socket directory>/agent-state`",
        doc="directory keeping each workload's PQC keys and certificates across restarts and crashes. "
        "It must be private to the agent's user (0700, owned by it; refused at start otherwise) and "
        "used by one agent only; never under a socket directory that containers mount. Format and "
        "threat model: docs/agent-state.md.",
    )
    malloc_arena_max: PositiveInt = key(
        1,
        doc="glibc malloc arenas the agent process may use (`mallopt(M_ARENA_MAX)` at start; "
        "`MALLOC_ARENA_MAX` in the environment wins). With glibc's default (8 per core) the crypto "
        "threads fragment arenas of their own and RSS creeps under rotation; one arena held it flat "
        "(README, memory under rotation). Ignored where the C library is not glibc.",
    )

    @field_validator("production")
    @classmethod
    def _remember_production(cls, production: bool, info: ValidationInfo) -> bool:
        remember(info, "agent.production", production)
        return production

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, state_dir: Path | None, info: ValidationInfo) -> Path | None:
        socket_path: Path | None = info.data.get("socket_path")
        if state_dir is None and socket_path is not None:
            state_dir = socket_path.parent / STATE_DIR_NAME
        if state_dir is not None and state_dir == socket_path:
            raise problem("must not be the socket path")
        remember(info, "agent.state_dir", state_dir)
        return state_dir


class DevEntryTable(Table):
    spiffe_id: WorkloadId = key(doc="the SPIFFE ID a caller matching every selector gets.")
    selectors: Selectors = key(
        doc="the selectors a caller must all match: `unix:uid:<n>`, `unix:gid:<n>`, `unix:user:<name>`, "
        "`unix:group:<name>`."
    )
    hint: Hint = key(
        "", doc="the Workload API's hint for this SVID (unique among the entries); empty: no hint."
    )

    @field_validator("spiffe_id")
    @classmethod
    def _in_trust_domain(cls, spiffe_id: SpiffeId, info: ValidationInfo) -> SpiffeId:
        trust_domain = recall(info, "source.dev.trust_domain")
        if trust_domain is not None and spiffe_id.trust_domain != trust_domain:
            raise problem(f"not in trust domain {trust_domain}")
        first_use(info, "source.dev entry IDs", spiffe_id)
        return spiffe_id

    @field_validator("hint")
    @classmethod
    def _unique_hint(cls, hint: str, info: ValidationInfo) -> str:
        # The Workload API requires hints to be unique within a response.
        if hint and not first_use(info, "source.dev hints", hint):
            raise problem(f"hint {shown(hint)} is used by more than one entry")
        return hint


class DevSourceTable(Table):
    trust_domain: TrustDomainName = key(doc="the trust domain of the dev CAs and of every entry.")
    svid_ttl: Duration = key(
        dt.timedelta(hours=1),
        doc="lifetime of the dev X509-SVIDs; they rotate at half of it, as SPIRE's agent does.",
    )
    jwt_svid_ttl: Duration = key(
        dt.timedelta(minutes=5),
        doc="lifetime of the dev JWT-SVIDs, signed with a dev ES256 key per trust domain.",
    )
    ca_dir: AbsolutePath | None = key(
        None,
        check_default=True,
        shown="`<agent.state_dir>/dev-ca`",
        doc="where the dev source keeps its dev CAs (classical CA, PQC root and intermediate, JWT key; "
        "0700, keys 0600): a restarted dev agent keeps its trust, and dev agents pointed at one "
        "directory trust each other.",
    )
    entries: list[DevEntryTable] = key(
        [], doc="registration entries (`[[source.dev.entries]]`), each mapping selectors to a SPIFFE ID."
    )

    @field_validator("trust_domain")
    @classmethod
    def _remember_trust_domain(cls, trust_domain: TrustDomain, info: ValidationInfo) -> TrustDomain:
        remember(info, "source.dev.trust_domain", trust_domain)
        return trust_domain

    @field_validator("ca_dir")
    @classmethod
    def _default_ca_dir(cls, ca_dir: Path | None, info: ValidationInfo) -> Path | None:
        state_dir: Path | None = recall(info, "agent.state_dir")
        return ca_dir if ca_dir is not None or state_dir is None else state_dir / DEV_CA_DIR_NAME


class SpireSourceTable(Table):
    admin_socket_path: AbsolutePath = key(
        doc="the SPIRE agent's admin socket (its `admin_socket_path`). This agent's SPIFFE ID must be "
        "in the SPIRE agent's `authorized_delegates`."
    )
    workload_socket_path: AbsolutePath = key(
        doc="the SPIRE agent's Workload API socket, where this agent gets its own X509-SVID for mutual "
        "TLS to the PQC CA."
    )
    agent_id: SpiffeIdText | None = key(
        None,
        shown="the first SVID",
        doc="which of the SVIDs SPIRE gives this process is the agent's own identity.",
    )


class SourceTable(Table):
    kind: SourceKind = key(
        doc="`dev`: the embedded development source (dev classical CA and in-process PQC CA, labelled "
        "dev everywhere; never for production). `spire`: SPIRE's Delegated Identity API."
    )
    dev: DevSourceTable | None = key(
        None, check_default=True, shown="required with `dev`", doc="the dev source (`[source.dev]`)."
    )
    spire: SpireSourceTable | None = key(
        None, check_default=True, shown="required with `spire`", doc="the SPIRE source (`[source.spire]`)."
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str, info: ValidationInfo) -> str:
        remember(info, "source.kind", kind)
        if kind == "dev" and recall(info, "agent.production"):
            raise problem("the dev source is refused when agent.production = true")
        return kind

    @field_validator("dev", "spire")
    @classmethod
    def _table_of_kind(cls, table: Table | None, info: ValidationInfo) -> Table | None:
        if table is None and info.data.get("kind") == info.field_name:
            raise problem(f'required with source.kind = "{info.field_name}"')
        return table


class CATable(Table):
    address: Address | None = key(None, doc="`host:port` of the plugin's PQC CA endpoint.")
    addresses: Addresses | None = key(
        None,
        check_default=True,
        doc="instead of `address`, several endpoints (SPIRE HA: one per server), tried in order. An "
        "unavailable one is moved behind the others for a backoff of 1s doubling to 30s; a refusal "
        "is never retried at another server.",
    )
    server_id: SpiffeIdText | None = key(
        None,
        shown="`spiffe://<trust domain>/spire/server`",
        doc="the SPIFFE ID the endpoint must present (SPIRE's server SVID).",
    )
    timeout: Duration = key(dt.timedelta(seconds=10), doc="timeout of each request to the endpoint.")

    @field_validator("addresses")
    @classmethod
    def _one_of(cls, addresses: list[tuple[str, int]] | None, info: ValidationInfo) -> Any:
        if "address" not in info.data:
            return addresses  # a wrong ca.address is already reported
        if addresses is not None and info.data["address"] is not None:
            raise problem("set either ca.address or ca.addresses, not both")
        if addresses is None and info.data["address"] is None:
            raise problem("required (ca.address or ca.addresses): the PQC CA endpoint(s) as 'host:port'")
        return addresses


class PqcTable(Table):
    retry_initial: Duration = key(
        dt.timedelta(seconds=1),
        doc="first delay before PQC issuance is retried while the CA is unreachable; it doubles up to "
        "`pqc.retry_max` (with jitter).",
    )
    retry_max: Duration = key(
        dt.timedelta(seconds=60), check_default=True, doc="longest delay between PQC issuance retries."
    )
    federated_bundles: dict[TrustDomainName, AbsolutePath] = key(
        {},
        doc="PQC roots of federated trust domains, handed to workloads with their hybrid SVIDs: "
        '`"partner.example" = "/etc/spire-pqc/partner-pqc-bundle.pem"` (a PEM file per trust domain).',
    )
    bundle_refresh_interval: Duration = key(
        dt.timedelta(seconds=30),
        doc="how often the agent asks the PQC CA for its PQC bundle, revocations and PQC JWT keys (also sent "
        "with every issuance): a root added for a rotation, a revoked intermediate, or a next intermediate's "
        "JWT key reaches every workload within this interval (pushed on FetchHybridSVIDs, FetchPQCBundles "
        "and FetchPQCJWTBundles streams). With several `ca.addresses` every endpoint is asked.",
    )
    ca_ready_window: Duration = key(
        dt.timedelta(seconds=90),
        check_default=True,
        doc="`/ready` (and the hybrid service's gRPC health) is 503/NOT_SERVING when the PQC CA's last "
        "successful answer (an issuance or a bundle poll; a refusal is no success) is older than this. "
        "Longer than `pqc.bundle_refresh_interval`, so one lost poll does not flap readiness; `/status` "
        "shows the CA's address, last success and last error.",
    )
    revoked_intermediates: KeyIds = key(
        [],
        doc="key ids of revoked intermediate PQC CAs (as `spire-pqc ca status` prints them), added to those "
        "the PQC CA sends with every answer: handed to workloads with every PQC bundle, so every verifier "
        "refuses what they signed, and credentials they signed are re-issued at once.",
    )

    @field_validator("retry_max")
    @classmethod
    def _not_below_initial(cls, retry_max: dt.timedelta, info: ValidationInfo) -> dt.timedelta:
        initial = info.data.get("retry_initial")
        if initial is not None and retry_max < initial:
            raise problem("must not be smaller than pqc.retry_initial")
        return retry_max

    @field_validator("ca_ready_window")
    @classmethod
    def _longer_than_a_poll(cls, window: dt.timedelta, info: ValidationInfo) -> dt.timedelta:
        interval = info.data.get("bundle_refresh_interval")
        if interval is not None and window <= interval:
            raise problem(
                f"must be longer than pqc.bundle_refresh_interval ({interval.total_seconds():g}s): "
                "otherwise the agent is not ready between two polls"
            )
        return window


class FederationTable(Table):
    """``[federation."<trust domain>"]``: a remote trust domain's PQC bundle endpoint (docs/federation.md)."""

    address: Address = key(doc="`host:port` of the remote trust domain's PQC bundle endpoint.")
    path: Text = key("/", doc="the HTTP path of the bundle document there.")
    endpoint_spiffe_id: SpiffeIdText = key(
        doc="the SPIFFE ID the endpoint must present (`https_spiffe`: verified against the remote trust "
        "domain's classical bundle, which SPIRE's own federation delivers)."
    )
    initial_bundle: AbsolutePath = key(
        doc="PEM file of the remote trust domain's PQC root(s) to trust until the first document is "
        "accepted; every later document must be signed under the roots trusted before it."
    )


class HealthTable(Table):
    listen_address: LoopbackAddress | None = key(
        None,
        shown="disabled",
        doc="loopback `host:port` of `/live`, `/ready`, `/metrics` (Prometheus, docs/metrics.md) and "
        "`/status` (the status document, JSON; `spire-pqc agent status`). `/ready` is 503 "
        "while the agent has tunnels or callers and none of their identities has PQC credentials, and "
        "while the PQC CA has not answered for `pqc.ca_ready_window`.",
    )


class _Tunnel(Table):
    name: Text = key(doc="the tunnel's name, unique among all tunnels (in logs and metrics).")
    mode: TunnelMode = key(
        "hybrid",
        doc="`hybrid` (the post-quantum channel), `spiffe` (standard SPIFFE mutual TLS) or `pq-tls` "
        "(ML-DSA-65 certificates in TLS); both ends must agree.",
    )
    spiffe_id: WorkloadId = key(
        doc="the SPIFFE ID whose hybrid SVID the tunnel presents: with the dev source, one of its "
        "entries'; with the spire source, the SVID SPIRE gives the tunnel's `selectors`."
    )
    selectors: Selectors | None = key(
        None,
        check_default=True,
        shown="required with `spire`",
        doc="spire source only: the local service's SPIRE selectors (the agent subscribes to its SVIDs "
        "through the Delegated Identity API).",
    )

    @field_validator("name")
    @classmethod
    def _unique_name(cls, name: str, info: ValidationInfo) -> str:
        if not first_use(info, "tunnel names", name):
            raise problem(f"name {shown(name)} is used by more than one tunnel")
        return name

    @field_validator("spiffe_id")
    @classmethod
    def _served(cls, spiffe_id: SpiffeId, info: ValidationInfo) -> SpiffeId:
        if recall(info, "source.kind") == "dev" and not registered(info, "source.dev entry IDs", spiffe_id):
            raise problem(f"{spiffe_id} is not the SPIFFE ID of any [[source.dev.entries]]")
        return spiffe_id

    @field_validator("selectors")
    @classmethod
    def _with_spire(cls, selectors: list[str] | None, info: ValidationInfo) -> list[str] | None:
        kind = recall(info, "source.kind")
        if kind == "spire" and selectors is None:
            raise problem("required with the spire source: the local service's SPIRE selectors")
        if kind == "dev" and selectors is not None:
            raise problem("only with the spire source (the dev source uses the entry of spiffe_id)")
        return selectors

    @classmethod
    def _listen_once(cls, listen: tuple[str, int] | Path, info: ValidationInfo) -> None:
        if isinstance(listen, tuple) and listen[1] == 0:
            return  # an ephemeral port, chosen at start
        text = str(listen) if isinstance(listen, Path) else format_address(listen)
        if not first_use(info, "tunnel listen addresses", text):
            raise problem(f"listen address {text} is used by more than one tunnel")


class OutboundTunnelTable(_Tunnel):
    allowed_gids: GidList | None = key(
        None, doc="local groups whose members may use the listener (see `allowed_uids`)."
    )
    allowed_uids: UidList | None = key(
        None,
        check_default=True,
        shown="required (or `allowed_gids`)",
        doc="local users who may use the listener: whoever connects speaks with the tunnel's SPIFFE ID. "
        'The kernel names them (SO_PEERCRED on a Unix socket, the socket owner on loopback TCP); `"*"` '
        "admits every local user (logged as a warning at start).",
    )
    allow_non_loopback: Flag = key(
        False,
        doc="`true` lets other hosts use this node's identity through a non-loopback `listen` (needs "
        '`allowed_uids = "*"`).',
    )
    listen: OutboundListen = key(
        doc="the plaintext listener: loopback `host:port` (other addresses need `allow_non_loopback`), "
        "or `unix:/path`."
    )
    remote: Address = key(doc="`host:port` of the remote end (usually another agent's inbound tunnel).")
    peer_ids: WorkloadIds = key(doc="the SPIFFE IDs the remote may present (any other is refused).")

    @field_validator("allowed_uids")
    @classmethod
    def _someone_allowed(cls, uids: LocalIds | None, info: ValidationInfo) -> LocalIds | None:
        if uids is None and "allowed_gids" in info.data and info.data["allowed_gids"] is None:
            raise problem(
                'give allowed_uids and/or allowed_gids: the local users who may use this tunnel ("*" for '
                "every local user); whoever connects to it speaks with the tunnel's SPIFFE ID"
            )
        return uids

    @field_validator("allow_non_loopback")
    @classmethod
    def _everyone_allowed(cls, allow: bool, info: ValidationInfo) -> bool:
        if not allow or "allowed_uids" not in info.data or "allowed_gids" not in info.data:
            return allow
        if not any(
            ids is not None and ids.anyone for ids in (info.data["allowed_uids"], info.data["allowed_gids"])
        ):
            raise problem('connections from other hosts have no local user: it needs allowed_uids = "*"')
        return allow

    @field_validator("listen")
    @classmethod
    def _local_listener(cls, listen: tuple[str, int] | Path, info: ValidationInfo) -> Any:
        allowed = info.data.get("allow_non_loopback")
        if isinstance(listen, tuple) and allowed is False and not is_loopback(listen[0]):
            # Whoever reaches the plaintext listener speaks with this node's identity.
            raise problem(
                f"{shown(format_address(listen))} must be a loopback address (127.0.0.1, ::1 or localhost)"
            )
        cls._listen_once(listen, info)
        return listen


class InboundTunnelTable(_Tunnel):
    listen: InboundListen = key(doc="`host:port` of the channel listener.")
    target: Address = key(doc="`host:port` of the local plaintext service admitted peers are forwarded to.")
    allowed_ids: WorkloadIds | None = key(None, doc="the SPIFFE IDs admitted (or `allowed_trust_domain`).")
    allowed_trust_domain: TrustDomainName | None = key(
        None,
        check_default=True,
        shown="exactly one of the two",
        doc="instead of `allowed_ids`, admit any member of this trust domain.",
    )

    @field_validator("listen")
    @classmethod
    def _listen_unique(cls, listen: tuple[str, int], info: ValidationInfo) -> tuple[str, int]:
        cls._listen_once(listen, info)
        return listen

    @field_validator("allowed_trust_domain")
    @classmethod
    def _exactly_one(cls, trust_domain: TrustDomain | None, info: ValidationInfo) -> TrustDomain | None:
        if "allowed_ids" in info.data and (info.data["allowed_ids"] is None) == (trust_domain is None):
            raise problem("give exactly one of allowed_ids, allowed_trust_domain")
        return trust_domain


class TunnelTables(Table):
    outbound: list[OutboundTunnelTable] = key(
        [],
        doc="`[[tunnel.outbound]]`: a local plaintext listener; each connection is carried over a channel "
        "to `remote`, which must present one of `peer_ids`.",
    )
    inbound: list[InboundTunnelTable] = key(
        [],
        doc="`[[tunnel.inbound]]`: a channel listener admitting the allowed peers and forwarding each "
        "connection to the local `target`.",
    )


class LimitsTable(Table):
    max_connections_per_uid: PositiveInt = key(
        256,
        doc="open connections per local uid (containers that share a uid share it); beyond it a "
        "connection is closed at once (GOAWAY ENHANCE_YOUR_CALM).",
    )
    max_streams_per_uid: PositiveInt = key(
        1024, doc="requests in progress per uid, open streams included; beyond it RESOURCE_EXHAUSTED."
    )
    idle_timeout: Duration = key(
        dt.timedelta(seconds=30),
        doc="a connection with no request in progress for this long is closed (clients reconnect on "
        "their next call); also how long a request's message may take to arrive.",
    )
    max_request_bytes_per_uid: Size = key(
        4 * MAX_MESSAGE_SIZE,
        shown='`"16MiB"`',
        doc="request bodies one uid may have the agent reading at once (at least 4MiB, the largest "
        "request); beyond it RESOURCE_EXHAUSTED.",
    )

    @field_validator("max_request_bytes_per_uid")
    @classmethod
    def _fits_one_request(cls, size: int) -> int:
        if size < MAX_MESSAGE_SIZE:
            raise problem("must be at least 4MiB: one request of the largest size must fit")
        return size


class AgentFile(Table):
    """The agent's TOML file. Tables are validated in this order (later rules read earlier keys)."""

    agent: AgentTable = key(doc="the agent process: its socket, state directory and shutdown.")
    source: SourceTable = key(doc="where classical SVIDs come from.")
    ca: CATable | None = key(
        None,
        check_default=True,
        shown="required with `spire`",
        doc="the PQC CA endpoint(s) of the SPIRE server plugin (the spire source only; the dev source "
        "has its own in-process PQC CA).",
    )
    pqc: PqcTable = key(PqcTable(), doc="PQC issuance and PQC trust.")
    federation: dict[TrustDomainName, FederationTable] = key(
        {},
        doc="remote trust domains whose signed PQC bundles the agent follows (the spire source only): "
        "fetched every `spiffe_refresh_hint`, the last good one kept on any failure (and, with "
        "`agent.state_dir`, across restarts), changes pushed to workloads.",
    )
    health: HealthTable = key(HealthTable(), doc="the health and metrics listener.")
    tunnel: TunnelTables = key(TunnelTables(), doc="tunnels for processes that cannot change their code.")
    limits: LimitsTable = key(LimitsTable(), doc="what one local user (uid) can make the agent hold.")

    @field_validator("federation")
    @classmethod
    def _federation_for_spire(
        cls, federation: dict[TrustDomain, FederationTable], info: ValidationInfo
    ) -> Any:
        if federation and recall(info, "source.kind") == "dev":
            raise problem("the dev source has no federated trust domains; remove [federation]")
        pqc = info.data.get("pqc")
        static = set(pqc.federated_bundles) if isinstance(pqc, PqcTable) else set()
        for td, table in federation.items():
            if td in static:
                raise problem(f"{td}: also in pqc.federated_bundles; its initial_bundle replaces that file")
            if table.endpoint_spiffe_id.trust_domain != td:
                raise problem(
                    f"{td}: endpoint_spiffe_id {table.endpoint_spiffe_id} is not in trust domain {td}"
                )
        return federation

    @field_validator("ca")
    @classmethod
    def _ca_for_spire(cls, ca: CATable | None, info: ValidationInfo) -> CATable | None:
        kind = recall(info, "source.kind")
        if kind == "spire" and ca is None:
            raise problem("the spire source needs a [ca] table (the PQC CA endpoint address)")
        if kind == "dev" and ca is not None:
            raise problem("the dev source uses its own in-process PQC CA; remove [ca]")
        return ca


# --- file → AgentConfig --------------------------------------------------------------------------


def parse(data: Mapping[str, Any], *, source: str = "agent configuration") -> AgentConfig:
    """Validate decoded TOML; raise ConfigError listing every problem."""
    return _config(validate(AgentFile, dict(data), source=source))


def load(path: str | Path) -> AgentConfig:
    """Read and validate a TOML configuration file."""
    return parse(read_toml(path), source=str(path))


def _config(file: AgentFile) -> AgentConfig:
    identity_source: DevSourceConfig | SpireSourceConfig
    if file.source.kind == "dev":
        assert file.source.dev is not None
        dev = file.source.dev
        entries = tuple(DevEntry(e.spiffe_id, frozenset(e.selectors), e.hint) for e in dev.entries)
        identity_source = DevSourceConfig(
            dev.trust_domain, dev.svid_ttl, entries, dev.jwt_svid_ttl, dev.ca_dir
        )
    else:
        assert file.source.spire is not None
        spire = file.source.spire
        identity_source = SpireSourceConfig(
            spire.admin_socket_path, spire.workload_socket_path, spire.agent_id
        )
    ca = None
    if file.ca is not None:
        addresses = file.ca.addresses or ([file.ca.address] if file.ca.address else [])
        ca = CAClientConfig(tuple(format_address(a) for a in addresses), file.ca.server_id, file.ca.timeout)
    limits = file.limits
    return AgentConfig(
        socket_path=file.agent.socket_path,
        socket_mode=file.agent.socket_mode,
        production=file.agent.production,
        source=identity_source,
        ca=ca,
        retry_initial=file.pqc.retry_initial,
        retry_max=file.pqc.retry_max,
        health_address=file.health.listen_address,
        shutdown_grace=file.agent.shutdown_grace,
        pqc_federated_bundles=dict(file.pqc.federated_bundles),
        federation={
            td: FederationConfig(t.address, t.path, t.endpoint_spiffe_id, t.initial_bundle)
            for td, t in file.federation.items()
        },
        revoked_intermediates=frozenset(file.pqc.revoked_intermediates),
        bundle_refresh_interval=file.pqc.bundle_refresh_interval,
        ca_ready_window=file.pqc.ca_ready_window,
        tunnels=tuple([_tunnel(t) for t in file.tunnel.outbound] + [_tunnel(t) for t in file.tunnel.inbound]),
        state_dir=file.agent.state_dir,
        malloc_arena_max=file.agent.malloc_arena_max,
        limits=Limits(
            max_connections_per_uid=limits.max_connections_per_uid,
            max_streams_per_uid=limits.max_streams_per_uid,
            idle_timeout=limits.idle_timeout,
            max_request_bytes_per_uid=limits.max_request_bytes_per_uid,
        ),
    )


def _tunnel(table: OutboundTunnelTable | InboundTunnelTable) -> TunnelConfig:
    selectors = frozenset(table.selectors or ())
    if isinstance(table, OutboundTunnelTable):
        uids, gids = table.allowed_uids, table.allowed_gids
        users = LocalUsers(
            uids=uids.ids if uids else frozenset(),
            gids=gids.ids if gids else frozenset(),
            anyone=any(ids is not None and ids.anyone for ids in (uids, gids)),
        )
        return TunnelConfig(
            "outbound",
            table.name,
            table.listen,
            table.spiffe_id,
            table.mode,
            remote=table.remote,
            peer_ids=tuple(table.peer_ids),
            allow_non_loopback=table.allow_non_loopback,
            selectors=selectors,
            local_users=users,
        )
    return TunnelConfig(
        "inbound",
        table.name,
        table.listen,
        table.spiffe_id,
        table.mode,
        target=table.target,
        allowed_ids=tuple(table.allowed_ids or ()),
        allowed_trust_domain=table.allowed_trust_domain,
        selectors=selectors,
    )
