"""Values computed once per state object and shared by every stream that serves that state.

A rotation reaches every open stream with the *same* :class:`~spire_pqc.agent.model.X509State`
object (one upstream subscription per calling process, :mod:`spire_pqc.agent.sources.shared`), so
what depends only on that state — the serialized response, the caller check after the source
answered — is worked out by the first stream and reused by the others.

Entries are keyed by the state *object*, never by an equal-looking value: a state is immutable,
so a value computed from it stays right for as long as it lives, and a new state (any change:
rotation, bundle, federation) is a new object with no entry. Each entry is dropped when its state is
garbage-collected (a weak reference), so nothing here outlives the state it was computed from, and an
``id()`` reused by a later object never finds the old entry.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class PerState(Generic[V]):
    """``get(state, compute)``: ``compute()`` once per live state object, then the same value."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[object], V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, state: object, compute: Callable[[], V]) -> V:
        key = id(state)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is state:
            return entry[1]
        value = compute()
        self._entries[key] = (weakref.ref(state, lambda ref: self._drop(key, ref)), value)
        return value

    def _drop(self, key: int, ref: weakref.ref[object]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]
