"""Backend selection through ``SPIRE_PQC_BACKEND``: unusable choices fail loudly, ``auto`` is openssl,
liboqs agrees with OpenSSL, and the choice is visible (logs, metrics, ``backend_info``).

The backend is chosen once per process, so each selection scenario runs in a fresh interpreter (the
project's .venv python, ``sys.executable``). Where liboqs must be absent it is hidden from the child
(``OQS_INSTALL_PATH`` points at an empty directory and ``ctypes.util.find_library`` answers None for
it), so the result does not depend on what this machine has installed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.backends.openssl.backend import backend as cryptography_backend
from prometheus_client import CollectorRegistry, generate_latest

from spire_pqc.crypto import _backend, select_backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.crypto.status import backend_info, log_backend, register_backend_metric
from spire_pqc.errors import BackendUnavailableError
from tests._backends import LIBOQS_VERSION, backend_instance, liboqs_env, require_liboqs

# Runs before spire_pqc is imported in the child. {poison} optionally makes cryptography's ML-DSA
# module unimportable, the way an old cryptography without it would behave.
_WRAPPER = """
import ctypes.util, json, sys
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name in ("oqs", "liboqs") else _find(name)
if {poison}:
    sys.modules["cryptography.hazmat.primitives.asymmetric.mldsa"] = None
from spire_pqc.errors import BackendUnavailableError
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.hybrid import X25519MLKEM768PrivateKey
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

