"""Accounting for the ACVP vectors: every case is either run or listed with the reason it cannot be.

The expected numbers are the ones documented in the "Known results" of ``acvp/README.md``; if a
vector file or our plan changes, this test says which count moved.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

from tests.vectors import _acvp

# Runnable checks (README "Known results": all of them pass with cryptography 50.0.2).
EXPECTED_RUNNABLE = {
    "ML-KEM keyGen ek + seed round trip": 25,
    "ML-KEM decapsulation (seed key)": 10,
    "ML-KEM encapsulationKeyCheck": 20,
    "ML-DSA keyGen pk": 25,
    "ML-DSA sigVer external/pure": 15,
    "ML-DSA sigVer external/preHash": 15,
    "ML-DSA sigVer internal": 15,
    "ML-DSA sigVer internal/mu": 15,
    "ML-DSA sigGen external/pure: expected signature verifies": 30,
    "ML-DSA sigGen external/preHash: expected signature verifies": 30,
    "ML-DSA sigGen internal: expected signature verifies": 30,
    "ML-DSA sigGen internal/mu: expected signature verifies": 30,
    "ML-DSA sigGen external/pure: fresh signature verifies": 30,
    "ML-DSA sigGen external/preHash: fresh signature verifies": 30,
    "ML-DSA sigGen internal: fresh signature verifies": 30,
    "ML-DSA sigGen internal/mu: fresh signature verifies": 30,
}

# Not expressible, by reason (pqc-standards.md §2: dk 25, decapsulation expanded 20,
# decapsulationKeyCheck 20, sk 25, sigGen FIPS204 120, sigGen tr1 expanded 120; m 50;
# byte-exact tr1 seed sigGen 120 = 60 deterministic + 60 hedged).
EXPECTED_NOT_EXPRESSIBLE = {
    _acvp.EXPANDED_KEY: 25 + 20 + 20 + 25 + 120 + 120,
    _acvp.NEEDS_M: 50,
    _acvp.DETERMINISTIC: 60,
    _acvp.NEEDS_RND: 60,
}


def test_vector_files_match_their_readme() -> None:
    digests = _acvp.readme_sha256()
    assert sorted(digests) == sorted(_acvp.ALL_FILES)
    for name, digest in digests.items():
        assert hashlib.sha256((_acvp.ACVP_DIR / name).read_bytes()).hexdigest() == digest, name


def test_every_case_is_run_or_listed_with_a_reason(summary: Callable[[str, str], None]) -> None:
    readme = _acvp.readme_counts()
    assert sorted(readme) == sorted(_acvp.ALL_FILES)
    runnable: Counter[str] = Counter()
    not_expressible: Counter[str] = Counter()
    by_check: Counter[tuple[str, str]] = Counter()
    for name in _acvp.ALL_FILES:
        cases = list(_acvp.cases(name))
        assert len(cases) == readme[name], f"{name}: {len(cases)} cases, README says {readme[name]}"
        for case in cases:
            checks = _acvp.plan(case)
            assert checks, f"{case} has no check"
            for check, reason in checks:
                if reason is None:
                    runnable[check] += 1
                else:
                    not_expressible[reason] += 1
                    by_check[(check, reason)] += 1
    assert dict(runnable) == EXPECTED_RUNNABLE
    assert dict(not_expressible) == EXPECTED_NOT_EXPRESSIBLE

    section = "ACVP cases not expressible with the API (by reason)"
    for reason, count in sorted(not_expressible.items()):
        summary(section, f"{count:4d}  {reason}")
        for (check, why), n in sorted(by_check.items()):
            if why == reason:
                summary(section, f"      {n:4d}  {check}")
    summary(
        section, f"total cases in files: {sum(readme.values())}; runnable checks: {sum(runnable.values())}"
    )
