"""The PPO objective: clipped surrogate, (optionally clipped) value loss, entropy bonus."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch.distributions import Categorical


def ppo_loss(logits: torch.Tensor, values_norm: torch.Tensor, batch: Dict[str, torch.Tensor], value_norm,
             clip: float, value_coef: float, entropy_coef: float, clip_value: bool,
             norm_adv: bool, kl_coef: float = 0.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    dist = Categorical(logits=logits)
    logp = dist.log_prob(batch["actions"])
    log_ratio = logp - batch["logp"]
    ratio = log_ratio.exp()
    adv = batch["advantages"]
    if norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    target = value_norm.normalize(batch["returns"])
    if clip_value:
        old = value_norm.normalize(batch["values"])
        clipped = old + (values_norm - old).clamp(-clip, clip)
        v_loss = 0.5 * torch.max((values_norm - target) ** 2, (clipped - target) ** 2).mean()
    else:
        v_loss = 0.5 * ((values_norm - target) ** 2).mean()
    entropy = dist.entropy().mean()
    kl = ((ratio - 1) - log_ratio).mean()  # the k3 estimator of KL(old || new), >= 0
    loss = pg_loss + value_coef * v_loss - entropy_coef * entropy
    if kl_coef > 0:
        loss = loss + kl_coef * kl
    with torch.no_grad():
        approx_kl = kl.item()
        clip_frac = ((ratio - 1).abs() > clip).float().mean().item()
    return loss, {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
                  "approx_kl": approx_kl, "clip_frac": clip_frac}
