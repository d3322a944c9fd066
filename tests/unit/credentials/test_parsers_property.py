"""Property tests: every parser of credential bytes we own fails only with its typed error.

Inputs are arbitrary bytes and valid encodings with random mutations (so the search also reaches
the branches behind a correct prefix). Parsers covered: the SvidBinding and RelatedCertificate
extension values, the issue request (every field of IssueRequest, through PQCIssuer.issue), the
IssuePQCSVIDRequest protobuf (through the plugin's CA endpoint servicer), the plugin's HCL
configuration, verify_hybrid_svid over certificate chains with mutated DER, and certificates that
are edited structurally and signed again by their real issuer, through the certificate loader, the
bundle parsers and verify_hybrid_svid.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spire_pqc._internal import der
from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.ledger import MEMORY, open_ledger
from spire_pqc.ca.request import IssueRequest
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import SIGNATURE_LEN
from spire_pqc.errors import BundleError, ConfigError, IssuanceError, ParseError, VerificationError
from spire_pqc.plugin.config import PluginData, build_config
from spire_pqc.plugin.endpoint import _STATUS_BY_REASON, CAServicer, ServerIdentity
from spire_pqc.svid import verify_hybrid_svid
from spire_pqc.x509.binding import SvidBinding, parse_binding
from spire_pqc.x509.load import load_der_certificate, load_pem_certificates
from spire_pqc.x509.oids import ID_SHA256
from spire_pqc.x509.related import encode_related_certificate, parse_related_certificate

from .certedit import Signer, ecdsa_signer, mldsa_signer
from .fuzz import EDITED, PROPERTY, Variant, resigned_certificates, variants
from .pki import Domain, Minted, pem, spki
from .pki import der as cert_der

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# cryptography warns (UserWarning) when it parses a name attribute of the wrong length, e.g. a
# mutated OID that became countryName; it is still refused, so the warning is not a failure here.
BAD_NAME_WARNING = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Fixture:
    domain: Domain
    minted: Minted
    binding: bytes
    related: bytes
    at: dt.datetime


_STATE: dict[str, Fixture] = {}


def fixture() -> Fixture:
    """Built once per session (hypothesis does not mix with function-scoped pytest fixtures)."""
    if "f" not in _STATE:
        domain = Domain.create("example.org")
        minted = domain.mint()
        leaf = minted.classical_leaf
        binding = domain.binding_value(str(minted.spiffe_id), spki(minted.classical_key)).encode()
        _STATE["f"] = Fixture(
            domain, minted, binding, encode_related_certificate(cert_der(leaf)), dt.datetime.now(dt.UTC)
        )
    return _STATE["f"]


# --- SvidBinding and RelatedCertificate --------------------------------------------------------


@st.composite
def binding_shaped(draw: st.DrawFn) -> bytes:
    """SEQUENCE { INTEGER, OCTET STRING, SEQUENCE, BIT STRING } with random contents and sizes."""
    version = der.integer(draw(st.integers(0, 3)))
    key_id = der.tlv(der.OCTET_STRING, draw(st.binary(max_size=40) | st.binary(min_size=500, max_size=5000)))
    algorithm = der.tlv(draw(st.sampled_from([der.SEQUENCE, der.OID])), draw(st.binary(max_size=16)))
    bits = der.tlv(
        der.BIT_STRING, draw(st.binary(max_size=8)) + bytes(draw(st.sampled_from([0, 3308, 3309])))
    )
    parts = [version, key_id, algorithm, bits]
    if draw(st.booleans()):
        parts.pop(draw(st.integers(0, 3)))
    return der.sequence(*parts)


@SETTINGS
@given(st.data())
def test_parse_binding_raises_only_parse_error(data: st.DataObject) -> None:
    value = data.draw(
        st.one_of(st.binary(max_size=300), EDITED.map(lambda v: v.apply(fixture().binding)), binding_shaped())
    )
    try:
        parsed = parse_binding(value)
    except ParseError:
        return
    # Anything accepted is exactly a v1 binding, and re-encodes to the input bytes (strict DER).
    assert len(parsed.issuer_key_id) == 32
    assert len(parsed.signature) == SIGNATURE_LEN
    assert parsed.encode() == value


@SETTINGS
@given(
    key_id=st.binary(min_size=32, max_size=32),
    signature=st.binary(min_size=SIGNATURE_LEN, max_size=SIGNATURE_LEN),
)
def test_binding_round_trips(key_id: bytes, signature: bytes) -> None:
    assert parse_binding(SvidBinding(key_id, signature).encode()) == SvidBinding(key_id, signature)


@SETTINGS
@given(st.data())
def test_parse_related_certificate_raises_only_parse_error(data: st.DataObject) -> None:
    value = data.draw(st.one_of(st.binary(max_size=120), EDITED.map(lambda v: v.apply(fixture().related))))
    try:
        digest = parse_related_certificate(value)
    except ParseError:
        return
    # Anything accepted is exactly SHA-256 AlgorithmIdentifier + 32-byte hash, in strict DER.
    assert len(digest) == 32
    assert der.sequence(der.sequence(der.encode_oid(ID_SHA256)), der.tlv(der.OCTET_STRING, digest)) == value


# --- the issue request -------------------------------------------------------------------------


def fixed_issuer(f: Fixture) -> PQCIssuer:
    # A fixed clock: the valid request stays fresh however long the search runs.
    return f.domain.new_issuer(clock=lambda: f.at)


@dataclass(frozen=True)
class RequestVariant:
    chain: tuple[Variant, ...] | None  # None: the valid one-certificate chain
    mldsa_spki: Variant
    mlkem_spki: Variant
    timestamp_ms: int | None  # None: the valid timestamp
    nonce: Variant
    classical_proof: Variant
    mldsa_proof: Variant

    def build(self, r: IssueRequest) -> IssueRequest:
        leaf = r.classical_chain[0]
        return IssueRequest(
            classical_chain=r.classical_chain
            if self.chain is None
            else tuple(v.apply(leaf) for v in self.chain),
            mldsa_spki=self.mldsa_spki.apply(r.mldsa_spki),
            mlkem_spki=self.mlkem_spki.apply(r.mlkem_spki),
            timestamp_ms=r.timestamp_ms if self.timestamp_ms is None else self.timestamp_ms,
            nonce=self.nonce.apply(r.nonce),
            classical_proof=self.classical_proof.apply(r.classical_proof),
            mldsa_proof=self.mldsa_proof.apply(r.mldsa_proof),
        )


request_variants = st.builds(
    RequestVariant,
    chain=st.none() | st.lists(variants(), max_size=3).map(tuple),
    mldsa_spki=variants(),
    mlkem_spki=variants(),
    timestamp_ms=st.none() | st.integers() | st.integers(-(2**63), 2**63 - 1),
    nonce=variants(),
    classical_proof=variants(),
    mldsa_proof=variants(),
)


@BAD_NAME_WARNING
@SETTINGS
@given(variant=request_variants)
def test_issue_raises_only_issuance_error(variant: RequestVariant) -> None:
    f = fixture()
    valid = f.minted.request
    request = variant.build(valid)
    try:
        issued = fixed_issuer(f).issue(request)
    except IssuanceError as exc:
        assert exc.reason in _STATUS_BY_REASON  # every refusal has a gRPC status in the endpoint
        return
    # Only a request whose signed fields are the valid ones may pass (extra chain certificates
    # are allowed: path validation ignores what it does not need).
    assert request.to_be_signed() == valid.to_be_signed()
    assert issued.spiffe_id == str(f.minted.spiffe_id)


def test_issue_fixture_request_is_valid() -> None:
    """The property above is not vacuous: the unmodified request does issue, then is refused."""
    f = fixture()
    issuer = fixed_issuer(f)
    assert not issuer.issue(f.minted.request).reissued
    with pytest.raises(IssuanceError) as caught:
        issuer.issue(f.minted.request)
    assert caught.value.reason == "replay"
    with pytest.raises(IssuanceError) as caught:
        issuer.issue(replace(f.minted.request, timestamp_ms=2**63 - 1))
    assert caught.value.reason == "stale"


# --- the IssuePQCSVIDRequest protobuf through the endpoint servicer ----------------------------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class FakeContext:
    """What the servicer uses of grpc.ServicerContext: the peer's certificate and abort*()."""

    def __init__(self, client_pem: bytes) -> None:
        self._client_pem = client_pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._client_pem]}

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise Aborted(status.code, status.details)


