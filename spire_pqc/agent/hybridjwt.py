"""Hybrid JWT-SVIDs at the node agent (docs/pq-jwt.md).

``fetch``: the classical JWT-SVID from the identity source (with SPIRE: the Delegated Identity API, so
SPIRE signs it) plus its PQC part from the PQC CA (``SignJWTSVID``); the pair is validated here before a
workload gets it, so a confused or hostile CA cannot hand a workload a token nobody else accepts.
``validate``: :func:`spire_pqc.jwtsvid.hybrid.validate` against the classical JWT bundles of the
identity source, the PQC JWT bundles and the PQC roots the CA delivered. Crypto runs off the event loop.
A PQC ``kid`` this agent does not know yet (a signer made by a restarted plugin, or by an HA sibling
since the last refresh) makes it refresh the PQC bundle from the CA once (at most every
``UNKNOWN_KEY_REFRESH`` seconds, so forged key ids cannot make it hammer the CA) and validate again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from spire_pqc.agent.caclient import BundleFetcher, JwtSigningCA
from spire_pqc.agent.jwtsvid import JwtProfile, JwtSvid
from spire_pqc.agent.model import Caller
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import IssuanceError, RefusalReason, SpirePqcError, TokenKeyError, VerificationError
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, VerifiedJwtSvid, validate
from spire_pqc.spiffeid import SpiffeId

__all__ = ["HybridJwtProvider", "ServedHybridJwt"]

log = logging.getLogger(__name__)

#: Seconds between two PQC bundle refreshes caused by an unknown PQC JWT key id.
UNKNOWN_KEY_REFRESH = 5.0


@dataclass(frozen=True)
class ServedHybridJwt:
    spiffe_id: SpiffeId
    token: HybridJwtSvid = field(repr=False)
    hint: str = ""


class HybridJwtProvider:
    def __init__(self, jwt: JwtProfile, ca: JwtSigningCA, provisioner: PqcProvisioner) -> None:
        self._jwt = jwt
        self._ca = ca
        self._provisioner = provisioner
        self._refreshed_at = -UNKNOWN_KEY_REFRESH

    async def fetch(
        self, caller: Caller, audience: Sequence[str], spiffe_id: SpiffeId | None
    ) -> list[ServedHybridJwt]:
        """The caller's hybrid JWT-SVIDs for ``audience``. Raises AuthorizationError (no identity),
        UnavailableError (SPIRE or the CA cannot answer now), IssuanceError (the CA refused, or its
        PQC part does not validate)."""
        svids = await self._jwt.fetch_jwt_svids(caller, audience, spiffe_id)
        served = []
        for svid in svids:
            served.append(await self._complete(svid, audience[0]))
        return served

    async def _complete(self, svid: JwtSvid, audience: str) -> ServedHybridJwt:
        signed = await self._ca.sign_jwt_svid(svid.token)
        self._provisioner.note_bundles(
            svid.spiffe_id.trust_domain, pqc_bundle=signed.pqc_bundle, pqc_jwt_bundle=signed.pqc_jwt_bundle
        )
        token = HybridJwtSvid(svid.token, signed.pqc_token)
        try:
            await self.validate(token, audience)
        except VerificationError as exc:
            log.error("the PQC CA's JWT-SVID part for %s does not validate: %s", svid.spiffe_id, exc)  # noqa: TRY400 - no traceback for a peer-caused error
            raise IssuanceError(
                f"the PQC part from the CA does not validate: {exc}",
                reason=RefusalReason.BAD_RESPONSE,
                spiffe_id=str(svid.spiffe_id),
            ) from exc
        return ServedHybridJwt(svid.spiffe_id, token, svid.hint)

    async def validate(self, token: HybridJwtSvid, audience: str) -> VerifiedJwtSvid:
        """Both parts for ``audience``; raises a VerificationError subclass naming the failed check."""
        try:
            return await self._validate_once(token, audience)
        except TokenKeyError:
            if not await self._refresh_for_unknown_key():
                raise
        return await self._validate_once(token, audience)

    async def _refresh_for_unknown_key(self) -> bool:
        """Fetch the PQC bundle (with its JWT keys) from the CA now, unless done recently."""
        now = time.monotonic()
        if not isinstance(self._ca, BundleFetcher) or now - self._refreshed_at < UNKNOWN_KEY_REFRESH:
            return False
        self._refreshed_at = now
        try:
            self._provisioner.apply_bundle(await self._ca.fetch_bundle())
        except SpirePqcError as exc:
            log.warning("cannot refresh the PQC JWT bundle for an unknown key: %s", exc)
            return False
        return True

    async def _validate_once(self, token: HybridJwtSvid, audience: str) -> VerifiedJwtSvid:
        jwt_bundles = self._jwt.jwt_bundles()
        pqc_jwt_bundles = self._provisioner.pqc_jwt_bundles_to_validate()
        roots = self._provisioner.pqc_bundles()
        revoked = self._provisioner.revoked  # a key a revoked intermediate certified is refused

        def check() -> VerifiedJwtSvid:
            pqc_bundles = BundleSet(
                X509Bundle(td, X509Bundle.from_der(td, der).authorities, revoked=revoked)
                for td, der in roots.items()
                if der
            )
            return validate(
                token,
                audience,
                jwt_bundles=jwt_bundles,
                pqc_jwt_bundles=pqc_jwt_bundles,
                pqc_bundles=pqc_bundles,
            )

        return await run_crypto(check)
