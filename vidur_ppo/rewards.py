"""Reward functions (a registry), computed once per routing decision.

A reward sees the requests that completed since the previous decision and the cluster state at
the new decision point; it returns the scalar reward and its named components (logged
separately). Rewards may keep state, so they are objects with `reset()` at episode start.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from vidur_ppo.sim.driver import REPLICA_STATE_COLUMNS

COL = {name: i for i, name in enumerate(REPLICA_STATE_COLUMNS)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class Reward:
    components: Sequence[str] = ()

    def reset(self) -> None:
        pass

    def __call__(self, completed: Sequence[Any], state: np.ndarray) -> Tuple[float, Dict[str, float]]:
        raise NotImplementedError


class LegacyHybridReward(Reward):
    """The legacy pipeline's hybrid reward (PLAN.md section 1, "current").

    latency term: mean over the requests completed in the step of 1 - 2*sigmoid(slope*(e2e/slo - 1)),
      i.e. +1 well under the SLO, -1 over it; with the steep default slope it saturates near 110%
      of the SLO, so "bad" and "terrible" look the same (0 when nothing completed);
    throughput term: tokens completed in the step / `throughput_scale_tokens`;
    imbalance term: minus the coefficient of variation of outstanding requests across replicas;
    reward = clip(w_lat*latency + w_thr*throughput + w_imb*imbalance, -clip, +clip).
    """

    components = ("latency", "throughput", "imbalance")

    def __init__(
        self,
        latency_threshold: float = 8.0,
        latency_penalty_slope: float = 20.0,
        weights: Mapping[str, float] | None = None,
        clip: float = 4.0,
        throughput_scale_tokens: float = 1000.0,
        **_: Any,
    ) -> None:
        self.latency_threshold = float(latency_threshold)
        self.slope = float(latency_penalty_slope)
        w = {"latency": 4.0, "throughput": 0.5, "imbalance": 1.0, **dict(weights or {})}
        self.weights = {k: float(w[k]) for k in self.components}
        self.clip = float(clip)
        self.throughput_scale = float(throughput_scale_tokens)

    def __call__(self, completed, state):
        if completed:
            e2e = np.fromiter((r._completed_at - r._arrived_at for r in completed), float, len(completed))
            latency = float(np.mean(1.0 - 2.0 * _sigmoid(self.slope * (e2e / self.latency_threshold - 1.0))))
            tokens = sum(r.total_tokens for r in completed)
        else:
            latency, tokens = 0.0, 0
        outstanding = state[:, COL["waiting"]] + state[:, COL["running"]]
        mean = outstanding.mean()
        imbalance = -float(outstanding.std() / mean) if mean > 0 else 0.0
        parts = {"latency": latency, "throughput": tokens / self.throughput_scale, "imbalance": imbalance}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return float(np.clip(total, -self.clip, self.clip)), parts


REWARDS: Dict[str, Callable[..., Reward]] = {"legacy_hybrid": LegacyHybridReward}


def make_reward(spec: Mapping[str, Any] | str | None) -> Reward:
    """Build a reward from `{"name": ..., **params}` (the `reward` config group)."""
    if spec is None:
        spec = {"name": "legacy_hybrid"}
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}")
    return REWARDS[name](**spec)
