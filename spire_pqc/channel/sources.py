"""What a channel needs from the outside: a :class:`~spire_pqc.source.HybridSource` and a mode.

The channel depends on that small Protocol, never on :mod:`spire_pqc.workload`, so a static value
and a live, rotating source are interchangeable (as in go-spiffe's ``tlsconfig``). Each new
connection asks the source again, for the SVID it presents and for the bundles that verify the
peer, so it uses the credentials and the trust current at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from spire_pqc.bundle import BundleSource
from spire_pqc.errors import ConfigError
from spire_pqc.source import HybridSource, classical_bundles_of, pqc_bundles_of


class Mode(StrEnum):
    """Channel modes (docs/architecture.md); every mode requires the X25519MLKEM768 key exchange."""

    HYBRID = "hybrid"  # classical SVIDs in TLS + PQ proof bound to the session (default)
    SPIFFE = "spiffe"  # standard SPIFFE mTLS (interoperates with go-spiffe, Envoy)
    PQ_TLS = "pq-tls"  # ML-DSA-65 PQC SVIDs are the TLS certificates (interoperates with OpenSSL >= 3.5)

    @property
    def alpn(self) -> bytes | None:
        """The ALPN protocol ID this mode negotiates; ``spiffe`` has none, as standard SPIFFE peers."""
        return _ALPN.get(self)

    @property
    def requires_alpn(self) -> bool:
        """Only ``hybrid`` insists on its ALPN: ``pq-tls`` also talks to plain OpenSSL peers (no ALPN)."""
        return self is Mode.HYBRID

    @classmethod
    def parse(cls, value: Mode | str) -> Mode:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"mode: {value!r} is not one of {names}", source="channel") from None


# ALPN protocol IDs (RFC 7301) of the modes that standard SPIFFE peers do not speak: a mismatch fails in
# the handshake instead of handing the peer's application our PQ proof as data.
_ALPN = {Mode.HYBRID: b"spire-pqc-hybrid/1", Mode.PQ_TLS: b"spire-pqc-pq-tls/1"}
MODE_OF_ALPN = {alpn: mode for mode, alpn in _ALPN.items()}


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Everything one side of a channel needs: the mode and the source of SVIDs and bundles."""

    mode: Mode
    source: HybridSource

    @property
    def classical_bundles(self) -> BundleSource:
        """The source's classical bundles, read at each lookup (never a snapshot)."""
        return classical_bundles_of(self.source)

    @property
    def pqc_bundles(self) -> BundleSource:
        """The source's PQC bundles, read at each lookup (never a snapshot)."""
        return pqc_bundles_of(self.source)
