"""Fetching a remote trust domain's signed PQC bundle over ``https_spiffe`` (docs/federation.md).

The client speaks the channel's TLS (TLS 1.3, X25519MLKEM768 only) and, as the ``https_spiffe``
profile asks, authenticates the server by its X509-SVID: the chain must verify against the classical
bundle of the *endpoint's* trust domain (never a merged store), and its SPIFFE ID must be the one
configured for the endpoint. It presents no certificate. The response is bounded (headers 16 KB,
document :data:`~spire_pqc.bundle.MAX_BUNDLE_BYTES`) and must carry the detached signature; what the
signature is worth is decided by :func:`~spire_pqc.federation.document.verify_signed_bundle`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11
from OpenSSL import SSL

from spire_pqc.bundle import MAX_BUNDLE_BYTES, BundleSource
from spire_pqc.channel.context import base_context
from spire_pqc.channel.session import peer_chain
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.errors import AuthorizationError, BundleSignatureError, FederationError, HandshakeError
from spire_pqc.federation.document import MAX_SIGNATURE_BYTES, SIGNATURE_HEADER, SignedBundle
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import verify_classical_svid

__all__ = ["BundleEndpoint", "fetch_signed_bundle"]

MAX_RESPONSE_HEADER_BYTES = 16 * 1024
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class BundleEndpoint:
    """Where a remote trust domain publishes its PQC bundle, and who must serve it."""

    trust_domain: TrustDomain
    host: str
    port: int
    endpoint_id: SpiffeId
    path: str = "/"

    def __post_init__(self) -> None:
        if self.endpoint_id.trust_domain != self.trust_domain:
            # https_spiffe: the endpoint's SVID is verified against the remote trust domain's bundle.
            raise ValueError(
                f"endpoint SPIFFE ID {self.endpoint_id} is not in trust domain {self.trust_domain}"
            )

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.path}"


def _client_context() -> SSL.Context:
    # The channel's policy; base_context asks for the peer's certificate (verified after the
    # handshake, against the endpoint trust domain's bundle) and this side presents none.
    return base_context()


async def _exchange(endpoint: BundleEndpoint, classical_bundles: BundleSource) -> SignedBundle:
    loop = asyncio.get_running_loop()
    try:
        _, proto = await loop.create_connection(
            lambda: TlsProtocol(_client_context(), server_side=False), endpoint.host, endpoint.port
        )
    except OSError as exc:
        raise FederationError(f"{endpoint.url}: cannot connect ({exc.strerror or exc})") from None
    try:
        await proto.handshake()
        server_id = verify_classical_svid(peer_chain(proto), classical_bundles)
        if server_id != endpoint.endpoint_id:
            raise AuthorizationError(
                f"{endpoint.url}: the server is {server_id}, not the configured {endpoint.endpoint_id}"
            )
        reader = asyncio.StreamReader(limit=MAX_RESPONSE_HEADER_BYTES)
        app = asyncio.StreamReaderProtocol(reader)
        transport = proto.attach(app, {})
        writer = asyncio.StreamWriter(transport, app, reader, loop)
        return await _get(endpoint, reader, writer)
    finally:
        proto.close()


async def _get(
    endpoint: BundleEndpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> SignedBundle:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEADER_BYTES)
    request = h11.Request(
        method="GET",
        target=endpoint.path,
        headers=[
            ("Host", f"{endpoint.host}:{endpoint.port}"),
            ("Accept", "application/json"),
            ("Connection", "close"),
        ],
    )
    writer.write((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    await writer.drain()
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(64 * 1024))
        elif isinstance(event, h11.Response):
            response = event
            if response.status_code != 200:
                raise FederationError(f"{endpoint.url}: HTTP {response.status_code}")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BUNDLE_BYTES:
                raise FederationError(f"{endpoint.url}: bundle document over {MAX_BUNDLE_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage):
            break
        else:  # ConnectionClosed before the end of the message, or an informational response
            raise FederationError(f"{endpoint.url}: the response ended early")
    assert response is not None  # h11 delivers a Response before any Data or EndOfMessage
    signatures = [
        value for name, value in response.headers if name.decode().lower() == SIGNATURE_HEADER.lower()
    ]
    if len(signatures) != 1 or not signatures[0] or len(signatures[0]) > MAX_SIGNATURE_BYTES:
        raise BundleSignatureError(
            f"{endpoint.url}: the response carries {len(signatures)} usable {SIGNATURE_HEADER} headers; exactly one "
            "is required (an unsigned PQC bundle is never accepted)",
            spiffe_id=endpoint.trust_domain.id_string(),
        )
    return SignedBundle(bytes(body), signatures[0].decode("ascii", "replace"))


async def fetch_signed_bundle(
    endpoint: BundleEndpoint, *, classical_bundles: BundleSource, timeout: float = DEFAULT_TIMEOUT
) -> SignedBundle:
    """GET the signed PQC bundle from ``endpoint``. Raises FederationError (unreachable, HTTP error,
    bad response), a VerificationError subclass (the server's SVID does not verify), AuthorizationError
    (it is not the configured endpoint SPIFFE ID), BundleSignatureError (no signature)."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(endpoint, classical_bundles)
    except TimeoutError:
        raise FederationError(f"{endpoint.url}: no answer within {timeout:g} s") from None
    except HandshakeError as exc:
        raise FederationError(f"{endpoint.url}: {exc}") from None
    except (ConnectionError, h11.ProtocolError) as exc:
        raise FederationError(f"{endpoint.url}: {type(exc).__name__}: {exc}") from None