class AllowAll:
    def agent_allowed(self, spiffe_id: object) -> bool:
        return True


class StaticIdentity:
    def __init__(self, bundle: tuple[x509.Certificate, ...]) -> None:
        self._identity = ServerIdentity(chain=(), private_key_pem=b"", bundle=bundle)

    def current(self) -> ServerIdentity:
        return self._identity


def servicer(f: Fixture) -> CAServicer:
    d = f.domain
    ledger = open_ledger(MEMORY)

    def factory(bundles: BundleSet) -> PQCIssuer:
        return PQCIssuer(d.hierarchy.intermediate, d.trust_domain, bundles, ledger=ledger, clock=lambda: f.at)

    return CAServicer(AllowAll(), StaticIdentity((d.classical_ca.certificate,)), factory)  # type: ignore[arg-type]


def wire(request: IssueRequest) -> bytes:
    return ca_pb2.IssuePQCSVIDRequest(
        classical_svid_chain=list(request.classical_chain),
        mldsa65_public_key=request.mldsa_spki,
        mlkem768_public_key=request.mlkem_spki,
        timestamp_unix_ms=request.timestamp_ms,
        nonce=request.nonce,
        classical_proof=request.classical_proof,
        mldsa_proof=request.mldsa_proof,
    ).SerializeToString()


