"""The verification memos and the load cache (spire_pqc.x509.memo, spire_pqc.x509.load): they save the
repeated signature checks of a peer that connects again, and never change a verdict."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.x509 import verification

from spire_pqc.bundle import BundleSet
from spire_pqc.crypto import _backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import BindingError, ChainError, ParseError, ValidityError
from spire_pqc.svid import verify_classical_svid, verify_hybrid_svid, verify_pqc_svid, verify_svid_binding
from spire_pqc.x509 import certs, memo
from spire_pqc.x509 import load as load_module
from spire_pqc.x509.load import LOADED_CACHE_SIZE, load_der_certificate
from spire_pqc.x509.path import verify_pqc_chain

from .pki import Domain, Minted, der, tamper_signature, utcnow
from .test_path_building import ca_certificate, ski_of


@pytest.fixture(autouse=True)
def empty_memos() -> Iterator[None]:
    memo.forget_all()
    yield
    memo.forget_all()


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.create("memo.example")


@pytest.fixture(scope="module")
def minted(domain: Domain) -> Minted:
    return domain.mint()


def loaded(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """As a peer's certificates arrive: through the one loader."""
    return [load_der_certificate(der(c), what="test") for c in certificates]


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ML-DSA-65 verifications made by the backend."""
    calls = [0]
    backend = _backend.backend()
    real = backend.mldsa65_verify

    def counting(public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        calls[0] += 1
        return real(public_key, signature, message, context)

    monkeypatch.setattr(backend, "mldsa65_verify", counting)
    return calls


def verify(domain: Domain, minted: Minted, *, pqc_bundles: BundleSet | None = None) -> None:
    verify_hybrid_svid(
        loaded(minted.classical_chain), loaded(minted.pqc_chain), loaded(minted.kem_chain),
        classical_bundles=domain.classical_bundles, pqc_bundles=pqc_bundles or domain.pqc_bundles,
    )  # fmt: skip


def test_the_same_certificates_again_cost_no_signature_check(
    domain: Domain, minted: Minted, verifications: list[int]
) -> None:
    verify(domain, minted)
    first = verifications[0]
    verify(domain, minted)
    # PQC leaf, KEM certificate, intermediate, SvidBinding: all checked the first time only.
    assert first >= 4
    assert verifications[0] == first
    assert memo.MEMO.hits >= 4


def test_a_tampered_intermediate_is_refused_after_the_genuine_one_was_remembered(
    domain: Domain, minted: Minted
) -> None:
    verify(domain, minted)
    chain = loaded(minted.pqc_chain)
    tampered = load_der_certificate(der(tamper_signature(chain[1])), what="tampered intermediate")
    with pytest.raises(ChainError, match="signature does not verify"):
        verify_pqc_svid([chain[0], tampered], domain.pqc_bundles)


def test_a_binding_over_other_bytes_is_refused_after_the_genuine_leaf_was_remembered(domain: Domain) -> None:
    genuine, key = domain.classical_leaf()
    forged, _ = domain.classical_leaf(key=key, binding_spiffe_id="spiffe://memo.example/other")
    intermediates = [certs.mldsa_public_key(domain.intermediate)]
    verify_svid_binding(loaded([genuine])[0], intermediates)
    assert verify_svid_binding(loaded([genuine])[0], intermediates) == intermediates[0]
    with pytest.raises(BindingError, match="does not verify"):
        verify_svid_binding(loaded([forged])[0], intermediates)


def test_a_root_removed_from_the_bundle_is_refused_although_the_path_was_remembered(
    domain: Domain, minted: Minted
) -> None:
    verify(domain, minted)
    other = Domain.create("memo.example")  # another PQC root for the same trust domain
    with pytest.raises(ChainError):
        verify(domain, minted, pqc_bundles=other.pqc_bundles)


def test_an_intermediate_that_expired_after_it_was_remembered_is_refused() -> None:
    root_key, intermediate_key = MLDSA65PrivateKey.generate(), MLDSA65PrivateKey.generate()
    root_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "memo root")])
    intermediate_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "memo intermediate")])
    root = ca_certificate(root_name, root_key, ski=b"\x0a" * 20)
    now = utcnow()
    intermediate = ca_certificate(
        intermediate_name, intermediate_key, issuer=(root_name, root_key), ski=b"\x0b" * 20,
        aki=ski_of(root), not_after=now + dt.timedelta(hours=1),
    )  # fmt: skip
    leaf = ca_certificate(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "memo leaf")]), MLDSA65PrivateKey.generate(),
        issuer=(intermediate_name, intermediate_key), aki=b"\x0b" * 20, not_after=now + dt.timedelta(hours=20),
    )  # fmt: skip
    chain = loaded([leaf, intermediate])
    assert verify_pqc_chain(chain, [root], at=now, spiffe_id=None)[-1] == root
    assert len(memo.MEMO) == 2
    with pytest.raises(ValidityError, match="expired"):
        verify_pqc_chain(chain, [root], at=now + dt.timedelta(hours=2), spiffe_id=None)


def test_forget_key_drops_what_the_revoked_intermediate_vouched_for(
    domain: Domain, minted: Minted, verifications: list[int]
) -> None:
    verify(domain, minted)
    before = verifications[0]
    dropped = memo.forget_key(certs.mldsa_public_key(domain.intermediate).key_id())
    # The PQC leaf, the KEM certificate and the SvidBinding were signed by the intermediate.
    assert dropped == 3
    verify(domain, minted)
    assert verifications[0] == before + 3


def test_the_signature_memo_is_bounded_and_keeps_only_successes(minted: Minted) -> None:
    small = memo.SignatureMemo(size=2)
    key = MLDSA65PrivateKey.generate().public_key()
    expires = utcnow() + dt.timedelta(hours=1)
    objects = [object() for _ in range(3)]
    for item in objects:
        assert small.verified(item, key, purpose="t", expires=expires, check=lambda: True)
    assert len(small) == 2
    failing: Callable[[], bool] = lambda: False  # noqa: E731
    other = object()
    assert not small.verified(other, key, purpose="t", expires=expires, check=failing)
    assert not small.verified(other, key, purpose="t", expires=expires, check=failing)
    assert small.verified(objects[2], key, purpose="t", expires=expires, check=failing)  # remembered
    # Another purpose over the same object is another signature.
    assert not small.verified(objects[2], key, purpose="u", expires=expires, check=failing)
    # An expired result is not served.
    past = utcnow() - dt.timedelta(seconds=1)
    assert small.verified(other, key, purpose="t", expires=past, check=lambda: True)
    assert not small.verified(other, key, purpose="t", expires=past, check=failing)


def test_classical_paths_are_validated_once_per_chain_and_bundle(
    domain: Domain, minted: Minted, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = [0]
    real = verification.PolicyBuilder

    def counting() -> verification.PolicyBuilder:
        builds[0] += 1
        return real()

    monkeypatch.setattr(verification, "PolicyBuilder", counting)
    chain = loaded(minted.classical_chain)
    bundles = domain.classical_bundles
    verify_classical_svid(chain, bundles)
    verify_classical_svid(chain, bundles)
    assert builds[0] == 1
    # Another bundle (a SPIRE CA rotation, a revocation) is validated again, and refused here.
    other = Domain.create("memo.example")
    with pytest.raises(ChainError):
        verify_classical_svid(chain, other.classical_bundles)
    assert builds[0] == 2
    # Outside the validity window of the remembered path: the leaf's own check refuses it first.
    with pytest.raises(ValidityError):
        verify_classical_svid(chain, bundles, at=chain[0].not_valid_after_utc + dt.timedelta(seconds=1))


def test_the_path_memo_answers_only_inside_the_window_and_for_the_same_objects() -> None:
    paths = memo.PathMemo(size=1)
    now = utcnow()
    chain, anchors = [object()], [object()]
    paths.remember(chain, anchors, now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    assert paths.valid(chain, anchors, now)
    assert not paths.valid(chain, anchors, now + dt.timedelta(hours=2))
    assert not paths.valid(chain, anchors, now - dt.timedelta(hours=2))
    assert not paths.valid(chain, [object()], now)
    assert not paths.valid(chain, [*anchors, object()], now)
    paths.remember([object()], anchors, now, now)
    assert len(paths) == 1
    assert not paths.valid(chain, anchors, now)


def test_loads_give_one_object_per_der_and_never_keep_a_failure(minted: Minted) -> None:
    data = der(minted.pqc_leaf)
    assert load_der_certificate(data, what="a") is load_der_certificate(bytes(bytearray(data)), what="b")
    broken = data[:-10]
    for _ in range(2):
        with pytest.raises(ParseError, match="broken"):
            load_der_certificate(broken, what="broken")
    assert LOADED_CACHE_SIZE <= 1024


def test_expired_results_are_swept_when_a_new_one_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under rotation every new SVID adds results; those of expired SVIDs must not stay (each holds a
    parsed certificate) until the bound pushes them out."""
    monkeypatch.setattr(memo, "SWEEP_INTERVAL", 0.0)
    signatures, paths = memo.SignatureMemo(size=100), memo.PathMemo(size=100)
    key = MLDSA65PrivateKey.generate().public_key()
    now = dt.datetime.now(dt.UTC)
    soon, later = now + dt.timedelta(seconds=1), now + dt.timedelta(hours=1)
    kept = [object() for _ in range(8)]  # alive throughout: the memos key on identity
    for index, expires in enumerate((soon, soon, later)):
        assert signatures.verified(kept[index], key, purpose="t", expires=expires, check=lambda: True)
        paths.remember([kept[index]], [kept[4]], now, expires)
    assert len(signatures) == 3 and len(paths) == 3
    time.sleep(1.2)
    assert signatures.verified(kept[3], key, purpose="t", expires=later, check=lambda: True)
    paths.remember([kept[3]], [kept[4]], now, later)
    assert len(signatures) == 2 and len(paths) == 2  # the two expired ones went, the live ones stay


def test_the_load_cache_drops_certificates_past_their_not_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "_loaded_swept", [0.0])
    key = MLDSA65PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "short-lived")])
    short = ca_certificate(
        name, key, ski=b"\x0c" * 20, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    first = load_der_certificate(der(short), what="short")
    assert load_der_certificate(der(short), what="short") is first  # cached while valid
    time.sleep(2.1)  # past its notAfter, and past the once-a-second sweep
    other = ca_certificate(name, key, ski=b"\x0d" * 20)
    load_der_certificate(der(other), what="other")
    assert all(cert is not first for cert, _ in load_module._loaded.values())
    assert load_der_certificate(der(short), what="short") is not first  # parsed again, not kept
