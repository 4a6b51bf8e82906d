"""Typed config sections built from plain (YAML / JSON) dicts, with errors that name the key."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

from .io import InputError

T = TypeVar("T")


def _convert(section: str, name: str, kind: str, value: Any) -> Any:
    """Check / convert one value to its field's type (annotations are strings under `from __future__`)."""
    try:
        if kind == "tuple[int, ...]":
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_convert(section, name, "int", item) for item in value)
        if kind == "int":
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            return int(value)
        if kind == "float":
            # float() also takes "3e-4", which YAML 1.1 loaders return as a string.
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise InputError(f"{section} config: {name} = {value!r} is not of type {kind}") from None


def from_dict(cls: type[T], values: Mapping[str, Any], section: str) -> T:
    """Build dataclass `cls` from a dict: unknown keys and values of the wrong type raise InputError."""
    known = {field.name: field.type for field in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"{section} config: unknown key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**{name: _convert(section, name, known[name], value) for name, value in values.items()})
