"""Connection setup for every mode: handshake, peer verification, authorizer, hybrid PQ proof.

:func:`establish` runs on a :class:`~spire_pqc.channel.tlsproto.TlsProtocol` that has not been
attached to the application yet, so no application byte can be delivered before it returns. Each
step fails with a typed error; the connection is closed on any failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from OpenSSL import crypto

from spire_pqc.channel import proof as pq
from spire_pqc.channel.authorize import Authorizer
from spire_pqc.channel.context import HYBRID_GROUP, check_negotiated_mode
from spire_pqc.channel.sources import ChannelConfig, Mode
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import (
    AuthorizationError,
    HandshakeError,
    MalformedCredentialError,
    NoHybridGroupError,
    ParseError,
    ProofMissingError,
)
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import HybridSvid, verify_classical_svid, verify_pqc_svid
from spire_pqc.x509.load import load_der_certificate

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_PROOF_TIMEOUT = 10.0


@dataclass(frozen=True)
class ConnectionInfo:
    """What setup established about one connection."""

    mode: Mode
    group: str
    role: str  # "client" or "server": this side's role
    local_id: SpiffeId
    peer_id: SpiffeId
    peer_chain: tuple[x509.Certificate, ...] = field(repr=False)  # the TLS chain, leaf first
    peer_pqc_chain: tuple[x509.Certificate, ...] = field(repr=False)  # () in spiffe mode


def peer_chain(proto: TlsProtocol) -> tuple[x509.Certificate, ...]:
    """The peer's TLS chain, leaf first (OpenSSL omits the leaf from a server's view of a client).

    Loaded like every certificate from outside (spire_pqc.x509.load), so a peer that presents the
    same chain again gets the same objects, and the verification memo recognises them."""
    leaf = proto.tls.get_peer_certificate()
    rest = proto.tls.get_peer_cert_chain() or []
    if leaf is None:
        raise HandshakeError("the peer presented no certificate")
    ders = [crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) for cert in rest]
    leaf_der = crypto.dump_certificate(crypto.FILETYPE_ASN1, leaf)
    if not ders or ders[0] != leaf_der:
        ders.insert(0, leaf_der)
    try:
        return tuple(load_der_certificate(d, what=f"TLS certificate {i}") for i, d in enumerate(ders))
    except ParseError as exc:
        raise MalformedCredentialError(f"the peer's TLS chain: {exc}") from exc


async def establish(
    proto: TlsProtocol,
    config: ChannelConfig,
    svid: HybridSvid,
    authorizer: Authorizer,
    *,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    proof_timeout: float = DEFAULT_PROOF_TIMEOUT,
) -> ConnectionInfo:
    """Complete and verify the connection; raise a typed SpirePqcError (and close it) otherwise."""
    try:
        return await _establish(proto, config, svid, authorizer, handshake_timeout, proof_timeout)
    except BaseException:
        proto.abort()
        raise


async def _establish(
    proto: TlsProtocol,
    config: ChannelConfig,
    svid: HybridSvid,
    authorizer: Authorizer,
    handshake_timeout: float,
    proof_timeout: float,
) -> ConnectionInfo:
    role = "server" if proto.server_side else "client"
    try:
        async with asyncio.timeout(handshake_timeout):
            await proto.handshake()
    except TimeoutError:
        raise HandshakeError(f"TLS handshake did not complete within {handshake_timeout:g}s") from None
    group = proto.tls.get_group_name()
    if group != HYBRID_GROUP:  # defence in depth: the context offers nothing else
        raise NoHybridGroupError(f"negotiated key exchange {group}, not {HYBRID_GROUP}")
    # Before anything is written: a standard SPIFFE peer must never receive our PQ proof as data.
    check_negotiated_mode(config.mode, proto.tls, server_side=proto.server_side)
    chain = peer_chain(proto)
    now = dt.datetime.now(dt.UTC)
    exporter_value = pq.exporter(proto.tls)
    # The peer's TLS identity and the authorizer come first: an ML-DSA-65 signature costs about ten
    # times an ECDSA verification, and a peer that is refused anyway must not be able to make us
    # sign (issue 9, item 7).
    peer_id = await _verify_tls_identity(config, chain, now)
    _authorize(authorizer, peer_id, chain)
    pqc_chain: tuple[x509.Certificate, ...] = ()
    if config.mode is Mode.PQ_TLS:
        pqc_chain = chain
    elif config.mode is Mode.HYBRID:
        own_proof = await run_crypto(functools.partial(pq.make_proof, svid, exporter_value, role=role))
        try:
            proto.write(own_proof.encode())
        except ConnectionError as exc:
            raise ProofMissingError(
                f"the peer closed the channel before its PQ proof (it may have refused us: {exc})",
                spiffe_id=str(peer_id),
            ) from exc
        pqc_chain = await _receive_proof(
            proto, config, peer_id, chain, exporter_value, role, proof_timeout, now
        )
    return ConnectionInfo(config.mode, group, role, svid.spiffe_id, peer_id, chain, pqc_chain)


async def _verify_tls_identity(
    config: ChannelConfig, chain: Sequence[x509.Certificate], now: dt.datetime
) -> SpiffeId:
    if config.mode is Mode.PQ_TLS:
        # ML-DSA-65 chain verification is CPU-bound: off the event loop.
        spiffe_id, _ = await run_crypto(functools.partial(verify_pqc_svid, chain, config.pqc_bundles, at=now))
        return spiffe_id
    return verify_classical_svid(chain, config.classical_bundles, at=now)


def _authorize(authorizer: Authorizer, peer_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
    try:
        authorizer(peer_id, chain)
    except AuthorizationError:
        raise
    except Exception as exc:  # an authorizer bug must refuse, never accept
        raise AuthorizationError(f"authorizer failed for {peer_id}: {exc!r}") from exc


async def _receive_proof(
    proto: TlsProtocol,
    config: ChannelConfig,
    peer_id: SpiffeId,
    chain: tuple[x509.Certificate, ...],
    exporter_value: bytes,
    role: str,
    timeout: float,
    now: dt.datetime,
) -> tuple[x509.Certificate, ...]:
    sid = str(peer_id)
    try:
        async with asyncio.timeout(timeout):
            length = pq.parse_header(await proto.read_exactly(pq.HEADER.size))
            body = await proto.read_exactly(length)
    except TimeoutError:
        raise ProofMissingError(f"no PQ proof from the peer within {timeout:g}s", spiffe_id=sid) from None
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ProofMissingError(
            f"the peer closed the channel before its PQ proof ({exc})", spiffe_id=sid
        ) from exc
    proof = pq.parse_body(body)
    peer_role = "client" if role == "server" else "server"
    await run_crypto(
        functools.partial(
            pq.verify_proof,
            proof,
            tls_id=peer_id,
            tls_leaf=chain[0],
            exporter_value=exporter_value,
            signer_role=peer_role,
            pqc_bundles=config.pqc_bundles,
            at=now,
        )
    )
    return proof.chain