public = bytes.fromhex(sys.argv[1])
operations = {{
    "backend_name": backend_name,
    "mldsa_generate": MLDSA65PrivateKey.generate,
    "mldsa_verify": lambda: MLDSA65PublicKey(public).verify(bytes(3309), b"m", context=b""),
    "mlkem_generate": MLKEM768PrivateKey.generate,
    "x25519mlkem768_generate": X25519MLKEM768PrivateKey.generate,
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
}


def _python(
    child: str, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``child`` in a fresh interpreter (its own backend choice); it must exit 0."""
    completed = subprocess.run(
        [sys.executable, "-c", child, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def _clean_env(**values: str) -> dict[str, str]:
    """This environment without any SPIRE_PQC_* / OQS_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIRE_PQC_", "OQS_"))}
    env.update(values)
    return env


def _run_child(tmp_path: Path, backend: str, *, poison_mldsa: bool) -> dict[str, list[str]]:
    env = _clean_env(SPIRE_PQC_BACKEND=backend, OQS_INSTALL_PATH=str(tmp_path))  # empty: no liboqs here
    public = MLDSA65PrivateKey.generate().public_key().raw().hex()
    completed = _python(_WRAPPER.format(poison=poison_mldsa), env, public)
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
    assert "make liboqs" in results["mldsa_generate"][1]


def test_absent_liboqs_is_never_downloaded_or_built(tmp_path: Path) -> None:
    """liboqs-python clones and builds liboqs when it finds none: the backend must not let it try.

    ``git``, ``cmake`` and ``ninja`` on the child's PATH are recorders; HOME is a fresh directory, where
    liboqs-python would install into ``~/_oqs``.
    """
    home, tools, record = tmp_path / "home", tmp_path / "bin", tmp_path / "invoked"
    home.mkdir()
    tools.mkdir()
    for tool in ("git", "cmake", "ninja"):
        script = tools / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {record}\nexit 1\n')
        script.chmod(0o755)
    env = _clean_env(HOME=str(home), PATH=f"{tools}:{os.environ.get('PATH', '')}", SPIRE_PQC_BACKEND="liboqs")
    child = (
        "import ctypes.util; ctypes.util.find_library = lambda name: None\n"
        "from spire_pqc.crypto.mldsa import MLDSA65PrivateKey\n"
        "from spire_pqc.errors import BackendUnavailableError\n"
        "import sys\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        MLDSA65PrivateKey.generate()\n"
        "    except BackendUnavailableError as exc:\n"
        "        print(exc)\n"
        "print('oqs' in sys.modules)\n"
    )
    completed = _python(child, env)
    lines = completed.stdout.splitlines()
    assert len(lines) == 4 and all("shared library was not found" in line for line in lines[:3]), lines
    assert lines[3] == "False"  # liboqs-python was never imported
    assert not record.exists(), record.read_text()
    assert not (home / "_oqs").exists()


def test_failed_backend_is_not_searched_again(tmp_path: Path) -> None:
    """After one failed load every PQ operation fails at once (no library search per operation)."""
    env = _clean_env(OQS_INSTALL_PATH=str(tmp_path), SPIRE_PQC_BACKEND="liboqs")
    child = (
        "import ctypes.util\n"
        "calls = []\n"
        "ctypes.util.find_library = lambda name: calls.append(name)\n"
        "from spire_pqc.crypto.mlkem import MLKEM768PrivateKey\n"
        "from spire_pqc.errors import BackendUnavailableError\n"
        "counts = []\n"
        "for _ in range(5):\n"
        "    try:\n"
        "        MLKEM768PrivateKey.generate()\n"
        "    except BackendUnavailableError:\n"
        "        counts.append(len(calls))\n"
        "print(counts)\n"
    )
    completed = _python(child, env)
    counts = json.loads(completed.stdout)
    assert len(counts) == 5 and counts[0] > 0 and len(set(counts)) == 1, counts


def test_auto_without_any_backend(tmp_path: Path) -> None:
    results = _run_child(tmp_path, "auto", poison_mldsa=True)
    _assert_all_refused(results, "no post-quantum backend is usable")
    assert "refusing to continue without post-quantum cryptography" in results["mldsa_generate"][1]
    assert "SPIRE_PQC_BACKEND=liboqs" in results["mldsa_generate"][1]


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


def test_auto_is_openssl_even_where_liboqs_is_installed() -> None:
    """`auto` never looks for liboqs, so every process of a node agrees whatever its HOME or paths."""
    child = (
        "import sys\n"
        "from spire_pqc.crypto import backend_name\n"
        "from spire_pqc.crypto.mldsa import MLDSA65PrivateKey\n"
        "MLDSA65PrivateKey.generate()\n"
        "print(backend_name(), 'oqs' in sys.modules)\n"
    )
    for backend in ("auto", ""):
        env = liboqs_env(SPIRE_PQC_BACKEND=backend)
        completed = _python(child, env)
        assert completed.stdout.split() == ["openssl", "False"]


# --- liboqs selected through SPIRE_PQC_BACKEND, in its own process ---------------------------------

_LIBOQS_CHILD = """
import json, sys
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.crypto.status import backend_info

request = json.loads(sys.stdin.read())
dsa = MLDSA65PrivateKey.from_seed(bytes.fromhex(request["dsa_seed"]))
kem = MLKEM768PrivateKey.from_seed(bytes.fromhex(request["kem_seed"]))
MLDSA65PublicKey(bytes.fromhex(request["peer_pk"])).verify(
    bytes.fromhex(request["peer_sig"]), b"from openssl", context=b"spire-pqc/test"
)
shared, ct = MLKEM768PublicKey(bytes.fromhex(request["peer_ek"])).encapsulate()
info = backend_info()
print(json.dumps({
    "backend": backend_name(),
    "version": info.version,
    "liboqs_path": info.liboqs_path,
    "dsa_pk": dsa.public_key().raw().hex(),
    "kem_ek": kem.public_key().raw().hex(),
    "sig": dsa.sign(b"from liboqs", context=b"spire-pqc/test").hex(),
    "decapsulated": kem.decapsulate(bytes.fromhex(request["ct_for_liboqs"])).hex(),
    "shared": shared.hex(),
    "ct": ct.hex(),
}))
"""


@pytest.mark.liboqs
def test_liboqs_process_agrees_with_openssl(summary: Callable[[str, str], None]) -> None:
    """A process started with SPIRE_PQC_BACKEND=liboqs: same keys from the same seeds, signatures and
    KEM ciphertexts crossing both ways, and nothing on stdout but its own output (the plugin's stdout
    is the go-plugin handshake channel; liboqs-python logs to stdout when imported)."""
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
    completed = _python(_LIBOQS_CHILD, liboqs_env(), stdin=json.dumps(request))
    assert len(completed.stdout.splitlines()) == 1, completed.stdout[:500]
    assert completed.stderr == ""
    reply = json.loads(completed.stdout)
    assert (reply["backend"], reply["version"]) == ("liboqs", LIBOQS_VERSION)
    assert reply["liboqs_path"].startswith(str(require_liboqs()))
    # Same seeds, same keys; signatures and ciphertexts cross in both directions.
    ours_dsa = MLDSA65PrivateKey.from_seed(dsa_seed)
    assert reply["dsa_pk"] == ours_dsa.public_key().raw().hex()
    assert reply["kem_ek"] == ours_kem.public_key().raw().hex()
    MLDSA65PublicKey(bytes.fromhex(reply["dsa_pk"])).verify(
        bytes.fromhex(reply["sig"]), b"from liboqs", context=b"spire-pqc/test"
    )
    assert bytes.fromhex(reply["decapsulated"]) == shared_for_liboqs
    assert peer_kem.decapsulate(bytes.fromhex(reply["ct"])) == bytes.fromhex(reply["shared"])
    summary("liboqs backend", f"liboqs {reply['version']} at {reply['liboqs_path']}: agrees with openssl")


# --- visibility ---------------------------------------------------------------------------------


@pytest.mark.liboqs
def test_backend_info_and_metric(pq_backend: str) -> None:
    info = backend_info()
    assert info.backend == pq_backend
    openssl_version = cryptography_backend.openssl_version_text().split()[1]
    assert info.cryptography_openssl.startswith(f"OpenSSL {openssl_version}")
    if pq_backend == "liboqs":
        assert (info.version, info.liboqs) == (LIBOQS_VERSION, LIBOQS_VERSION)
        assert info.liboqs_path is not None and info.liboqs_path.startswith(str(require_liboqs()))
        assert info.liboqs_python == "0.16.0.1"
        assert f"liboqs {LIBOQS_VERSION} loaded from {info.liboqs_path}" in info.describe()
    else:
        assert info.version == openssl_version
        assert info.liboqs is None and info.liboqs_path is None
    registry = CollectorRegistry()
    register_backend_metric(registry)
    labels = {"backend": pq_backend, "version": info.version}
    assert registry.get_sample_value("spire_pqc_crypto_backend_info", labels) == 1.0
    text = generate_latest(registry).decode()
    assert f'spire_pqc_crypto_backend_info{{backend="{pq_backend}",version="{info.version}"}} 1.0' in text


@pytest.mark.liboqs
def test_backend_info_probes_liboqs_under_openssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backend, "_selected", backend_instance("openssl"))
    monkeypatch.setenv("OQS_INSTALL_PATH", str(require_liboqs()))
    info = backend_info(probe_liboqs=True)
    assert (info.backend, info.liboqs) == ("openssl", LIBOQS_VERSION)
    assert "available at" in info.describe()


def test_backend_info_probe_treats_an_unreadable_install_path_as_absent(tmp_path: Path) -> None:
    """An agent running as its own user, with OQS_INSTALL_PATH inherited from root (its /status computes
    this document): no liboqs found, not a PermissionError."""
    private = tmp_path / "root-only"
    (private / "lib").mkdir(parents=True)
    private.chmod(0o700)
    child = (
        "from spire_pqc.crypto.status import backend_info; print(backend_info(probe_liboqs=True).liboqs_path)"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", child],
        env=_clean_env(OQS_INSTALL_PATH=str(private)), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "PermissionError" not in result.stderr, result.stderr
    assert result.stdout.strip() == "None"


def test_log_backend(pq_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("spire_pqc.test")
    with caplog.at_level(logging.INFO, logger="spire_pqc.test"):
        info = log_backend(logger)
    assert info is not None and info.backend == pq_backend
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert caplog.records[0].getMessage() == f"post-quantum backend: {info.describe()}"


def test_log_backend_reports_an_unusable_backend_without_raising(tmp_path: Path) -> None:
    env = _clean_env(OQS_INSTALL_PATH=str(tmp_path), SPIRE_PQC_BACKEND="liboqs")
    child = (
        "import ctypes.util, logging, sys\n"
        "ctypes.util.find_library = lambda name: None\n"
        "from spire_pqc.crypto.status import log_backend\n"
        "logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
        "print(log_backend(logging.getLogger('t')))\n"
    )
    completed = _python(child, env)
    first, second = completed.stdout.splitlines()
    assert first.startswith("ERROR post-quantum backend unavailable: liboqs backend requested")
    assert second == "None"


@pytest.mark.liboqs
def test_liboqs_python_loading_another_build_is_refused(tmp_path: Path) -> None:
    """If liboqs-python ends up on a different liboqs than the one the backend found and checked (two
    builds installed), the backend refuses to run rather than use a library it did not check."""
    built = require_liboqs() / "lib" / "liboqs.so"
    copies = []
    for name in ("a", "b"):
        (tmp_path / name / "lib").mkdir(parents=True)
        copy = tmp_path / name / "lib" / "liboqs.so"
        copy.write_bytes(built.resolve().read_bytes())
        copies.append(copy)
    child = (
        "import ctypes.util, sys\n"
        f"ctypes.util.find_library = lambda name: {str(copies[0])!r} if name == 'oqs' else None\n"
        "from spire_pqc.crypto import _liboqs\n"
        f"_liboqs._candidates = lambda: [{str(copies[1])!r}]  # the backend's search finds build b\n"
        "from spire_pqc.crypto.mldsa import MLDSA65PrivateKey\n"
        "from spire_pqc.errors import BackendUnavailableError\n"
        "try:\n"
        "    MLDSA65PrivateKey.generate()\n"
        "except BackendUnavailableError as exc:\n"
        "    print(exc)\n"
    )
    env = liboqs_env(OQS_INSTALL_PATH=str(tmp_path / "b"))
    completed = _python(child, env)
    assert f"liboqs-python loaded {copies[0]}, not {copies[1]}: two liboqs builds" in completed.stdout
