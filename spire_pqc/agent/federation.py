"""The agent's federated PQC bundles (docs/federation.md): ``[federation."<td>"]`` followed and pushed.

A :class:`~spire_pqc.federation.watcher.FederatedBundleWatcher` follows each configured remote trust
domain's PQC bundle endpoint; the ``https_spiffe`` server check uses the remote trust domain's
*classical* bundle as SPIRE's own federation delivers it to this node (the identity source's bundles).
Every accepted document's roots and JWT keys go to the provisioner, whose change wakes every hybrid
stream, so workloads get a rotated remote root without a restart; on any failure the watcher keeps the
last good bundle (and with ``agent.state_dir`` keeps it across restarts too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from spire_pqc.agent.config import FederationConfig
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.bundle import X509Bundle
from spire_pqc.errors import BundleError, ConfigError, SpirePqcError
from spire_pqc.federation.client import BundleEndpoint
from spire_pqc.federation.watcher import FederatedBundleWatcher, FederatedTrust, RemoteTrust
from spire_pqc.spiffeid import TrustDomain

__all__ = ["FederationFollower", "LiveClassicalBundles", "load_remotes"]

log = logging.getLogger(__name__)


class LiveClassicalBundles:
    """A BundleSource over the identity source's latest classical bundles (trust domain → DER)."""

    def __init__(self, latest: Callable[[], Mapping[TrustDomain, bytes]]) -> None:
        self._latest = latest

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        der = self._latest().get(trust_domain)
        if der is None:
            raise BundleError(f"no classical bundle of {trust_domain} from SPIRE (is it federated there?)")
        return X509Bundle.from_der(trust_domain, der)


def load_remotes(federation: Mapping[TrustDomain, FederationConfig]) -> list[RemoteTrust]:
    """The configured remotes with their initial roots read; every problem at its key."""
    remotes, problems = [], []
    for td, fed in federation.items():
        try:
            roots = X509Bundle.from_pem(td, fed.initial_bundle.read_bytes()).authorities
            endpoint = BundleEndpoint(td, fed.address[0], fed.address[1], fed.endpoint_spiffe_id, fed.path)
            remotes.append(RemoteTrust(endpoint, tuple(roots)))
        except (OSError, SpirePqcError, ValueError) as exc:
            problems.append(f"federation.{td}.initial_bundle: {exc}")
    if problems:
        raise ConfigError(problems)
    return remotes


def _push(provisioner: PqcProvisioner, trust: FederatedTrust) -> None:
    roots = [c.public_bytes(serialization.Encoding.DER) for c in trust.roots]
    jwks = trust.jwt_bundle().to_jwks() if trust.bundle is not None else b""
    provisioner.note_bundles(trust.trust_domain, pqc_bundle=roots, pqc_jwt_bundle=jwks)


class FederationFollower:
    """Runs the watcher for the agent and feeds the provisioner; ``start`` / ``close``."""

    def __init__(
        self,
        remotes: list[RemoteTrust],
        provisioner: PqcProvisioner,
        classical: Callable[[], Mapping[TrustDomain, bytes]],
        *,
        state_dir: Path | None,
    ) -> None:
        self._provisioner = provisioner
        self.watcher = FederatedBundleWatcher(
            remotes,
            classical_bundles=LiveClassicalBundles(classical),
            on_update=lambda trust: _push(provisioner, trust),
            state_dir=state_dir,
        )
        self._remotes = remotes
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for remote in self._remotes:  # the initial (or kept) roots, before the first fetch
            _push(self._provisioner, self.watcher.trust(remote.trust_domain))
        self._task = asyncio.create_task(self.watcher.run(), name="spire-pqc-federation")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
