"""Reward normalisation: divide rewards by a running std of the discounted return (as SB3's
VecNormalize and CleanRL's NormalizeReward do), so a wide or unclipped reward keeps a stable
scale for the critic and the advantages."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from vidur_ppo.running_moments import merge_moments


class RewardScaler:
    def __init__(self, num_envs: int, gamma: float, enabled: bool = True, eps: float = 1e-8) -> None:
        self.enabled, self.gamma, self.eps = enabled, float(gamma), eps
        self.ret = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return reward
        self.ret = self.ret * self.gamma + reward
        self._update(self.ret)
        self.ret = np.where(done, 0.0, self.ret)
        return reward / np.sqrt(self.var + self.eps)

    def _update(self, x: np.ndarray) -> None:
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, float(x.mean()),
                                                        float(x.var()), x.size)

    def state_dict(self) -> Dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count, "ret": self.ret.copy()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
        if "ret" in state:  # the running discounted return of each env's episode in flight
            self.ret = np.array(state["ret"], dtype=float)
