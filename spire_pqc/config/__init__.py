"""The configuration toolkit shared by the node agent (TOML) and the SPIRE server plugin (HCL).

Both configurations are pydantic models (:class:`Table`) of their tables, built from one set of
value types (:mod:`.fields`: durations in Go syntax, absolute paths, socket modes, ``host:port``,
sizes, SPIFFE IDs, trust domains, selectors), validated by one function (:func:`validate`) that
reports every problem at once, each with its key, as one :class:`~spire_pqc.errors.ConfigError`.
The reference documentation of both files (docs/configuration.md) is generated from the models
(:mod:`.reference`), so the documentation and the validators cannot disagree.

This package sits below ``agent`` and ``plugin`` (which never import each other) and above
``spiffeid``, whose types its fields produce.
"""

from spire_pqc.config.document import (
    Table,
    first_use,
    key,
    key_path,
    recall,
    registered,
    remember,
    table_of,
    unwrap,
    validate,
)
from spire_pqc.config.duration import format_duration, parse_duration
from spire_pqc.config.fields import (
    ADDRESS,
    AbsolutePath,
    Address,
    Addresses,
    Duration,
    Flag,
    KeyIds,
    Kind,
    LoopbackAddress,
    PositiveInt,
    Selectors,
    Size,
    SocketMode,
    SpiffeIdText,
    Text,
    TrustDomainName,
    WorkloadId,
    WorkloadIds,
    absolute_path,
    array,
    checked,
    choice,
    format_address,
    is_loopback,
    parse_address,
    problem,
    shown,
)
from spire_pqc.config.formats import MAX_CONFIG_BYTES, parse_hcl, parse_toml, read_toml

__all__ = [
    "ADDRESS",
    "MAX_CONFIG_BYTES",
    "AbsolutePath",
    "Address",
    "Addresses",
    "Duration",
    "Flag",
    "KeyIds",
    "Kind",
    "LoopbackAddress",
    "PositiveInt",
    "Selectors",
    "Size",
    "SocketMode",
    "SpiffeIdText",
    "Table",
    "Text",
    "TrustDomainName",
    "WorkloadId",
    "WorkloadIds",
    "absolute_path",
    "array",
    "checked",
    "choice",
    "first_use",
    "format_address",
    "format_duration",
    "is_loopback",
    "key",
    "key_path",
    "parse_address",
    "parse_duration",
    "parse_hcl",
    "parse_toml",
    "problem",
    "read_toml",
    "recall",
    "registered",
    "remember",
    "shown",
    "table_of",
    "unwrap",
    "validate",
]
