"""The `ppo` config group: vector envs, rollout and update budgets, and the strategy options of
PLAN.md section 4 (entropy schedule, KL control, fading BC). The defaults are the legacy
pipeline's values, which switch every strategy item off; `conf/ppo/adaptive.yaml` overrides them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vidur_ppo.checks import StrEnum, check, choice, positive, unit


class VectorMode(StrEnum):
    sync = "sync"  # every env in this process
    async_ = "async"  # gymnasium's AsyncVectorEnv: one process per env
    grouped = "grouped"  # several envs per worker process, lock-stepped (ppo/vector.py)
    policy_workers = "policy_workers"  # the policy runs next to the envs in each worker (ppo/samplers.py)


class EntropyScheduleKind(StrEnum):
    constant = "constant"
    linear = "linear"
    exponential = "exponential"
    target_entropy = "target_entropy"


class KLControl(StrEnum):
    none = "none"
    penalty = "penalty"
    early_stop = "early_stop"
    both = "both"


@dataclass
class PPOConfig:
    name: str = "legacy"
    num_envs: int = 4
    vector_mode: VectorMode = VectorMode.grouped
    num_workers: int = 2
    rollout_steps: int = 128
    num_updates: int = 30
    epochs: int = 4
    minibatches: int = 4
    seq_len: int = 32
    lr: float = 3e-4
    gamma: float = 0.95
    gae_lambda: float = 0.90
    clip: float = 0.15
    entropy_coef: float = 0.02
    value_coef: float = 0.5
    clip_value: bool = False
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    normalize_reward: bool = False
    entropy_schedule: EntropyScheduleKind = EntropyScheduleKind.constant
    entropy_end: float = 0.0
    entropy_decay_updates: int = 0  # 0: num_updates
    target_entropy: Optional[float] = None
    entropy_lr: float = 0.05
    kl_control: KLControl = KLControl.none
    target_kl: float = 0.1
    kl_coef: float = 0.2
    early_stop_factor: float = 1.5
    kl_adapt_lr: bool = False
    bc_coef: float = 0.0  # fading BC (ppo/bc.py): weight of the demonstration loss at update 0
    bc_fade_updates: int = 0  # ... reaching 0 at this update

    def __post_init__(self) -> None:
        positive(self, "ppo", "num_envs", "num_workers", "rollout_steps", "num_updates", "epochs", "minibatches",
                 "seq_len", "lr", "clip", "max_grad_norm", "target_kl", "early_stop_factor")
        unit(self, "ppo", "gamma", "gae_lambda")
        for key in ("entropy_coef", "value_coef", "entropy_end", "kl_coef", "entropy_lr", "bc_coef", "bc_fade_updates"):
            check(getattr(self, key) >= 0, f"ppo.{key}", "must be >= 0", getattr(self, key))
        check(self.entropy_decay_updates >= 0, "ppo.entropy_decay_updates", "must be >= 0", self.entropy_decay_updates)
        choice(self, "ppo", "vector_mode", VectorMode)
        choice(self, "ppo", "entropy_schedule", EntropyScheduleKind)
        choice(self, "ppo", "kl_control", KLControl)
        check(self.rollout_steps % self.seq_len == 0, "ppo.seq_len", f"must divide ppo.rollout_steps={self.rollout_steps}",
              self.seq_len)
        check(self.entropy_schedule != EntropyScheduleKind.target_entropy or self.target_entropy is not None,
              "ppo.target_entropy", "must be set for entropy_schedule=target_entropy", self.target_entropy)
        chunks = self.num_envs * self.rollout_steps // self.seq_len
        check(chunks >= self.minibatches, "ppo.minibatches",
              f"must be <= the number of sequence chunks per rollout ({chunks})", self.minibatches)