@BAD_NAME_WARNING
@SETTINGS
@given(st.data())
def test_protobuf_request_decoding_and_endpoint(data: st.DataObject) -> None:
    """protobuf raises only DecodeError (grpcio turns a failed deserialisation into a status itself;
    the servicer has no mapping of its own), and every decoded message ends in a response or in an
    abort with the status the endpoint maps the refusal to, never in another exception."""
    f = fixture()
    raw = data.draw(st.one_of(st.binary(max_size=400), EDITED.map(lambda v: v.apply(wire(f.minted.request)))))
    try:
        message = ca_pb2.IssuePQCSVIDRequest.FromString(raw)
    except DecodeError:
        return
    context = FakeContext(pem([f.minted.classical_leaf]))
    try:
        response = servicer(f).IssuePQCSVID(message, context)  # type: ignore[arg-type]
    except Aborted as exc:
        assert exc.code in set(_STATUS_BY_REASON.values())
        return
    assert len(response.pqc_svid_chain) == 2


def test_endpoint_issues_for_the_valid_wire_request() -> None:
    f = fixture()
    message = ca_pb2.IssuePQCSVIDRequest.FromString(wire(f.minted.request))
    response = servicer(f).IssuePQCSVID(message, FakeContext(pem([f.minted.classical_leaf])))  # type: ignore[arg-type]
    assert x509.load_der_x509_certificate(
        response.pqc_svid_chain[0]
    ).public_key_algorithm_oid.dotted_string == ("2.16.840.1.101.3.4.3.18")
    with pytest.raises(DecodeError):
        ca_pb2.IssuePQCSVIDRequest.FromString(b"\x0a\xff\xff\xff\xff\x0f")


# --- the plugin configuration ------------------------------------------------------------------

KEYS = list(PluginData.model_fields)  # every key of plugin_data, new ones included


def config_files(tmp: Path) -> list[str]:
    """Existing files of every interesting kind, so generated configurations reach the loaders."""
    f = fixture()
    files = {
        "cert.pem": (pem([f.domain.intermediate, f.domain.hierarchy.root]), 0o644),
        "root.pem": (pem([f.domain.hierarchy.root]), 0o644),
        "key.pem": (f.domain.intermediate_key.pem(NoEncryption()), 0o600),
        "key-readable.pem": (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o644),
        "garbage": (os.urandom(64), 0o600),
        "empty": (b"", 0o600),
    }
    for name, (content, mode) in files.items():
        path = tmp / name
        if not path.exists():
            path.write_bytes(content)
            path.chmod(mode)
    (tmp / "dir").mkdir(exist_ok=True)
    return [str(tmp / n) for n in [*files, "dir", "missing"]]


