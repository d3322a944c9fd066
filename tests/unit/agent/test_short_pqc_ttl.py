"""A ``max_pqc_ttl`` below the classical SVID's lifetime (issue 12, item 4).

The CA caps PQC certificates at ``max_pqc_ttl`` (and at its intermediate's notAfter), so they can end
well before the classical SVID they are bound to. The CA allows one *key set* per classical SVID, so
the agent renews with the same keys: at half of the PQC certificates' life it asks again and the CA,
seeing the same keys past that point, certifies them anew instead of answering from its ledger.
Workloads must never be served expired PQC credentials while their classical SVID is valid.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator

import pytest

from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError
from spire_pqc.x509.load import load_der_certificate
from tests.unit.agent._support import dev_config, short_dir
from tests.unit.agent.test_restart import TD, CountingCA, Node, eventually, fetch, new_svid

PQC_TTL = dt.timedelta(seconds=4)


@pytest.fixture
def node() -> Iterator[Node]:
    directory = short_dir()
    config = dataclasses.replace(
        dev_config(directory), retry_initial=dt.timedelta(seconds=0.02), retry_max=dt.timedelta(seconds=0.05)
    )
    authority = DevAuthority.generate(TD)
    ca = CountingCA(authority)
    bundles = BundleSet([X509Bundle(TD, [authority.classical.certificate])])
    ca._local = LocalCAClient(PQCIssuer(authority.hierarchy.intermediate, TD, bundles, max_ttl=PQC_TTL))
    yield Node(config, authority, new_svid(authority), ca)
    shutil.rmtree(directory, ignore_errors=True)


def test_the_ca_certifies_the_same_keys_again_past_half_of_a_short_pqc_life() -> None:
    authority = DevAuthority.generate(TD)
    bundles = BundleSet([X509Bundle(TD, [authority.classical.certificate])])
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    issuer = PQCIssuer(authority.hierarchy.intermediate, TD, bundles, max_ttl=PQC_TTL, clock=lambda: clock[0])
    svid = new_svid(authority)
    mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()

    def ask() -> bytes:
        request = build_request(
            svid.chain_der_list, svid.key, mldsa, mlkem.public_key().spki(),
            timestamp_ms=int(clock[0].timestamp() * 1000),
        )  # fmt: skip
        return issuer.issue(request).response.pqc_svid_chain[0]

    first = ask()
    assert ask() == first  # a retry before half of its life: the ledger's answer
    clock[0] = now + PQC_TTL * 0.6
    renewed = load_der_certificate(ask(), what="renewed")
    assert renewed.not_valid_after_utc > load_der_certificate(first, what="first").not_valid_after_utc
    # Other keys for the same classical SVID are still a duplicate.
    mldsa = MLDSA65PrivateKey.generate()
    with pytest.raises(IssuanceError, match="already obtained PQC credentials for other keys"):
        ask()


@pytest.mark.asyncio
async def test_workloads_get_renewed_pqc_credentials_before_the_short_ones_expire(node: Node) -> None:
    agent, _source = node.agent()
    async with agent:
        first = (await fetch(agent)).svids[0]
        first_end = first.pqc_chain[0].not_valid_after_utc
        assert first_end < first.classical_chain[0].not_valid_after_utc
        # Past the first PQC certificates' end, the agent serves renewed ones (same keys, later notAfter).
        await eventually(
            lambda: dt.datetime.now(dt.UTC) > first_end + dt.timedelta(seconds=0.5), "first expired", 15
        )
        latest = (await fetch(agent)).svids[0]
        now = dt.datetime.now(dt.UTC)
        assert latest.pqc_chain[0].not_valid_after_utc > now, "served an expired PQC SVID"
        assert latest.kem_chain[0].not_valid_after_utc > now
        assert latest.pqc_key.public_key() == first.pqc_key.public_key()
        latest.verify(classical_bundles=node_bundles(node), pqc_bundles=pqc_bundles(node), at=now)


def node_bundles(node: Node) -> BundleSet:
    return BundleSet([X509Bundle(TD, [node.authority.classical.certificate])])


def pqc_bundles(node: Node) -> BundleSet:
    return BundleSet([X509Bundle(TD, [node.authority.hierarchy.root])])
