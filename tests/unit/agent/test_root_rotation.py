"""PQC root rotation (issue 12): a second root reaches workloads ahead of use, the old one goes after.

The CA's PQC bundle (the plugin's ``pqc_bundle_path``) gains a second root; within one bundle refresh
the node agent pushes the new full state on open FetchPQCBundles streams and with every hybrid SVID.
Credentials issued under the new root then verify for every workload, the old ones still do during
the overlap, and once the old root is removed it is gone from what workloads hold.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.issuer import IntermediateCA, PQCIssuer
from spire_pqc.ca.request import BundleUpdate
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import MalformedCredentialError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.workload.client import parse_pqc_bundles
from spire_pqc.x509 import certs
from tests.unit.agent._support import HEADER, first_reply
from tests.unit.agent.test_restart import TD, fetch
from tests.unit.agent.test_revocation import REFRESH, Revocation, revocation

__all__ = ["revocation"]  # the fixture: one agent, its CA (issuer swappable), two intermediates

BUNDLES = "/spire_pqc.workload.v1.HybridWorkload/FetchPQCBundles"


async def pqc_roots(socket: object) -> list[bytes]:
    reply = await first_reply(socket, BUNDLES, hy.PQCBundlesRequest(), hy.PQCBundlesResponse, metadata=HEADER)  # type: ignore[arg-type]
    bundle = parse_pqc_bundles(reply).get_bundle_for_trust_domain(TD)
    return [certs.spki_der(c) for c in bundle.authorities]


@pytest.mark.asyncio
async def test_a_second_root_reaches_workloads_before_use_and_the_old_one_leaves_after(
    revocation: Revocation,
) -> None:
    agent, source = revocation.node.agent()
    old_root = revocation.old.chain_to_root[0]
    new = PQCHierarchy.generate(TD)  # R2 and an intermediate under it
    ledger = revocation.ca.local._issuer.ledger

    def serve(ca: IntermediateCA, roots: list[object]) -> None:
        revocation.ca.local = LocalCAClient(
            PQCIssuer(ca, TD, revocation.bundles, pqc_roots=roots, ledger=ledger,  # type: ignore[arg-type]
                      sibling_intermediates=[revocation.new.certificate])
        )  # fmt: skip

    async with agent:
        first = (await fetch(agent)).svids[0]
        assert await pqc_roots(agent.socket_path) == [certs.spki_der(old_root)]
        # 1. R2 is added to the bundle: workloads hold it within a refresh, before anything uses it.
        serve(revocation.old, [old_root, new.root])
        await asyncio.sleep(REFRESH.total_seconds() * 3)
        assert await pqc_roots(agent.socket_path) == [certs.spki_der(old_root), certs.spki_der(new.root)]
        update = await fetch(agent)
        assert len(update.pqc_bundles.get_bundle_for_trust_domain(TD).authorities) == 2
        # 2. An intermediate under R2 signs (the composer binds with B under R1 still: chains carry it).
        key = MLDSA65PrivateKey.generate()
        now = dt.datetime.now(dt.UTC)
        under_r2 = IntermediateCA(
            key,
            certs.build_intermediate(new.root, new.root_key, key.public_key(), str(TD),
                                     not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(hours=1)),
            (new.root,),
        )  # fmt: skip
        serve(under_r2, [old_root, new.root])
        source.rotate()  # the next classical SVID: its PQC credentials come from the intermediate under R2
        async with asyncio.timeout(15):
            while (
                certs.mldsa_public_key((update := await fetch(agent)).svids[0].pqc_chain[1])
                != key.public_key()
            ):
                await asyncio.sleep(0.05)
        latest = update.svids[0]
        latest.verify(classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles)
        first.verify(classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles)  # overlap
        # 3. R1 is removed after the overlap: gone from what workloads hold, within a refresh.
        serve(under_r2, [new.root])
        await asyncio.sleep(REFRESH.total_seconds() * 3)
        assert await pqc_roots(agent.socket_path) == [certs.spki_der(new.root)]
        update = await fetch(agent)
        assert [
            certs.spki_der(c) for c in update.pqc_bundles.get_bundle_for_trust_domain(TD).authorities
        ] == [certs.spki_der(new.root)]


def test_a_ca_bundle_for_a_configured_federated_trust_domain_is_refused() -> None:
    partner = TrustDomain.parse("partner.example")
    provisioner = PqcProvisioner(None, static_bundles={partner: b"configured"})  # type: ignore[arg-type]
    with pytest.raises(MalformedCredentialError, match="federated trust domain configured on this agent"):
        provisioner.apply_bundle(BundleUpdate("partner.example", (b"from the CA",), ()))
    assert provisioner.pqc_bundles()[partner] == b"configured"