def hcl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def hcl_configs(draw: st.DrawFn, paths: list[str]) -> str:
    lines = []
    for key in draw(st.lists(st.sampled_from([*KEYS, "unknown_key"]), max_size=8)):
        value = draw(
            st.one_of(
                st.sampled_from(paths).map(hcl_string),
                st.text(max_size=20).map(hcl_string),
                st.from_regex(r"[0-9]{1,25}[hms]", fullmatch=True).map(hcl_string),
                st.integers().map(str),
                st.lists(st.text(max_size=30).map(hcl_string), max_size=3).map(
                    lambda v: "[" + ", ".join(v) + "]"
                ),
                st.sampled_from(
                    [
                        '"spiffe://example.org/*"',
                        '["spiffe://example.org/agent/*"]',
                        "true",
                        "{}",
                        "0/0",
                        "1e999",
                    ]
                ),
                st.sampled_from([2, 3000]).map(lambda depth: "{ a = " * depth + "1" + " }" * depth),
                st.just('""\nintermediate_key_path { a = 1 }'),
            )
        )
        lines.append(f"{key} = {value}")
    return "\n".join(lines)


@FEW
@given(st.data())
def test_build_config_raises_only_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    paths = config_files(tmp_path_factory.getbasetemp())
    text = data.draw(st.one_of(st.text(max_size=200), hcl_configs(paths)))
    start = time.monotonic()
    try:
        config = build_config("example.org", text)
    except ConfigError as exc:
        assert exc.problems  # always says what is wrong
    else:
        assert str(config.trust_domain) == "example.org"
    assert time.monotonic() - start < 5.0  # milliseconds each; generous for a loaded machine


# --- verify_hybrid_svid over mutated DER -------------------------------------------------------


