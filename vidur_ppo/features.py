"""Feature sets: what the policy sees of each replica at a decision (a registry of named columns).

A feature set turns the driver's raw per-replica state (`REPLICA_STATE_COLUMNS`) and the arriving
request into a normalised matrix [replicas x features]. Each set declares its column names, so a
run can write and log them (and a model's input size follows `len(names)`). Sets may keep state
across decisions (trends), so they are objects with `reset()` at episode start.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence

import numpy as np

from vidur_ppo.sim.driver import REPLICA_STATE_COLUMNS

COL = {name: i for i, name in enumerate(REPLICA_STATE_COLUMNS)}


class FeatureSet:
    """Base class. `names` are the per-replica columns of `__call__`'s output."""

    names: Sequence[str] = ()

    def __init__(self, **params: Any) -> None:
        self.params = params

    def reset(self) -> None:
        pass

    def __call__(self, state: np.ndarray, request: np.ndarray, now: float) -> np.ndarray:
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        return len(self.names)


class LegacyFeatures(FeatureSet):
    """The legacy pipeline's observation: instantaneous per-replica load and utilisation only.

    load = outstanding requests (waiting + running) / `capacity`; kv_usage = fraction of KV blocks
    allocated. No queue age, no trend, no request size (PLAN.md section 2's "current" state).
    """

    names = ("load", "kv_usage")

    def __init__(self, capacity: float = 64.0, **params: Any) -> None:
        super().__init__(capacity=capacity, **params)
        self.capacity = float(capacity)

    def __call__(self, state, request, now):
        out = np.empty((state.shape[0], 2), dtype=np.float32)
        out[:, 0] = (state[:, COL["waiting"]] + state[:, COL["running"]]) / self.capacity
        out[:, 1] = state[:, COL["kv_usage"]]
        return out


FEATURE_SETS: Dict[str, Callable[..., FeatureSet]] = {"legacy": LegacyFeatures}


def make_feature_set(spec: Mapping[str, Any] | str | None) -> FeatureSet:
    """Build a feature set from `{"name": ..., **params}` (the `features` config group)."""
    if spec is None:
        spec = {"name": "legacy"}
    if isinstance(spec, str):
        spec = {"name": spec}
    params = {k: v for k, v in dict(spec).items() if k not in ("name", "names")}
    name = spec.get("name")
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose one of {sorted(FEATURE_SETS)}")
    fs = FEATURE_SETS[name](**params)
    declared: List[str] | None = list(spec["names"]) if spec.get("names") is not None else None
    if declared is not None and declared != list(fs.names):
        raise ValueError(
            f"features.names {declared} do not match what feature set {name!r} builds: {list(fs.names)}"
        )
    return fs
