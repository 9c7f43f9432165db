"""A guard that keeps a learned router no worse than a robust heuristic where it cannot be trusted:
a decision goes to the base heuristic when the policy is not confident in its own choice over the
base's, or when the state lies outside what the policy trained on. The policy still sees every
state (its recurrent state advances on every decision), so it can take over again afterwards."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from vidur_ppo.checks import check, from_mapping
from vidur_ppo.routing.heuristics import HEURISTICS, make_heuristic

STD_FLOOR = 1e-6  # a feature constant in training counts as novel as soon as it moves


@dataclass
class GuardConfig:
    """`eval.guard`: when the learned router hands a decision to `base`."""

    # the heuristic that takes over: capacity-aware, so a fallback on a mixed cluster is not capacity-blind (on
    # identical replicas it is least_work_left exactly); with least_work_left, a held-out H100 + 3 A40 mix fell
    # to 0.869 SLO attainment where this keeps 0.974 (perf_attempts.md, session 7)
    base: str = "least_work_left_time"
    # confidence, in nats: fall back unless log pi(policy's pick) - log pi(base's pick) >= margin; 0 turns the
    # test off (a deterministic policy's argmax always passes it). Agreeing picks never fall back on it.
    margin: float = 1.0
    # novelty: fall back when any feature of any replica lies more than novelty_z training standard
    # deviations from its training mean (stats from the run dir's metrics.csv); null: off
    novelty_z: Optional[float] = 4.0

    def __post_init__(self) -> None:
        p = "eval.guard"
        check(self.base in HEURISTICS, f"{p}.base", f"must be a heuristic ({', '.join(HEURISTICS)})", self.base)
        check(isinstance(self.margin, (int, float)) and 0 <= self.margin < float("inf"), f"{p}.margin",
              "must be >= 0 and finite (0: no confidence test)", self.margin)
        check(self.novelty_z is None or (isinstance(self.novelty_z, (int, float)) and 0 < self.novelty_z < float("inf")),
              f"{p}.novelty_z", "must be > 0 and finite, or null (no novelty test)", self.novelty_z)

    @classmethod
    def of(cls, spec: "GuardConfig | Mapping[str, Any]") -> "GuardConfig":
        if isinstance(spec, cls):
            return spec
        check(isinstance(spec, Mapping), "eval.guard", "must be a mapping of GuardConfig keys, or null (off)", spec)
        return from_mapping(cls, dict(spec), "eval.guard")


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature mean and standard deviation of the observations a policy trained on."""

    mean: np.ndarray
    std: np.ndarray

    def novel(self, features: np.ndarray, z: float) -> bool:
        """Whether any entry of `features` [replicas x features] is more than `z` std from its mean."""
        return bool((np.abs(features - self.mean) > z * np.maximum(self.std, STD_FLOOR)).any())


@lru_cache(maxsize=None)
def training_stats(run_dir: str) -> Optional[FeatureStats]:
    """The run's feature statistics, pooled over every update's rollout in its metrics.csv (the trainer
    logs `feat/<name>/mean` and `/std` per update; names and order from features.json). None, with one
    warning line on stderr, when the run dir lacks them: the novelty test is then off for this run."""
    import pandas as pd

    run_dir = Path(run_dir)
    try:
        names = json.loads((run_dir / "features.json").read_text())["names"]
        df = pd.read_csv(run_dir / "metrics.csv")
        means = df[[f"feat/{n}/mean" for n in names]].dropna().to_numpy(float)
        stds = df[[f"feat/{n}/std" for n in names]].dropna().to_numpy(float)
        if not len(means) or len(means) != len(stds):
            raise KeyError("no feat/* rows")
    except (OSError, ValueError, KeyError) as exc:
        print(f"warning: {run_dir} has no training feature statistics (features.json and metrics.csv feat/*: "
              f"{type(exc).__name__}): eval.guard novelty test off for it", file=sys.stderr)
        return None
    mean = means.mean(0)  # equal-sized rollouts: the pooled moments are exact
    std = np.sqrt(np.maximum((stds ** 2 + means ** 2).mean(0) - mean ** 2, 0.0))
    return FeatureStats(mean.astype(np.float32), std.astype(np.float32))


class Guarded:
    """A policy `obs -> replica` that asks both the learned policy (a `TorchPolicy`, whose last logits it
    reads) and the base heuristic on every decision and takes the base's pick when a test fires. Counts
    decisions and fallbacks per episode (`fallback_rate`)."""

    def __init__(self, policy, cfg: GuardConfig, stats: Optional[FeatureStats] = None) -> None:
        self.policy, self.cfg, self.stats = policy, cfg, stats
        self.base = make_heuristic(cfg.base)
        self.decisions = self.fallbacks = 0

    def reset(self, seed=None) -> None:
        self.policy.reset(seed)
        self.base.reset(seed)
        self.decisions = self.fallbacks = 0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.decisions if self.decisions else float("nan")

    def falls_back(self, obs, mine: int, base: int) -> bool:
        if self.cfg.novelty_z is not None and self.stats is not None and self.stats.novel(obs["features"], self.cfg.novelty_z):
            return True
        if self.cfg.margin > 0 and mine != base:
            logp = torch.log_softmax(self.policy.logits, -1)
            return bool(logp[mine] - logp[base] < self.cfg.margin)
        return False

    def __call__(self, obs) -> int:
        mine, base = self.policy(obs), self.base(obs)  # both every time: recurrent and heuristic state advance
        self.decisions += 1
        if self.falls_back(obs, mine, base):
            self.fallbacks += 1
            return base
        return mine
