"""Behaviour-cloning warm start: imitate a heuristic before PPO.

Demonstrations are whole episodes of the teacher heuristic in the training env (training seeds),
stored as the model's input features and the teacher's actions. The actor is trained by
cross-entropy with truncated back-propagation through time: each episode is one long sequence,
cut into `seq_len` chunks that carry the recurrent state forward (detached), as at rollout time.
Agreement with the teacher is measured on held-out demonstration episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vidur_ppo.env import VidurRoutingEnv
from vidur_ppo.heuristics import make_heuristic


@dataclass
class Demo:
    feats: torch.Tensor  # [T, R, F]
    actions: torch.Tensor  # [T]


def collect_demos(env: VidurRoutingEnv, teacher: str, seeds: Sequence[int]) -> List[Demo]:
    demos = []
    for seed in seeds:
        policy = make_heuristic(teacher)
        policy.reset(seed)
        obs, _ = env.reset(seed=int(seed))
        feats, actions, done = [], [], False
        while not done:
            a = policy(obs)
            feats.append(obs["features"])
            actions.append(a)
            obs, _, done, _, _ = env.step(a)
        demos.append(Demo(torch.as_tensor(np.stack(feats)), torch.as_tensor(actions, dtype=torch.long)))
    return demos


def _batch(demos: Sequence[Demo]):
    """Pad episodes to one length: feats [T, B, R, F], actions [T, B], mask [T, B]."""
    T = max(len(d.actions) for d in demos)
    r, f = demos[0].feats.shape[1:]
    feats = torch.zeros((T, len(demos), r, f))
    actions = torch.zeros((T, len(demos)), dtype=torch.long)
    mask = torch.zeros((T, len(demos)))
    for i, d in enumerate(demos):
        n = len(d.actions)
        feats[:n, i], actions[:n, i], mask[:n, i] = d.feats, d.actions, 1.0
    return feats, actions, mask


@torch.no_grad()
def agreement(model, demos: Sequence[Demo]) -> float:
    """Share of decisions where the actor's most likely replica is the teacher's choice."""
    feats, actions, mask = _batch(demos)
    starts = torch.zeros(mask.shape)
    starts[0] = 1.0
    logits, _, _ = model(feats, model.initial_state(feats.shape[1]), starts, with_value=False)
    hit = (logits.argmax(-1) == actions).float() * mask
    return float(hit.sum() / mask.sum())


def train_bc(model, demos: Sequence[Demo], epochs: int, lr: float, seq_len: int,
             progress: Optional[Callable[[int, float], None]] = None) -> List[float]:
    """Cross-entropy on the actor only (the critic starts learning in PPO)."""
    params = model.actor_parameters()
    opt = torch.optim.Adam(params, lr=lr)
    feats, actions, mask = _batch(demos)
    T, B = actions.shape
    losses = []
    for epoch in range(epochs):
        state = model.initial_state(B)
        total, count = 0.0, 0.0
        for t0 in range(0, T, seq_len):
            sl = slice(t0, min(t0 + seq_len, T))
            starts = torch.zeros(mask[sl].shape)
            if t0 == 0:
                starts[0] = 1.0
            logits, _, state = model(feats[sl], state, starts, with_value=False)
            state = tuple(s.detach() for s in state)
            ce = F.cross_entropy(logits.flatten(0, 1), actions[sl].flatten(), reduction="none")
            m = mask[sl].flatten()
            loss = (ce * m).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += loss.item() * float(m.sum())
            count += float(m.sum())
        losses.append(total / max(count, 1))
        if progress:
            progress(epoch, losses[-1])
    return losses


def demo_loss(model, demos: Sequence[Demo], seq_len: int, chunks: int, rng: np.random.Generator) -> torch.Tensor:
    """Cross-entropy of the actor on `chunks` random demonstration chunks (fading BC during PPO).

    Chunks start from a zero recurrent state, a truncation the rollout never makes; it only
    anchors the policy to the teacher early in PPO, with a weight that fades to 0.
    """
    picks = rng.integers(len(demos), size=chunks)
    feats, actions = [], []
    for i in picks:
        d = demos[int(i)]
        t0 = int(rng.integers(max(len(d.actions) - seq_len, 0) + 1))
        f, a = d.feats[t0:t0 + seq_len], d.actions[t0:t0 + seq_len]
        if len(a) < seq_len:  # episode shorter than a chunk: pad, masked below
            pad = seq_len - len(a)
            f = torch.cat([f, f[-1:].expand(pad, *f.shape[1:])])
            a = torch.cat([a, torch.full((pad,), -100, dtype=torch.long)])
        feats.append(f)
        actions.append(a)
    feats, actions = torch.stack(feats, 1), torch.stack(actions, 1)
    starts = torch.zeros(actions.shape)
    starts[0] = 1.0
    logits, _, _ = model(feats, model.initial_state(chunks), starts, with_value=False)
    return F.cross_entropy(logits.flatten(0, 1), actions.flatten(), ignore_index=-100)
