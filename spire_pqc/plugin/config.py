"""The plugin's configuration: ``plugin_data`` (HCL v1, as SPIRE sends it) → a validated Config.

:class:`PluginData` is the schema of ``plugin_data`` (a pydantic model built from the value types
shared with the agent in :mod:`spire_pqc.config`). One builder, :func:`build_config`, serves both
``Configure`` and ``Validate`` (as SPIRE's pluginconf does): it collects every problem, each naming
its key, and raises a single ConfigError listing them all. Files are loaded and cross-checked while
the keys are validated (key matches certificate, key file mode 0600, certificate is an intermediate
PQC CA of the configured trust domain, the 0.1 ledger file is importable), so a bad configuration
fails at load, not at the first signing, and a missing file is reported with the other problems.
Secrets (the key's and the ledger's passwords) come from files or the environment, never from
``plugin_data``, and are kept out of every repr, message and log. The reference of every key is
docs/configuration.md, generated from this model.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from cryptography import x509
from pydantic import ValidationInfo, field_validator

from spire_pqc._internal.files import read_private, read_public
from spire_pqc.ca.intermediates import Intermediate, Scheduled, State, load_directory, schedule
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.ca.ledger import MEMORY, LedgerDsn, read_legacy
from spire_pqc.config import (
    AbsolutePath,
    Address,
    Duration,
    Flag,
    KeyIds,
    Kind,
    LoopbackAddress,
    Table,
    array,
    checked,
    choice,
    format_address,
    key,
    parse_hcl,
    problem,
    recall,
    validate,
)
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import ConfigError, ParseError, SpiffeIdError, SpirePqcError, VerificationError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_pem_certificates
from spire_pqc.x509.path import verify_pqc_chain

__all__ = ["ON_ERROR_VALUES", "AgentPattern", "Config", "PluginData", "build_config", "load_intermediate_key"]

SOURCE = "spire-pqc plugin_data"
ON_ERROR_VALUES = ("skip", "fail")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")


@dataclass(frozen=True)
class AgentPattern:
    """An authorised node-agent ID: exact, or a path prefix ending in ``/*``."""

    trust_domain: TrustDomain
    exact: SpiffeId | None
    prefix: str | None

    @classmethod
    def parse(cls, text: str) -> AgentPattern:
        if text.endswith("/*"):
            base = text[:-2]
            if base.count("/") == 2:  # "spiffe://td/*": any workload of the trust domain
                return cls(TrustDomain.parse(base), None, "/")
            sid = SpiffeId.parse(base)
            return cls(sid.trust_domain, None, sid.path + "/")
        sid = SpiffeId.parse(text)
        return cls(sid.trust_domain, sid, None)

    def matches(self, spiffe_id: SpiffeId) -> bool:
        if self.exact is not None:
            return spiffe_id == self.exact
        assert self.prefix is not None
        return spiffe_id.trust_domain == self.trust_domain and (spiffe_id.path + "/").startswith(self.prefix)


@dataclass(frozen=True)
class Config:
    """What the plugin runs with: ``plugin_data``'s values, its files loaded and checked."""

    trust_domain: TrustDomain
    # The signing intermediate at configuration time (the active one of ``intermediates``).
    intermediate: IntermediateCA
    intermediate_key_path: Path
    intermediate_key_password: bytes | None = field(repr=False)
    pqc_roots: tuple[x509.Certificate, ...]
    trusted_intermediates: tuple[MLDSA65PublicKey, ...]
    endpoint_listen_address: str | None  # host:port as grpcio's add_secure_port takes it
    authorized_agents: tuple[AgentPattern, ...]
    freshness_window: dt.timedelta
    max_pqc_ttl: dt.timedelta
    ledger_path: Path | None  # the 0.1 JSON-lines ledger, still to be imported (None: nothing to import)
    on_error: str
    ledger_dsn: LedgerDsn = field(default_factory=lambda: LedgerDsn.parse(MEMORY))
    ledger_password: str | None = field(default=None, repr=False)
    ledger_prune_interval: dt.timedelta = dt.timedelta(seconds=30)
    metrics_listen_address: tuple[str, int] | None = None
    # Report counters and gauges into spire-server's telemetry (the Metrics host service), how often.
    spire_telemetry: bool = True
    spire_telemetry_interval: dt.timedelta = dt.timedelta(seconds=10)
    # trusted_intermediates_path's certificates (sent with a PQC SVID whose binding a sibling made).
    sibling_intermediates: tuple[x509.Certificate, ...] = ()
    # The signed PQC bundle endpoint (docs/federation.md): where it listens, its path, refresh hint.
    bundle_endpoint_address: tuple[str, int] | None = None
    bundle_endpoint_path: str = "/"
    bundle_endpoint_refresh_hint: dt.timedelta = dt.timedelta(minutes=5)
    # The intermediate lifecycle (spire_pqc.ca.intermediates): every intermediate loaded, where new
    # ones appear, when a next one activates, how long a superseded one stays trusted, revoked key ids.
    intermediates: tuple[Intermediate, ...] = ()
    intermediates_dir: Path | None = None
    intermediate_activation: float = 0.5
    max_x509_svid_ttl: dt.timedelta = dt.timedelta(hours=24)
    intermediates_poll_interval: dt.timedelta = dt.timedelta(seconds=10)
    revoked_intermediates: frozenset[str] = frozenset()
    pqc_bundle_path: Path | None = None  # re-read with intermediates_dir (a root rotation needs no restart)

    def agent_allowed(self, spiffe_id: SpiffeId) -> bool:
        return any(p.matches(spiffe_id) for p in self.authorized_agents)


# --- the schema ------------------------------------------------------------------------------------


def _agent_pattern(value: object) -> AgentPattern:
    if not isinstance(value, str):
        raise ValueError("must be a SPIFFE ID string")
    return AgentPattern.parse(value)


def _ledger_dsn(value: object) -> LedgerDsn:
    if not isinstance(value, str):
        raise ValueError("must be a string like 'sqlite:///var/lib/spire-pqc/ledger.db'")
    return LedgerDsn.parse(value)  # its errors never quote the text (it may hold a password)


def _env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError("must be the name of an environment variable, like 'SPIRE_PQC_LEDGER_PASSWORD'")
    return value


AgentPatterns = Annotated[
    list[AgentPattern],
    checked(array(_agent_pattern, of="SPIFFE IDs or 'spiffe://td/prefix/*' patterns", non_empty=False)),
    Kind("SPIFFE ID patterns", "an array of SPIFFE IDs, each exact or ending in `/*` (a path prefix)"),
]
Dsn = Annotated[
    LedgerDsn,
    checked(_ledger_dsn),
    Kind("DSN", "`sqlite:///ABSOLUTE/PATH`, `sqlite://:memory:` or `postgresql://user@host:port/db`"),
]
EnvName = Annotated[str, checked(_env_name), Kind("variable name", "an environment variable's name")]
OnError = Annotated[str, checked(choice(*ON_ERROR_VALUES)), Kind("policy", "`skip` or `fail`")]


def _bundle_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 256 or not value.isprintable():
        raise ValueError("must be an absolute HTTP path like '/' or '/pqc-bundle'")
    if any(c in value for c in " ?#"):
        raise ValueError("must be a plain path (no spaces, query or fragment)")
    return value


BundlePath = Annotated[str, checked(_bundle_path), Kind("HTTP path", "an absolute HTTP path, like `/`")]


def _fraction(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("must be a number greater than 0 and at most 1, like 0.5") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("must be a number greater than 0 and at most 1, like 0.5")
    return float(value)


Fraction = Annotated[float, checked(_fraction), Kind("fraction", "a number in (0, 1], like `0.5`")]


@dataclass
class _Loaded:
    """What the key validators read from files, for :func:`build_config` (in the validation context)."""

    roots: list[x509.Certificate] | None = None
    chain: list[x509.Certificate] | None = None
    key_password: bytes | None = field(default=None, repr=False)
    intermediate: IntermediateCA | None = None
    siblings: list[x509.Certificate] = field(default_factory=list)
    trusted_keys: list[MLDSA65PublicKey] = field(default_factory=list)
    configured: Intermediate | None = None
    ledger_password: str | None = field(default=None, repr=False)


def _loaded(info: ValidationInfo) -> _Loaded:
    loaded = recall(info, "loaded")
    return loaded if isinstance(loaded, _Loaded) else _Loaded()


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(read_public(path), what=str(path))
    except SpirePqcError as exc:
        raise problem(str(exc)) from None


class PluginData(Table):
    """``plugin_data``: files first (each key's checks use the files loaded before it), then the rest."""

    pqc_bundle_path: AbsolutePath = key(doc="PEM file of the trust domain's PQC root certificate(s).")
    intermediates_dir: AbsolutePath | None = key(
        None,
        doc="directory of intermediate PQC CAs, one subdirectory each as `spire-pqc ca intermediate "
        "--out-dir DIR/NAME` writes it: the plugin picks a new one up without a restart (polled every "
        "`intermediates_poll_interval`, and on SIGUSR1), accepts its bindings at once (*next*), signs "
        "with it from its activation (`intermediate_activation`), keeps the one it replaced trusted while "
        "what that one signed is valid (*retiring*), then moves it to `DIR/archive/` (*retired*; never "
        "deleted). `spire-pqc ca status` shows the schedule. Runbook: docs/runbooks.md.",
    )
    intermediate_cert_path: AbsolutePath | None = key(
        None,
        check_default=True,
        shown="required without `intermediates_dir`",
        doc="PEM file of the intermediate PQC CA certificate, then the PQC root (what `spire-pqc ca "
        "intermediate` writes). It must chain to `pqc_bundle_path` and name the trust domain. With "
        "`intermediates_dir` it is optional, one more intermediate of the schedule (never archived).",
    )
    intermediate_key_password_file: AbsolutePath | None = key(
        None, doc="file (mode 0600) holding the password of an encrypted intermediate key."
    )
    intermediate_key_path: AbsolutePath | None = key(
        None,
        check_default=True,
        shown="required with `intermediate_cert_path`",
        doc="ML-DSA-65 private key of the intermediate PQC CA, PKCS#8 PEM (seed form), mode 0600 "
        "(refused otherwise). Re-checked on every signing: removing or replacing it takes effect "
        "without a restart.",
    )
    intermediate_activation: Fraction = key(
        0.5,
        doc="when a next intermediate (from `intermediates_dir`) starts signing: once the active one has "
        "lived this fraction of its life (or at the time in the next one's `activate-at` file, `spire-pqc "
        "ca intermediate --activate-at`), never before its own notBefore. Past this point with no next "
        "intermediate the plugin warns every 10 minutes and sets `spire_pqc_plugin_intermediate_rotation_"
        "overdue` to 1.",
    )
    max_x509_svid_ttl: Duration = key(
        dt.timedelta(hours=24),
        doc="the longest X509-SVID lifetime SPIRE issues (its `default_x509_svid_ttl`, or the largest "
        "`x509_svid_ttl` of an entry): a superseded intermediate stays trusted (retiring) this long "
        "after its successor activated, since nothing it signed lives longer.",
    )
    intermediates_poll_interval: Duration = key(
        dt.timedelta(seconds=10),
        doc="how often `intermediates_dir` is read again and the schedule re-evaluated.",
    )
    revoked_intermediates: KeyIds | None = key(
        None,
        doc="key ids of compromised intermediates (hex SHA-256 of their SubjectPublicKeyInfo, as "
        "`spire-pqc ca status` prints them): never used to sign, their bindings refused by the CA "
        "endpoint, and sent to agents with every answer (agents refuse what they signed and re-issue).",
    )
    trusted_intermediates_path: AbsolutePath | None = key(
        None,
        doc="PEM file of the intermediates of sibling SPIRE servers (HA), whose bindings the endpoint "
        "also accepts.",
    )
    endpoint_listen_address: Address | None = key(
        None,
        shown="disabled",
        doc="`host:port` of the PQC CA endpoint, where node agents obtain PQC credentials. Agents on other "
        "nodes connect to it, so it usually listens on every interface (`0.0.0.0:8443`): it admits only "
        "clients presenting an X509-SVID of the trust domain (mutual TLS, TLS 1.3 with X25519MLKEM768) "
        "whose SPIFFE ID matches `authorized_agents`; a firewall may restrict it further to the nodes' "
        "network.",
    )
    authorized_agents: AgentPatterns | None = key(
        None,
        check_default=True,
        shown="required with the endpoint",
        doc="the node agents allowed to call the endpoint: exact SPIFFE IDs, or `spiffe://td/prefix/*`. "
        'There is no "allow all" default.',
    )
    freshness_window: Duration = key(
        dt.timedelta(seconds=60),
        doc="accepted difference between an issue request's timestamp and the CA's clock.",
    )
    max_pqc_ttl: Duration = key(
        dt.timedelta(hours=24),
        doc="upper bound on PQC SVID lifetimes (they never outlive the classical SVID anyway). It may be "
        "shorter than SPIRE's X509-SVID TTL: agents renew the PQC certificates with the same keys at half "
        "of their life (counted as `renewed`).",
    )
    ledger_dsn: Dsn | None = key(
        None,
        shown="in memory",
        doc="the issuance ledger's database: `sqlite:///ABSOLUTE/PATH/ledger.db` (one server; file "
        "created 0600, WAL) or `postgresql://user@host:port/dbname[?sslmode=…]` (SPIRE HA: one database "
        "shared by every server; a DSN holding a password is refused). The schema is created and "
        "migrated on first use. In memory, the ledger's rules hold only until the plugin restarts (or "
        "is reconfigured) and only on this server (a warning says so).",
    )
    ledger_password_file: AbsolutePath | None = key(
        None, doc="file (mode 0600) holding the PostgreSQL ledger's password."
    )
    ledger_password_env: EnvName | None = key(
        None,
        doc="instead of `ledger_password_file`, the environment variable of spire-server holding the "
        "password (set at most one of the two).",
    )
    ledger_prune_interval: Duration = key(
        dt.timedelta(seconds=30),
        doc="how often expired ledger entries are deleted (at most 50 batches of 1,000 rows per run; a run "
        "that stops early is followed by the next after 1s).",
    )
    ledger_path: AbsolutePath | None = key(
        None,
        doc="the JSON-lines ledger of spire-pqc 0.1: with `ledger_dsn`, its unexpired entries are "
        "imported at the first start, then the file is renamed `<file>.imported`. A torn last line (a "
        "crash while appending) is skipped with a warning; any other bad line fails the configuration "
        "naming the line, and nothing is imported. Without `ledger_dsn` it is refused, saying what to add.",
    )
    metrics_listen_address: LoopbackAddress | None = key(
        None,
        shown="disabled",
        doc="loopback `host:port` serving Prometheus `/metrics` (at most 8 connections at once, 5s each).",
    )
    spire_telemetry: Flag = key(
        True,
        doc="also report the plugin's counters and gauges into spire-server's own telemetry (SPIRE's "
        "Metrics host service, into the sinks of its `telemetry` block: "
        "`spire_server_spire_pqc_ca_issuance_total` on its Prometheus endpoint, say; histograms only on "
        "`metrics_listen_address`).",
    )
    spire_telemetry_interval: Duration = key(
        dt.timedelta(seconds=10), doc="how often the counters' increases and the gauges go to SPIRE."
    )
    bundle_endpoint_address: Address | None = key(
        None,
        shown="disabled",
        doc="`host:port` of the PQC bundle endpoint (docs/federation.md): HTTPS with the `https_spiffe` "
        "profile (SPIRE's server SVID, TLS 1.3 with X25519MLKEM768 only) serving this trust domain's PQC "
        "roots and PQC JWT keys as a SPIFFE bundle, signed with ML-DSA-65 by the trust-domain signer "
        "that the intermediate certifies. Other trust domains' agents follow it; the document is public.",
    )
    bundle_endpoint_path: BundlePath = key("/", doc="the HTTP path the PQC bundle is served at.")
    bundle_endpoint_refresh_hint: Duration = key(
        dt.timedelta(minutes=5),
        doc="`spiffe_refresh_hint` of the document: how often followers fetch it again (whole seconds).",
    )
    on_error: OnError = key(
        "skip",
        doc="when the intermediate key is unusable: `skip` signs without the binding (logged and "
        "counted), `fail` fails SPIRE's signing with a precise message.",
    )

    @field_validator("pqc_bundle_path")
    @classmethod
    def _load_roots(cls, path: Path, info: ValidationInfo) -> Path:
        _loaded(info).roots = _certificates(path)
        return path

    @field_validator("intermediates_dir")
    @classmethod
    def _directory(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise problem(f"{path} is not a directory")
        return path

    @field_validator("intermediate_cert_path")
    @classmethod
    def _load_chain(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            if info.data.get("intermediates_dir") is None and "intermediates_dir" in info.data:
                raise problem("required (or set intermediates_dir)")
            return None
        loaded = _loaded(info)
        chain = loaded.chain = _certificates(path)
        if loaded.roots:
            try:
                verify_pqc_chain([chain[0]], loaded.roots, at=dt.datetime.now(dt.UTC), spiffe_id=None)
            except VerificationError as exc:
                raise problem(f"does not chain to pqc_bundle_path: {exc}") from None
        trust_domain = recall(info, "trust_domain")
        uris = _san_uris(chain[0])
        if trust_domain is not None and trust_domain.id_string() not in uris:
            raise problem(
                f"certificate is for {', '.join(uris) or 'no trust domain'}, not {trust_domain.id_string()}"
            )
        return path

    @field_validator("intermediate_key_password_file")
    @classmethod
    def _read_key_password(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None:
            _loaded(info).key_password = _secret(path).rstrip(b"\r\n")
        return path

    @field_validator("intermediate_key_path")
    @classmethod
    def _load_key(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        loaded = _loaded(info)
        if path is None:
            if info.data.get("intermediate_cert_path") is not None:
                raise problem("required with intermediate_cert_path")
            return None
        if info.data.get("intermediate_cert_path") is None and "intermediate_cert_path" in info.data:
            raise problem("needs intermediate_cert_path")
        if "intermediate_key_password_file" not in info.data:
            return path  # its problem is reported; the key cannot be opened without it
        try:
            signing_key = load_intermediate_key(path, loaded.key_password)
        except SpirePqcError as exc:
            raise problem(str(exc)) from None
        if loaded.chain:
            try:
                loaded.intermediate = IntermediateCA(
                    signing_key, loaded.chain[0], tuple(loaded.chain[1:]) or tuple(loaded.roots or ())
                )
            except SpirePqcError as exc:
                raise problem(f"{exc} ({info.data.get('intermediate_cert_path')})") from None
        return path

    @field_validator("trusted_intermediates_path")
    @classmethod
    def _load_siblings(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        loaded = _loaded(info)
        for index, cert in enumerate(_certificates(path)):
            try:
                loaded.trusted_keys.append(certs.mldsa_public_key(cert))
            except SpirePqcError as exc:
                raise problem(f"certificate {index}: {exc}") from None
            loaded.siblings.append(cert)
        return path

    @field_validator("authorized_agents")
    @classmethod
    def _required_with_endpoint(cls, agents: list[AgentPattern] | None, info: ValidationInfo) -> Any:
        if info.data.get("endpoint_listen_address") is not None and not agents:
            raise problem("required when endpoint_listen_address is set (no default 'allow all')")
        return agents

    @field_validator("ledger_password_file")
    @classmethod
    def _read_ledger_password(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        _only_for_postgresql(info)
        try:
            _loaded(info).ledger_password = _secret(path).decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise problem(f"{path} is not UTF-8 text") from None
        return path

    @field_validator("ledger_password_env")
    @classmethod
    def _ledger_password_from_env(cls, env: str | None, info: ValidationInfo) -> str | None:
        if env is None:
            return None
        if info.data.get("ledger_password_file") is not None:
            raise problem("set at most one of ledger_password_file, ledger_password_env")
        _only_for_postgresql(info)
        password = _environ(info).get(env)
        if not password:
            raise problem(f"the environment variable {env} is not set or empty")
        _loaded(info).ledger_password = password
        return env

    @field_validator("ledger_path")
    @classmethod
    def _importable(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """The 0.1 JSON-lines file must be importable, into a database that outlives the process."""
        if path is None or "ledger_dsn" not in info.data:
            return path
        dsn: LedgerDsn | None = info.data["ledger_dsn"]
        if dsn is None or dsn.in_memory:
            raise problem(
                f"the JSON-lines ledger is replaced by a database; set ledger_dsn (e.g. "
                f'"sqlite://{path.parent / "ledger.db"}") and keep ledger_path: its entries are imported at '
                "the first start, then the file is renamed *.imported"
            )
        try:
            if not path.exists():
                return path  # imported before (or never written): nothing to import
            for _ in read_legacy(path, freshness=info.data.get("freshness_window", dt.timedelta(seconds=60))):
                pass
        except ParseError as exc:
            raise problem(
                f"{exc}; nothing was imported. Fix or delete that line (an entry only matters until its "
                "classical SVID expires), then start again"
            ) from None
        except OSError as exc:
            raise problem(f"{path}: cannot read ({exc.strerror})") from None
        return path


def _only_for_postgresql(info: ValidationInfo) -> None:
    dsn: LedgerDsn | None = info.data.get("ledger_dsn")
    if dsn is not None and dsn.kind != "postgresql":
        raise problem("only a postgresql:// ledger has a password")


def _secret(path: Path) -> bytes:
    try:
        return read_private(path)
    except SpirePqcError as exc:
        raise problem(str(exc)) from None


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    environ = recall(info, "environ")
    return environ if isinstance(environ, Mapping) else os.environ


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


# --- the builder -----------------------------------------------------------------------------------


def build_config(
    core_trust_domain: str,
    hcl_text: str,
    *,
    environ: Mapping[str, str] | None = None,
    require_active: bool = True,
) -> Config:
    """Parse and check everything; raise one ConfigError naming every problem with its key.

    ``environ`` (default ``os.environ``) is where ``ledger_password_env`` is looked up. With
    ``require_active=False`` (for ``spire-pqc ca status``) a schedule where nothing can sign is no error. Pure apart
    from reading the configured files: safe to call at any time, from any thread, as often as SPIRE
    calls Configure or Validate.
    """
    data = parse_hcl(hcl_text, source=SOURCE)
    problems = []
    trust_domain = None
    try:
        trust_domain = TrustDomain.parse(core_trust_domain)
    except SpiffeIdError as exc:
        problems.append(f"trust_domain (core configuration): {exc}")
    loaded = _Loaded()
    context = {"trust_domain": trust_domain, "loaded": loaded, "environ": environ}
    try:
        plugin_data = validate(PluginData, data, source=SOURCE, context=context)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems, source=SOURCE) from None
    if problems:
        raise ConfigError(problems, source=SOURCE)
    assert trust_domain is not None and loaded.roots is not None
    now = dt.datetime.now(dt.UTC)
    intermediates: list[Intermediate] = []
    if loaded.intermediate is not None:
        assert (
            plugin_data.intermediate_cert_path is not None and plugin_data.intermediate_key_path is not None
        )
        intermediates.append(
            Intermediate(
                loaded.intermediate,
                plugin_data.intermediate_cert_path,
                plugin_data.intermediate_key_path,
                in_directory=False,
            )
        )
    if plugin_data.intermediates_dir is not None:
        found, bad = load_directory(
            plugin_data.intermediates_dir,
            roots=loaded.roots,
            trust_domain=trust_domain,
            password=loaded.key_password,
            at=now,
        )
        intermediates.extend(found)
        problems.extend(f"intermediates_dir: {p}" for p in bad)
    revoked = frozenset(plugin_data.revoked_intermediates or ())
    current = schedule(
        intermediates,
        at=now,
        activation=plugin_data.intermediate_activation,
        svid_ttl=plugin_data.max_x509_svid_ttl,
        revoked=revoked,
    ).active
    if current is None and not require_active and intermediates:
        # For `spire-pqc ca status`: show the schedule even when nothing can sign (the worst case).
        current = Scheduled(intermediates[0], State.RETIRED, None, None, None)
    if current is None and not problems:
        problems.append(
            "intermediates_dir: no intermediate is usable now (each is expired, revoked or not yet valid)"
            if plugin_data.intermediates_dir is not None
            else "intermediate_cert_path: the intermediate is revoked (revoked_intermediates)"
        )
    if problems:
        raise ConfigError(problems, source=SOURCE)
    assert current is not None
    endpoint = plugin_data.endpoint_listen_address
    return Config(
        trust_domain=trust_domain,
        intermediate=current.intermediate.ca,
        intermediate_key_path=current.intermediate.key_path,
        intermediate_key_password=loaded.key_password,
        pqc_roots=tuple(loaded.roots),
        trusted_intermediates=tuple(loaded.trusted_keys),
        endpoint_listen_address=format_address(endpoint) if endpoint is not None else None,
        authorized_agents=tuple(plugin_data.authorized_agents or ()),
        freshness_window=plugin_data.freshness_window,
        max_pqc_ttl=plugin_data.max_pqc_ttl,
        ledger_path=plugin_data.ledger_path,
        on_error=plugin_data.on_error,
        ledger_dsn=plugin_data.ledger_dsn or LedgerDsn.parse(MEMORY),
        ledger_password=loaded.ledger_password,
        ledger_prune_interval=plugin_data.ledger_prune_interval,
        metrics_listen_address=plugin_data.metrics_listen_address,
        spire_telemetry=plugin_data.spire_telemetry,
        spire_telemetry_interval=plugin_data.spire_telemetry_interval,
        sibling_intermediates=tuple(loaded.siblings),
        bundle_endpoint_address=plugin_data.bundle_endpoint_address,
        bundle_endpoint_path=plugin_data.bundle_endpoint_path,
        bundle_endpoint_refresh_hint=plugin_data.bundle_endpoint_refresh_hint,
        intermediates=tuple(intermediates),
        intermediates_dir=plugin_data.intermediates_dir,
        intermediate_activation=plugin_data.intermediate_activation,
        max_x509_svid_ttl=plugin_data.max_x509_svid_ttl,
        intermediates_poll_interval=plugin_data.intermediates_poll_interval,
        revoked_intermediates=revoked,
        pqc_bundle_path=plugin_data.pqc_bundle_path,
    )


def load_intermediate_key(path: str | Path, password: bytes | None) -> MLDSA65PrivateKey:
    """Read the intermediate key (refusing group/other-readable files); typed errors only."""
    return MLDSA65PrivateKey.from_pem(read_private(path), password=password)
