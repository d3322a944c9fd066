"""docs/metrics.md read as data: metric families, their types, labels and closed label-value sets, and the
metric / label references of a PromQL expression. Used to hold the alert rules and the dashboard to the
contract (and, later, the code's exports)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels every scraped series carries (Prometheus's target labels) and the histogram bucket label.
TARGET_LABELS = frozenset({"job", "instance"})

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_LABEL = re.compile(r"`(?P<name>[a-z_][a-z0-9_]*)`(?:=(?P<values>(?:`[^`]+`(?:\\\|)?)+))?")
_SELECTOR = re.compile(r"\b(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(?P<matchers>[^}]*)\}")
_MATCHER = re.compile(r"(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*\"(?P<value>[^\"]*)\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^)]*)\)")
_FUNCTION_NAMES = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "rate",
        "increase",
        "irate",
        "histogram_quantile",
        "time",
        "label_values",
    }
)


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: dict[str, frozenset[str] | None]  # None: free values (e.g. a configured tunnel name)

    def series_names(self) -> set[str]:
        if self.type == "histogram":
            return {self.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        return {self.name}


def parse_contract(path: Path) -> dict[str, Family]:
    """The metric tables of docs/metrics.md: rows ``| `name` | type | labels | meaning |``."""
    families: dict[str, Family] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in _CELL_SPLIT.split(line)[1:-1]]
        if len(cells) != 4 or cells[1] not in ("counter", "gauge", "histogram"):
            continue
        name = cells[0].strip("`")
        labels: dict[str, frozenset[str] | None] = {}
        for match in _LABEL.finditer(cells[2]):
            values = match.group("values")
            labels[match.group("name")] = frozenset(re.findall(r"`([^`]+)`", values)) if values else None
        assert name not in families, f"{name} is listed twice in {path}"
        families[name] = Family(name=name, type=cells[1], labels=labels)
    return families


def series_index(families: dict[str, Family]) -> dict[str, Family]:
    return {series: family for family in families.values() for series in family.series_names()}


@dataclass(frozen=True)
class Reference:
    series: str
    label: str
    op: str
    value: str


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (``spire_pqc_…`` and bare ``up``), with or without matchers."""
    names = set(re.findall(r"\bspire_pqc_[a-z0-9_]+\b", expr))
    names |= {m.group("name") for m in _SELECTOR.finditer(expr) if m.group("name") not in _FUNCTION_NAMES}
    return names


def matchers(expr: str) -> list[Reference]:
    found = []
    for selector in _SELECTOR.finditer(expr):
        for matcher in _MATCHER.finditer(selector.group("matchers")):
            found.append(Reference(selector.group("name"), matcher.group("label"), matcher.group("op"),
                                   matcher.group("value")))  # fmt: skip
    return found


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for match in _GROUPING.finditer(expr):
        labels |= {label.strip() for label in match.group("labels").split(",") if label.strip()}
    return labels


def problems(expr: str, index: dict[str, Family]) -> list[str]:
    """What in ``expr`` the contract does not name: metrics, labels, label values."""
    found: list[str] = []
    names = metric_names(expr)
    for name in sorted(names):
        if name not in index:
            found.append(f"metric {name} is not in docs/metrics.md")
    known_labels = set(TARGET_LABELS)
    for name in names & index.keys():
        family = index[name]
        known_labels |= set(family.labels)
        if family.type == "histogram":
            known_labels.add("le")
    for ref in matchers(expr):
        if ref.series not in index:
            continue
        labels = index[ref.series].labels
        allowed = labels.get(ref.label)
        if ref.label not in labels and ref.label not in TARGET_LABELS:
            found.append(f"{ref.series} has no label {ref.label} in docs/metrics.md")
        elif allowed is not None and ref.op in ("=", "=~") and "$" not in ref.value:
            values = ref.value.split("|") if ref.op == "=~" else [ref.value]
            for value in values:
                if value not in allowed:
                    found.append(f"{ref.series}{{{ref.label}}}: value {value!r} is not in {sorted(allowed)}")
    for label in sorted(grouping_labels(expr) - known_labels):
        found.append(f"grouping label {label} belongs to none of {sorted(names)}")
    return found


# --- the code's exports held to the contract ---------------------------------------------------------

PROCESS_PREFIXES = {
    "agent": ("spire_pqc_agent_", "spire_pqc_crypto_"),
    "plugin": ("spire_pqc_plugin_", "spire_pqc_ca_", "spire_pqc_crypto_"),
}


def contract_families_of(families: dict[str, Family], process: str) -> dict[str, Family]:
    """The contract's families a process must export (by name prefix: see docs/metrics.md)."""
    return {name: f for name, f in families.items() if name.startswith(PROCESS_PREFIXES[process])}


def _creation_time(name: str, families: dict[str, Family]) -> bool:
    """``X_created``: prometheus_client's creation timestamp of counter or histogram ``X`` (which the
    0.0.4 text parser reads as a gauge family of its own)."""
    base = name.removesuffix("_created")
    return base != name and (
        base + "_total" in families or families.get(base, Family("", "", {})).type == "histogram"
    )


def export_problems(exposition: str, families: dict[str, Family], process: str) -> list[str]:
    """Where a scrape of ``process`` and the contract disagree, both ways: a ``spire_pqc_…`` family the
    contract does not list (or lists with another type), a sample with other labels than the contract's
    or a label value outside its closed set, and a contract family of this process not exported."""
    from prometheus_client.parser import text_string_to_metric_families

    found: list[str] = []
    exported: set[str] = set()
    for scraped in text_string_to_metric_families(exposition):
        if not scraped.name.startswith("spire_pqc_") or _creation_time(scraped.name, families):
            continue
        name = scraped.name + "_total" if scraped.type == "counter" else scraped.name
        exported.add(name)
        family = families.get(name)
        if family is None:
            found.append(f"{process} exports {name} ({scraped.type}), which docs/metrics.md does not list")
            continue
        if family.type != scraped.type:
            found.append(f"{name}: exported as a {scraped.type}, docs/metrics.md says {family.type}")
        for sample in scraped.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            if set(labels) != set(family.labels):
                found.append(
                    f"{sample.name}: labels {sorted(labels)}, docs/metrics.md says {sorted(family.labels)}"
                )
                continue
            for label, value in labels.items():
                allowed = family.labels[label]
                if allowed is not None and value not in allowed:
                    found.append(
                        f"{sample.name}{{{label}={value!r}}}: not in docs/metrics.md's {sorted(allowed)}"
                    )
    for name in sorted(set(contract_families_of(families, process)) - exported):
        found.append(f"docs/metrics.md lists {name}, which the {process} does not export")
    return sorted(set(found))
