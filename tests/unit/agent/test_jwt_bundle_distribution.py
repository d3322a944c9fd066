"""The PQC JWT bundle at the node agent (issue 15): it comes with the PQC bundle refresh, keys are merged
(a retiring signer's, and every HA server's, stay), a revoked intermediate's keys are withdrawn, a
failover client asks every endpoint so a token either SPIRE server signed validates here, and an
unknown key id makes the agent refresh once."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc.agent.caclient import FailoverCAClient
from spire_pqc.agent.hybridjwt import HybridJwtProvider
from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.ca.request import BundleUpdate, IssueRequest, IssueResponse
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import RevokedError, TokenKeyError, UnavailableError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, sign_pqc_part
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs
from spire_pqc.x509.signer import TrustDomainSigner

TD = TrustDomain.parse("example.org")


class BundleCA:
    """A CA endpoint that answers only FetchPQCBundle, with the keys of its own signers."""

    def __init__(self, hierarchy: PQCHierarchy, signers: list[TrustDomainSigner]) -> None:
        self.hierarchy, self.signers, self.down, self.calls = hierarchy, signers, False, 0
        self.revoked: tuple[str, ...] = ()

    async def issue(self, request: IssueRequest) -> IssueResponse:
        raise UnavailableError("not in this test")

    async def fetch_bundle(self) -> BundleUpdate:
        self.calls += 1
        if self.down:
            raise UnavailableError("down")
        return BundleUpdate(
            trust_domain=TD.name,
            pqc_bundle=(self.hierarchy.root.public_bytes(serialization.Encoding.DER),),
            revoked_intermediates=tuple(self.revoked),
            pqc_jwt_bundle=PqcJwtBundle.from_signers(TD, self.signers).to_jwks(),
        )

    async def close(self) -> None:
        return None


def signer(hierarchy: PQCHierarchy, ttl: dt.timedelta = dt.timedelta(hours=1)) -> TrustDomainSigner:
    inter = hierarchy.intermediate
    return TrustDomainSigner.issue(inter.certificate, inter.key, TD.name, ttl=ttl)


def kids(provisioner: PqcProvisioner) -> set[str]:
    return {k.kid for k in provisioner.pqc_jwt_bundles().get(TD, PqcJwtBundle(TD))}


def kid_of(s: TrustDomainSigner) -> str:
    return next(iter(PqcJwtBundle.from_signers(TD, [s]))).kid


@pytest.mark.asyncio
async def test_the_refresh_brings_the_keys_merges_them_and_withdraws_revoked_ones() -> None:
    hierarchy = PQCHierarchy.generate(TD)
    active, successor = signer(hierarchy), signer(hierarchy)
    ca = BundleCA(hierarchy, [active])
    now = [dt.datetime.now(dt.UTC)]
    provisioner = PqcProvisioner(ca, clock=lambda: now[0])
    try:
        provisioner.apply_bundle(await ca.fetch_bundle())
        assert kids(provisioner) == {kid_of(active)}
        version = provisioner.changes.version

        ca.signers = [successor]  # the CA no longer lists the old key: it stays while certified
        provisioner.apply_bundle(await ca.fetch_bundle())
        assert kids(provisioner) == {kid_of(active), kid_of(successor)}
        assert provisioner.changes.version > version  # FetchPQCJWTBundles streams are woken

        now[0] = active.not_after + dt.timedelta(seconds=1)  # its certificate ended: dropped
        provisioner.apply_bundle(await ca.fetch_bundle())
        assert kids(provisioner) == {kid_of(successor)}

        ca.revoked = (hierarchy.intermediate.public_key.key_id().hex(),)  # its intermediate revoked
        now[0] = dt.datetime.now(dt.UTC)
        provisioner.apply_bundle(await ca.fetch_bundle())
        assert kids(provisioner) == set()
    finally:
        await provisioner.close()


@pytest.mark.asyncio
async def test_a_failover_client_brings_the_keys_of_every_server() -> None:
    """SPIRE HA: each server certifies its own signer under its own intermediate (one PQC root)."""
    a = PQCHierarchy.generate(TD)
    key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    cert = certs.build_intermediate(
        a.root, a.root_key, key.public_key(), TD.name, not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )  # fmt: skip
    b = PQCHierarchy(a.root_key, a.root, IntermediateCA(key, cert, (a.root,)))  # server B's intermediate
    signer_a, signer_b = signer(a), signer(b)
    ca_a, ca_b = BundleCA(a, [signer_a]), BundleCA(b, [signer_b])
    failover = FailoverCAClient([("a", ca_a), ("b", ca_b)])
    provisioner = PqcProvisioner(failover)
    try:
        provisioner.apply_bundle(await failover.fetch_bundle())
        assert kids(provisioner) == {kid_of(signer_a), kid_of(signer_b)}
        ca_b.down = True  # B unreachable: A's answer alone, B's key is kept while certified
        provisioner.apply_bundle(await failover.fetch_bundle())
        assert kids(provisioner) == {kid_of(signer_a), kid_of(signer_b)}
        asked = ca_b.calls
        provisioner.apply_bundle(await failover.fetch_bundle())
        assert ca_b.calls == asked  # backing off: not asked while A answers
        ca_a.down = True
        with pytest.raises(UnavailableError):
            await failover.fetch_bundle()
        assert ca_b.calls == asked + 1  # nothing healthy answered: the one backing off was asked too
    finally:
        await provisioner.close()


class SpireJwt:
    """The identity source's JWT side as HybridJwtProvider.validate reads it: SPIRE's JWT bundle."""

    def __init__(self, key: JwtSigningKey) -> None:
        self.key = key

    def jwt_bundles(self) -> dict[TrustDomain, bytes]:
        return {TD: jwks_bytes([self.key.public_jwk()])}


@pytest.mark.asyncio
async def test_an_unknown_pqc_key_makes_the_agent_refresh_once() -> None:
    """A signer the agent has not heard of yet (a restarted plugin's): one bundle refresh, then it
    validates; another unknown key right after is refused without asking the CA again."""
    hierarchy = PQCHierarchy.generate(TD)
    old, new = signer(hierarchy), signer(hierarchy)
    ca = BundleCA(hierarchy, [old])
    provisioner = PqcProvisioner(ca)
    spire = SpireJwt(JwtSigningKey.generate())
    provider = HybridJwtProvider(spire, ca, provisioner)  # type: ignore[arg-type]
    try:
        provisioner.apply_bundle(await ca.fetch_bundle())
        bundles = spire.jwt_bundles()
        workload = SpiffeId.parse("spiffe://example.org/app")

        def token(by: TrustDomainSigner) -> HybridJwtSvid:
            classical = spire.key.sign(workload, ["a"], dt.timedelta(minutes=5))
            return sign_pqc_part(classical, by, trust_domain=TD, jwt_bundles=bundles)

        ca.signers = [new]  # the CA signs with a key the agent has not seen
        verified = await provider.validate(token(new), "a")
        assert str(verified.spiffe_id) == str(workload)
        assert kid_of(new) in kids(provisioner)
        stranger = signer(PQCHierarchy.generate(TD))  # certified by another root: never in any bundle
        ca.signers = [stranger]
        with pytest.raises(TokenKeyError):
            await provider.validate(token(stranger), "a")
        assert kid_of(stranger) not in kids(provisioner)  # the CA was not asked again within 5 s
    finally:
        await provisioner.close()


@pytest.mark.asyncio
async def test_a_token_of_a_revoked_intermediates_key_is_refused_as_revoked_at_the_agent() -> None:
    """The key leaves the bundle workloads get, and ValidateHybridJWTSVID names the revocation."""
    hierarchy = PQCHierarchy.generate(TD)
    by = signer(hierarchy)
    ca = BundleCA(hierarchy, [by])
    provisioner = PqcProvisioner(ca)
    spire = SpireJwt(JwtSigningKey.generate())
    provider = HybridJwtProvider(spire, ca, provisioner)  # type: ignore[arg-type]
    try:
        provisioner.apply_bundle(await ca.fetch_bundle())
        classical = spire.key.sign(SpiffeId.parse("spiffe://example.org/app"), ["a"], dt.timedelta(minutes=5))
        token = sign_pqc_part(classical, by, trust_domain=TD, jwt_bundles=spire.jwt_bundles())
        await provider.validate(token, "a")
        version = provisioner.changes.version
        intermediate = hierarchy.intermediate.public_key.key_id().hex()
        ca.revoked = (intermediate,)
        provisioner.apply_bundle(await ca.fetch_bundle())
        assert kids(provisioner) == set() and provisioner.changes.version > version  # pushed without it
        with pytest.raises(RevokedError) as refused:
            await provider.validate(token, "a")
        assert refused.value.check == "revoked"
        assert kid_of(by) in str(refused.value) and intermediate[:16] in str(refused.value)
    finally:
        await provisioner.close()
