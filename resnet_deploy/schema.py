"""Check parsed JSON against a small schema, so a malformed file is refused naming the field instead
of failing later with a KeyError or a TypeError.

A schema is one of: a type (`str`, `int`, `float`, `bool`, `dict`, `list`; `float` takes any finite
number, `int` no bool); a tuple of schemas (any of them); a dict `{"key": schema, "key?": schema}`
(an object with these required and optional keys, others allowed); a one-item list `[schema]` (a
list of such items); `Map(schema)` (an object whose values all match).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from resnet_deploy.errors import ArtifactError, ResnetDeployError

TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a finite number",
    bool: "true or false",
    type(None): "null",
}


@dataclass(frozen=True)
class Map:
    """An object with any keys whose values all match `values`."""

    values: Any


def _describe(schema: Any) -> str:
    if isinstance(schema, tuple):
        return " or ".join(_describe(s) for s in schema)
    if isinstance(schema, (dict, Map)):
        return "an object"
    if isinstance(schema, list):
        return "a list"
    return TYPE_NAMES[schema]


def _matches_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(value: Any, schema: Any, where: str = "") -> str | None:
    """The first way `value` fails `schema` (naming the field), or None when it matches."""
    if isinstance(schema, tuple):
        if any(problem(value, option, where) is None for option in schema):
            return None
    elif isinstance(schema, dict):
        if isinstance(value, dict):
            for key, sub in schema.items():
                name = key.removesuffix("?")
                if name not in value:
                    if key.endswith("?"):
                        continue
                    return f"{where or 'the object'} lacks the field {name!r}"
                found = problem(value[name], sub, f"{where}.{name}" if where else name)
                if found:
                    return found
            return None
    elif isinstance(schema, Map):
        if isinstance(value, dict):
            return next(
                (
                    p
                    for key, item in value.items()
                    if (p := problem(item, schema.values, f"{where}.{key}" if where else str(key)))
                ),
                None,
            )
    elif isinstance(schema, list):
        if isinstance(value, list):
            return next(
                (p for index, item in enumerate(value) if (p := problem(item, schema[0], f"{where}[{index}]"))), None
            )
    elif _matches_type(value, schema):
        return None
    return f"{where or 'the content'}: expected {_describe(schema)}, found {_found(value)}"


def check(value: Any, schema: Any, source: Any, what: str, error: type[ResnetDeployError] = ArtifactError) -> Any:
    """Return `value` if it matches `schema`; otherwise raise `error` naming `source` and the field."""
    found = problem(value, schema)
    if found:
        raise error(f"{source}: not a valid {what}: {found}")
    return value
