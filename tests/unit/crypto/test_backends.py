"""Backend selection: the no-backend paths fail loudly, and liboqs agrees with OpenSSL where present.

The backend is chosen once per process, so each scenario runs in a fresh interpreter (the project's
.venv python, ``sys.executable``). liboqs is hidden from those children (``OQS_INSTALL_PATH`` points
at an empty directory and ``ctypes.util.find_library("oqs")`` answers None), so the result does not
depend on whether this machine has liboqs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from spire_pqc.crypto import _backend, select_backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import BackendUnavailableError

# Runs before spire_pqc is imported in the child. {poison} optionally makes cryptography's ML-DSA
# module unimportable, the way an old cryptography without it would behave.
_WRAPPER = """
import ctypes.util, json, sys
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "oqs" else _find(name)
if {poison}:
    sys.modules["cryptography.hazmat.primitives.asymmetric.mldsa"] = None
from spire_pqc.errors import BackendUnavailableError
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.hybrid import X25519MLKEM768PrivateKey, XWingPrivateKey
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

public = bytes.fromhex(sys.argv[1])
operations = {{
    "backend_name": backend_name,
    "mldsa_generate": MLDSA65PrivateKey.generate,
    "mldsa_verify": lambda: MLDSA65PublicKey(public).verify(bytes(3309), b"m", context=b""),
    "mlkem_generate": MLKEM768PrivateKey.generate,
    "x25519mlkem768_generate": X25519MLKEM768PrivateKey.generate,
    "xwing_generate": XWingPrivateKey.generate,
}}
results = {{}}
for name, operation in operations.items():
    try:
        value = operation()
    except BackendUnavailableError as exc:
        results[name] = ["BackendUnavailableError", str(exc)]
    except Exception as exc:
        results[name] = [type(exc).__name__, str(exc)]
    else:
        results[name] = ["ok", repr(value)]
print(json.dumps(results))
"""

PQ_OPERATIONS = {
    "backend_name",
    "mldsa_generate",
    "mldsa_verify",
    "mlkem_generate",
    "x25519mlkem768_generate",
    "xwing_generate",
}


def _run_child(tmp_path: Path, backend: str, *, poison_mldsa: bool) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIRE_PQC_", "OQS_"))}
    env["SPIRE_PQC_BACKEND"] = backend
    env["OQS_INSTALL_PATH"] = str(tmp_path)  # empty: no liboqs here
    public = MLDSA65PrivateKey.generate().public_key().raw().hex()
    completed = subprocess.run(
        [sys.executable, "-c", _WRAPPER.format(poison=poison_mldsa), public],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results: dict[str, list[str]] = json.loads(completed.stdout)
    return results


def _assert_all_refused(results: dict[str, list[str]], message: str) -> None:
    assert set(results) == PQ_OPERATIONS
    for name, (outcome, text) in results.items():
        # Refused with the typed error: no key, no "verified", no classical-only hybrid.
        assert outcome == "BackendUnavailableError", (name, outcome, text)
        assert message in text, (name, text)


def test_liboqs_requested_but_absent(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "liboqs", poison_mldsa=False)
    _assert_all_refused(results, "liboqs backend requested but liboqs's shared library was not found")


def test_auto_without_any_backend(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "auto", poison_mldsa=True)
    _assert_all_refused(results, "no post-quantum backend is usable")
    assert "refusing to continue without post-quantum cryptography" in results["mldsa_generate"][1]


def test_openssl_requested_without_mldsa(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "openssl", poison_mldsa=True)
    _assert_all_refused(results, "openssl backend unusable")


def test_bogus_backend_name(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "bogus", poison_mldsa=False)
    _assert_all_refused(results, "SPIRE_PQC_BACKEND='bogus': expected one of auto, openssl, liboqs")


def test_auto_picks_openssl_in_a_normal_environment(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "auto", poison_mldsa=False)
    assert results.pop("backend_name") == ["ok", "'openssl'"]
    # A working backend checks the (all-zero) signature and rejects it.
    assert results.pop("mldsa_verify") == ["InvalidSignatureError", "ML-DSA-65 signature does not verify"]
    assert all(outcome == "ok" for outcome, _ in results.values()), results


def test_backend_cannot_be_switched_once_chosen() -> None:
    chosen = _backend.backend().name
    assert select_backend("auto") == chosen
    assert select_backend(chosen) == chosen
    other = "liboqs" if chosen == "openssl" else "openssl"
    with pytest.raises(BackendUnavailableError, match="already chosen"):
        select_backend(other)


# --- liboqs (only where its C library is installed) -------------------------------------------------

_LIBOQS_CHILD = """
import json, sys
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

