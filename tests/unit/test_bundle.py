"""X.509 bundles, bundle sets and the SPIFFE bundle JSON (Trust Domain and Bundle §4)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from spire_pqc.bundle import (
    MAX_BUNDLE_BYTES,
    BundleSet,
    BundleSource,
    SpiffeBundle,
    X509Bundle,
)
from spire_pqc.crypto._backend import openssl_helpers
from spire_pqc.errors import BundleError, SpirePqcError
from spire_pqc.spiffeid import TrustDomain

TD = TrustDomain("example.org")
OTHER = TrustDomain("other.org")
NOW = dt.datetime.now(dt.UTC)


def make_ca(
    name: str,
    key: Any,
    *,
    san: str | None = None,
    serial: int = 1,
    extra_sans: tuple[str, ...] = (),
) -> x509.Certificate:
    """A self-signed CA certificate; ``san`` defaults to spiffe://<name>."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    uris = [san if san is not None else f"spiffe://{name}", *extra_sans]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if uris != [""]:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris if u]),
            critical=False,
        )
    # Ed25519 and ML-DSA sign without a separate hash.
    hashed = isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return builder.sign(key, hashes.SHA256() if hashed else None)


@functools.cache
def ec_key(curve: str = "p256", n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[curve])


@functools.cache
def ec_root(td: str = "example.org", n: int = 0) -> x509.Certificate:
    return make_ca(td, ec_key("p256", n), serial=100 + n)


@functools.cache
def ec384_root() -> x509.Certificate:
    return make_ca("example.org", ec_key("p384"), serial=7)


@functools.cache
def rsa_root() -> x509.Certificate:
    return make_ca("example.org", rsa.generate_private_key(public_exponent=65537, key_size=2048), serial=8)


@functools.cache
def ed25519_root() -> x509.Certificate:
    return make_ca("example.org", ed25519.Ed25519PrivateKey.generate(), serial=9)


@functools.cache
def mldsa_root(td: str = "example.org", seed: int = 1) -> x509.Certificate:
    key = openssl_helpers().cryptography_mldsa65_private_key(bytes([seed]) * 32)
    return make_ca(td, key, serial=200 + seed)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- X509Bundle --------------------------------------------------------------------------------


def test_bundle_keeps_order_drops_duplicates_and_is_immutable() -> None:
    a, b = ec_root(), mldsa_root()
    bundle = X509Bundle(TD, [a, b, a])
    assert bundle.authorities == (a, b)
    assert bundle == X509Bundle(TD, (a, b))
    assert hash(bundle) == hash(X509Bundle(TD, [a, b]))
    assert bundle != X509Bundle(TD, [b, a])
    assert bundle != X509Bundle(OTHER, [a, b])
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.authorities = ()  # type: ignore[misc]
    assert repr(bundle) == "X509Bundle('example.org', 2 authorities)"
    assert X509Bundle(TD).authorities == ()


def test_bundle_refuses_non_certificates_and_bad_trust_domain() -> None:
    with pytest.raises(BundleError, match="authority 1 is a bytes"):
        X509Bundle(TD, [ec_root(), der(ec_root())])  # type: ignore[list-item]
    with pytest.raises(BundleError, match="must be a TrustDomain"):
        X509Bundle("example.org", [ec_root()])  # type: ignore[arg-type]


def test_bundle_refuses_certificates_whose_names_do_not_parse() -> None:
    # cryptography loads this (it parses names lazily); the bundle must not hold it.
    bad = der(ec_root()).replace(b"\x06\x03\x55\x04\x03\x0c", b"\x06\x03\x55\x04\x03\x01")
    lazily_loaded = x509.load_der_x509_certificate(bad)
    with pytest.raises(BundleError, match=r"authority 0: not a valid X\.509 certificate"):
        X509Bundle(TD, [lazily_loaded])
    with pytest.raises(BundleError, match=r"certificate 0 \(unparseable subject\): not a valid X\.509"):
        BundleSet.from_certificates([lazily_loaded])
    with pytest.raises(BundleError, match=r"certificate 1: not a valid X\.509 certificate .*subject"):
        X509Bundle.from_der(TD, der(mldsa_root()) + bad)


