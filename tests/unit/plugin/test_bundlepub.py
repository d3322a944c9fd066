"""The plugin's PQC bundle publisher and trust-domain signers: what a follower verifies, new sequence
numbers only for new content, signers re-issued before their end with the previous one still published."""

from __future__ import annotations

import datetime as dt

from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.jwtsigning import IntermediateSigners, jwt_bundle_of
from spire_pqc.federation.document import verify_signed_bundle
from spire_pqc.plugin.bundlepub import PqcBundlePublisher
from spire_pqc.spiffeid import TrustDomain

TD = TrustDomain.parse("example.org")


def test_the_document_verifies_and_changes_sequence_only_with_its_content() -> None:
    hierarchy = PQCHierarchy.generate(TD)
    other = PQCHierarchy.generate(TD)
    roots = [hierarchy.root]
    clock = [1_000.0]
    signers = IntermediateSigners(hierarchy.intermediate, TD)
    publisher = PqcBundlePublisher(
        TD, roots=lambda: roots, signers=signers, refresh_hint=5, clock=lambda: clock[0]
    )
    first = publisher.document()
    bundle = verify_signed_bundle(TD, first, trusted_roots=[hierarchy.root])
    assert (bundle.sequence, bundle.refresh_hint, bundle.x509_authorities) == (1_000, 5, (hierarchy.root,))
    assert set(bundle.jwt_authorities) == {k.kid for k in jwt_bundle_of(TD, signers)}
    assert publisher.document() is first  # nothing changed: the same document, the same number

    roots.append(other.root)  # a new root published beside the old one: signed under the old
    second = publisher.document()
    rotated = verify_signed_bundle(TD, second, trusted_roots=[hierarchy.root], previous=bundle)
    assert rotated.sequence == 1_001 and rotated.x509_authorities == (hierarchy.root, other.root)

    clock[0] = 5_000.0
    roots.pop()
    assert verify_signed_bundle(TD, publisher.document(), trusted_roots=[hierarchy.root]).sequence == 5_000


def test_signers_are_reissued_before_their_end_and_the_previous_stays_published() -> None:
    hierarchy = PQCHierarchy.generate(TD)
    now = [dt.datetime.now(dt.UTC)]
    signers = IntermediateSigners(
        hierarchy.intermediate, TD, ttl=dt.timedelta(hours=3), renew_before=dt.timedelta(hours=1),
        clock=lambda: now[0],
    )  # fmt: skip
    first = signers.active()
    assert signers.published() == (first,)
    now[0] += dt.timedelta(hours=2, minutes=30)  # less than an hour left: a new signer
    second = signers.active()
    assert second is not first and signers.published() == (second, first)
    now[0] = first.not_after + dt.timedelta(seconds=1)  # the previous one's certificate ended
    assert signers.published() == (second,)
