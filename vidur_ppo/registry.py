"""Named options of a config group (rewards, feature sets, models, curricula): one lookup with
one clear error, and one way from a spec to a typed config to a component, shared by every
`make_*` factory. A registry maps an option name to (its config dataclass, its component)."""

from __future__ import annotations

import dataclasses
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


def typed_config(registry: Mapping[str, Tuple[type, Any]], spec: Any, default: str, group: str) -> Any:
    """The config dataclass of an option: `spec` itself if it already is one, else built from
    `{"name": ..., **params}`, a name, or None (`default`); unknown keys name the group."""
    from vidur_ppo.checks import from_mapping

    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return spec
    name, params = split_spec(spec, default)
    cfg_cls, _ = lookup(registry, name, group)
    return from_mapping(cfg_cls, {**params, "name": name}, group)


def build(registry: Mapping[str, Tuple[type, Callable[..., Any]]], spec: Any, default: str, group: str, *args: Any) -> Any:
    """The component of an option, built from its typed config (and `args`)."""
    cfg = typed_config(registry, spec, default, group)
    return registry[cfg.name][1](cfg, *args)
