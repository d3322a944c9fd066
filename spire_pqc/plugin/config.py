"""The plugin's configuration: ``plugin_data`` (HCL v1, as SPIRE sends it) → a validated Config.

One builder serves both ``Configure`` and ``Validate`` (as SPIRE's pluginconf does): it collects
every problem, each naming its key, and raises a single ConfigError listing them all. Files are
loaded and cross-checked (key matches certificate, key file mode 0600, certificate is an
intermediate PQC CA of the configured trust domain) so a bad configuration fails at load, not at
the first signing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from spire_pqc._internal.files import read_private, read_public
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.ca.ledger import MEMORY, LedgerDsn, read_legacy
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import ConfigError, ParseError, SpiffeIdError, SpirePqcError, VerificationError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_pem_certificates
from spire_pqc.x509.path import verify_pqc_chain

ON_ERROR_VALUES = ("skip", "fail")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

KEYS: dict[str, str] = {
    "intermediate_key_path": "ML-DSA-65 key of the intermediate PQC CA (PKCS#8 PEM, mode 0600) [required]",
    "intermediate_key_password_file": "file holding the password of an encrypted intermediate key",
    "intermediate_cert_path": "PEM: intermediate PQC CA certificate, then the PQC root [required]",
    "pqc_bundle_path": "PEM: the PQC root certificate(s) of the trust domain [required]",
    "trusted_intermediates_path": "PEM: sibling intermediates (SPIRE HA) whose bindings are also accepted",
    "endpoint_listen_address": "host:port (loopback or any) of the PQC CA endpoint; omit to disable it",
    "authorized_agents": "SPIFFE IDs allowed to call the endpoint: exact IDs or 'spiffe://td/prefix/*'",
    "freshness_window": "accepted clock difference of issue requests (Go duration, default 60s)",
    "max_pqc_ttl": "upper bound of PQC SVID lifetimes (Go duration, default 24h)",
    "ledger_dsn": "issuance ledger database: 'sqlite:///ABSOLUTE/PATH' or 'postgresql://user@host:port/db' "
    "(SPIRE HA: one PostgreSQL database shared by every server); default: in memory",
    "ledger_password_file": "file (mode 0600) holding the ledger database's password",
    "ledger_password_env": "environment variable holding the ledger database's password",
    "ledger_prune_interval": "how often expired ledger entries are removed (Go duration, default 30s)",
    "ledger_path": "the 0.1 JSON-lines ledger: imported once into ledger_dsn, then renamed <file>.imported",
    "metrics_listen_address": "loopback host:port serving Prometheus /metrics; omit to disable",
    "on_error": "'skip' (default: sign without the binding, log, count) or 'fail' (fail SPIRE's signing)",
}


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
    trust_domain: TrustDomain
    intermediate: IntermediateCA
    intermediate_key_path: Path
    intermediate_key_password: bytes | None = field(repr=False)
    pqc_roots: tuple[x509.Certificate, ...]
    trusted_intermediates: tuple[MLDSA65PublicKey, ...]
    endpoint_listen_address: str | None
    authorized_agents: tuple[AgentPattern, ...]
    freshness_window: dt.timedelta
    max_pqc_ttl: dt.timedelta
    ledger_path: Path | None  # the 0.1 JSON-lines ledger, still to be imported (None: nothing to import)
    on_error: str
    ledger_dsn: LedgerDsn = field(default_factory=lambda: LedgerDsn.parse(MEMORY))
    ledger_password: str | None = field(default=None, repr=False)
    ledger_prune_interval: dt.timedelta = dt.timedelta(seconds=30)
    metrics_listen_address: tuple[str, int] | None = None
    # trusted_intermediates_path's certificates (sent with a PQC SVID whose binding a sibling made).
    sibling_intermediates: tuple[x509.Certificate, ...] = ()

    def agent_allowed(self, spiffe_id: SpiffeId) -> bool:
        return any(p.matches(spiffe_id) for p in self.authorized_agents)


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{text!r} is not a duration like 60s, 5m or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    try:
        return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError as exc:  # timedelta's limit is 999999999 days
        raise ValueError(f"{text!r} is longer than any usable duration") from exc


def _parse_hcl(text: str) -> dict[str, Any]:
    import hcl

    if not text.strip():
        return {}
    try:
        data = hcl.loads(text)
    # pyhcl raises ValueError for syntax errors, but its internals leak other exceptions on odd
    # input (found by tests/unit/credentials/test_parsers_property.py): ZeroDivisionError for
    # "a = 0/0", RecursionError for deep nesting, AttributeError for 'k = "" k {a = 1}'. All of
    # them mean the text is not usable HCL, and plugin_data must fail as a ConfigError.
    except Exception as exc:
        raise ConfigError([f"plugin_data is not valid HCL: {exc}"], source="spire-pqc plugin_data") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            ["plugin_data must be a block of key = value pairs"], source="spire-pqc plugin_data"
        )
    return data


class _Collector:
    """Collects problems while reading typed values out of the HCL mapping."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.problems: list[str] = []

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problems.append(f"{key}: required ({KEYS[key]})")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{key}: must be a non-empty string")
            return None
        return value

    def strings(self, key: str) -> list[str]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{key}: must be a list of strings")
            return []
        return value

    def duration(self, key: str, default: dt.timedelta) -> dt.timedelta:
        text = self.string(key)
        if text is None:
            return default
        try:
            value = parse_duration(text)
        except ValueError as exc:
            self.problems.append(f"{key}: {exc}")
            return default
        if value <= dt.timedelta(0):
            self.problems.append(f"{key}: must be positive")
        return value


