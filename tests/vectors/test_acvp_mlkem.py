"""NIST ACVP ML-KEM-768 vectors against spire_pqc.crypto.mlkem and the FIPS 203 modulus check, on each
PQ backend (``pq_backend``).

Cases that need an expanded dk or an injected m are accounted for in test_acvp_coverage.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem as crypto_mlkem

from spire_pqc.crypto import _backend
from spire_pqc.crypto._fips203 import check_encapsulation_key
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidKeyError
from tests.vectors import _acvp

SECTION = "ACVP ML-KEM-768 (passed / run)"


def test_keygen_ek_and_seed_round_trip(summary: Callable[[str, str], None], pq_backend: str) -> None:
    cases = _acvp.runnable(_acvp.MLKEM_KEYGEN, "ML-KEM keyGen ek")
    failures = []
    for case in cases:
        seed = case.hex("d") + case.hex("z")  # RFC 9935 seed = d || z
        key = MLKEM768PrivateKey.from_seed(seed)
        reloaded = MLKEM768PrivateKey.from_pkcs8(key.pkcs8())
        from_pem = MLKEM768PrivateKey.from_pem(key.pem(NoEncryption()))
        # cryptography's own PKCS#8 writer is an independent encoder of the same RFC 9935 seed form.
        theirs = crypto_mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        ok = (
            key.public_key().raw() == case.hex("ek")
            and key.seed() == seed
            and reloaded.seed() == seed
            and from_pem.public_key() == key.public_key()
            and key.pkcs8() == theirs
            and MLKEM768PublicKey.from_spki(key.public_key().spki()).raw() == case.hex("ek")
        )
        if not ok:
            failures.append(case.tc_id)
    passed = len(cases) - len(failures)
    summary(SECTION, f"[{pq_backend}] keyGen ek + seed round trip: {passed}/{len(cases)}")
    assert len(cases) == 25
    assert failures == []


def test_decapsulation_with_seed_keys(summary: Callable[[str, str], None], pq_backend: str) -> None:
    cases = _acvp.runnable(_acvp.MLKEM_ENCDEC_TR1, "ML-KEM decapsulation (seed key)")
    failures = []
    reasons = set()
    for case in cases:
        key = MLKEM768PrivateKey.from_seed(case.hex("d") + case.hex("z"))
        reasons.add(case.test["reason"])
        if key.public_key().raw() != case.hex("ek") or key.decapsulate(case.hex("c")) != case.hex("k"):
            failures.append(case.tc_id)
    summary(
        SECTION,
        f"[{pq_backend}] tr1 decapsulation, keyFormat=seed: {len(cases) - len(failures)}/{len(cases)}",
    )
    assert len(cases) == 10
    # Both valid ciphertexts and implicit rejection of modified ones are covered.
    assert reasons == {"valid decapsulation", "modified ciphertext"}
    assert failures == []


def test_decapsulation_expanded_groups_through_their_seed(
    summary: Callable[[str, str], None], pq_backend: str
) -> None:
    """The tr1 keyFormat=expanded group also publishes d and z: decapsulate through the seed.

    This is an extra check beyond the accounting (the group's purpose, expanded-key import, stays
    not expressible).
    """
    cases = [c for c in _acvp.cases(_acvp.MLKEM_ENCDEC_TR1) if c.group["function"] == "decapsulation"]
    expanded = [c for c in cases if c.group["keyFormat"] == "expanded"]
    assert len(expanded) == 10
    assert all("d" in c.test and "z" in c.test for c in expanded)
    failures = [
        c.tc_id
        for c in expanded
        if MLKEM768PrivateKey.from_seed(c.hex("d") + c.hex("z")).decapsulate(c.hex("c")) != c.hex("k")
    ]
    summary(
        SECTION,
        f"[{pq_backend}] extra: tr1 decapsulation keyFormat=expanded via d||z: {10 - len(failures)}/10",
    )
    assert failures == []


@pytest.mark.parametrize("name", [_acvp.MLKEM_ENCDEC, _acvp.MLKEM_ENCDEC_TR1])
def test_encapsulation_key_check(name: str, summary: Callable[[str, str], None], pq_backend: str) -> None:
    """FIPS 203 §7.2: our pure-Python check, the key class and the backend all agree with ACVP."""
    cases = _acvp.runnable(name, "ML-KEM encapsulationKeyCheck")
    failures = []
    for case in cases:
        ek = case.hex("ek")
        expected = bool(case.test["testPassed"])
        results = []
        for check in (
            check_encapsulation_key,
            MLKEM768PublicKey,
            _backend.backend().mlkem768_encapsulate,
        ):
            try:
                check(ek)
            except InvalidKeyError:
                results.append(False)
            else:
                results.append(True)
        if results != [expected] * 3:
            failures.append((case.tc_id, results))
    verdicts = {bool(c.test["testPassed"]) for c in cases}
    revision = name.removesuffix(".ML-KEM-768.json")
    summary(
        SECTION,
        f"[{pq_backend}] encapsulationKeyCheck ({revision}): {len(cases) - len(failures)}/{len(cases)}",
    )
    assert len(cases) == 10
    assert verdicts == {True, False}
    assert failures == []
