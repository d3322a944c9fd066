"""Wall time of each post-quantum primitive, reported to whoever registered an observer.

The node agent exports it as ``spire_pqc_agent_pqc_operation_duration_seconds`` (docs/metrics.md).
Observers are process-wide (a primitive does not know which component asked for it), so a process
with several agents reports every operation to each. With no observer registered, :func:`timed`
costs one attribute read.

Example::

    from spire_pqc.crypto import timing
    timing.add_observer(lambda op, alg, backend, seconds: print(op, alg, backend, seconds))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from spire_pqc.crypto import _backend

# (operation: keygen|sign|verify|encaps|decaps, algorithm: ML-DSA-65|ML-KEM-768, backend, seconds)
Observer = Callable[[str, str, str, float], None]


class _Observers:
    """Copy on write: readers take ``current`` without a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: tuple[Observer, ...] = ()


_OBSERVERS = _Observers()


def add_observer(observer: Observer) -> None:
    with _OBSERVERS.lock:
        _OBSERVERS.current = (*_OBSERVERS.current, observer)


def remove_observer(observer: Observer) -> None:
    """Forget ``observer`` (no error if it was not registered)."""
    with _OBSERVERS.lock:
        _OBSERVERS.current = tuple(o for o in _OBSERVERS.current if o != observer)  # bound methods: ==


@contextmanager
def timed(operation: str, algorithm: str) -> Iterator[None]:
    """Report the wall time of the ``with`` body (also when it raises) to every observer."""
    observers = _OBSERVERS.current
    if not observers:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        backend = _backend.backend().name
        for observer in observers:
            observer(operation, algorithm, backend, elapsed)
