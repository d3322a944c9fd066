"""The PQC JWT signer follows the intermediate schedule (issue 15 with issue 12's lifecycle).

:class:`ScheduleSigners` over the pure schedule of real intermediates under one PQC root: the *next*
intermediate's signer is in the PQC JWT bundle before it signs (a token it signs validates with the
bundle published earlier), the *active* one signs, a *retiring* one's tokens keep validating, a
superseded signer stays published until the last token it signed expires, and a *revoked*
intermediate's signer is withdrawn and refused (RevokedError naming the key) by a verifier that still
holds an older bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection
from pathlib import Path

import pytest

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.intermediates import Intermediate, IntermediateSet, schedule
from spire_pqc.ca.jwtsigning import JwtSigning, ScheduleSigners
from spire_pqc.errors import ConfigError, RevokedError, TokenKeyError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
from spire_pqc.jwtsvid.jws import CompactJws
from spire_pqc.spiffeid import SpiffeId
from tests.unit.plugin.test_intermediates import TD, issue

HOUR = dt.timedelta(hours=1)
SPIRE = JwtSigningKey.generate()  # SPIRE's classical JWT key
JWT_BUNDLE = jwks_bytes([SPIRE.public_jwk()])
WORKLOAD = SpiffeId.parse("spiffe://example.org/app")


@pytest.fixture(scope="module")
def hierarchy() -> PQCHierarchy:
    return PQCHierarchy.generate(TD)


class Plugin:
    """The plugin's view: a schedule of intermediates, a clock, revocations; the CA's JwtSigning."""

    def __init__(self, hierarchy: PQCHierarchy, intermediates: list[Intermediate]) -> None:
        self.root = hierarchy.root
        self.intermediates = intermediates
        self.now = dt.datetime.now(dt.UTC)
        self.svid_ttl = HOUR
        self.revoked: set[str] = set()
        self.signers = ScheduleSigners(TD, self.schedule, lambda inter: inter.ca.key, clock=lambda: self.now)
        self.jwt = JwtSigning(TD, self.signers, (hierarchy.root,))

    def schedule(self) -> IntermediateSet:
        return schedule(
            self.intermediates, at=self.now, activation=0.5, svid_ttl=self.svid_ttl, revoked=self.revoked
        )

    def bundle(self) -> PqcJwtBundle:
        """The PQC JWT bundle as the CA publishes it now."""
        return PqcJwtBundle.parse(TD, self.jwt.jwks())

    def sign(self, ttl: int = 300) -> HybridJwtSvid:
        classical = SPIRE.sign(WORKLOAD, ["a"], dt.timedelta(seconds=ttl))
        return HybridJwtSvid(classical, self.jwt.sign(classical, JWT_BUNDLE))

    def check(self, token: HybridJwtSvid, bundle: PqcJwtBundle, revoked: Collection[str] = ()) -> None:
        validate(
            token, "a", jwt_bundles={TD: JWT_BUNDLE}, pqc_jwt_bundles={TD: bundle},
            pqc_bundles=BundleSet([X509Bundle(TD, [self.root], revoked=revoked)]),
        )  # fmt: skip


def kid(token: HybridJwtSvid) -> str:
    value = CompactJws.parse(token.pqc, what="PQC part").header_str("kid")
    assert value is not None
    return value


def test_next_published_active_signs_retiring_validates_until_its_tokens_expire(
    hierarchy: PQCHierarchy, tmp_path: Path
) -> None:
    a = issue(hierarchy, tmp_path, "a", start=-HOUR, life=4 * HOUR)  # midpoint: an hour from now
    b = issue(hierarchy, tmp_path, "b", start=-HOUR / 2, life=4 * HOUR)
    plugin = Plugin(hierarchy, [a, b])

    # A active, B next: both keys published, A's signs.
    published = plugin.bundle()
    assert len(published) == 2
    by_a = plugin.sign()
    plugin.check(by_a, published)
    a_kid = kid(by_a)
    (b_kid,) = [k.kid for k in published if k.kid != a_kid]

    # B activates (its activate-at has come): B's key — published an hour ahead — signs; a token it
    # signs validates with the bundle verifiers already held; A's token still validates now (retiring).
    plugin.intermediates = [a, dataclasses.replace(b, activate_at=plugin.now - dt.timedelta(seconds=1))]
    by_b = plugin.sign()
    assert kid(by_b) == b_kid
    plugin.check(by_b, published)
    plugin.check(by_a, plugin.bundle())
    assert {k.kid for k in plugin.bundle()} == {a_kid, b_kid}

    # A retires (everything it certified expired): its signer stays only while a token it signed lives.
    plugin.svid_ttl = dt.timedelta(0)
    assert {k.kid for k in plugin.bundle()} == {a_kid, b_kid}
    plugin.check(by_a, plugin.bundle())
    plugin.now += dt.timedelta(seconds=301)  # A's last token expired
    assert {k.kid for k in plugin.bundle()} == {b_kid}


def test_a_retired_signer_that_signed_nothing_is_dropped_at_once(
    hierarchy: PQCHierarchy, tmp_path: Path
) -> None:
    a = issue(hierarchy, tmp_path, "a", start=-HOUR, life=4 * HOUR)
    b = issue(hierarchy, tmp_path, "b", start=-HOUR / 2, life=4 * HOUR)
    plugin = Plugin(hierarchy, [a, b])
    assert len(plugin.bundle()) == 2
    plugin.intermediates = [a, dataclasses.replace(b, activate_at=plugin.now - dt.timedelta(seconds=1))]
    plugin.svid_ttl = dt.timedelta(0)
    assert [k.kid for k in plugin.bundle()] == [kid(plugin.sign())]


def test_a_revoked_intermediates_signer_is_withdrawn_and_refused(
    hierarchy: PQCHierarchy, tmp_path: Path
) -> None:
    a = issue(hierarchy, tmp_path, "a", start=-HOUR, life=4 * HOUR)
    b = issue(hierarchy, tmp_path, "b", start=-HOUR / 2, life=4 * HOUR)
    plugin = Plugin(hierarchy, [a, b])
    before = plugin.bundle()
    by_a = plugin.sign()
    plugin.revoked = {a.key_id}

    # The CA withdraws A's key and signs with B's (the next one takes over at once).
    after = plugin.bundle()
    assert kid(by_a) not in after and len(after) == 1
    assert kid(plugin.sign()) in after
    with pytest.raises(TokenKeyError):
        plugin.check(by_a, after)
    # A verifier still holding the earlier bundle refuses A's key once it knows the revocation.
    with pytest.raises(RevokedError) as refused:
        plugin.check(by_a, before, revoked={a.key_id})
    assert refused.value.check == "revoked" and kid(by_a)[:20] in str(refused.value)
    assert a.key_id[:16] in str(refused.value)

    plugin.revoked = {a.key_id, b.key_id}
    assert len(plugin.bundle()) == 0
    with pytest.raises(ConfigError):
        plugin.sign()
