"""Calls of the HybridWorkload JWT RPCs and the forgeries every hybrid JWT-SVID test refuses.

Shared by the dev-mode wire test (test_agent_hybrid_jwt.py) and the real-SPIRE test
(test_hybrid_jwt_spire.py): the same refusals, with tokens from either source.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.jwtsvid.hybrid import BINDING_HEADER, HybridJwtSvid, binding_of
from spire_pqc.jwtsvid.jws import AkpPublicJwk, b64url_encode, sign_compact

BASE = "/spire_pqc.workload.v1.HybridWorkload/"
FETCH = BASE + "FetchHybridJWTSVID"
VALIDATE = BASE + "ValidateHybridJWTSVID"
BUNDLES = BASE + "FetchPQCJWTBundles"
HEADER = {"workload.spiffe.io": "true"}


async def unary(path: Path, method: str, request: Any, reply_type: type[Any]) -> Any:
    channel = Channel(path=str(path))
    try:
        async with channel.request(
            method, Cardinality.UNARY_UNARY, type(request), reply_type, metadata=HEADER, timeout=30
        ) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


@asynccontextmanager
async def bundle_stream(path: Path) -> AsyncIterator[Any]:
    """An open FetchPQCJWTBundles stream (``await s.recv_message()`` for each full state)."""
    channel = Channel(path=str(path))
    try:
        async with channel.request(
            BUNDLES, Cardinality.UNARY_STREAM, hy.PQCJWTBundlesRequest, hy.PQCJWTBundlesResponse,
            metadata=HEADER, timeout=120,
        ) as stream:  # fmt: skip
            await stream.send_message(hy.PQCJWTBundlesRequest(), end=True)
            try:
                yield stream
            finally:
                await stream.cancel()
    finally:
        channel.close()


async def fetch(path: Path, audience: list[str], spiffe_id: str = "") -> list[Any]:
    reply = await unary(path, FETCH, hy.HybridJWTSVIDRequest(audience=audience, spiffe_id=spiffe_id),
                        hy.HybridJWTSVIDResponse)  # fmt: skip
    return list(reply.svids)


async def validate_on(path: Path, token: HybridJwtSvid, audience: str) -> tuple[str, dict[str, Any]]:
    """(SPIFFE ID, claims) from the agent's ValidateHybridJWTSVID, or GRPCError."""
    request = hy.ValidateHybridJWTSVIDRequest(audience=audience, classical=token.classical, pqc=token.pqc)
    reply = await unary(path, VALIDATE, request, hy.ValidateHybridJWTSVIDResponse)
    return reply.spiffe_id, json.loads(reply.claims_json)


async def refusal(path: Path, token: HybridJwtSvid, audience: str) -> str:
    """The agent's refusal message (it starts with the failed check's token)."""
    try:
        await validate_on(path, token, audience)
    except GRPCError as exc:
        return exc.message or ""
    raise AssertionError("the agent accepted a token it must refuse")


def segments(token: str) -> list[str]:
    return token.split(".")


def decode(segment: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def flip_signature(token: str) -> str:
    head, payload, signature = segments(token)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return ".".join([head, payload, b64url_encode(bytes(raw))])


def with_pqc_header(token: HybridJwtSvid, key: MLDSA65PrivateKey, **changes: Any) -> HybridJwtSvid:
    """The PQC part re-signed by ``key`` with header members changed (None deletes one)."""
    header = {**decode(segments(token.pqc)[0]), **changes}
    header = {k: v for k, v in header.items() if v is not None}
    return HybridJwtSvid(token.classical, sign_compact(header, segments(token.classical)[1], key))


def with_header(token: str, **changes: Any) -> str:
    """``token`` with header members changed and its signature kept (so the signature no longer fits)."""
    head, payload, signature = segments(token)
    return ".".join([b64url_encode(json.dumps({**decode(head), **changes}).encode()), payload, signature])


def forgeries(first: HybridJwtSvid, second: HybridJwtSvid) -> dict[str, tuple[HybridJwtSvid, str]]:
    """Each refused case → (token, what the refusal must say: the failed check's token, or more).
    ``first`` and ``second`` are two genuine hybrid tokens of one workload for audience "a"."""
    stranger = MLDSA65PrivateKey.generate()  # an ML-DSA-65 key that is in no bundle
    stranger_kid = AkpPublicJwk(stranger.public_key()).thumbprint()
    return {
        "PQC part missing": (HybridJwtSvid(first.classical, ""), "jwt-binding"),
        "PQC signature invalid": (HybridJwtSvid(first.classical, flip_signature(first.pqc)), "jwt-signature"),
        "classical signature invalid": (
            with_pqc_header(
                HybridJwtSvid(flip_signature(first.classical), first.pqc),
                stranger,
                spqc_cth=binding_of(flip_signature(first.classical)),
                kid=stranger_kid,
            ),
            "classical signature does not verify",
        ),
        "classical with another token's PQC part": (
            HybridJwtSvid(first.classical, second.pqc),
            "jwt-binding",
        ),
        "PQC key not in the bundle": (with_pqc_header(first, stranger, kid=stranger_kid), "jwt-key"),
        "PQC alg ES256": (
            HybridJwtSvid(first.classical, with_header(first.pqc, alg="ES256")),
            "jwt-algorithm",
        ),
        "PQC alg ML-DSA-44": (
            HybridJwtSvid(first.classical, with_header(first.pqc, alg="ML-DSA-44")),
            "jwt-algorithm",
        ),
        "classical alg HS256": (
            HybridJwtSvid(with_header(first.classical, alg="HS256"), first.pqc),
            "jwt-algorithm",
        ),
        "classical alg none": (
            HybridJwtSvid(with_header(first.classical, alg="none"), first.pqc),
            "jwt-algorithm",
        ),
        "PQC part without binding": (
            with_pqc_header(first, stranger, **{BINDING_HEADER: None}),
            "jwt-binding",
        ),
    }
