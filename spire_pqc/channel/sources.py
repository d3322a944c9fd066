"""What a channel needs from the outside: the local hybrid SVID and the peers' trust bundles.

The channel depends on these small Protocols, never on :mod:`spire_pqc.workload`, so a static value
and a live, rotating source are interchangeable (as in go-spiffe's ``tlsconfig``). Each new
connection asks the source again, so it uses the credentials current at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from spire_pqc.bundle import BundleSource
from spire_pqc.errors import ConfigError
from spire_pqc.svid import HybridSvid


class HybridSvidSource(Protocol):
    """Returns the hybrid SVID the local side presents (the current one, for a rotating source)."""

    def get_hybrid_svid(self) -> HybridSvid: ...


@dataclass(frozen=True, slots=True)
class StaticHybridSvidSource:
    """A fixed hybrid SVID (tests, one-shot tools)."""

    svid: HybridSvid

    def get_hybrid_svid(self) -> HybridSvid:
        return self.svid


class Mode(StrEnum):
    """Channel modes (docs/architecture.md); every mode requires the X25519MLKEM768 key exchange."""

    HYBRID = "hybrid"  # classical SVIDs in TLS + PQ proof bound to the session (default)
    SPIFFE = "spiffe"  # standard SPIFFE mTLS (interoperates with go-spiffe, Envoy)
    PQ_TLS = "pq-tls"  # ML-DSA-65 PQC SVIDs are the TLS certificates (interoperates with OpenSSL >= 3.5)

    @classmethod
    def parse(cls, value: Mode | str) -> Mode:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"mode: {value!r} is not one of {names}", source="channel") from None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Everything one side of a channel needs; checked for the chosen mode when built."""

    mode: Mode
    source: HybridSvidSource
    classical_bundles: BundleSource | None
    pqc_bundles: BundleSource | None

    def __post_init__(self) -> None:
        problems = []
        if self.mode in (Mode.HYBRID, Mode.SPIFFE) and self.classical_bundles is None:
            problems.append(f"classical_bundles: required in {self.mode.value} mode")
        if self.mode in (Mode.HYBRID, Mode.PQ_TLS) and self.pqc_bundles is None:
            problems.append(f"pqc_bundles: required in {self.mode.value} mode")
        if problems:
            raise ConfigError(problems, source="channel")
