"""Async forms of the CPU-bound PQ operations, so the event loop is never blocked by them.

Each call runs on a bounded thread pool shared by the process. OpenSSL releases the GIL for part
of each operation (measured: 1.4x throughput with two threads on two cores), and the loop thread
keeps serving I/O meanwhile. The pool size defaults to the CPU count.

:func:`run_mldsa` is for a step of a few ML-DSA-65 operations (one signature, or the handful of
verifications of a peer's proof): it runs inline when the backend makes them sub-millisecond
(liboqs: sign about 0.09 ms, verify 0.03 ms on the development VM), where the hop to the pool and
back costs more than the work, and on the pool otherwise (the openssl backend signs in about 1 ms).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from spire_pqc.crypto import _backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

T = TypeVar("T")


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="spire-pqc-crypto")


async def run_crypto(func: Callable[[], T]) -> T:
    """Run ``func`` (CPU-bound, thread-safe) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), func)


#: Backends whose ML-DSA-65 sign and verify take well under a millisecond (`spire-pqc bench crypto`).
_SUB_MILLISECOND_MLDSA = frozenset({"liboqs"})


def mldsa_inline() -> bool:
    """Whether a few ML-DSA-65 operations are cheap enough to run on the event loop itself."""
    return _backend.backend().name in _SUB_MILLISECOND_MLDSA


async def run_mldsa(func: Callable[[], T]) -> T:
    """Run a step of a few ML-DSA-65 operations: inline on a sub-millisecond backend, else off the loop."""
    if mldsa_inline():
        return func()
    return await run_crypto(func)


async def generate_mldsa65() -> MLDSA65PrivateKey:
    return await run_crypto(MLDSA65PrivateKey.generate)


async def generate_mlkem768() -> MLKEM768PrivateKey:
    return await run_crypto(MLKEM768PrivateKey.generate)


async def sign(key: MLDSA65PrivateKey, message: bytes, *, context: bytes) -> bytes:
    return await run_crypto(functools.partial(key.sign, message, context=context))


async def verify(key: MLDSA65PublicKey, signature: bytes, message: bytes, *, context: bytes) -> None:
    """Raise InvalidSignatureError unless the signature verifies."""
    await run_crypto(functools.partial(key.verify, signature, message, context=context))


async def encapsulate(key: MLKEM768PublicKey) -> tuple[bytes, bytes]:
    return await run_crypto(key.encapsulate)


async def decapsulate(key: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    return await run_crypto(functools.partial(key.decapsulate, ciphertext))
