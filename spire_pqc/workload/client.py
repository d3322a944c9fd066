"""asyncio client of the Workload API and the spire_pqc HybridWorkload extension (grpclib).

The only module of the SDK that touches generated stubs. It returns domain objects
(:class:`~spire_pqc.svid.HybridSvid`, :class:`~spire_pqc.bundle.BundleSet`), adds the
``workload.spiffe.io: true`` security header to every call, and turns gRPC statuses into the
project's errors:

* PERMISSION_DENIED → :class:`~spire_pqc.errors.AuthorizationError` (no identity for this process;
  the specification says retry with backoff);
* UNAVAILABLE, or no connection → :class:`~spire_pqc.errors.UnavailableError` (retry with backoff);
* anything else (INVALID_ARGUMENT, UNIMPLEMENTED, ...) → :class:`~spire_pqc.errors.SpirePqcError`
  (do not retry).

Example::

    async with WorkloadClient() as client:          # SPIFFE_ENDPOINT_SOCKET
        update = await client.fetch_hybrid_svids()
        async for update in client.watch_hybrid_svids():
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import h2.exceptions
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal.wire import FETCH_HYBRID_SVIDS, FETCH_PQC_BUNDLES, FETCH_X509_SVID, SECURITY_METADATA
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import (
    AuthorizationError,
    MalformedCredentialError,
    ParseError,
    SpirePqcError,
    UnavailableError,
)
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid, X509Svid
from spire_pqc.workload.addr import Endpoint, resolve_endpoint
from spire_pqc.x509.load import load_der_certificates

MAX_CHAIN = 16

T = TypeVar("T")


@dataclass(frozen=True)
class X509Context:
    svids: tuple[X509Svid, ...]  # parsed, not verified
    bundles: BundleSet


@dataclass(frozen=True)
class HybridUpdate:
    """One full state of the hybrid stream: SVIDs (default first) and both kinds of bundles."""

    svids: tuple[HybridSvid, ...]
    classical_bundles: BundleSet
    pqc_bundles: BundleSet


def split_certificates(data: bytes, *, what: str) -> tuple[x509.Certificate, ...]:
    """Concatenated DER certificates (leaf first) → fully parsed certificates; ParseError otherwise."""
    chain = load_der_certificates(data, what=what, max_count=MAX_CHAIN)
    if not chain:
        raise ParseError(f"{what}: no certificate")
    return chain


def _bundle(td: TrustDomain, der: bytes, revoked: Iterable[str] = ()) -> X509Bundle | None:
    if not der:
        return None
    bundle = X509Bundle.from_der(td, der)
    return X509Bundle(td, bundle.authorities, revoked=revoked) if revoked else bundle


def _classical_key(der: bytes, *, where: str, spiffe_id: str) -> PrivateKeyTypes:
    """A classical SVID key (PKCS#8 DER); MalformedCredentialError for anything cryptography refuses."""
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise MalformedCredentialError(
            f"{where}: private key does not parse: {exc}", spiffe_id=spiffe_id or None
        ) from exc


def parse_hybrid_response(message: hy.HybridSVIDResponse) -> HybridUpdate:
    """Wire → domain. Keys must match certificates (HybridSvid refuses otherwise); not yet verified."""
    svids = []
    classical: dict[TrustDomain, X509Bundle] = {}
    pqc: dict[TrustDomain, X509Bundle] = {}
    for index, item in enumerate(message.svids):
        where = f"hybrid SVID {index}"
        try:
            spiffe_id = SpiffeId.parse(item.spiffe_id)
            classical_key = _classical_key(item.classical_key, where=where, spiffe_id=item.spiffe_id)
            svid = HybridSvid(
                spiffe_id=spiffe_id,
                classical_chain=split_certificates(item.classical_chain, what=f"{where} classical chain"),
                classical_key=classical_key,
                pqc_chain=split_certificates(item.pqc_chain, what=f"{where} PQC chain"),
                pqc_key=MLDSA65PrivateKey.from_pkcs8(item.pqc_key),
                kem_chain=split_certificates(item.kem_certificate, what=f"{where} KEM certificate"),
                kem_key=MLKEM768PrivateKey.from_pkcs8(item.kem_key),
                hint=item.hint,
            )
        except MalformedCredentialError:
            raise
        except SpirePqcError as exc:
            raise MalformedCredentialError(f"{where}: {exc}", spiffe_id=item.spiffe_id or None) from exc
        td = spiffe_id.trust_domain
        revoked = _revoked(message.revoked_intermediates)
        for table, der, deny in ((classical, item.classical_bundle, ()), (pqc, item.pqc_bundle, revoked)):
            bundle = _bundle(td, der, deny)
            if bundle is not None:
                table[td] = bundle
        svids.append(svid)
    for name, der in message.federated_pqc_bundles.items():
        td = TrustDomain.parse(name)
        bundle = _bundle(td, der, _revoked(message.revoked_intermediates))
        if bundle is not None and td not in pqc:
            pqc[td] = bundle
    return HybridUpdate(tuple(svids), BundleSet(classical.values()), BundleSet(pqc.values()))


def parse_x509_response(message: wl.X509SVIDResponse) -> X509Context:
    svids = []
    bundles: dict[TrustDomain, X509Bundle] = {}
    for index, item in enumerate(message.svids):
        spiffe_id = SpiffeId.parse(item.spiffe_id)
        chain = split_certificates(item.x509_svid, what=f"X509-SVID {index}")
        # Parsed here so a key that does not load fails at this boundary, typed, not in a consumer.
        key = _classical_key(item.x509_svid_key, where=f"X509-SVID {index}", spiffe_id=item.spiffe_id)
        svids.append(X509Svid(spiffe_id, chain, key, item.hint))
        bundle = _bundle(spiffe_id.trust_domain, item.bundle)
        if bundle is not None:
            bundles[spiffe_id.trust_domain] = bundle
    for name, der in message.federated_bundles.items():
        td = TrustDomain.parse(name)
        bundle = _bundle(td, der)
        if bundle is not None:
            bundles.setdefault(td, bundle)
    return X509Context(tuple(svids), BundleSet(bundles.values()))


def parse_pqc_bundles(message: hy.PQCBundlesResponse) -> BundleSet:
    revoked = _revoked(message.revoked_intermediates)
    return BundleSet(
        X509Bundle(
            TrustDomain.parse(name),
            X509Bundle.from_der(TrustDomain.parse(name), der).authorities,
            revoked=revoked,
        )
        for name, der in message.bundles.items()
        if der
    )


def _revoked(key_ids: Iterable[str]) -> frozenset[str]:
    """The revoked intermediates' key ids (64 hex digits each); anything else is malformed."""
    out = set()
    for key_id in key_ids:
        if len(key_id) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key_id):
            raise MalformedCredentialError(f"revoked_intermediates: {key_id[:80]!r} is not a key id")
        out.add(key_id.lower())
    return frozenset(out)


