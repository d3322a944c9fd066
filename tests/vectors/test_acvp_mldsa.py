"""NIST ACVP ML-DSA-65 vectors against spire_pqc.crypto.mldsa, on each PQ backend (``pq_backend``).

External/pure goes through our own MLDSA65PublicKey.verify with the context string. The other
three interfaces (HashML-DSA, internal, external mu) are not part of our API, so the test computes
mu itself (FIPS 204) and uses cryptography's ``verify_mu`` / ``sign_mu``; importing cryptography's
mldsa here, in a test, is deliberate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa as crypto_mldsa

from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import InvalidSignatureError
from tests.vectors import _acvp

SECTION = "ACVP ML-DSA-65 (passed / run)"


def _verify_mu(public_key: bytes, signature: bytes, mu: bytes) -> bool:
    try:
        crypto_mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify_mu(signature, mu)
    except InvalidSignature:
        return False
    return True


def _verify_ours(public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
    try:
        MLDSA65PublicKey(public_key).verify(signature, message, context=context)
    except InvalidSignatureError:
        return False
    return True


def _verifies(case: _acvp.Case, public_key: bytes, signature: bytes) -> bool:
    if _acvp.interface(case) == "external/pure":
        ours = _verify_ours(public_key, signature, case.hex("message"), case.hex("context"))
        # Our M' and mu construction must agree with the library's pure verification.
        assert ours == _verify_mu(public_key, signature, _acvp.mu_for(case, public_key)), str(case)
        return ours
    return _verify_mu(public_key, signature, _acvp.mu_for(case, public_key))


def _how(kind: str) -> str:
    """Summary note: only external/pure is a backend operation; the others go through cryptography's mu API
    (with the key derived on the backend under test, for sigGen)."""
    return "" if kind == "external/pure" else " (mu via cryptography)"


def test_keygen_pk(summary: Callable[[str, str], None], pq_backend: str) -> None:
    cases = _acvp.runnable(_acvp.MLDSA_KEYGEN, "ML-DSA keyGen pk")
    failures = []
    for case in cases:
        seed = case.hex("seed")
        key = MLDSA65PrivateKey.from_seed(seed)
        theirs = crypto_mldsa.MLDSA65PrivateKey.from_seed_bytes(seed).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        ok = (
            key.public_key().raw() == case.hex("pk")
            and key.pkcs8() == theirs
            and MLDSA65PrivateKey.from_pem(key.pem(NoEncryption())).seed() == seed
            and MLDSA65PublicKey.from_pem(key.public_key().pem()).raw() == case.hex("pk")
        )
        if not ok:
            failures.append(case.tc_id)
    summary(
        SECTION,
        f"[{pq_backend}] keyGen pk (+ seed PKCS#8 round trip): {len(cases) - len(failures)}/{len(cases)}",
    )
    assert len(cases) == 25
    assert failures == []


def test_sigver_all_four_interfaces(summary: Callable[[str, str], None], pq_backend: str) -> None:
    cases = _acvp.runnable(_acvp.MLDSA_SIGVER, "ML-DSA sigVer")
    run: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    failures = []
    for case in cases:
        kind = _acvp.interface(case)
        run[kind] += 1
        expected = bool(case.test["testPassed"])
        if _verifies(case, case.hex("pk"), case.hex("signature")) == expected:
            passed[kind] += 1
            rejected[kind] += not expected
        else:
            failures.append((case.tc_id, kind, case.test["reason"]))
    for kind in sorted(run):
        summary(
            SECTION,
            f"[{pq_backend}] sigVer {kind}{_how(kind)}: {passed[kind]}/{run[kind]} "
            f"({rejected[kind]} invalid signatures rejected)",
        )
    assert run == Counter({"external/pure": 15, "external/preHash": 15, "internal": 15, "internal/mu": 15})
    assert all(rejected[kind] > 0 for kind in run)
    assert failures == []


def test_siggen_tr1_seed_keys(summary: Callable[[str, str], None], pq_backend: str) -> None:
    """The expected signature verifies; a fresh signature (hedged) verifies too."""
    cases = _acvp.runnable(_acvp.MLDSA_SIGGEN_TR1, "ML-DSA sigGen")
    expected_ok: Counter[str] = Counter()
    fresh_ok: Counter[str] = Counter()
    run: Counter[str] = Counter()
    failures = []
    for case in cases:
        kind = _acvp.interface(case)
        run[kind] += 1
        key = MLDSA65PrivateKey.from_seed(case.hex("seed"))
        public = key.public_key().raw()
        if _verifies(case, public, case.hex("signature")):
            expected_ok[kind] += 1
        else:
            failures.append((case.tc_id, kind, "expected signature"))
        if kind == "external/pure":
            fresh = key.sign(case.hex("message"), context=case.hex("context"))
        else:
            theirs = crypto_mldsa.MLDSA65PrivateKey.from_seed_bytes(case.hex("seed"))
            fresh = theirs.sign_mu(_acvp.mu_for(case, public))
        if _verifies(case, public, fresh):
            fresh_ok[kind] += 1
        else:
            failures.append((case.tc_id, kind, "fresh signature"))
    for kind in sorted(run):
        summary(
            SECTION,
            f"[{pq_backend}] sigGen tr1 seed {kind}{_how(kind)}: expected verifies {expected_ok[kind]}/{run[kind]}, "
            f"fresh sign+verify {fresh_ok[kind]}/{run[kind]}",
        )
    assert sum(run.values()) == 120
    assert failures == []
