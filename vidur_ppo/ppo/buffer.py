"""Rollout storage for recurrent PPO.

Stores, per step and env: the model input, action, log-prob, value, reward, whether the step's
observation starts an episode, and the recurrent state *before* the step. Minibatches are whole
sequence chunks [seq_len, envs] that start from the stored state, so the GRU sees at update time
exactly the history it saw at rollout time (CleanRL's LSTM PPO does the same per env).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence, Tuple

import numpy as np
import torch

if TYPE_CHECKING:
    from vidur_ppo.ppo.rollout import RolloutBatch


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                gamma: float, lam: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over [T, N]; dones[t] = episode ended at step t (so
    step t+1 starts a new one). Returns (advantages, returns)."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


class RolloutBuffer:
    def __init__(self, steps: int, envs: int, feat_shape: Sequence[int], state_template: Tuple[torch.Tensor, ...]):
        self.steps, self.envs = steps, envs
        self.feats = torch.zeros((steps, envs, *feat_shape))
        self.actions = torch.zeros((steps, envs), dtype=torch.long)
        self.logp = torch.zeros((steps, envs))
        self.values = torch.zeros((steps, envs))  # in return units (denormalised)
        self.rewards = torch.zeros((steps, envs))
        self.dones = torch.zeros((steps, envs))
        self.starts = torch.zeros((steps, envs))
        self.states = tuple(torch.zeros((steps, *s.shape)) for s in state_template)  # [T, L, N, H]
        self.advantages = torch.zeros((steps, envs))
        self.returns = torch.zeros((steps, envs))

    @classmethod
    def from_batch(cls, batch: "RolloutBatch", rewards: torch.Tensor) -> "RolloutBuffer":
        """A rollout's tensors with the rewards PPO learns from (after credit and normalisation)."""
        buf = cls(*batch.rewards.shape, batch.feats.shape[2:], tuple(s[0] for s in batch.states))
        buf.feats, buf.starts, buf.actions, buf.logp = batch.feats, batch.starts, batch.actions, batch.logp
        buf.values, buf.dones, buf.states, buf.rewards = batch.values, batch.dones, batch.states, rewards
        return buf

    def finish(self, last_value: torch.Tensor, gamma: float, lam: float) -> None:
        self.advantages, self.returns = compute_gae(self.rewards, self.values, self.dones, last_value, gamma, lam)

    def chunks(self, seq_len: int, minibatches: int, rng: np.random.Generator) -> Iterator[dict]:
        """Minibatches of whole chunks: each chunk is `seq_len` consecutive steps of one env."""
        n_chunks_t = self.steps // seq_len
        ids = [(c, e) for c in range(n_chunks_t) for e in range(self.envs)]
        order = rng.permutation(len(ids))
        for mb in np.array_split(order, minibatches):
            cs = [ids[i] for i in mb]
            t_idx = torch.tensor([c * seq_len for c, _ in cs])
            e_idx = torch.tensor([e for _, e in cs])
            rows = t_idx.view(1, -1) + torch.arange(seq_len).view(-1, 1)  # [L, M]
            cols = e_idx.view(1, -1).expand(seq_len, -1)
            yield {
                "feats": self.feats[rows, cols],
                "starts": self.starts[rows, cols],
                "actions": self.actions[rows, cols],
                "logp": self.logp[rows, cols],
                "values": self.values[rows, cols],
                "advantages": self.advantages[rows, cols],
                "returns": self.returns[rows, cols],
                "state": tuple(s[t_idx, :, e_idx].transpose(0, 1).contiguous() for s in self.states),  # [L, M, H]
            }
