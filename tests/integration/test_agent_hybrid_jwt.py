"""Hybrid JWT-SVIDs on the agent's HybridWorkload extension, dev source, over the real Unix socket.

The dev source's classical JWT-SVID plus the PQC part from its in-process CA: fetched with an audience,
validated by the agent and by the library against the bundles the agent streams, the classical part
alone by the standard ValidateJWTSVID (an unmodified consumer), and every forgery refused with its check.
The same with real SPIRE: test_hybrid_jwt_spire.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe._proto import workload_pb2 as wl

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.errors import TokenAudienceError, TokenExpiredError
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
    unary,
    validate_on,
)
from tests.unit.agent._support import ME, TRUST_DOMAIN, running_agent

TD = TrustDomain.parse(TRUST_DOMAIN)


@pytest.mark.asyncio
async def test_fetch_validate_and_refuse_hybrid_jwt_svids_on_the_socket() -> None:
    async with running_agent() as agent:
        path = agent.socket_path
        svids = await fetch(path, ["a", "b"])
        assert [(s.spiffe_id, s.hint) for s in svids] == [(ME, "me")]
        token = HybridJwtSvid(svids[0].classical, svids[0].pqc)
        assert segments(token.pqc)[1] == segments(token.classical)[1]
        assert decode(segments(token.pqc)[0])["alg"] == "ML-DSA-65"

        assert await validate_on(path, token, "b") == (ME, decode(segments(token.classical)[1]))
        # An unmodified JWT-SVID consumer takes the classical part alone.
        request = wl.ValidateJWTSVIDRequest(audience="a", svid=token.classical)
        plain = await unary(path, "/SpiffeWorkloadAPI/ValidateJWTSVID", request, wl.ValidateJWTSVIDResponse)
        assert plain.spiffe_id == ME

        # The PQC JWT bundle the agent streams names the key that signed, and with the PQC roots (from the
        # dev CA) and the classical JWT bundle, the library validates the token as the agent did.
        async with bundle_stream(path) as stream:
            message = await stream.recv_message()
        pqc_jwt = PqcJwtBundle.parse(TD, message.bundles[TRUST_DOMAIN])
        assert decode(segments(token.pqc)[0])["kid"] in pqc_jwt
        kwargs = {
            "jwt_bundles": agent.source.jwt_bundles(),  # type: ignore[attr-defined]
            "pqc_jwt_bundles": {TD: pqc_jwt},
            "pqc_bundles": BundleSet([X509Bundle(TD, [agent.source.hierarchy.root])]),  # type: ignore[attr-defined]
        }
        assert str(validate(token, "a", **kwargs).spiffe_id) == ME
        with pytest.raises(TokenAudienceError):
            validate(token, "c", **kwargs)
        exp = decode(segments(token.classical)[1])["exp"]
        with pytest.raises(TokenExpiredError):
            validate(token, "a", now=dt.datetime.fromtimestamp(exp, dt.UTC), **kwargs)

        assert (await refusal(path, token, "c")).startswith("jwt-audience")
        second = (await fetch(path, ["a"]))[0]
        for name, (forged, check) in forgeries(token, HybridJwtSvid(second.classical, second.pqc)).items():
            message_text = await refusal(path, forged, "a")
            assert message_text.startswith(check) or check in message_text, (name, message_text)


@pytest.mark.asyncio
async def test_request_errors() -> None:
    async with running_agent() as agent:
        for audience in ([], [""]):
            with pytest.raises(GRPCError) as info:
                await fetch(agent.socket_path, audience)
            assert info.value.status is Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as info:
            await fetch(agent.socket_path, ["a"], spiffe_id=f"spiffe://{TRUST_DOMAIN}/not/mine")
        assert info.value.status is Status.PERMISSION_DENIED