def test_single_bundle_is_a_source_for_its_own_trust_domain_only() -> None:
    bundle = X509Bundle(TD, [ec_root()])
    source: BundleSource = bundle
    assert source.get_bundle_for_trust_domain(TD) is bundle
    with pytest.raises(BundleError, match=r"no bundle for trust domain other\.org"):
        source.get_bundle_for_trust_domain(OTHER)


def test_pem_round_trip_with_classical_and_mldsa_authorities() -> None:
    certs = [ec_root(), mldsa_root(), rsa_root()]
    text = (
        b"# comment\nsubject=CN=x\n"
        + pem(certs[0])
        + b"\n\n"
        + pem(certs[1])
        + b"junk between\n"
        + pem(certs[2])
    )
    bundle = X509Bundle.from_pem(TD, text)
    assert bundle.authorities == tuple(certs)
    assert X509Bundle.from_pem(TD, bundle.to_pem()) == bundle
    assert X509Bundle.from_pem(TD, bundle.to_pem().decode()) == bundle


def test_der_concatenation_splits_exactly() -> None:
    certs = [mldsa_root(), ec_root(), mldsa_root("example.org", 2)]
    raw = b"".join(der(c) for c in certs)
    bundle = X509Bundle.from_der(TD, raw)
    assert bundle.authorities == tuple(certs)
    assert bundle.to_der() == raw
    assert X509Bundle.from_der(TD, b"") == X509Bundle(TD)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no PEM CERTIFICATE block found"),
        (b"hello world", "no PEM CERTIFICATE block found"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM block 0"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "not valid base64"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n", "ends as"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "only CERTIFICATE blocks"),
    ],
)
def test_bad_pem_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason) as info:
        X509Bundle.from_pem(TD, data)
    assert "PEM bundle of example.org" in str(info.value)


def test_pem_with_a_private_key_next_to_certificates_is_refused() -> None:
    key_pem = ec_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(BundleError, match="PEM block 1 is 'PRIVATE KEY'"):
        X509Bundle.from_pem(TD, pem(ec_root()) + key_pem)


def test_pem_block_with_a_broken_certificate_names_the_block() -> None:
    body = base64.encodebytes(der(ec_root())[:-10])
    data = pem(ec_root()) + b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    with pytest.raises(BundleError, match="PEM block 1"):
        X509Bundle.from_pem(TD, data)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-1], "certificate 1"),
        (lambda d: d + b"\x00", "certificate 2"),
        (lambda d: d + b"\x02\x01\x00", "expected a SEQUENCE"),
        (lambda d: d + b"\x30\x80\x00\x00", "indefinite length"),
        (lambda d: d + b"\x30\x03\x02\x01\x01", "certificate 2"),
        (lambda d: d + b"\x30\x81\x05\x02\x01\x01\x02\x00", "non-minimal length"),
    ],
)
def test_bad_der_concatenation_names_the_certificate(mutate: Any, reason: str) -> None:
    raw = der(ec_root()) + der(mldsa_root())
    with pytest.raises(BundleError, match=reason) as info:
        X509Bundle.from_der(TD, mutate(raw))
    assert "DER bundle of example.org" in str(info.value)


@pytest.mark.parametrize("serial", [0, -5])
def test_non_positive_serial_is_refused_before_cryptography_warns(serial: int) -> None:
    good = der(ec_root())
    marker = b"\x02\x01" + bytes([100])  # serial 100 of ec_root(); its first occurrence is the serial
    at = good.index(marker)
    assert x509.load_der_x509_certificate(good).serial_number == 100
    bad = good[:at] + b"\x02\x01" + serial.to_bytes(1, "big", signed=True) + good[at + 3 :]
    with pytest.raises(BundleError, match=f"serial number {serial} is not positive"):
        X509Bundle.from_der(TD, bad)


def test_unknown_certificate_version_is_a_bundle_error() -> None:
    good = der(ec_root())
    version = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (v3)
    bad = good.replace(version, b"\xa0\x03\x02\x01\x6d", 1)
    with pytest.raises(
        BundleError, match=r"certificate 0: not a valid X.509 certificate \(109 is not a valid"
    ):
        X509Bundle.from_der(TD, bad)


