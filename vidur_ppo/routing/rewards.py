"""Reward functions (a registry), computed once per routing decision.

A reward sees a `Step`: the requests that completed since the previous decision, the cluster
state at the new decision point, the simulated time and the request just routed. It returns the
scalar reward and its named components (logged separately). Rewards may keep state across
steps (throughput windows), so they are objects with `reset()` at episode start.

Latency is measured per completed request as x = latency / latency_threshold, where latency is
the E2E time (`latency_metric: e2e`, seconds) or the E2E time per output token
(`e2e_per_token`, seconds/token: it removes the part of E2E that only the request's length
decides, which no routing decision can change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from vidur_ppo.checks import StrEnum, check, choice, positive, unit
from vidur_ppo.registry import build, typed_config
from vidur_ppo.sim.driver import ReplicaColumn



class LatencyMetric(StrEnum):
    e2e = "e2e"
    e2e_per_token = "e2e_per_token"


class Credit(StrEnum):
    """Where a request's latency reward lands (routing/credit.py): at the decision current when it
    completes, or at the decision that routed it."""

    completion = "completion"
    decision = "decision"


class DecisionMetric(StrEnum):
    """What decision credit charges each routed request (routing/env.py `decision_rewards`)."""

    e2e = "e2e"  # (E2E / slo_e2e) ** decision_power: latency
    slo = "slo"  # its TTFT/TPOT SLO miss plus a smooth margin (sim/metrics.py `slo_costs`): attainment


@dataclass
class RewardConfig:
    """What every reward shares: the latency metric, component weights, the clip, and the credit."""

    name: str = "soft_logistic"
    latency_metric: LatencyMetric = LatencyMetric.e2e_per_token
    latency_threshold: float = 0.05
    weights: Dict[str, float] = field(default_factory=lambda: {"latency": 1.0, "throughput": 0.5, "imbalance": 0.2})
    clip: float = 8.0
    credit: Credit = Credit.completion  # decision: minus each request's cost (decision_metric) at its routing decision
    decision_power: float = 2.0
    decision_metric: DecisionMetric = DecisionMetric.e2e  # slo: each request's SLO cost (decision_power unused)
    # decision credit relative to a reference heuristic on the *same* trace (common random numbers, an
    # input-dependent baseline, Mao et al. ICLR'19): each request's reward minus its reward under the
    # reference, so the arrival sequence's own luck cancels out; None: absolute rewards
    reference: Optional[str] = None

    def __post_init__(self) -> None:
        from vidur_ppo.routing.heuristics import HEURISTICS

        positive(self, "reward", "latency_threshold", "clip", "decision_power")
        choice(self, "reward", "latency_metric", LatencyMetric)
        choice(self, "reward", "credit", Credit)
        choice(self, "reward", "decision_metric", DecisionMetric)
        check(self.decision_metric == DecisionMetric.e2e or self.credit == Credit.decision, "reward.decision_metric",
              "needs reward.credit=decision (a per-request reward at the decision that routed it)", self.decision_metric)
        check(self.reference is None or self.reference in HEURISTICS, "reward.reference",
              f"must be a heuristic ({', '.join(HEURISTICS)}) or null", self.reference)
        check(self.reference is None or self.credit == Credit.decision, "reward.reference",
              "needs reward.credit=decision (the per-request rewards it is subtracted from)", self.reference)
        unknown = set(self.weights) - {"latency", "throughput", "imbalance"}
        check(not unknown, "reward.weights", "has unknown components (latency, throughput, imbalance)", sorted(unknown))


@dataclass
class LegacyHybridRewardConfig(RewardConfig):
    name: str = "legacy_hybrid"
    latency_metric: LatencyMetric = LatencyMetric.e2e
    latency_threshold: float = 8.0
    latency_penalty_slope: float = 20.0
    weights: Dict[str, float] = field(default_factory=lambda: {"latency": 4.0, "throughput": 0.5, "imbalance": 1.0})
    clip: float = 4.0
    throughput_scale_tokens: float = 1000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "reward", "latency_penalty_slope", "throughput_scale_tokens")


@dataclass
class SoftLogisticRewardConfig(RewardConfig):
    name: str = "soft_logistic"
    bonus: float = 4.0
    penalty_max: float = 6.0
    penalty_center: float = 1.2
    penalty_slope: float = 8.0
    throughput_band: float = 0.1
    throughput_penalty_slope: float = 5.0
    throughput_penalty_cap: float = 1.0
    window_s: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "reward", "penalty_max", "penalty_slope", "window_s")
        check(self.bonus >= 0, "reward.bonus", "must be >= 0", self.bonus)
        unit(self, "reward", "throughput_band")


@dataclass
class PiecewiseRewardConfig(SoftLogisticRewardConfig):
    name: str = "piecewise"
    penalty_slope: float = 10.0


@dataclass
class Step:
    completed: Sequence[Any]  # vidur Requests completed since the previous decision
    state: np.ndarray  # driver.replica_state() at the new decision
    now: float  # simulated seconds
    routed: Optional[Any] = None  # the request routed by this step's action


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def latency_ratio(completed: Sequence[Any], metric: str, threshold: float) -> np.ndarray:
    """x = latency / threshold for each completed request."""
    e2e = np.fromiter((r._completed_at - r._arrived_at for r in completed), float, len(completed))
    if metric == "e2e_per_token":
        # the original output length (a preemption restart moves decoded tokens into the prompt)
        decode = np.fromiter((max(r.vp_decode_tokens, 1) for r in completed), float, len(completed))
        e2e = e2e / decode
    return e2e / threshold


def imbalance_cv(state: np.ndarray) -> float:
    """Coefficient of variation of outstanding requests across replicas (0 = balanced)."""
    outstanding = state[:, ReplicaColumn.waiting] + state[:, ReplicaColumn.running]
    mean = outstanding.mean()
    return float(outstanding.std() / mean) if mean > 0 else 0.0


class Reward:
    components: Sequence[str] = ()

    def reset(self) -> None:
        pass

    def __call__(self, step: Step) -> Tuple[float, Dict[str, float]]:
        raise NotImplementedError


class LegacyHybridReward(Reward):
    """The legacy pipeline's hybrid reward (PLAN.md section 1, "current").

    latency term: mean over the requests completed in the step of 1 - 2*sigmoid(slope*(x - 1)),
      i.e. +1 well under the SLO, -1 over it; with the steep default slope it saturates near 110%
      of the SLO, so "bad" and "terrible" look the same (0 when nothing completed);
    throughput term: tokens completed in the step / `throughput_scale_tokens`;
    imbalance term: minus the coefficient of variation of outstanding requests across replicas;
    reward = clip(w_lat*latency + w_thr*throughput + w_imb*imbalance, -clip, +clip).
    """

    components = ("latency", "throughput", "imbalance")

    def __init__(self, cfg: LegacyHybridRewardConfig) -> None:
        self.cfg = cfg
        self.latency_threshold = float(cfg.latency_threshold)
        self.slope = float(cfg.latency_penalty_slope)
        self.weights = {k: float(cfg.weights.get(k, 0.0)) for k in self.components}
        self.clip = float(cfg.clip)
        self.throughput_scale = float(cfg.throughput_scale_tokens)
        self.latency_metric = cfg.latency_metric

    def latency_term(self, x: np.ndarray) -> np.ndarray:
        return 1.0 - 2.0 * _sigmoid(self.slope * (x - 1.0))

    def __call__(self, step):
        if step.completed:
            x = latency_ratio(step.completed, self.latency_metric, self.latency_threshold)
            latency = float(np.mean(self.latency_term(x)))
            tokens = sum(r.total_tokens for r in step.completed)
        else:
            latency, tokens = 0.0, 0
        parts = {"latency": latency, "throughput": tokens / self.throughput_scale, "imbalance": -imbalance_cv(step.state)}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return float(np.clip(total, -self.clip, self.clip)), parts


class _ThroughputWindow:
    """Exponentially-weighted token rates (per simulated second) of arrivals and completions."""

    def __init__(self, horizon: float) -> None:
        self.horizon = float(horizon)
        self.reset()

    def reset(self) -> None:
        self.t, self.arrived, self.done = None, 0.0, 0.0

    def update(self, now: float, arrived_tokens: float, done_tokens: float) -> float:
        if self.t is None:
            self.t = now
        decay = np.exp(-max(now - self.t, 0.0) / self.horizon)
        self.arrived = self.arrived * decay + arrived_tokens
        self.done = self.done * decay + done_tokens
        self.t = now
        return self.done / self.arrived if self.arrived > 0 else 1.0


class SoftLogisticReward(Reward):
    """The plan's redesigned reward (PLAN.md section 1).

    latency term, averaged over the requests completed in the step, x = latency / threshold:
      + bonus * (1 - x) for x < 1 (extra credit for beating the SLO; `bonus`=4 makes a request
        at 20% of the SLO worth +3.2), and
      - penalty_max * sigmoid(penalty_slope * (x - penalty_center)), a shallower logistic centred
        past the SLO: with the defaults it costs ~0.9 at 1.0x, ~2.0 at 1.1x and ~4.1 at 1.3x, and
        keeps rising to 6, so "bad" and "terrible" differ;
    throughput term: 0 while the completed/arrived token rate (EW window of `window_s` simulated
      seconds) stays within `throughput_band` of 1, below it a linear penalty capped at
      `throughput_penalty_cap` (small dips cost little, a collapse costs a bounded amount);
    imbalance term: minus the coefficient of variation of outstanding requests;
    reward = clip(weights . terms, -clip, +clip), latency-first weights and a wide clip (with
    `ppo.normalize_reward` the scale is handled by a running return normaliser).
    """

    components = ("latency", "throughput", "imbalance")

    def __init__(self, cfg: SoftLogisticRewardConfig) -> None:
        self.cfg = cfg
        self.latency_threshold, self.latency_metric = float(cfg.latency_threshold), cfg.latency_metric
        self.bonus, self.penalty_max = float(cfg.bonus), float(cfg.penalty_max)
        self.penalty_center, self.penalty_slope = float(cfg.penalty_center), float(cfg.penalty_slope)
        self.band, self.tp_slope = float(cfg.throughput_band), float(cfg.throughput_penalty_slope)
        self.tp_cap = float(cfg.throughput_penalty_cap)
        self.weights = {k: float(cfg.weights.get(k, 0.0)) for k in self.components}
        self.clip = float(cfg.clip)
        self.window = _ThroughputWindow(cfg.window_s)

    def reset(self) -> None:
        self.window.reset()

    def latency_term(self, x: np.ndarray) -> np.ndarray:
        bonus = self.bonus * np.clip(1.0 - x, 0.0, 1.0)
        penalty = self.penalty_max * _sigmoid(self.penalty_slope * (x - self.penalty_center))
        return bonus - penalty

    def throughput_term(self, ratio: float) -> float:
        dip = (1.0 - self.band) - ratio
        return -min(self.tp_cap, self.tp_slope * dip) if dip > 0 else 0.0

    def __call__(self, step):
        done_tokens = sum(r.total_tokens for r in step.completed)
        arrived = step.routed.total_tokens if step.routed is not None else 0
        ratio = self.window.update(step.now, arrived, done_tokens)
        if step.completed:
            x = latency_ratio(step.completed, self.latency_metric, self.latency_threshold)
            latency = float(np.mean(self.latency_term(x)))
        else:
            latency = 0.0
        parts = {"latency": latency, "throughput": self.throughput_term(ratio), "imbalance": -imbalance_cv(step.state)}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return float(np.clip(total, -self.clip, self.clip)), parts


class PiecewiseReward(SoftLogisticReward):
    """Like soft_logistic, but the latency penalty is piecewise-linear past the SLO:
    -penalty_slope * (x - 1) for x > 1 (no saturation at all until the clip)."""

    def latency_term(self, x):
        return self.bonus * np.clip(1.0 - x, 0.0, 1.0) - self.penalty_slope * np.maximum(x - 1.0, 0.0)


REWARDS: Dict[str, Tuple[type, Callable[..., Reward]]] = {
    "legacy_hybrid": (LegacyHybridRewardConfig, LegacyHybridReward),
    "soft_logistic": (SoftLogisticRewardConfig, SoftLogisticReward),
    "piecewise": (PiecewiseRewardConfig, PiecewiseReward),
}


def reward_config(spec: RewardConfig | Mapping[str, Any] | str | None) -> RewardConfig:
    """The typed config of a reward: itself, or built from `{"name": ..., **params}` / a name."""
    return typed_config(REWARDS, spec, RewardConfig.name, "reward")


def make_reward(spec: RewardConfig | Mapping[str, Any] | str | None) -> Reward:
    """Build a reward from its config (the `reward` config group)."""
    return build(REWARDS, spec, RewardConfig.name, "reward")
