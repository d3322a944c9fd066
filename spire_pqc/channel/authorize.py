"""Authorizers: who may be on the other end of a channel, decided after the peer's chain verified.

An authorizer is called with the peer's SPIFFE ID and its *verified* certificate chain (leaf
first) and returns None to accept or raises :class:`~spire_pqc.errors.AuthorizationError` to
refuse, like go-spiffe's ``tlsconfig.Authorizer``. Every channel constructor that accepts a peer
takes one as a required argument; accepting anyone needs the explicitly named
:func:`unsafe_authorize_any`, which logs a warning each time it lets a peer in.

Example::

    authorizer = authorize_one_of("spiffe://example.org/web", "spiffe://example.org/api")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from spire_pqc.errors import AuthorizationError
from spire_pqc.spiffeid import (
    Matcher,
    SpiffeId,
    TrustDomain,
    match_id,
    match_member_of,
    match_one_of,
)

log = logging.getLogger(__name__)


class Authorizer(Protocol):
    """Accepts a verified peer by returning None, refuses it by raising AuthorizationError."""

    def __call__(self, spiffe_id: SpiffeId, chain: Sequence[x509.Certificate], /) -> None: ...


@dataclass(frozen=True, slots=True)
class _MatcherAuthorizer:
    matcher: Matcher
    label: str

    def __call__(self, spiffe_id: SpiffeId, chain: Sequence[x509.Certificate], /) -> None:
        self.matcher(spiffe_id)

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True, slots=True)
class _AnyAuthorizer:
    def __call__(self, spiffe_id: SpiffeId, chain: Sequence[x509.Certificate], /) -> None:
        log.warning("unsafe_authorize_any: accepting peer %s without an authorization policy", spiffe_id)

    def __repr__(self) -> str:
        return "unsafe_authorize_any()"


def authorize_id(expected: SpiffeId | str) -> Authorizer:
    """Accept exactly the peer ``expected``."""
    matcher = match_id(expected)
    return _MatcherAuthorizer(matcher, f"authorize_id({str(expected)!r})")


def authorize_one_of(*allowed: SpiffeId | str) -> Authorizer:
    """Accept any of ``allowed``; with none given it refuses every peer (fails closed)."""
    shown = ", ".join(repr(i) for i in sorted(str(a) for a in allowed))
    return _MatcherAuthorizer(match_one_of(*allowed), f"authorize_one_of({shown})")


def authorize_member_of(trust_domain: TrustDomain | str) -> Authorizer:
    """Accept every workload of ``trust_domain`` (a TrustDomain, a name or ``spiffe://name``)."""
    return _MatcherAuthorizer(match_member_of(trust_domain), f"authorize_member_of({str(trust_domain)!r})")


def authorize_matcher(matcher: Matcher) -> Authorizer:
    """Adapt a SPIFFE ID :class:`~spire_pqc.spiffeid.Matcher` (or any custom callable ID check)."""
    if not callable(matcher):
        raise TypeError("authorize_matcher needs a callable matcher")
    return _MatcherAuthorizer(matcher, f"authorize_matcher({matcher!r})")


def unsafe_authorize_any() -> Authorizer:
    """Accept every peer whose credentials verified. Logs a warning on each use; never a default."""
    return _AnyAuthorizer()


def check_authorizer(authorizer: object) -> Authorizer:
    """Refuse a missing authorizer up front (a None would otherwise fail only at the first peer)."""
    if authorizer is None or not callable(authorizer):
        raise AuthorizationError(
            "an authorizer is required (authorize_id, authorize_one_of, authorize_member_of, "
            "authorize_matcher, or the explicit unsafe_authorize_any)"
        )
    return authorizer
