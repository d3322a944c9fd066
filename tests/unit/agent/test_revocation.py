"""Revocation of an intermediate PQC CA (issue 12): refused everywhere, re-issued at once.

A real node agent (its Workload API socket, its provisioner and bundle refresh) in front of a PQC CA
whose operator revokes the intermediate that issued the workload's PQC credentials. Within one bundle
refresh the agent stops serving them, hands workloads the revocation with the PQC bundle (so every
verifier — SDK, channels — refuses what that intermediate signed), and re-issues the credentials with
the same keys under the intermediate that replaced it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Iterator

import pytest

from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevAuthority, DevClassicalCA
from spire_pqc.ca.issuer import IntermediateCA, PQCIssuer
from spire_pqc.ca.ledger import MEMORY, open_ledger
from spire_pqc.ca.request import BundleUpdate, IssueRequest, IssueResponse
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import RevokedError
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import X509Svid, verify_pqc_svid
from spire_pqc.x509 import certs
from tests.unit.agent._support import ME, dev_config, short_dir
from tests.unit.agent.test_restart import TD, Node, eventually, fetch

REFRESH = dt.timedelta(milliseconds=200)


class RevokingCA:
    """The plugin's CA endpoint as the agent sees it: issuance and the bundle, with a swappable issuer."""

    def __init__(self, issuer: PQCIssuer) -> None:
        self.local = LocalCAClient(issuer)

    async def issue(self, request: IssueRequest) -> IssueResponse:
        return await self.local.issue(request)

    async def fetch_bundle(self) -> BundleUpdate:
        return await self.local.fetch_bundle()

    async def close(self) -> None:
        return None


@dataclasses.dataclass
class Revocation:
    node: Node
    ca: RevokingCA
    old: IntermediateCA  # A: issued the first credentials, then revoked
    new: IntermediateCA  # B: made the classical SVID's binding (published next), then active
    bundles: BundleSet


@pytest.fixture
def revocation() -> Iterator[Revocation]:
    directory = short_dir()
    config = dataclasses.replace(
        dev_config(directory),
        retry_initial=dt.timedelta(seconds=0.02),
        retry_max=dt.timedelta(seconds=0.05),
        bundle_refresh_interval=REFRESH,
    )
    authority = DevAuthority.generate(TD)
    hierarchy = authority.hierarchy
    old = hierarchy.intermediate
    new_key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    new = IntermediateCA(
        new_key,
        certs.build_intermediate(
            hierarchy.root, hierarchy.root_key, new_key.public_key(), str(TD),
            not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1),
        ),
        (hierarchy.root,),
    )  # fmt: skip
    classical = DevClassicalCA(TD, new.key)  # SPIRE's composer already binds with the next intermediate
    bundles = BundleSet([X509Bundle(TD, [classical.certificate])])
    cert, key = classical.issue_svid(SpiffeId.parse(ME))
    svid = X509Svid(SpiffeId.parse(ME), (cert,), key, "me")
    ledger = open_ledger(MEMORY)
    ca = RevokingCA(PQCIssuer(old, TD, bundles, sibling_intermediates=[new.certificate], ledger=ledger))
    authority = dataclasses.replace(authority, classical=classical)
    node = Node(config, authority, svid, ca)  # type: ignore[arg-type]
    yield Revocation(node, ca, old, new, bundles)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.asyncio
async def test_a_revoked_intermediate_is_refused_everywhere_and_its_credentials_reissued(
    revocation: Revocation,
) -> None:
    agent, _source = revocation.node.agent()
    old_id = revocation.old.public_key.key_id().hex()
    async with agent:
        before = await fetch(agent)
        first = before.svids[0]
        assert certs.mldsa_public_key(first.pqc_chain[1]) == revocation.old.public_key
        first.verify(classical_bundles=before.classical_bundles, pqc_bundles=before.pqc_bundles)

        # The operator revokes A (revoked_intermediates; B is active): the CA says so from now on.
        ledger = revocation.ca.local._issuer.ledger
        revocation.ca.local = LocalCAClient(
            PQCIssuer(revocation.new, TD, revocation.bundles, revoked={old_id}, ledger=ledger)
        )
        revoked_at = time.monotonic()
        await eventually(
            lambda: agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="success") >= 2,
            "re-issued",
            timeout=15,
        )
        reissued_after = time.monotonic() - revoked_at
        after = await fetch(agent)
        latest = after.svids[0]
        pqc = after.pqc_bundles.get_bundle_for_trust_domain(TD)
        assert old_id in pqc.revoked  # distributed with the bundle
        assert certs.mldsa_public_key(latest.pqc_chain[1]) == revocation.new.public_key
        assert latest.pqc_key.public_key() == first.pqc_key.public_key()  # same keys, certified again
        latest.verify(classical_bundles=after.classical_bundles, pqc_bundles=after.pqc_bundles)
        # Every verifier refuses what A signed: the hybrid verification (agent, SDK) and the PQC chain
        # check the channels' proofs, sessions and messages use.
        with pytest.raises(RevokedError, match=f"revoked intermediate PQC CA {old_id[:16]}") as refused:
            first.verify(classical_bundles=after.classical_bundles, pqc_bundles=after.pqc_bundles)
        assert refused.value.check == "revoked" and refused.value.spiffe_id == ME
        with pytest.raises(RevokedError):
            verify_pqc_svid(first.pqc_chain, after.pqc_bundles)
        assert agent.metrics.value("spire_pqc_agent_pqc_revoked_identities") == 0
        print(f"\nrevocation: re-issued {reissued_after:.2f}s after the CA revoked (refresh {REFRESH})")
        assert reissued_after < 10 * REFRESH.total_seconds() + 5