@pytest.mark.parametrize(
    "unit",
    [b"-----BEGIN CERTIFICATE-----", b"-----BEGIN CERTIFICATE-----\nAAAA", b"x-----BEGIN A-----\n-----END"],
    ids=["begin-lines", "begin-and-base64", "begin-and-partial-end"],
)
def test_pem_parsing_time_is_linear_in_hostile_input(unit: bytes) -> None:
    """Regression: the old PEM regex backtracked over the rest of the input for every BEGIN line
    without an END line (216 KB took 9 s, so the 8 MiB limit would have taken hours)."""
    data = unit * (MAX_BUNDLE_BYTES // len(unit))
    started = time.process_time()
    with pytest.raises(BundleError, match="PEM block 0"):
        X509Bundle.from_pem(TD, data)
    assert time.process_time() - started < 5  # the new parser needs milliseconds


def test_size_is_bounded() -> None:
    big = b"\x00" * (MAX_BUNDLE_BYTES + 1)
    for parse in (X509Bundle.from_der, X509Bundle.from_pem, SpiffeBundle.parse):
        with pytest.raises(BundleError, match="exceeds the limit"):
            parse(TD, big)


# --- BundleSet ---------------------------------------------------------------------------------


def test_set_lookup_raises_when_absent_and_never_merges() -> None:
    a = X509Bundle(TD, [ec_root()])
    b = X509Bundle(OTHER, [ec_root("other.org")])
    bundles = BundleSet([b, a])
    assert bundles.get(TD) is a
    assert bundles.get_bundle_for_trust_domain(OTHER) is b
    assert list(bundles) == [a, b]  # trust-domain order
    assert bundles.trust_domains == (TD, OTHER)
    assert TD in bundles
    assert TrustDomain("third.org") not in bundles
    assert len(bundles) == 2
    with pytest.raises(
        BundleError, match=r"no bundle for trust domain third.org \(known: example.org, other.org\)"
    ):
        bundles.get(TrustDomain("third.org"))
    with pytest.raises(BundleError, match="never merged"):
        BundleSet([a, X509Bundle(TD, [mldsa_root()])])
    with pytest.raises(BundleError, match=r"known: none"):
        BundleSet().get(TD)


def test_set_updates_replace_rather_than_add() -> None:
    old, new = ec_root("example.org", 0), ec_root("example.org", 1)
    bundles = BundleSet([X509Bundle(TD, [old]), X509Bundle(OTHER, [ec_root("other.org")])])
    rotated = bundles.with_bundle(X509Bundle(TD, [new]))
    assert rotated.get(TD).authorities == (new,)
    assert bundles.get(TD).authorities == (old,)  # the original set is unchanged
    assert rotated.get(OTHER) == bundles.get(OTHER)
    dropped = rotated.without(OTHER)
    assert dropped.trust_domains == (TD,)
    assert bundles == BundleSet(list(bundles))
    assert hash(bundles) == hash(BundleSet(list(bundles)))
    assert bundles != rotated


def test_set_from_certificates_groups_by_spiffe_uri_san() -> None:
    certs = [
        ec_root(),
        mldsa_root(),
        ec_root("other.org"),
        make_ca("legacy", ec_key(), san="spiffe://example.org/", serial=3),
    ]
    bundles = BundleSet.from_certificates(certs)
    assert bundles.get(TD).authorities == (certs[0], certs[1], certs[3])
    assert bundles.get(OTHER).authorities == (certs[2],)


def test_set_from_certificates_without_spiffe_san_needs_an_explicit_trust_domain() -> None:
    upstream = make_ca("corp-root", ec_key(), san="", serial=4)
    with pytest.raises(BundleError, match="no SPIFFE URI SAN"):
        BundleSet.from_certificates([upstream])
    assert BundleSet.from_certificates([upstream], trust_domain=TD).get(TD).authorities == (upstream,)
    web = make_ca("corp-root", ec_key(), san="https://corp.example", serial=5)
    assert BundleSet.from_certificates([web], trust_domain=OTHER).trust_domains == (OTHER,)


@pytest.mark.parametrize(
    ("san", "extra", "reason"),
    [
        ("spiffe://Example.org", (), "lower case"),
        ("spiffe:example.org", (), "not of the form"),
        ("spiffe://a.org", ("spiffe://b.org",), "2 SPIFFE URI SANs"),
    ],
)
def test_set_from_certificates_refuses_bad_spiffe_sans(san: str, extra: tuple[str, ...], reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        BundleSet.from_certificates([make_ca("x", ec_key(), san=san, extra_sans=extra, serial=6)])


def test_workload_api_map_round_trip() -> None:
    wire = {
        "spiffe://example.org": der(ec_root()) + der(mldsa_root()),
        "spiffe://other.org": der(ec_root("other.org")),
        "spiffe://redacted.org": b"",
    }
    bundles = BundleSet.from_workload_api(wire)
    assert bundles.trust_domains == (TD, OTHER)  # the redacted (empty) entry is dropped
    assert bundles.get(TD).authorities == (ec_root(), mldsa_root())
    assert bundles.to_workload_api() == {k: v for k, v in wire.items() if v}
    assert BundleSet.from_workload_api(bundles.to_workload_api()) == bundles


def test_workload_api_map_refuses_two_spellings_of_one_trust_domain() -> None:
    with pytest.raises(BundleError, match="never merged"):
        BundleSet.from_workload_api(
            {"spiffe://example.org": der(ec_root()), "example.org": der(mldsa_root())}
        )
    with pytest.raises(BundleError, match=r"bundle map key 'spiffe://Example\.org'"):
        BundleSet.from_workload_api({"spiffe://Example.org": der(ec_root())})


# --- SPIFFE bundle JSON ------------------------------------------------------------------------

JWT_KEY = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
           "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}  # fmt: skip


def full_bundle() -> SpiffeBundle:
    return SpiffeBundle(
        TD,
        (ec_root(), ec384_root(), rsa_root(), ed25519_root(), mldsa_root()),
        {"k1": JWT_KEY, "k2": {"kty": "RSA", "n": "AQAB", "e": "AQAB", "x5c": ["AAAA"]}},
        sequence=42,
        refresh_hint=300,
    )


def test_json_round_trip_all_key_types() -> None:
    bundle = full_bundle()
    text = bundle.to_json()
    doc = json.loads(text)
    assert doc["spiffe_sequence"] == 42
    assert doc["spiffe_refresh_hint"] == 300
    x509_entries = [k for k in doc["keys"] if k["use"] == "x509-svid"]
    assert [k["kty"] for k in x509_entries] == ["EC", "EC", "RSA", "OKP", "AKP"]
    assert all("kid" not in k and len(k["x5c"]) == 1 for k in x509_entries)
    assert x509_entries[1]["crv"] == "P-384"
    assert x509_entries[4]["alg"] == "ML-DSA-65"
    assert len(base64.urlsafe_b64decode(x509_entries[4]["pub"] + "==")) == 1952
    assert {k["kid"] for k in doc["keys"] if k["use"] == "jwt-svid"} == {"k1", "k2"}
    parsed = SpiffeBundle.parse(TD, text)
    assert parsed == bundle
    assert parsed.jwt_authorities["k1"]["x"] == JWT_KEY["x"]
    assert parsed.jwt_authorities["k2"]["x5c"] == ("AAAA",)
    assert parsed.x509_bundle() == X509Bundle(TD, bundle.x509_authorities)
    assert hash(parsed) == hash(bundle)


def test_jwt_authorities_are_read_only_copies() -> None:
    source = {"k1": dict(JWT_KEY)}
    bundle = SpiffeBundle(TD, (), source)
    source["k1"]["x"] = "changed"
    assert bundle.jwt_authorities["k1"]["x"] == JWT_KEY["x"]
    with pytest.raises(TypeError):
        bundle.jwt_authorities["k1"]["x"] = "nope"  # type: ignore[index]


def x509_entry(cert: x509.Certificate, **extra: Any) -> dict[str, Any]:
    return {"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(der(cert)).decode()], **extra}


def doc_with(*keys: Any, **top: Any) -> bytes:
    return json.dumps({"keys": list(keys), **top}).encode()


def test_spire_style_document_parses() -> None:
    doc = doc_with(
        x509_entry(ec_root()),
        {"use": "jwt-svid", "kty": "EC", "kid": "abc", **JWT_KEY},
        spiffe_sequence=1,
        spiffe_refresh_hint=2419200,
    )
    bundle = SpiffeBundle.parse(TD, doc)
    assert bundle.x509_authorities == (ec_root(),)
    assert set(bundle.jwt_authorities) == {"abc"}
    assert (bundle.sequence, bundle.refresh_hint) == (1, 2419200)


def test_empty_key_set_is_valid_and_optional_fields_may_be_absent() -> None:
    bundle = SpiffeBundle.parse(TD, b'{"keys": []}')
    assert bundle == SpiffeBundle(TD)
    assert bundle.sequence is None and bundle.refresh_hint is None
    assert json.loads(bundle.to_json()) == {"keys": []}


def test_unknown_use_or_kty_entries_are_ignored() -> None:
    doc = doc_with(
        {"use": "wit-svid", "kty": "OKP", "kid": "w", "x": "AAAA"},
        {"kty": "EC"},  # no use at all
        {"use": "x509-svid", "kty": "FUTURE", "x5c": "not even a list"},
        {"use": "jwt-svid", "kty": "oct", "k": "secret"},
        x509_entry(mldsa_root(), kty="AKP"),
    )
    bundle = SpiffeBundle.parse(TD, doc)
    assert bundle.x509_authorities == (mldsa_root(),)
    assert bundle.jwt_authorities == {}


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"[]", "must be a JSON object"),
        (b"{}", "'keys' must be present"),
        (b'{"keys": {}}', "'keys' must be present and be an array"),
        (b'{"keys": [1]}', r"keys\[0\]: not a JSON object"),
        (b'{"keys": [{"use": "x509-svid"}]}', r"keys\[0\]: 'kty' must be a string"),
        (b'{"keys": [{"use": "x509-svid", "kty": "EC"}]}', r"keys\[0\]: 'x5c' must be an array"),
        (b'{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": []}]}', "exactly one"),
        (b'{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["%%%"]}]}', "not valid base64"),
        (b'{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]}', r"keys\[0\]: not a valid X.509"),
        (b'{"keys": [{"use": "jwt-svid", "kty": "EC"}]}', r"keys\[0\]: jwt-svid entries must have"),
        (b'{"keys": [{"use": "jwt-svid", "kty": "EC", "kid": ""}]}', "non-empty string 'kid'"),
        (b'{"keys": [], "keys": []}', "duplicate JSON member 'keys'"),
        (b'{"keys": [{"use": "jwt-svid", "use": "x"}]}', "duplicate JSON member 'use'"),
        (b'{"keys": [], "spiffe_sequence": NaN}', "NaN is not JSON"),
        (b'{"keys": [], "spiffe_sequence": -1}', "spiffe_sequence must be an integer"),
        (b'{"keys": [], "spiffe_sequence": 1.5}', "spiffe_sequence must be an integer"),
        (b'{"keys": [], "spiffe_sequence": true}', "spiffe_sequence must be an integer"),
        (b'{"keys": [], "spiffe_sequence": 18446744073709551616}', "spiffe_sequence must be an integer"),
        (b'{"keys": [], "spiffe_refresh_hint": "300"}', "spiffe_refresh_hint must be an integer"),
        (b'{"keys": [], "spiffe_refresh_hint": 1e3}', "spiffe_refresh_hint must be an integer"),
        (b'{"keys": []', "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|invalid JSON"),
        (b'{"keys": [], "x": ' + b"9" * 5000 + b"}", "invalid JSON"),
    ],
)
def test_malformed_documents_are_refused(doc: bytes, reason: str) -> None:
    with pytest.raises(BundleError, match=reason) as info:
        SpiffeBundle.parse(TD, doc)
    assert str(info.value).startswith("SPIFFE bundle of example.org: ")