def load_or_none(data: bytes) -> x509.Certificate | None:
    """Load mutated DER as a verifier would receive it; None when cryptography refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return x509.load_der_x509_certificate(data)
        except (ValueError, x509.InvalidVersion, Warning):
            return None


ROLES: dict[str, Callable[[Minted], list[x509.Certificate]]] = {
    "classical": lambda m: m.classical_chain,
    "pqc": lambda m: m.pqc_chain,
    "kem": lambda m: m.kem_chain,
}


@BAD_NAME_WARNING
@SETTINGS
@given(st.data())
def test_verify_hybrid_svid_on_mutated_certificates(data: st.DataObject) -> None:
    f = fixture()
    m = f.minted
    chains: dict[str, list[x509.Certificate]] = {role: list(get(m)) for role, get in ROLES.items()}
    role = data.draw(st.sampled_from(sorted(chains)))
    index = data.draw(st.integers(0, len(chains[role]) - 1))
    mutated_cert = load_or_none(data.draw(EDITED).apply(cert_der(chains[role][index])))
    if mutated_cert is None:
        return
    chains[role][index] = mutated_cert
    try:
        result = verify_hybrid_svid(
            chains["classical"], chains["pqc"], chains["kem"],
            classical_bundles=f.domain.classical_bundles, pqc_bundles=f.domain.pqc_bundles,
        )  # fmt: skip
    except (VerificationError, ParseError, BundleError):
        return
    # A mutation that still verifies can only be one that left the DER bytes equal.
    assert cert_der(mutated_cert) == cert_der(list(ROLES[role](m))[index])
    assert result.spiffe_id == m.spiffe_id


def test_unmutated_fixture_verifies() -> None:
    f = fixture()
    m = f.minted
    result = verify_hybrid_svid(
        m.classical_chain, m.pqc_chain, m.kem_chain,
        classical_bundles=f.domain.classical_bundles, pqc_bundles=f.domain.pqc_bundles,
    )  # fmt: skip
    assert result.spiffe_id == m.spiffe_id


# --- certificates signed again after a structural edit ---------------------------------------
# Byte flips above almost always break the issuer's signature, so verification stops at the first
# signature check. Here the edited certificate is signed again by its real issuer: the malformed
# name, key, extension or version reaches every reader behind the signature check.

RESIGN: dict[str, Callable[[Fixture], tuple[x509.Certificate, Signer]]] = {
    "pqc-root": lambda f: (f.domain.hierarchy.root, mldsa_signer(f.domain.hierarchy.root_key)),
    "pqc-intermediate": lambda f: (f.domain.intermediate, mldsa_signer(f.domain.hierarchy.root_key)),
    "pqc-leaf": lambda f: (f.minted.pqc_leaf, mldsa_signer(f.domain.intermediate_key)),
    "kem-leaf": lambda f: (f.minted.kem_leaf, mldsa_signer(f.domain.intermediate_key)),
    "classical-leaf": lambda f: (f.minted.classical_leaf, ecdsa_signer(f.domain.classical_ca.private_key)),
}


@st.composite
def resigned(draw: st.DrawFn) -> tuple[str, bytes]:
    role = draw(st.sampled_from(sorted(RESIGN)))
    cert, signer = RESIGN[role](fixture())
    return role, draw(resigned_certificates(cert, signer))


@BAD_NAME_WARNING
@PROPERTY
@given(resigned())
def test_loaded_certificates_parse_completely(case: tuple[str, bytes]) -> None:
    """load_der_certificate raises only ParseError, and what it returns has nothing left that
    cryptography would fail to parse later (the names, every extension, the public key)."""
    _, raw = case
    try:
        cert = load_der_certificate(raw, what="fuzz")
    except ParseError:
        return
    _ = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.public_key()
    _ = [ext.value for ext in cert.extensions]
    assert load_pem_certificates(cert.public_bytes(Encoding.PEM), what="fuzz") == [cert]


@BAD_NAME_WARNING
@PROPERTY
@given(resigned())
def test_bundle_boundaries_on_resigned_certificates(case: tuple[str, bytes]) -> None:
    _, raw = case
    f = fixture()
    td = f.domain.trust_domain
    for parse in (
        lambda: X509Bundle.from_der(td, raw),
        lambda: X509Bundle.from_pem(td, pem([f.domain.hierarchy.root]) + pem_block(raw)),
        lambda: BundleSet.from_workload_api({td.id_string(): cert_der(f.domain.hierarchy.root) + raw}),
    ):
        with contextlib.suppress(BundleError):
            parse()
    lazily = load_or_none(raw)
    if lazily is not None:  # a certificate object handed in by a caller
        with contextlib.suppress(BundleError):
            BundleSet.from_certificates([lazily], trust_domain=td)


@BAD_NAME_WARNING
@PROPERTY
@given(resigned())
def test_verify_hybrid_svid_on_resigned_certificates(case: tuple[str, bytes]) -> None:
    role, raw = case
    f = fixture()
    m = f.minted
    chains = {"classical": list(m.classical_chain), "pqc": list(m.pqc_chain), "kem": list(m.kem_chain)}
    slot = {
        "pqc-root": ("pqc", 2),
        "pqc-intermediate": ("pqc", 1),
        "pqc-leaf": ("pqc", 0),
        "kem-leaf": ("kem", 0),
        "classical-leaf": ("classical", 0),
    }[role]
    cert = load_or_none(raw)
    if cert is None:
        return
    chain = chains[slot[0]]
    chain[slot[1] :] = [cert, *chain[slot[1] + 1 :]]
    try:
        verify_hybrid_svid(
            chains["classical"], chains["pqc"], chains["kem"],
            classical_bundles=f.domain.classical_bundles, pqc_bundles=f.domain.pqc_bundles,
        )  # fmt: skip
    except VerificationError:
        return


def pem_block(raw: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(raw) + b"-----END CERTIFICATE-----\n"