def build_config(
    core_trust_domain: str, hcl_text: str, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and check everything; raise one ConfigError naming every problem with its key.

    ``environ`` (default ``os.environ``) is where ``ledger_password_env`` is looked up.
    """
    source = "spire-pqc plugin_data"
    data = _parse_hcl(hcl_text)
    c = _Collector(data)
    for key in sorted(set(data) - set(KEYS)):
        c.problems.append(f"{key}: unknown key (known: {', '.join(sorted(KEYS))})")
    try:
        trust_domain: TrustDomain | None = TrustDomain.parse(core_trust_domain)
    except SpiffeIdError as exc:
        c.problems.append(f"trust_domain (core configuration): {exc}")
        trust_domain = None

    key_path = c.string("intermediate_key_path", required=True)
    cert_path = c.string("intermediate_cert_path", required=True)
    bundle_path = c.string("pqc_bundle_path", required=True)
    password_file = c.string("intermediate_key_password_file")
    trusted_path = c.string("trusted_intermediates_path")
    listen = c.string("endpoint_listen_address")
    ledger = c.string("ledger_path")
    ledger_dsn, ledger_password = _ledger(c, os.environ if environ is None else environ)
    prune_interval = c.duration("ledger_prune_interval", dt.timedelta(seconds=30))
    metrics_address = _loopback_address(c, "metrics_listen_address")
    on_error = c.string("on_error") or "skip"
    if on_error not in ON_ERROR_VALUES:
        c.problems.append(f"on_error: must be one of {', '.join(ON_ERROR_VALUES)}, got {on_error!r}")
    freshness = c.duration("freshness_window", dt.timedelta(seconds=60))
    max_ttl = c.duration("max_pqc_ttl", dt.timedelta(hours=24))
    agents: list[AgentPattern] = []
    for index, text in enumerate(c.strings("authorized_agents")):
        try:
            agents.append(AgentPattern.parse(text))
        except SpiffeIdError as exc:
            c.problems.append(f"authorized_agents[{index}]: {exc}")
    if listen is not None:
        if ":" not in listen:
            c.problems.append(f"endpoint_listen_address: expected host:port, got {listen!r}")
        if not c.strings("authorized_agents"):
            c.problems.append(
                "authorized_agents: required when endpoint_listen_address is set (no default 'allow all')"
            )

    password = None
    if password_file:
        try:
            password = read_private(password_file).rstrip(b"\r\n")
        except SpirePqcError as exc:
            c.problems.append(f"intermediate_key_password_file: {exc}")
    intermediate, roots, trusted, siblings = _load_pki(
        c, key_path, cert_path, bundle_path, trusted_path, password, trust_domain
    )
    if ledger is not None:
        _check_legacy_ledger(c, Path(ledger), ledger_dsn, freshness)
    if c.problems:
        raise ConfigError(c.problems, source=source)
    assert trust_domain is not None and intermediate is not None and key_path is not None
    return Config(
        trust_domain=trust_domain,
        intermediate=intermediate,
        intermediate_key_path=Path(key_path),
        intermediate_key_password=password,
        pqc_roots=roots,
        trusted_intermediates=trusted,
        endpoint_listen_address=listen,
        authorized_agents=tuple(agents),
        freshness_window=freshness,
        max_pqc_ttl=max_ttl,
        ledger_path=Path(ledger) if ledger else None,
        on_error=on_error,
        ledger_dsn=ledger_dsn or LedgerDsn.parse(MEMORY),
        ledger_password=ledger_password,
        ledger_prune_interval=prune_interval,
        metrics_listen_address=metrics_address,
        sibling_intermediates=siblings,
    )


def _ledger(c: _Collector, environ: Mapping[str, str]) -> tuple[LedgerDsn | None, str | None]:
    dsn_text = c.string("ledger_dsn")
    dsn = None
    if dsn_text is not None:
        try:
            dsn = LedgerDsn.parse(dsn_text)
        except ValueError as exc:
            c.problems.append(f"ledger_dsn: {exc}")
    password_file = c.string("ledger_password_file")
    password_env = c.string("ledger_password_env")
    if password_file and password_env:
        c.problems.append("ledger_password_file, ledger_password_env: set at most one of them")
        return dsn, None
    if (password_file or password_env) and dsn is not None and dsn.kind != "postgresql":
        c.problems.append(
            "ledger_password_file/ledger_password_env: only a postgresql:// ledger has a password"
        )
    password = None
    if password_file:
        try:
            password = read_private(password_file).decode("utf-8").rstrip("\r\n")
        except SpirePqcError as exc:
            c.problems.append(f"ledger_password_file: {exc}")
        except UnicodeDecodeError:
            c.problems.append(f"ledger_password_file: {password_file} is not UTF-8 text")
    elif password_env:
        password = environ.get(password_env)
        if not password:
            c.problems.append(
                f"ledger_password_env: the environment variable {password_env} is not set or empty"
            )
    return dsn, password


def _loopback_address(c: _Collector, key: str) -> tuple[str, int] | None:
    text = c.string(key)
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        c.problems.append(f"{key}: expected host:port, got {text!r}")
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # Metrics name the workloads' refusal reasons and the ledger's size: keep them on the node.
        c.problems.append(f"{key}: {text!r} must be a loopback address (127.0.0.1, ::1 or localhost)")
        return None
    return host, int(port)


def _check_legacy_ledger(c: _Collector, path: Path, dsn: LedgerDsn | None, freshness: dt.timedelta) -> None:
    """The 0.1 JSON-lines file must be importable, into a database that outlives the process."""
    if dsn is None or dsn.in_memory:
        c.problems.append(
            f"ledger_path: the JSON-lines ledger is replaced by a database; set ledger_dsn (e.g. "
            f'"sqlite://{path.parent / "ledger.db"}") and keep ledger_path: its entries are imported at '
            "the first start, then the file is renamed *.imported"
        )
    if not path.exists():
        return  # imported before (or never written): nothing to import
    try:
        for _ in read_legacy(path, freshness=freshness):
            pass
    except ParseError as exc:
        c.problems.append(
            f"ledger_path: {exc}; nothing was imported. Fix or delete that line (an entry only matters "
            "until its classical SVID expires), then start again"
        )
    except OSError as exc:
        c.problems.append(f"ledger_path: {path}: cannot read ({exc.strerror})")


def load_intermediate_key(path: str | Path, password: bytes | None) -> MLDSA65PrivateKey:
    """Read the intermediate key (refusing group/other-readable files); typed errors only."""
    return MLDSA65PrivateKey.from_pem(read_private(path), password=password)


def _load_pki(
    c: _Collector,
    key_path: str | None,
    cert_path: str | None,
    bundle_path: str | None,
    trusted_path: str | None,
    password: bytes | None,
    trust_domain: TrustDomain | None,
) -> tuple[
    IntermediateCA | None,
    tuple[x509.Certificate, ...],
    tuple[MLDSA65PublicKey, ...],
    tuple[x509.Certificate, ...],
]:
    key = chain = roots = None
    if key_path:
        try:
            key = load_intermediate_key(key_path, password)
        except SpirePqcError as exc:
            c.problems.append(f"intermediate_key_path: {exc}")
    chain = _certs(c, "intermediate_cert_path", cert_path)
    roots = _certs(c, "pqc_bundle_path", bundle_path)
    trusted = _certs(c, "trusted_intermediates_path", trusted_path) or []
    intermediate = None
    if key is not None and chain:
        try:
            intermediate = IntermediateCA(key, chain[0], tuple(chain[1:]) or tuple(roots or ()))
        except SpirePqcError as exc:
            c.problems.append(f"intermediate_key_path: {exc} ({cert_path})")
    if intermediate is not None and roots:
        now = dt.datetime.now(dt.UTC)
        try:
            path = verify_pqc_chain([intermediate.certificate], roots, at=now, spiffe_id=None)
        except VerificationError as exc:
            c.problems.append(f"intermediate_cert_path: does not chain to pqc_bundle_path: {exc}")
        else:
            del path
        _check_ca_identity(c, intermediate.certificate, trust_domain)
    trusted_keys: list[MLDSA65PublicKey] = []
    siblings: list[x509.Certificate] = []
    for index, cert in enumerate(trusted):
        try:
            trusted_keys.append(certs.mldsa_public_key(cert))
        except SpirePqcError as exc:
            c.problems.append(f"trusted_intermediates_path: certificate {index}: {exc}")
        else:
            siblings.append(cert)
    return intermediate, tuple(roots or ()), tuple(trusted_keys), tuple(siblings)


def _check_ca_identity(c: _Collector, cert: x509.Certificate, trust_domain: TrustDomain | None) -> None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if trust_domain is not None and trust_domain.id_string() not in uris:
        c.problems.append(
            f"intermediate_cert_path: certificate is for {', '.join(uris) or 'no trust domain'}, "
            f"not {trust_domain.id_string()}"
        )


def _certs(c: _Collector, key: str, path: str | None) -> list[x509.Certificate] | None:
    if not path:
        return None
    try:
        return load_pem_certificates(read_public(path), what=path)
    except SpirePqcError as exc:
        c.problems.append(f"{key}: {exc}")
        return None
