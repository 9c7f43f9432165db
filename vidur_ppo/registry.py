"""Named options of a config group (rewards, feature sets, models, curricula): one lookup with
one clear error, shared by every `make_*` factory."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple


def split_spec(spec: Mapping[str, Any] | str | None, default: str) -> Tuple[str, Dict[str, Any]]:
    """`{"name": x, **params}` (or just a name, or None for `default`) -> (name, params)."""
    if spec is None:
        return default, {}
    if isinstance(spec, str):
        return spec, {}
    params = dict(spec)
    return params.pop("name", default), params


def lookup(registry: Mapping[str, Callable[..., Any]], name: str, kind: str) -> Callable[..., Any]:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}")
    return registry[name]