def test_malformed_entry_errors_name_the_index() -> None:
    good = x509_entry(ec_root())
    cases = {
        "x509-svid entries must not have a 'kid'": x509_entry(ec_root(), kid="k"),
        "exactly one": {**good, "x5c": good["x5c"] * 2},
        "JWK member 'x' does not match": x509_entry(ec_root(), x=JWT_KEY["x"]),
        "JWK member 'kty' does not match": x509_entry(mldsa_root(), kty="EC"),
        "JWK member 'pub' does not match": x509_entry(mldsa_root(), kty="AKP", pub="AAAA"),
    }
    for reason, bad in cases.items():
        with pytest.raises(BundleError, match=rf"keys\[2\]: .*{reason}"):
            SpiffeBundle.parse(TD, doc_with(good, {"use": "other"}, bad))


def test_duplicate_kid_is_refused() -> None:
    entry = {"use": "jwt-svid", "kty": "EC", "kid": "same", **JWT_KEY}
    with pytest.raises(BundleError, match=r"keys\[1\]: duplicate kid 'same'"):
        SpiffeBundle.parse(TD, doc_with(entry, entry))


def test_dataclass_validates_its_fields() -> None:
    with pytest.raises(BundleError, match="sequence must be an integer"):
        SpiffeBundle(TD, sequence=-1)
    with pytest.raises(BundleError, match="refresh_hint must be an integer"):
        SpiffeBundle(TD, refresh_hint=2**63)
    with pytest.raises(BundleError, match="non-empty strings"):
        SpiffeBundle(TD, jwt_authorities={"": {}})
    with pytest.raises(BundleError, match="is not a JSON object"):
        SpiffeBundle(TD, jwt_authorities={"k": "x"})  # type: ignore[dict-item]
    with pytest.raises(BundleError, match="must be a TrustDomain"):
        SpiffeBundle("example.org")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------


