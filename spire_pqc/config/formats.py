"""Decoding configuration text: TOML (the agent's file) and HCL v1 (the plugin's ``plugin_data``).

Both give a dict of tables or a ConfigError; no decoder exception escapes, whatever the input
(the property tests feed arbitrary text). Text is bounded before decoding: a configuration is a few
kilobytes, so anything over :data:`MAX_CONFIG_BYTES` is refused rather than parsed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from spire_pqc.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "parse_hcl", "parse_toml", "read_toml"]

MAX_CONFIG_BYTES = 1024 * 1024


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path``, decoded (ConfigError naming the file otherwise)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from exc
    return parse_toml(text, source=str(path))


def parse_toml(text: str, *, source: str) -> dict[str, Any]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration", source=source)
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or int()'s limit of 4300 digits, which tomllib lets through
        raise ConfigError(f"not valid TOML: {exc}", source=source) from exc
    except RecursionError:
        raise ConfigError("not valid TOML: arrays or tables nested too deeply", source=source) from None


def parse_hcl(text: str, *, source: str) -> dict[str, Any]:
    """HCL v1 ``key = value`` pairs, as SPIRE sends ``plugin_data`` (empty text: no keys)."""
    import hcl  # pyhcl: imported when needed, the agent never parses HCL

    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration", source=source)
    if not text.strip():
        return {}
    try:
        data = hcl.loads(text)
    # pyhcl raises ValueError for syntax errors, but its internals leak other exceptions on odd
    # input (found by tests/unit/credentials/test_parsers_property.py): ZeroDivisionError for
    # "a = 0/0", RecursionError for deep nesting, AttributeError for 'k = "" k {a = 1}'. All of
    # them mean the text is not usable HCL.
    except Exception as exc:
        raise ConfigError(f"plugin_data is not valid HCL: {exc}", source=source) from exc
    if not isinstance(data, dict):
        raise ConfigError("plugin_data must be a block of key = value pairs", source=source)
    return data
