"""The reference documentation of a configuration, generated from its models.

:func:`keys` walks a root :class:`~spire_pqc.config.document.Table` and lists every key with its
type (the :class:`~spire_pqc.config.fields.Kind` of its value type), its default and its text;
the ``render_*`` functions turn that into Markdown. ``scripts/gen_config_docs.py`` writes the
result between ``<!-- BEGIN GENERATED name -->`` / ``<!-- END GENERATED name -->`` markers in
docs/configuration.md and the READMEs, and ``--check`` (run by ``make lint`` and by a test) fails
when a model and its documentation disagree.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from spire_pqc.config.document import Table, table_of, unwrap
from spire_pqc.config.duration import format_duration
from spire_pqc.config.fields import Kind

__all__ = [
    "KeyDoc",
    "keys",
    "render_keys",
    "render_tables",
    "render_types",
    "replace_sections",
    "sections_of",
]


@dataclass(frozen=True)
class KeyDoc:
    """One key: ``table`` is its TOML table (``tunnel.outbound``; empty for the plugin's flat keys)."""

    table: str
    array: bool  # the table is an array of tables: [[table]]
    name: str
    kind: Kind | None
    default: str
    doc: str

    @property
    def path(self) -> str:
        """The key as the documentation and error messages spell it: ``tunnel.outbound[].listen``."""
        return f"{self.table}{'[]' if self.array else ''}.{self.name}" if self.table else self.name


@dataclass(frozen=True)
class TableDoc:
    name: str
    array: bool
    doc: str

    @property
    def header(self) -> str:
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"


def keys(root: type[Table]) -> list[KeyDoc]:
    return [k for k in _walk(root, "", False) if isinstance(k, KeyDoc)]


def tables(root: type[Table]) -> list[TableDoc]:
    return [t for t in _walk(root, "", False) if isinstance(t, TableDoc)]


def _walk(model: type[Table], prefix: str, array: bool) -> Iterator[KeyDoc | TableDoc]:
    nested: list[tuple[str, FieldInfo]] = []
    for name, field in model.model_fields.items():
        annotation = unwrap(field.annotation)
        if table_of(annotation) or _array_of_tables(annotation) or _named_tables(annotation):
            nested.append((name, field))  # after this table's own keys, as in a TOML file
            continue
        if typing.get_origin(annotation) is dict:  # a table of names → values: `name.<key kind>`
            key_kind = _kind(typing.get_args(annotation)[0])
            shown_name = f"{name}.<{key_kind.name if key_kind else 'name'}>"
            kind = _kind(typing.get_args(annotation)[1])
        else:
            shown_name, kind = name, _kind(field.annotation, field.metadata)
        yield KeyDoc(prefix, array, shown_name, kind, _default(field), field.description or "")
    for name, field in nested:
        annotation = unwrap(field.annotation)
        path = f"{prefix}.{name}" if prefix else name
        named = _named_tables(annotation)
        if named is not None:  # a table per name: [name."<key kind>"]
            key_kind = _kind(typing.get_args(annotation)[0])
            path = f'{path}."<{key_kind.name if key_kind else "name"}>"'
        item = _array_of_tables(annotation)
        sub = item or named or table_of(annotation)
        assert sub is not None
        yield TableDoc(path, item is not None, field.description or "")
        yield from _walk(sub, path, item is not None)


def _named_tables(annotation: Any) -> type[Table] | None:
    """The value table of ``dict[name, SomeTable]``, else None."""
    if typing.get_origin(annotation) is not dict:
        return None
    return table_of(typing.get_args(annotation)[1])


def _array_of_tables(annotation: Any) -> type[Table] | None:
    return table_of(typing.get_args(annotation)[0]) if typing.get_origin(annotation) is list else None


def _kind(annotation: Any, metadata: list[Any] | None = None) -> Kind | None:
    """The Kind in a value type's ``Annotated`` metadata (looking through ``X | None``)."""
    found = [m for m in metadata or () if isinstance(m, Kind)]
    while not found and annotation is not None:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            found = [m for m in annotation.__metadata__ if isinstance(m, Kind)]
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0] if len(members) == 1 else None
        else:
            annotation = None
    return found[0] if found else None


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("shown_default"), str):
        return str(extra["shown_default"])
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None or value in ([], {}):
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dt.timedelta):
        return f'`"{format_duration(value)}"`'
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


# --- Markdown ---------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = _cell(text)
    return text[:1].upper() + text[1:]


def render_keys(rows: list[KeyDoc], *, full_paths: bool = True, brief: bool = False) -> str:
    """A table of ``rows``; ``brief``: each key's first sentence only (the README's compact form)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for row in rows:
        name = row.path if full_paths else row.name
        kind = row.kind.name if row.kind else ""
        doc = row.doc.split(". ")[0].rstrip(".") if brief else row.doc
        lines.append(f"| `{name}` | {kind} | {_cell(row.default)} | {_cell(doc)} |")
    return "\n".join(lines)


def render_tables(root: type[Table], *, heading: str = "####") -> str:
    """One section per table: its header, its text, the table of its keys."""
    rows = keys(root)
    parts = []
    top = [r for r in rows if not r.table]
    if top:
        parts.append(render_keys(top, full_paths=False))
    for table in tables(root):
        own = [r for r in rows if r.table == table.name]
        parts.append(f"{heading} `{table.header}`\n\n{_sentence(table.doc)}")
        if own:
            parts.append(render_keys(own, full_paths=False))
    return "\n\n".join(parts)


def render_types(*roots: type[Table]) -> str:
    """The value types the configurations use, each with its syntax."""
    seen: dict[str, str] = {}
    for root in roots:
        for row in keys(root):
            if row.kind is None:
                raise ValueError(f"{row.path}: its value type has no Kind (documentation)")
            if seen.setdefault(row.kind.name, row.kind.syntax) != row.kind.syntax:
                raise ValueError(f"{row.path}: two value types are documented as {row.kind.name!r}")
    lines = ["| type | syntax |", "|---|---|"]
    lines += [f"| {name} | {_cell(syntax)} |" for name, syntax in seen.items()]
    return "\n".join(lines)


# --- generated sections in Markdown files -------------------------------------------------------------

_SECTION = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[a-z0-9-]+)[^>]*-->\n)(?P<body>.*?)(<!-- END GENERATED (?P=name) -->)",
    re.DOTALL,
)


def sections_of(text: str) -> dict[str, str]:
    """The generated sections of a Markdown text, by name."""
    return {m.group("name"): m.group("body") for m in _SECTION.finditer(text)}


def replace_sections(text: str, contents: Mapping[str, str], *, where: Path | str = "") -> str:
    """``text`` with each generated section's body replaced; KeyError for a section with no content."""

    def body(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in contents:
            raise KeyError(f"{where}: no content for the generated section {name!r}")
        return f"{match.group(1)}{contents[name].rstrip()}\n{match.group(4)}"

    return _SECTION.sub(body, text)
