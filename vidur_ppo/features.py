"""Feature sets: what the policy sees of each replica at a decision (a registry of named columns).

A feature set turns the driver's raw per-replica state (`REPLICA_STATE_COLUMNS`) and the arriving
request into a normalised matrix [replicas x features]. Each set declares its column names, so a
run can write and log them (and a model's input size follows `len(names)`). Sets may keep state
across decisions (trends), so they are objects with `reset()` at episode start.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from vidur_ppo.registry import lookup, split_spec
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


class QueueFeatures(FeatureSet):
    """Queueing state per replica, normalised to about [0, 1] (PLAN.md section 2):

    waiting / queue_capacity, running / running_capacity, age of the oldest waiting request / SLO
    (capped at 1), outstanding prefill and decode tokens / token_capacity, KV usage, and the
    arriving request's prompt and output length / max_request_tokens (the same in every row, so
    a per-replica model sees it). Counts and times are capped at 1 (`cap`, set 0 for no cap).
    """

    names = ("waiting", "running", "oldest_wait", "prefill_left", "decode_left", "kv_usage",
             "req_prefill", "req_decode")

    def __init__(self, queue_capacity: float = 16.0, running_capacity: float = 128.0,
                 token_capacity: float = 32768.0, slo: float = 8.0, max_request_tokens: float = 4096.0,
                 cap: float = 1.0, **params: Any) -> None:
        super().__init__(**params)
        self.scale = np.array([1 / queue_capacity, 1 / running_capacity, 1 / slo, 1 / token_capacity,
                               1 / token_capacity, 1.0], dtype=np.float64)
        self.cols = [COL["waiting"], COL["running"], COL["oldest_wait"], COL["prefill_tokens_left"],
                     COL["decode_tokens_left"], COL["kv_usage"]]
        self.max_request_tokens = float(max_request_tokens)
        self.cap = float(cap)

    def __call__(self, state, request, now):
        out = np.empty((state.shape[0], len(QueueFeatures.names)), dtype=np.float32)
        replica = state[:, self.cols] * self.scale
        if self.cap > 0:
            np.minimum(replica, self.cap, out=replica)
        out[:, :6] = replica
        out[:, 6] = request[0] / self.max_request_tokens
        out[:, 7] = request[1] / self.max_request_tokens
        return out


class FullFeatures(QueueFeatures):
    """`queue` plus trends per replica (PLAN.md section 2): for waiting, running, KV usage and
    outstanding work (prefill + decode tokens left, normalised), the change since the previous
    decision (`d_*`, 0 at an episode's first decision) and the current value minus its
    exponential moving average over decisions (`x_*`, weight `ema_alpha` on the newest value).
    Trends of capped features lie in [-1, 1].
    """

    TREND = ("waiting", "running", "kv_usage", "work")
    names = QueueFeatures.names + tuple(f"d_{n}" for n in TREND) + tuple(f"x_{n}" for n in TREND)

    def __init__(self, ema_alpha: float = 0.1, **params: Any) -> None:
        super().__init__(**params)
        self.alpha = float(ema_alpha)
        self.reset()

    def reset(self) -> None:
        self.prev = None
        self.ema = None

    def __call__(self, state, request, now):
        base = super().__call__(state, request, now)
        cur = np.stack([base[:, 0], base[:, 1], base[:, 5], np.minimum(base[:, 3] + base[:, 4], 1.0)], axis=1)
        if self.prev is None or self.prev.shape != cur.shape:
            self.prev, self.ema = cur.copy(), cur.copy()
        delta = cur - self.prev
        self.ema = self.alpha * cur + (1.0 - self.alpha) * self.ema
        self.prev = cur
        return np.concatenate([base, delta, cur - self.ema], axis=1).astype(np.float32)


FEATURE_SETS: Dict[str, Callable[..., FeatureSet]] = {
    "legacy": LegacyFeatures, "queue": QueueFeatures, "full": FullFeatures,
}


def make_feature_set(spec: Mapping[str, Any] | str | None) -> FeatureSet:
    """Build a feature set from `{"name": ..., **params}` (the `features` config group)."""
    name, params = split_spec(spec, "legacy")
    declared = params.pop("names", None)
    fs = lookup(FEATURE_SETS, name, "feature set")(**params)
    if declared is not None and list(declared) != list(fs.names):
        raise ValueError(
            f"features.names {list(declared)} do not match what feature set {name!r} builds: {list(fs.names)}"
        )
    return fs
