"""Loading and accounting for the NIST ACVP vector files in ``tests/vectors/acvp/``.

Every ACVP test case is planned here as one or more *checks*. A check either runs (our API can
express it) or is listed with the reason it cannot run, so no case is dropped silently.
``test_acvp_coverage.py`` compares the plan with the counts in the README of the vector files
(``acvp/README.md``, "Known results").
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from spire_pqc._internal.der import encode_oid

ACVP_DIR = Path(__file__).parent / "acvp"

MLKEM_KEYGEN = "ML-KEM-keyGen-FIPS203.ML-KEM-768.json"
MLKEM_ENCDEC = "ML-KEM-encapDecap-FIPS203.ML-KEM-768.json"
MLKEM_ENCDEC_TR1 = "ML-KEM-encapDecap-FIPS203-tr1.ML-KEM-768.json"
MLDSA_KEYGEN = "ML-DSA-keyGen-FIPS204.ML-DSA-65.json"
MLDSA_SIGVER = "ML-DSA-sigVer-FIPS204.ML-DSA-65.json"
MLDSA_SIGGEN = "ML-DSA-sigGen-FIPS204.ML-DSA-65.json"
MLDSA_SIGGEN_TR1 = "ML-DSA-sigGen-FIPS204-tr1.ML-DSA-65.json"
ALL_FILES = (
    MLKEM_KEYGEN,
    MLKEM_ENCDEC,
    MLKEM_ENCDEC_TR1,
    MLDSA_KEYGEN,
    MLDSA_SIGVER,
    MLDSA_SIGGEN,
    MLDSA_SIGGEN_TR1,
)

# Reasons a check cannot be expressed with spire-pqc's (and cryptography's) API.
EXPANDED_KEY = "expanded dk/sk: only seed-form private keys exist (no import or export of expanded keys)"
NEEDS_M = "encapsulation randomness m cannot be injected"
DETERMINISTIC = "deterministic signing (rnd = 0^32) is not offered: signing is hedged only"
NEEDS_RND = "signing randomness rnd cannot be injected, so the exact signature cannot be reproduced"


@dataclass(frozen=True)
class Case:
    """One ACVP test case with the fields of its group."""

    file: str
    group: dict[str, Any]
    test: dict[str, Any]

    @property
    def tc_id(self) -> int:
        return int(self.test["tcId"])

    def hex(self, name: str) -> bytes:
        return bytes.fromhex(self.test[name])

    def __str__(self) -> str:
        return f"{self.file} tgId={self.group['tgId']} tcId={self.tc_id}"


@functools.cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ACVP_DIR / name).read_text())
    return data


def cases(name: str) -> Iterator[Case]:
    for group in load(name)["testGroups"]:
        info = {k: v for k, v in group.items() if k != "tests"}
        for test in group["tests"]:
            yield Case(name, info, test)


def plan(case: Case) -> list[tuple[str, str | None]]:
    """The checks of one case as ``(check name, None if it runs else the reason it cannot)``."""
    g = case.group
    if case.file == MLKEM_KEYGEN:
        return [("ML-KEM keyGen ek + seed round trip", None), ("ML-KEM keyGen dk", EXPANDED_KEY)]
    if case.file in (MLKEM_ENCDEC, MLKEM_ENCDEC_TR1):
        function = g["function"]
        if function == "encapsulation":
            return [("ML-KEM encapsulation", NEEDS_M)]
        if function == "decapsulation":
            if g.get("keyFormat") == "seed":
                return [("ML-KEM decapsulation (seed key)", None)]
            return [("ML-KEM decapsulation (expanded dk)", EXPANDED_KEY)]
        if function == "decapsulationKeyCheck":
            return [("ML-KEM decapsulationKeyCheck", EXPANDED_KEY)]
        if function == "encapsulationKeyCheck":
            return [("ML-KEM encapsulationKeyCheck", None)]
        raise AssertionError(f"{case}: unknown function {function!r}")
    if case.file == MLDSA_KEYGEN:
        return [("ML-DSA keyGen pk", None), ("ML-DSA keyGen sk", EXPANDED_KEY)]
    if case.file == MLDSA_SIGVER:
        return [(f"ML-DSA sigVer {interface(case)}", None)]
    if case.file in (MLDSA_SIGGEN, MLDSA_SIGGEN_TR1):
        if g.get("keyFormat", "expanded") != "seed":
            return [(f"ML-DSA sigGen {interface(case)} (expanded sk)", EXPANDED_KEY)]
        exact = DETERMINISTIC if g["deterministic"] else NEEDS_RND
        return [
            (f"ML-DSA sigGen {interface(case)}: expected signature verifies", None),
            (f"ML-DSA sigGen {interface(case)}: fresh signature verifies", None),
            (f"ML-DSA sigGen {interface(case)}: byte-exact signature", exact),
        ]
    raise AssertionError(f"unknown vector file {case.file}")


def runnable(name: str, check_prefix: str) -> list[Case]:
    """Cases of ``name`` with a runnable check whose name starts with ``check_prefix``."""
    return [c for c in cases(name) if any(n.startswith(check_prefix) and r is None for n, r in plan(c))]


def interface(case: Case) -> str:
    """``external/pure``, ``external/preHash``, ``internal`` or ``internal/mu``."""
    g = case.group
    if g["signatureInterface"] == "external":
        return f"external/{g['preHash']}"
    return "internal/mu" if g.get("externalMu") else "internal"


# --- FIPS 204 message representatives -------------------------------------------------------------

# FIPS 204 §5.4.1: the 12 pre-hash functions ACVP uses, with their output length and OID.
_PREHASH: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "SHA2-224": (hashes.SHA224(), "2.16.840.1.101.3.4.2.4"),
    "SHA2-256": (hashes.SHA256(), "2.16.840.1.101.3.4.2.1"),
    "SHA2-384": (hashes.SHA384(), "2.16.840.1.101.3.4.2.2"),
    "SHA2-512": (hashes.SHA512(), "2.16.840.1.101.3.4.2.3"),
    "SHA2-512/224": (hashes.SHA512_224(), "2.16.840.1.101.3.4.2.5"),
    "SHA2-512/256": (hashes.SHA512_256(), "2.16.840.1.101.3.4.2.6"),
    "SHA3-224": (hashes.SHA3_224(), "2.16.840.1.101.3.4.2.7"),
    "SHA3-256": (hashes.SHA3_256(), "2.16.840.1.101.3.4.2.8"),
    "SHA3-384": (hashes.SHA3_384(), "2.16.840.1.101.3.4.2.9"),
    "SHA3-512": (hashes.SHA3_512(), "2.16.840.1.101.3.4.2.10"),
    "SHAKE-128": (hashes.SHAKE128(32), "2.16.840.1.101.3.4.2.11"),
    "SHAKE-256": (hashes.SHAKE256(64), "2.16.840.1.101.3.4.2.12"),
}


def prehash_message(message: bytes, context: bytes, hash_alg: str) -> bytes:
    """HashML-DSA M' = 0x01 || len(ctx) || ctx || DER(OID(PH)) || PH(M) (FIPS 204 Alg. 4)."""
    algorithm, oid = _PREHASH[hash_alg]
    digest = hashes.Hash(algorithm)
    digest.update(message)
    return b"\x01" + bytes([len(context)]) + context + encode_oid(oid) + digest.finalize()