def all_roots() -> list[x509.Certificate]:
    return [ec_root(), ec384_root(), rsa_root(), ed25519_root(), mldsa_root(), mldsa_root("example.org", 2)]


def only_project_errors(parse: Any, *args: Any) -> None:
    """Call ``parse``; a SpirePqcError is an accepted outcome, any other exception fails the test."""
    with contextlib.suppress(SpirePqcError):
        parse(*args)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_project_errors(data: bytes) -> None:
    only_project_errors(X509Bundle.from_pem, TD, data)
    only_project_errors(X509Bundle.from_der, TD, data)
    only_project_errors(SpiffeBundle.parse, TD, data)
    only_project_errors(X509Bundle.from_der, TD, b"\x30\x82" + len(data).to_bytes(2, "big") + data)
    only_project_errors(BundleSet.from_workload_api, {"spiffe://example.org": data})


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_certificates_raise_only_project_errors(data: st.DataObject) -> None:
    raw = bytearray(der(data.draw(st.sampled_from(all_roots()))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    mutated = bytes(raw[:cut])
    only_project_errors(X509Bundle.from_der, TD, mutated)
    with contextlib.suppress(SpirePqcError):
        # A certificate that loads must also survive everything done with an authority later.
        authorities = X509Bundle.from_der(TD, mutated).authorities
        only_project_errors(BundleSet.from_certificates, authorities)
        only_project_errors(lambda: SpiffeBundle(TD, authorities).to_json())
    encoded = base64.encodebytes(mutated)
    only_project_errors(
        X509Bundle.from_pem, TD, b"-----BEGIN CERTIFICATE-----\n" + encoded + b"-----END CERTIFICATE-----"
    )
    entry = {"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(mutated).decode()]}
    only_project_errors(SpiffeBundle.parse, TD, doc_with(entry))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
entry_members = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["x509-svid", "jwt-svid", "other"]) | json_values,
        "kty": st.sampled_from(["EC", "RSA", "OKP", "AKP", "oct"]) | json_values,
        "kid": st.text(max_size=4) | json_values,
        "x5c": st.lists(st.sampled_from([base64.b64encode(der(ec_root())).decode(), "AAAA", "!"]), max_size=2)
        | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(entry_members | json_values, max_size=5),
    st.dictionaries(st.sampled_from(["spiffe_sequence", "spiffe_refresh_hint", "extra"]), json_values),
)
def test_structured_json_raises_only_project_errors(keys: list[Any], top: dict[str, Any]) -> None:
    text = json.dumps({"keys": keys, **top}).encode()
    only_project_errors(SpiffeBundle.parse, TD, text)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(all_roots()), max_size=6),
    st.none() | st.integers(0, 2**64 - 1),
    st.none() | st.integers(0, 2**63 - 1),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.fixed_dictionaries(
            {"kty": st.sampled_from(["EC", "RSA", "OKP", "AKP"])}, optional={"x": st.text(), "y": st.text()}
        ),
    ),
)
def test_round_trips(
    certs: list[x509.Certificate], sequence: int | None, refresh: int | None, jwt: dict[str, dict[str, str]]
) -> None:
    bundle = X509Bundle(TD, certs)
    assert X509Bundle.from_der(TD, bundle.to_der()) == bundle
    if certs:
        assert X509Bundle.from_pem(TD, bundle.to_pem()) == bundle
    doc = SpiffeBundle(TD, tuple(certs), jwt, sequence, refresh)
    assert SpiffeBundle.parse(TD, doc.to_json()) == doc
    assert BundleSet.from_workload_api(BundleSet([bundle]).to_workload_api()) == (
        BundleSet([bundle]) if certs else BundleSet()
    )
