"""validate(): every problem at once, each with its key path, in the configuration's own words."""

from __future__ import annotations

import pytest
from pydantic import ValidationInfo, field_validator

from spire_pqc.config import (
    AbsolutePath,
    Duration,
    Table,
    Text,
    TrustDomainName,
    first_use,
    key,
    problem,
    recall,
    remember,
    validate,
)
from spire_pqc.errors import ConfigError


class Item(Table):
    name: Text = key(doc="the item's name, unique. Anything after the first sentence is reference only.")
    path: AbsolutePath | None = key(None, doc="a path.")

    @field_validator("name")
    @classmethod
    def _unique(cls, name: str, info: ValidationInfo) -> str:
        if recall(info, "inner.frozen"):
            raise problem("no items while inner.frozen = true")
        if not first_use(info, "names", name):
            raise problem(f"name {name!r} is used twice")
        return name


class Inner(Table):
    frozen: bool = key(False, doc="f.")
    ttl: Duration = key(doc="how long.")

    @field_validator("frozen")
    @classmethod
    def _remember(cls, frozen: bool, info: ValidationInfo) -> bool:
        remember(info, "inner.frozen", frozen)
        return frozen


class Root(Table):
    inner: Inner = key(doc="the inner table.")
    items: list[Item] = key([], doc="items.")
    roots: dict[TrustDomainName, AbsolutePath] = key({}, doc="roots.")


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(Root, data, source="test.toml")
    assert str(info.value).startswith("test.toml: ")
    return info.value.problems


def test_pydantic_errors_in_the_configurations_words() -> None:
    assert problems({"inner": {}, "colour": 1, "items": [{"name": "a"}, 3, {"nom": "b"}]}) == [
        "inner.ttl: required (how long)",
        "items[1]: must be a table",
        "items[2].name: required (the item's name, unique)",
        "items[2].nom: unknown key (known: name, path)",
        "colour: unknown key (known: inner, items, roots)",
    ]
    assert problems({"inner": [], "items": {}}) == [
        "inner: must be a table",
        "items: must be an array of tables ([[items]])",
    ]
    assert problems({"inner": {"ttl": "1s"}, "roots": {"Bad": "/x", "ok.example": "rel"}}) == [
        "roots.Bad: invalid trust domain 'Bad': trust domain must be lower case (found 'B' at position 0)",
        "roots.ok.example: 'rel' must be an absolute path",
    ]
    assert problems([]) == ["must be a table"]


def test_rules_across_tables_run_whatever_else_is_wrong() -> None:
    """A rule reads what earlier keys remembered; a key that failed leaves its rules silent."""
    data = {
        "inner": {"ttl": "forever"},
        "items": [{"name": "a", "path": "x"}, {"name": "a"}, {"name": "b"}],
    }
    assert problems(data) == [
        "inner.ttl: 'forever' is not a duration with units like '30s', '5m', '1h30m' or '500ms'",
        "items[0].path: 'x' must be an absolute path",
        "items[1].name: name 'a' is used twice",
    ]
    assert problems({"inner": {"ttl": "1s", "frozen": True}, "items": [{"name": "a"}]}) == [
        "items[0].name: no items while inner.frozen = true"
    ]
    # Each validation starts from a fresh context: nothing is remembered from the last one.
    assert validate(Root, {"inner": {"ttl": "1s"}, "items": [{"name": "a"}]}, source="t").items[0].name == "a"
