"""The plugin's PQC bundle endpoint: this trust domain's signed PQC bundle for federated trust domains.

:class:`PqcBundlePublisher` builds the document (docs/federation.md): the PQC roots, the PQC JWT keys of
the published trust-domain signers, ``spiffe_sequence`` and ``spiffe_refresh_hint``, signed by the active
signer (:func:`spire_pqc.federation.document.sign_bundle`). The document is rebuilt only when its content
changes, and then gets a higher sequence number: the Unix time of the change (or the previous number + 1),
so it also increases across plugin restarts and reconfigurations without stored state.

:class:`BundleEndpointThread` runs :class:`~spire_pqc.federation.endpoint.BundleEndpointServer` (asyncio)
in a thread of the plugin process (whose gRPC servers are thread-based), presenting SPIRE's server SVID
from the IdentityProvider host service, re-read per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.bundle import SpiffeBundle
from spire_pqc.ca.jwtsigning import SignerSource, jwt_bundle_of
from spire_pqc.federation.document import SignedBundle, sign_bundle
from spire_pqc.federation.endpoint import BundleEndpointServer, ServerSvid
from spire_pqc.spiffeid import TrustDomain

__all__ = ["BundleEndpointThread", "PqcBundlePublisher"]

log = logging.getLogger(__name__)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class PqcBundlePublisher:
    """The current signed PQC bundle document of one trust domain; thread-safe.

    ``roots`` is read at every request, so a root rotation (a new root published beside the old one)
    is served as soon as whoever feeds it knows; ``signers`` is the CA's SignerSource."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        *,
        roots: Callable[[], Sequence[x509.Certificate]],
        signers: SignerSource,
        refresh_hint: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._trust_domain = trust_domain
        self._roots = roots
        self._signers = signers
        self._refresh_hint = refresh_hint
        self._clock = clock
        self._lock = threading.Lock()
        self._content: tuple[tuple[bytes, ...], bytes] | None = None
        self._signed: SignedBundle | None = None
        self.sequence = 0

    def document(self) -> SignedBundle:
        with self._lock:
            roots = tuple(self._roots())
            keys = jwt_bundle_of(self._trust_domain, self._signers)
            content = (tuple(_der(c) for c in roots), keys.to_jwks())
            if content != self._content or self._signed is None:
                self.sequence = max(self.sequence + 1, int(self._clock()))
                bundle = SpiffeBundle(
                    self._trust_domain,
                    roots,
                    {key.kid: key.entry() for key in keys},
                    self.sequence,
                    self._refresh_hint,
                )
                self._signed = sign_bundle(bundle, self._signers.active())
                self._content = content
                log.info(
                    "PQC bundle of %s: sequence %d, %d root(s), %d JWT key(s)",
                    self._trust_domain,
                    self.sequence,
                    len(roots),
                    len(keys),
                )
            return self._signed


class BundleEndpointThread:
    """A BundleEndpointServer on its own event loop in a daemon thread; ``start`` waits until it listens."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        document: Callable[[], SignedBundle],
        svid: Callable[[], ServerSvid],
        path: str,
    ) -> None:
        self._address = address
        self._server = BundleEndpointServer(document=document, svid=svid, path=path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._server.port

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="spire-pqc-bundle-endpoint", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise OSError(f"the PQC bundle endpoint did not start within {timeout:.0f}s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            await self._server.start(*self._address)
        except OSError as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        async with self._server:
            await self._stopped.wait()

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(5.0)


def svid_of(
    chain: Sequence[x509.Certificate], private_key_pem: bytes
) -> tuple[Sequence[x509.Certificate], Any]:
    """The (chain, key object) the endpoint presents, from the IdentityProvider's PEM key."""
    return chain, serialization.load_pem_private_key(private_key_pem, password=None)
