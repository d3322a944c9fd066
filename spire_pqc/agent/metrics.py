"""The agent's counters and gauges, rendered in the Prometheus text exposition format (0.0.4)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels
    )
    return "{" + inner + "}"


@dataclass
class Metrics:
    """Plain numbers updated by the agent's components; :meth:`render` is called per scrape."""

    identities_served: Counter[str] = field(default_factory=Counter)  # SVIDs sent, by service
    issuance: Counter[str] = field(default_factory=Counter)  # "success" / "failure"
    open_streams: Counter[str] = field(default_factory=Counter)  # by RPC name
    rotation_lag_seconds: float = 0.0  # last: classical SVID first seen → PQC credentials ready
    rotation_lag_sum: float = 0.0
    rotation_lag_count: int = 0
    pqc_identities: int = 0  # classical SVIDs with PQC credentials held in memory
    peers: int = 0

    def observe_rotation_lag(self, seconds: float) -> None:
        self.rotation_lag_seconds = seconds
        self.rotation_lag_sum += seconds
        self.rotation_lag_count += 1

    def render(self) -> str:
        lines: list[str] = []

        def family(
            name: str, kind: str, help_text: str, samples: list[tuple[tuple[tuple[str, str], ...], float]]
        ) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {value:g}")

        family(
            "spire_pqc_agent_identities_served_total",
            "counter",
            "SVIDs sent to workloads, by service.",
            [((("service", k),), v) for k, v in sorted(self.identities_served.items())]
            or [((("service", "workload"),), 0)],
        )
        family(
            "spire_pqc_agent_pqc_issuance_total",
            "counter",
            "PQC issuance attempts by result.",
            [((("result", r),), self.issuance[r]) for r in ("success", "failure")],
        )
        family(
            "spire_pqc_agent_open_streams",
            "gauge",
            "Open Workload API and hybrid streams, by RPC.",
            [((("rpc", k),), v) for k, v in sorted(self.open_streams.items())] or [((("rpc", "none"),), 0)],
        )
        family(
            "spire_pqc_agent_rotation_lag_seconds",
            "gauge",
            "Seconds from a new classical SVID to its PQC credentials (last rotation).",
            [((), self.rotation_lag_seconds)],
        )
        lines.append("# HELP spire_pqc_agent_rotation_lag_seconds_total Summary of rotation lags.")
        lines.append("# TYPE spire_pqc_agent_rotation_lag_seconds_total summary")
        lines.append(f"spire_pqc_agent_rotation_lag_seconds_total_sum {self.rotation_lag_sum:g}")
        lines.append(f"spire_pqc_agent_rotation_lag_seconds_total_count {self.rotation_lag_count}")
        family(
            "spire_pqc_agent_pqc_identities",
            "gauge",
            "Classical SVIDs with PQC credentials held in memory.",
            [((), self.pqc_identities)],
        )
        family("spire_pqc_agent_connections", "gauge", "Open client connections.", [((), self.peers)])
        return "\n".join(lines) + "\n"
