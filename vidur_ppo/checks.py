"""Config value checks, written once: every component's config dataclass runs them in its
`__post_init__`, whether it was built by Hydra (`validate`) or from a plain mapping in Python,
and a failure is a `ConfigError` whose one-line message names the key."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Type, TypeVar

E = TypeVar("E", bound=Enum)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class StrEnum(str, Enum):
    """A closed set of option names; members compare equal to (and print as) their names."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


def check(cond: bool, key: str, msg: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key} {msg}, got {value!r}")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def finite(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        check(v is None or not isinstance(v, float) or math.isfinite(v), _key(prefix, n), "must be finite", v)


def positive(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        check(v is not None and v > 0 and (not isinstance(v, float) or math.isfinite(v)), _key(prefix, n),
              "must be > 0 and finite", v)


def unit(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        check(0.0 <= v <= 1.0, _key(prefix, n), "must be in [0, 1]", v)


def choice(obj: Any, prefix: str, name: str, enum: Type[E]) -> E:
    """Coerce a string field to its Enum (configs built from plain mappings), naming the key."""
    v = getattr(obj, name)
    try:
        member = v if isinstance(v, enum) else enum(v)
    except ValueError:
        raise ConfigError(f"{_key(prefix, name)} must be one of {[m.value for m in enum]}, got {v!r}") from None
    setattr(obj, name, member)
    return member


def from_mapping(cls: Type[Any], params: Any, prefix: str) -> Any:
    """A config dataclass from a plain mapping; unknown keys are a ConfigError naming them."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    check(not unknown, prefix, f"has unknown key(s) (known: {sorted(known)})", unknown)
    return cls(**dict(params))
