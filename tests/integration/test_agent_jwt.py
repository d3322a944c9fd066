"""The Workload API JWT profile on a real socket: py-spiffe's unmodified client, and the error cases."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.agent.config import parse
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.spiffeid import SpiffeId
from tests.unit.agent._support import HEADER, ME, TRUST_DOMAIN, dev_config, running_agent, short_dir

FETCH = wire.FETCH_JWT_SVID
VALIDATE = wire.VALIDATE_JWT_SVID
OTHER = f"spiffe://{TRUST_DOMAIN}/workload/other"


async def unary(path: Path, method: str, request: Any, reply_type: type[Any], *, header: bool = True) -> Any:
    """One unary call with grpclib; returns the reply or raises GRPCError."""
    channel = Channel(path=str(path))
    try:
        async with channel.request(
            method, Cardinality.UNARY_UNARY, type(request), reply_type,
            metadata=HEADER if header else None, timeout=20,
        ) as stream:  # fmt: skip
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


def _pyspiffe_round_trip(address: str) -> tuple[str, list[str], str, int, list[str]]:
    client = WorkloadApiClient(socket_path=address)
    try:
        svid = client.fetch_jwt_svid(audience={"a"})
        bundles = client.fetch_jwt_bundles()
        validated = client.validate_jwt_svid(svid.token, "a")
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert bundle is not None
        return (
            str(svid.spiffe_id),
            sorted(svid.audience),
            str(validated.spiffe_id),
            validated.expiry,
            sorted(bundle.jwt_authorities),
        )
    finally:
        client.close()


@pytest.mark.asyncio
async def test_pyspiffe_fetches_and_validates_a_jwt_svid() -> None:
    async with running_agent() as agent:
        spiffe_id, audience, validated_id, expiry, kids = await asyncio.to_thread(
            _pyspiffe_round_trip, f"unix://{agent.socket_path}"
        )
        source = agent.source
        assert isinstance(source, DevIdentitySource)
        assert (spiffe_id, audience, validated_id) == (ME, ["a"], ME)
        now = dt.datetime.now(dt.UTC).timestamp()
        assert now < expiry <= now + 300  # default TTL: 5 minutes
        assert kids == [source.jwt_key.kid]


@pytest.mark.asyncio
async def test_fetched_token_has_the_jwt_svid_shape() -> None:
    async with running_agent() as agent:
        reply = await unary(
            agent.socket_path, FETCH, wl.JWTSVIDRequest(audience=["a", "b"]), wl.JWTSVIDResponse
        )
        assert [(s.spiffe_id, s.hint) for s in reply.svids] == [(ME, "me")]
        token = reply.svids[0].svid
        header = jwt.get_unverified_header(token)
        assert (header["alg"], header["typ"]) == ("ES256", "JWT")
        assert header["kid"] == agent.source.jwt_key.kid  # type: ignore[attr-defined]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == ["a", "b"] and claims["sub"] == ME


def _forge(token: str, **changes: Any) -> str:
    """Change claims of a signed token without re-signing it."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{signature}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """The key-confusion forgery: HMAC keyed with public material (PyJWT refuses to build it)."""
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{_b64(json.dumps(claims).encode())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.asyncio
async def test_invalid_tokens_are_invalid_argument() -> None:
    async with running_agent() as agent:
        source = agent.source
        assert isinstance(source, DevIdentitySource)
        key = source.jwt_key
        me = SpiffeId.parse(ME)
        good = key.sign(me, ["a"], dt.timedelta(minutes=5))
        an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        kid = {"kid": key.kid, "typ": "JWT"}
        claims = {"sub": ME, "aud": ["a"], "exp": 2**31}
        jwks = source.jwt_bundles()[me.trust_domain]
        cases = {
            "wrong audience": (good, "b"),
            "expired": (key.sign(me, ["a"], dt.timedelta(seconds=5), an_hour_ago), "a"),
            "tampered": (_forge(good, sub=OTHER), "a"),
            "alg none": (jwt.encode(claims, "", algorithm="none", headers=kid), "a"),
            "HMAC with the bundle as secret": (_hs256(claims, jwks, key.kid), "a"),
            "unknown kid": (jwt.encode(claims, key.key, algorithm="ES256", headers={"kid": "nope"}), "a"),
            "not a JWT": ("not.a.jwt", "a"),
        }  # fmt: skip
        reasons = {}
        for name, (token, audience) in cases.items():
            with pytest.raises(GRPCError) as info:
                await unary(agent.socket_path, VALIDATE, wl.ValidateJWTSVIDRequest(audience=audience, svid=token),
                            wl.ValidateJWTSVIDResponse)  # fmt: skip
            assert info.value.status is Status.INVALID_ARGUMENT, name
            reasons[name] = info.value.message or ""
        assert "audience" in reasons["wrong audience"].lower()
        assert "expired" in reasons["expired"].lower()
        assert "signature" in reasons["tampered"].lower()
        assert "'none'" in reasons["alg none"] and "'HS256'" in reasons["HMAC with the bundle as secret"]
        assert "not found" in reasons["unknown kid"]
        ok = await unary(agent.socket_path, VALIDATE, wl.ValidateJWTSVIDRequest(audience="a", svid=good),
                         wl.ValidateJWTSVIDResponse)  # fmt: skip
        assert ok.spiffe_id == ME and ok.claims["sub"] == ME


@pytest.mark.asyncio
async def test_request_errors() -> None:
    directory = short_dir()
    other = {"spiffe_id": OTHER, "selectors": [f"unix:uid:{os.getuid()}"], "hint": "other"}
    async with running_agent(dev_config(directory, extra_entries=[other])) as agent:
        path = agent.socket_path
        calls = {
            "no header": (FETCH, wl.JWTSVIDRequest(audience=["a"]), wl.JWTSVIDResponse, False),
            "no audience": (FETCH, wl.JWTSVIDRequest(), wl.JWTSVIDResponse, True),
            "empty audience": (FETCH, wl.JWTSVIDRequest(audience=[""]), wl.JWTSVIDResponse, True),
            "validate without header": (VALIDATE, wl.ValidateJWTSVIDRequest(audience="a", svid="x"),
                                        wl.ValidateJWTSVIDResponse, False),
            "validate without audience": (VALIDATE, wl.ValidateJWTSVIDRequest(svid="x"),
                                          wl.ValidateJWTSVIDResponse, True),
            "validate without token": (VALIDATE, wl.ValidateJWTSVIDRequest(audience="a"),
                                       wl.ValidateJWTSVIDResponse, True),
        }  # fmt: skip
        for name, (method, request, reply, header) in calls.items():
            with pytest.raises(GRPCError) as info:
                await unary(path, method, request, reply, header=header)
            assert info.value.status is Status.INVALID_ARGUMENT, name
        both = await unary(path, FETCH, wl.JWTSVIDRequest(audience=["a"]), wl.JWTSVIDResponse)
        assert sorted(s.spiffe_id for s in both.svids) == [ME, OTHER]
        one = await unary(path, FETCH, wl.JWTSVIDRequest(audience=["a"], spiffe_id=OTHER), wl.JWTSVIDResponse)
        assert [s.spiffe_id for s in one.svids] == [OTHER]
        with pytest.raises(GRPCError) as info:
            await unary(path, FETCH, wl.JWTSVIDRequest(audience=["a"], spiffe_id=f"spiffe://{TRUST_DOMAIN}/x"),
                        wl.JWTSVIDResponse)  # fmt: skip
        assert info.value.status is Status.PERMISSION_DENIED


@pytest.mark.asyncio
async def test_unknown_caller_is_permission_denied() -> None:
    config = dev_config(short_dir(), selectors=[f"unix:uid:{os.getuid() + 4242}"])
    async with running_agent(config) as agent:
        with pytest.raises(GRPCError) as info:
            await unary(agent.socket_path, FETCH, wl.JWTSVIDRequest(audience=["a"]), wl.JWTSVIDResponse)
        assert info.value.status is Status.PERMISSION_DENIED
        assert info.value.message == "no identity issued"


@pytest.mark.asyncio
async def test_jwt_svid_ttl_is_configurable() -> None:
    directory = short_dir()
    entry = {"spiffe_id": ME, "selectors": [f"unix:uid:{os.getuid()}"]}
    config = parse(
        {
            "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
            "source": {
                "kind": "dev",
                "dev": {"trust_domain": TRUST_DOMAIN, "jwt_svid_ttl": "90s", "entries": [entry]},
            },
        }
    )
    async with running_agent(config) as agent:
        reply = await unary(agent.socket_path, FETCH, wl.JWTSVIDRequest(audience=["a"]), wl.JWTSVIDResponse)
        claims = jwt.decode(reply.svids[0].svid, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 90
