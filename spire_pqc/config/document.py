"""Configuration documents: pydantic models of their tables, validated with every problem at once.

A configuration file is a tree of :class:`Table` models (unknown keys refused, values frozen once
valid). :func:`validate` checks a decoded document against its root model and raises one
:class:`~spire_pqc.errors.ConfigError` listing every problem, each as ``key.path[i].name: message``:
pydantic's own errors (a missing key, an unknown key, a table where an array belongs) are reworded in
the configuration's terms, and the value types of :mod:`spire_pqc.config.fields` say what they expect.

Rules between keys are field validators, so they run even when other keys of the file are wrong:

* within one table, a validator reads the keys declared before it from ``info.data`` (a key that
  failed is absent there, and the rule is skipped rather than reported twice);
* across tables, a validator :func:`remember` s a value for the keys validated after it (tables are
  validated in declaration order), which :func:`recall` or :func:`first_use` read. The document's
  declaration order is therefore part of its meaning.

:func:`key` declares a documented key: its text is the reference documentation
(:mod:`spire_pqc.config.reference` generates docs/configuration.md from the models).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Hashable
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, ValidationInfo
from pydantic_core import ErrorDetails, PydanticUndefined

from spire_pqc.errors import ConfigError

__all__ = [
    "Table",
    "first_use",
    "key",
    "key_path",
    "recall",
    "registered",
    "remember",
    "table_of",
    "unwrap",
    "validate",
]

M = TypeVar("M", bound=BaseModel)


class Table(BaseModel):
    """One table of a configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def key(
    default: Any = PydanticUndefined, *, doc: str, shown: str | None = None, check_default: bool = False
) -> Any:
    """A documented key. ``doc``: its reference text (the first sentence also completes "required (…)").

    ``shown`` replaces the default in the documentation (a default computed from other keys, for
    example); ``check_default`` runs the key's validators on the default too (rules of an absent key).
    """
    extra: dict[str, JsonValue] | None = {"shown_default": shown} if shown is not None else None
    return Field(default, description=doc, validate_default=check_default, json_schema_extra=extra)


def validate(model: type[M], data: object, *, source: str, context: dict[str, Any] | None = None) -> M:
    """``data`` as a ``model``, or one ConfigError naming every problem with its key."""
    try:
        return model.model_validate(data, context={} if context is None else context)
    except ValidationError as exc:
        # from None: pydantic's error would repeat the input values, passwords included.
        raise ConfigError(
            [_describe(model, e) for e in exc.errors(include_url=False)], source=source
        ) from None


# --- rules across tables -------------------------------------------------------------------------


def remember(info: ValidationInfo, name: str, value: object) -> None:
    """Make a validated value visible to the keys validated after this one."""
    if isinstance(info.context, dict):
        info.context[name] = value


def recall(info: ValidationInfo, name: str) -> Any:
    """What an earlier key :func:`remember` ed, or None (absent, or that key was wrong)."""
    return info.context.get(name) if isinstance(info.context, dict) else None


def registered(info: ValidationInfo, registry: str, item: Hashable) -> bool:
    """Whether an earlier key recorded ``item`` in ``registry`` (with :func:`first_use`)."""
    return isinstance(info.context, dict) and item in info.context.get(registry, ())


def first_use(info: ValidationInfo, registry: str, item: Hashable) -> bool:
    """Record ``item`` in a document-wide registry; False when an earlier key already used it."""
    if not isinstance(info.context, dict):
        return True
    used: set[Hashable] = info.context.setdefault(registry, set())
    if item in used:
        return False
    used.add(item)
    return True


# --- model navigation (also used by the reference documentation) --------------------------------


def unwrap(annotation: Any) -> Any:
    """The type behind ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def table_of(annotation: Any) -> type[Table] | None:
    """The Table class of a table-valued key, or None."""
    inner = unwrap(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, Table) else None


def _at(root: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The type found at ``loc`` below ``root`` (a Table class, a list or dict type, …), or None."""
    current: Any = root
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = unwrap(field.annotation)
        elif typing.get_origin(current) is list:
            current = unwrap(typing.get_args(current)[0])
        elif typing.get_origin(current) is dict:
            current = unwrap(typing.get_args(current)[1])
        else:
            return None
    return current


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("tunnel", "outbound", 0, "listen")`` → ``tunnel.outbound[0].listen``."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key: the key itself is the problem
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _summary(doc: str | None) -> str:
    first = (doc or "").split(". ")[0].rstrip(".")
    return f" ({first})" if first else ""


def _describe(root: type[BaseModel], error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"]
    if kind == "missing":
        parent = _at(root, loc[:-1])
        field = parent.model_fields.get(str(loc[-1])) if table_of(parent) else None
        message = "required" + _summary(field.description if field else None)
    elif kind == "extra_forbidden":
        parent = _at(root, loc[:-1])
        known = sorted(parent.model_fields) if table_of(parent) else []
        message = "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be a table"
    elif kind == "list_type":
        items = _at(root, loc)
        is_tables = typing.get_origin(items) is list and table_of(typing.get_args(items)[0])
        message = f"must be an array of tables ([[{key_path(loc)}]])" if is_tables else "must be an array"
    elif kind == "value_error":
        message = str((error.get("ctx") or {}).get("error", message))
    path = key_path(loc)
    return f"{path}: {message}" if path else message