@contextlib.contextmanager
def _errors(endpoint: Endpoint) -> Iterator[None]:
    try:
        yield
    except GRPCError as exc:
        text = f"Workload API at {endpoint}: {exc.status.name}: {exc.message}"
        if exc.status is Status.PERMISSION_DENIED:
            raise AuthorizationError(text) from exc
        if exc.status is Status.UNAVAILABLE:
            raise UnavailableError(text) from exc
        raise SpirePqcError(text) from exc
    except (OSError, StreamTerminatedError, h2.exceptions.ProtocolError) as exc:
        raise UnavailableError(f"Workload API at {endpoint}: {exc.__class__.__name__}: {exc}") from exc


class WorkloadClient:
    """One connection to the agent; every method opens its own gRPC stream on it."""

    def __init__(self, address: str | None = None) -> None:
        self.endpoint = resolve_endpoint(address)
        self._channel: Channel | None = None

    def _get_channel(self) -> Channel:
        if self._channel is None:
            if self.endpoint.path is not None:
                self._channel = Channel(path=self.endpoint.path)
            else:
                self._channel = Channel(self.endpoint.host, self.endpoint.port)
        return self._channel

    async def _watch(self, method: str, request: Message, reply_type: type[Any]) -> AsyncIterator[Any]:
        channel = self._get_channel()
        with _errors(self.endpoint):
            async with channel.request(
                method, Cardinality.UNARY_STREAM, type(request), reply_type, metadata=dict(SECURITY_METADATA)
            ) as stream:
                await stream.send_message(request, end=True)
                async for reply in stream:
                    yield reply
        raise UnavailableError(f"Workload API at {self.endpoint}: the server ended the stream")

    async def watch_x509_context(self) -> AsyncGenerator[X509Context, None]:
        async for reply in self._watch(FETCH_X509_SVID, wl.X509SVIDRequest(), wl.X509SVIDResponse):
            yield parse_x509_response(reply)

    async def fetch_x509_context(self) -> X509Context:
        return await _first(self.watch_x509_context())

    async def watch_hybrid_svids(self) -> AsyncGenerator[HybridUpdate, None]:
        method = FETCH_HYBRID_SVIDS
        async for reply in self._watch(method, hy.HybridSVIDRequest(), hy.HybridSVIDResponse):
            yield parse_hybrid_response(reply)

    async def fetch_hybrid_svids(self) -> HybridUpdate:
        return await _first(self.watch_hybrid_svids())

    async def watch_pqc_bundles(self) -> AsyncGenerator[BundleSet, None]:
        method = FETCH_PQC_BUNDLES
        async for reply in self._watch(method, hy.PQCBundlesRequest(), hy.PQCBundlesResponse):
            yield parse_pqc_bundles(reply)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def __aenter__(self) -> WorkloadClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _first(iterator: AsyncIterator[T]) -> T:
    try:
        return await anext(iterator)
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
