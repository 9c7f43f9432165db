"""Running mean/std of value targets (value normalisation): the critic learns returns in
normalised units, so a change of reward scale does not blow up the value loss."""

from __future__ import annotations

import torch
from torch import nn

from vidur_ppo.running_moments import merge_moments


class ValueNorm(nn.Module):
    """Tracks mean/variance of the returns it is fed (Welford, over all updates so far)."""

    def __init__(self, enabled: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.enabled = enabled
        self.eps = eps
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = x.detach().double().flatten()
        mean, var, count = merge_moments(self.mean, self.var, self.count, x.mean(), x.var(unbiased=False), x.numel())
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.count == 0:
            return x
        return (x - self.mean.float()) / torch.sqrt(self.var.float() + self.eps)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.count == 0:
            return x
        return x * torch.sqrt(self.var.float() + self.eps) + self.mean.float()