request = json.loads(sys.stdin.read())
dsa = MLDSA65PrivateKey.from_seed(bytes.fromhex(request["dsa_seed"]))
kem = MLKEM768PrivateKey.from_seed(bytes.fromhex(request["kem_seed"]))
MLDSA65PublicKey(bytes.fromhex(request["peer_pk"])).verify(
    bytes.fromhex(request["peer_sig"]), b"from openssl", context=b"spire-pqc/test"
)
shared, ct = MLKEM768PublicKey(bytes.fromhex(request["peer_ek"])).encapsulate()
print(json.dumps({
    "backend": backend_name(),
    "dsa_pk": dsa.public_key().raw().hex(),
    "kem_ek": kem.public_key().raw().hex(),
    "sig": dsa.sign(b"from liboqs", context=b"spire-pqc/test").hex(),
    "decapsulated": kem.decapsulate(bytes.fromhex(request["ct_for_liboqs"])).hex(),
    "shared": shared.hex(),
    "ct": ct.hex(),
}))
"""


@pytest.mark.liboqs
def test_liboqs_agrees_with_openssl(summary: Callable[[str, str], None]) -> None:
    location = _backend.find_liboqs()
    if location is None:
        reason = (
            "liboqs's C library is not installed (looked in OQS_INSTALL_PATH, ~/_oqs/lib and the "
            "system library path): the liboqs backend is not tested here"
        )
        summary("Skipped", reason)
        pytest.skip(reason)
    dsa_seed, kem_seed = os.urandom(32), os.urandom(64)
    peer_dsa, peer_kem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    ours_kem = MLKEM768PrivateKey.from_seed(kem_seed)
    shared_for_liboqs, ct_for_liboqs = ours_kem.public_key().encapsulate()
    request = {
        "dsa_seed": dsa_seed.hex(),
        "kem_seed": kem_seed.hex(),
        "peer_pk": peer_dsa.public_key().raw().hex(),
        "peer_sig": peer_dsa.sign(b"from openssl", context=b"spire-pqc/test").hex(),
        "peer_ek": peer_kem.public_key().raw().hex(),
        "ct_for_liboqs": ct_for_liboqs.hex(),
    }
    env = dict(os.environ, SPIRE_PQC_BACKEND="liboqs")
    completed = subprocess.run(
        [sys.executable, "-c", _LIBOQS_CHILD],
        input=json.dumps(request),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    reply = json.loads(completed.stdout)
    assert reply["backend"] == "liboqs"
    # Same seeds, same keys; signatures and ciphertexts cross in both directions.
    ours_dsa = MLDSA65PrivateKey.from_seed(dsa_seed)
    assert reply["dsa_pk"] == ours_dsa.public_key().raw().hex()
    assert reply["kem_ek"] == ours_kem.public_key().raw().hex()
    MLDSA65PublicKey(bytes.fromhex(reply["dsa_pk"])).verify(
        bytes.fromhex(reply["sig"]), b"from liboqs", context=b"spire-pqc/test"
    )
    assert bytes.fromhex(reply["decapsulated"]) == shared_for_liboqs
    assert peer_kem.decapsulate(bytes.fromhex(reply["ct"])) == bytes.fromhex(reply["shared"])
    summary("liboqs backend", f"liboqs at {location}: keys, signatures and KEM agree with openssl")
