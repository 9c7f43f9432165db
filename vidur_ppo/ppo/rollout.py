"""The one rollout loop: step N envs with the current policy for T steps and return what PPO needs.

`RolloutCollector` keeps what persists across rollouts (the last observation, the recurrent state,
episode starts and running episode returns) next to a gymnasium vector env (SAME_STEP autoreset),
and `collect(model, T)` returns a `RolloutBatch` (typed, like SB3's rollout samples). The trainer
runs it in-process (`VectorEnvSampler`) and every policy worker runs it next to its own envs
(`PolicyWorkerSampler`), so both paths sample, count and record identically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.distributions import Categorical

from vidur_ppo.routing.credit import EpisodeCredit, finished_decision_rewards


def finished_episodes(info: Dict[str, Any]) -> List[Dict[str, float]]:
    """Episode summaries of the envs that finished this step (SAME_STEP autoreset infos)."""
    fi = info.get("final_info")
    if not fi or "episode_metrics" not in fi:
        return []
    mask, m = fi["_episode_metrics"], fi["episode_metrics"]
    return [{k: float(m[k][i]) for k in m if not k.startswith("_")} for i in np.flatnonzero(mask)]


class EpisodeTracker:
    """Undiscounted return of each env's current episode; hands back those that finished."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)

    def reset(self) -> None:
        self.returns[:] = 0.0

    def step(self, reward: np.ndarray, done: np.ndarray) -> List[float]:
        self.returns += np.asarray(reward, dtype=float)
        finished = [float(self.returns[i]) for i in np.flatnonzero(done)]
        self.returns[np.asarray(done, dtype=bool)] = 0.0
        return finished


@dataclass
class RolloutBatch:
    """One rollout of T steps from N envs; tensors are [T, N, ...], recurrent states [T, L, N, H]
    (the state *before* each step), rewards are the env's raw rewards."""

    feats: torch.Tensor
    states: Tuple[torch.Tensor, ...]
    starts: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    last_value: torch.Tensor  # [N], the critic's value of the observation after the last step
    reward_parts: Dict[str, List[float]] = field(default_factory=dict)  # "reward/<component>" per step
    returns: List[float] = field(default_factory=list)  # of the episodes that finished
    episodes: List[Dict[str, float]] = field(default_factory=list)  # their metrics
    credits: List[EpisodeCredit] = field(default_factory=list)  # their per-decision rewards (reward.credit=decision)
    time_env: float = 0.0
    time_policy: float = 0.0

    TENSORS = ("feats", "starts", "actions", "logp", "values", "rewards", "dones")

    @classmethod
    def concat(cls, parts: Sequence["RolloutBatch"], time_env: float = 0.0) -> "RolloutBatch":
        """Batches of disjoint env groups side by side (env index order = part order)."""
        offsets = np.cumsum([0] + [p.rewards.shape[1] for p in parts])
        reward_parts: Dict[str, List[float]] = {}
        for p in parts:
            for k, v in p.reward_parts.items():
                reward_parts.setdefault(k, []).extend(v)
        return cls(**{k: torch.cat([getattr(p, k) for p in parts], dim=1) for k in cls.TENSORS},
                   states=tuple(torch.cat([p.states[i] for p in parts], dim=2) for i in range(len(parts[0].states))),
                   last_value=torch.cat([p.last_value for p in parts]), reward_parts=reward_parts,
                   returns=[x for p in parts for x in p.returns], episodes=[e for p in parts for e in p.episodes],
                   credits=[(t, int(off) + i, arr) for p, off in zip(parts, offsets) for t, i, arr in p.credits],
                   time_env=time_env)


def sample_actions(logits: torch.Tensor, generator: Optional[torch.Generator] = None):
    """Sample one replica per env from logits [N, R]; returns (actions, log-probs). Without a
    generator it draws from torch's global RNG exactly as `Categorical.sample()` does."""
    dist = Categorical(logits=logits)
    action = torch.multinomial(dist.probs, 1, True, generator=generator)[:, 0]
    return action, dist.log_prob(action)


class RolloutCollector:
    """Steps a vector env with a policy, carrying observations and recurrent state across rollouts."""

    def __init__(self, envs, initial_state) -> None:
        self.envs, self.initial_state = envs, initial_state
        self.num_envs = envs.num_envs
        self.episodes = EpisodeTracker(self.num_envs)
        self.obs = self.state = self.starts = None

    def reset(self, seeds: Sequence[int]) -> None:
        self.obs, _ = self.envs.reset(seed=list(seeds))
        self.state, self.starts = self.initial_state(self.num_envs), torch.ones(self.num_envs)
        self.episodes.reset()

    def state_dict(self) -> Dict[str, Any]:
        """Everything the next rollout depends on: each env's episode in flight (seed + actions, see
        `VidurRoutingEnv.snapshot`), the recurrent state, episode starts and running returns."""
        return {"envs": list(self.envs.call("snapshot")), "state": self.state, "starts": self.starts,
                "returns": self.episodes.returns.copy()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue exactly where `state_dict` was taken: every env replays its episode in flight."""
        self.envs.set_attr("pending_snapshot", list(state["envs"]))
        obs = self.envs.call("restore")
        self.obs = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        self.state, self.starts = state["state"], state["starts"]
        self.episodes.returns[:] = state["returns"]

    @torch.no_grad()
    def collect(self, model: torch.nn.Module, steps: int, generator: Optional[torch.Generator] = None) -> RolloutBatch:
        out: Dict[str, List[torch.Tensor]] = {k: [] for k in RolloutBatch.TENSORS}
        states: List[List[torch.Tensor]] = [[] for _ in self.state]
        rec: Dict[str, Any] = {"reward_parts": {}, "returns": [], "episodes": [], "credits": [],
                               "time_env": 0.0, "time_policy": 0.0}
        for t in range(steps):
            feats = torch.as_tensor(self.obs["features"])
            t0 = time.perf_counter()
            logits, v_norm, new_state = model(feats[None], self.state, self.starts[None])
            action, logp = sample_actions(logits[0], generator)
            value = model.value_norm.denormalize(v_norm[0])
            t1 = time.perf_counter()
            self.obs, reward, term, trunc, info = self.envs.step(action.numpy())
            rec["time_env"] += time.perf_counter() - t1
            rec["time_policy"] += t1 - t0
            done = np.logical_or(term, trunc)
            for s_buf, s in zip(states, self.state):
                s_buf.append(s)
            reward_t = torch.as_tensor(np.asarray(reward, dtype=np.float64), dtype=torch.float32)
            for k, v in (("feats", feats), ("starts", self.starts), ("actions", action), ("logp", logp),
                         ("values", value), ("rewards", reward_t), ("dones", torch.as_tensor(done, dtype=torch.float32))):
                out[k].append(v)
            for k in [k for k in info if k.startswith("reward/")]:
                rec["reward_parts"].setdefault(k, []).append(float(np.mean(info[k])))
            rec["returns"] += self.episodes.step(reward, done)
            rec["episodes"] += finished_episodes(info)
            rec["credits"] += [(t, i, arr) for i, arr in finished_decision_rewards(info).items()]
            self.state, self.starts = new_state, torch.as_tensor(done, dtype=torch.float32)
        _, v_norm, _ = model(torch.as_tensor(self.obs["features"])[None], self.state, self.starts[None])
        return RolloutBatch(**{k: torch.stack(v) for k, v in out.items()}, states=tuple(torch.stack(s) for s in states),
                            last_value=model.value_norm.denormalize(v_norm[0]), **rec)
