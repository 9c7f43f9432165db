"""Controllers of the PPO strategy (PLAN.md section 4), each switchable on its own:

- entropy coefficient: constant | linear | exponential (start -> end by `entropy_decay_updates`)
  | target_entropy (the coefficient adapts, in log space, to hold the policy's entropy at a target);
- KL: an adaptive penalty coefficient (doubled above 1.5x target, halved below target/1.5, as
  RLlib's PPO does), an early stop of the epoch's minibatches past `early_stop_factor` x target
  (as SB3 does), and optional learning-rate adaptation from the KL;
(fading behaviour cloning's weight lives with BC, in ppo/bc.py). Option names are checked once,
by `PPOConfig`'s enums.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidur_ppo.ppo.config import PPOConfig


class EntropySchedule:
    def __init__(self, kind: str = "constant", start: float = 0.02, end: float = 0.0, decay_updates: int = 1,
                 target: float | None = None, lr: float = 0.05, min_coef: float = 1e-5, max_coef: float = 1.0) -> None:
        self.kind, self.start, self.end, self.decay = kind, float(start), float(end), max(int(decay_updates), 1)
        self.target, self.lr, self.min, self.max = target, float(lr), float(min_coef), float(max_coef)
        self.coef = self.start

    @classmethod
    def from_config(cls, p: "PPOConfig") -> "EntropySchedule":
        return cls(p.entropy_schedule, p.entropy_coef, p.entropy_end, p.entropy_decay_updates or p.num_updates,
                   p.target_entropy, p.entropy_lr)

    def value(self, update: int) -> float:
        p = min(update / self.decay, 1.0)
        if self.kind == "linear":
            self.coef = self.start + (self.end - self.start) * p
        elif self.kind == "exponential":
            end = max(self.end, 1e-8)
            self.coef = self.start * (end / self.start) ** p if self.start > 0 else 0.0
        return self.coef

    def observe(self, entropy: float) -> None:
        """target_entropy: raise the coefficient when entropy is below target, lower it above."""
        if self.kind == "target_entropy":
            self.coef = min(self.max, max(self.min, self.coef * math.exp(self.lr * (self.target - entropy))))

    def state_dict(self):
        return {"coef": self.coef}

    def load_state_dict(self, s):
        self.coef = s["coef"]


class KLController:
    def __init__(self, mode: str = "none", target: float = 0.1, coef: float = 0.2, early_stop_factor: float = 1.5,
                 adapt_lr: bool = False, lr_bounds: tuple = (1e-5, 1e-2)) -> None:
        self.mode, self.target, self.coef = mode, float(target), float(coef)
        self.factor, self.adapt_lr, self.lr_bounds = float(early_stop_factor), adapt_lr, lr_bounds

    @classmethod
    def from_config(cls, p: "PPOConfig") -> "KLController":
        return cls(p.kl_control, p.target_kl, p.kl_coef, p.early_stop_factor, p.kl_adapt_lr)

    @property
    def penalty(self) -> float:
        return self.coef if self.mode in ("penalty", "both") else 0.0

    def should_stop(self, approx_kl: float) -> bool:
        return self.mode in ("early_stop", "both") and approx_kl > self.factor * self.target

    def update(self, kl: float) -> None:
        """After an update: move the penalty coefficient towards keeping KL near the target."""
        if self.mode in ("penalty", "both"):
            if kl > 1.5 * self.target:
                self.coef *= 2.0
            elif kl < self.target / 1.5:
                self.coef *= 0.5

    def adapt(self, lr: float, kl: float) -> float:
        if not self.adapt_lr:
            return lr
        if kl > 2.0 * self.target:
            lr /= 1.5
        elif kl < self.target / 2.0:
            lr *= 1.5
        return min(max(lr, self.lr_bounds[0]), self.lr_bounds[1])

    def state_dict(self):
        return {"coef": self.coef}

    def load_state_dict(self, s):
        self.coef = s["coef"]
