"""Hybrid JWT-SVIDs with real SPIRE v1.15.3: the classical part from SPIRE, the PQC part from our plugin.

spire-server runs the spire-pqc plugin and its PQC CA endpoint; the spire-pqc agent takes the workload's
classical JWT-SVID from spire-agent's Delegated Identity API and its PQC part from the endpoint
(SignJWTSVID, which verifies SPIRE's token under the JWT keys of SPIRE's IdentityProvider host service).
SPIRE itself (spire-agent's ValidateJWTSVID) accepts the classical part unchanged; our agent, the
library and jwcrypto (an independent RFC 9964 implementation) accept the pair; every forgery is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from cryptography import x509
from jwcrypto import jwk, jws
from spiffe import WorkloadApiClient

from spire_pqc.bundle import BundleSet
from spire_pqc.errors import TokenExpiredError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
from spire_pqc.spiffeid import TrustDomain
from tests.integration.hybrid_jwt import (
    bundle_stream,
    decode,
    fetch,
    forgeries,
    refusal,
    segments,
    validate_on,
)
from tests.integration.test_end_to_end_spire import TD, WORKLOAD, spire_stack

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]


def _spire_validates(socket: str, token: str, audience: str) -> tuple[str, bytes]:
    """spire-agent's own ValidateJWTSVID and JWT bundle (py-spiffe, unmodified)."""
    client = WorkloadApiClient(socket_path=f"unix://{socket}")
    try:
        svid = client.validate_jwt_svid(token, audience)
        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert bundle is not None
        return str(svid.spiffe_id), sorted(bundle.jwt_authorities)[0].encode()
    finally:
        client.close()


@pytest.mark.asyncio
async def test_hybrid_jwt_svid_from_spire_and_the_plugin() -> None:
    async with spire_stack(ttl_seconds=3600) as stack:
        path = stack.config.socket_path
        svids = await fetch(path, ["a", "b"], spiffe_id=WORKLOAD)
        assert [s.spiffe_id for s in svids] == [WORKLOAD]
        token = HybridJwtSvid(svids[0].classical, svids[0].pqc)

        # The classical part is SPIRE's token: spire-agent validates it, and its kid is SPIRE's key.
        spire_id, spire_kid = await asyncio.to_thread(
            _spire_validates, str(stack.spire_agent.socket), token.classical, "a"
        )
        assert spire_id == WORKLOAD
        assert decode(segments(token.classical)[0])["kid"] == spire_kid.decode()
        assert decode(segments(token.pqc)[0])["alg"] == "ML-DSA-65"

        # Our agent validates the pair; so does the library with SPIRE's JWT bundle, the PQC JWT bundle
        # the agent streams and the PQC root made offline; jwcrypto verifies the PQC part.
        assert (await validate_on(path, token, "b"))[0] == WORKLOAD
        async with bundle_stream(path) as stream:
            message = await stream.recv_message()
        td = TrustDomain.parse(TD)
        pqc_jwt = PqcJwtBundle.parse(td, message.bundles[TD])
        jwt_bundles = stack.agent.source.jwt_bundles()  # type: ignore[attr-defined]
        roots = x509.load_pem_x509_certificates(
            stack.server.workdir.joinpath("pqc", "root.crt.pem").read_bytes()
        )
        verified = validate(
            token, "a", jwt_bundles=jwt_bundles, pqc_jwt_bundles={td: pqc_jwt},
            pqc_bundles=BundleSet.from_certificates(roots),
        )  # fmt: skip
        assert str(verified.spiffe_id) == WORKLOAD
        with pytest.raises(TokenExpiredError):
            validate(
                token, "a", jwt_bundles=jwt_bundles, pqc_jwt_bundles={td: pqc_jwt},
                pqc_bundles=BundleSet.from_certificates(roots), now=verified.expiry,
            )  # fmt: skip
        entry = next(k.entry() for k in pqc_jwt if k.kid == decode(segments(token.pqc)[0])["kid"])
        verifier = jws.JWS()
        verifier.deserialize(token.pqc)
        verifier.verify(jwk.JWK(**{k: v for k, v in entry.items() if k not in ("use", "kid", "x5c")}),
                        alg="ML-DSA-65")  # fmt: skip
        payload = segments(token.classical)[1]
        assert verifier.payload == base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        assert json.loads(verifier.payload)["sub"] == WORKLOAD

        assert (await refusal(path, token, "c")).startswith("jwt-audience")
        second = (await fetch(path, ["a"], spiffe_id=WORKLOAD))[0]
        for name, (forged, check) in forgeries(token, HybridJwtSvid(second.classical, second.pqc)).items():
            text = await refusal(path, forged, "a")
            assert text.startswith(check) or check in text, (name, text)