def mu_of(public_key: bytes, message_prime: bytes) -> bytes:
    """mu = SHAKE256(SHAKE256(pk, 64) || M', 64) (FIPS 204 Alg. 7, lines 6-7)."""
    tr = hashlib.shake_256(public_key).digest(64)
    return hashlib.shake_256(tr + message_prime).digest(64)


def message_prime(case: Case) -> bytes | None:
    """M' for the external and internal (non-mu) interfaces; None for the external-mu one."""
    kind = interface(case)
    if kind == "external/pure":
        context = case.hex("context")
        return b"\x00" + bytes([len(context)]) + context + case.hex("message")
    if kind == "external/preHash":
        return prehash_message(case.hex("message"), case.hex("context"), case.test["hashAlg"])
    if kind == "internal":
        return case.hex("message")
    return None


def mu_for(case: Case, public_key: bytes) -> bytes:
    m_prime = message_prime(case)
    return case.hex("mu") if m_prime is None else mu_of(public_key, m_prime)


# --- the vector files' README --------------------------------------------------------------------


def readme_counts() -> dict[str, int]:
    """Test counts per file from the table in ``acvp/README.md``."""
    counts: dict[str, int] = {}
    for line in (ACVP_DIR / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+\.json)`\s*\|[^|]*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", line)
        if match:
            counts[match.group(1)] = int(match.group(3))
    return counts


def readme_sha256() -> dict[str, str]:
    """SHA-256 of each filtered file, from the "Full SHA-256 of the filtered files" block."""
    text = (ACVP_DIR / "README.md").read_text()
    return {
        name: digest
        for digest, name in re.findall(r"^([0-9a-f]{64})  (ML-[^/\s]+\.json)$", text, re.MULTILINE)
    }
