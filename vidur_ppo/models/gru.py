"""The legacy policy: separate actor (3-layer GRU, 320) and critic (4-layer GRU, 384) over the
flattened [replicas x features] observation (PLAN.md section 3, "current").

The flattening fixes the input to one cluster size; `forward` says so clearly when asked to run
on another one (the attention model in a later option does not have this limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

from vidur_ppo.checks import positive
from vidur_ppo.models.value_norm import ValueNorm

State = Tuple[torch.Tensor, torch.Tensor]


def run_gru(gru: nn.GRU, x: torch.Tensor, h: torch.Tensor, starts: torch.Tensor):
    """Run a GRU over x [T, B, D] from hidden h [L, B, H], zeroing h where an episode starts.

    The sequence is cut only at steps where some row starts an episode, and each piece runs as
    one fused nn.GRU call, so rollout time (T=1) and update time (whole chunks) compute the same
    thing for the same history, without a Python loop over every step.
    """
    cuts = [0] + [t for t in range(1, x.shape[0]) if bool(starts[t].any())] + [x.shape[0]]
    outs = []
    for t0, t1 in zip(cuts[:-1], cuts[1:]):
        h = h * (1.0 - starts[t0]).view(1, -1, 1)
        out, h = gru(x[t0:t1], h)
        outs.append(out)
    return torch.cat(outs) if len(outs) > 1 else outs[0], h


@dataclass
class GRUModelConfig:
    """Legacy separate actor/critic GRUs over the flattened replica features."""

    name: str = "gru"
    actor_hidden: int = 320
    actor_layers: int = 3
    critic_hidden: int = 384
    critic_layers: int = 4
    value_norm: bool = True

    def __post_init__(self) -> None:
        positive(self, "model", "actor_hidden", "actor_layers", "critic_hidden", "critic_layers")


class LegacyGRUActorCritic(nn.Module):
    def __init__(self, cfg: GRUModelConfig, num_replicas: int, num_features: int) -> None:
        super().__init__()
        actor_hidden, actor_layers, critic_hidden, critic_layers = (cfg.actor_hidden, cfg.actor_layers,
                                                                    cfg.critic_hidden, cfg.critic_layers)
        value_norm = cfg.value_norm
        self.num_replicas, self.num_features = num_replicas, num_features
        d = num_replicas * num_features
        self.actor_gru = nn.GRU(d, actor_hidden, actor_layers)
        self.actor_head = nn.Linear(actor_hidden, num_replicas)
        self.critic_gru = nn.GRU(d, critic_hidden, critic_layers)
        self.critic_head = nn.Linear(critic_hidden, 1)
        self.value_norm = ValueNorm(value_norm)
        nn.init.orthogonal_(self.actor_head.weight, 0.01)
        nn.init.zeros_(self.actor_head.bias)

    def initial_state(self, batch: int) -> State:
        return (torch.zeros(self.actor_gru.num_layers, batch, self.actor_gru.hidden_size),
                torch.zeros(self.critic_gru.num_layers, batch, self.critic_gru.hidden_size))

    def _flat(self, feats: torch.Tensor) -> torch.Tensor:
        r, f = feats.shape[-2:]
        if (r, f) != (self.num_replicas, self.num_features):
            raise ValueError(
                f"model=gru was built for {self.num_replicas} replicas x {self.num_features} features and "
                f"cannot run on {r} x {f}: its flattened input has a fixed size. Train on this cluster "
                "size, or use a per-replica model (model=attn_gru) that runs on any replica count."
            )
        return feats.flatten(-2)

    def forward(self, feats: torch.Tensor, state: State, starts: torch.Tensor, with_value: bool = True):
        """feats [T, B, R, F], starts [T, B] -> logits [T, B, R], values [T, B] (normalised), state."""
        x = self._flat(feats)
        ha, hc = state
        a_out, ha = run_gru(self.actor_gru, x, ha, starts)
        logits = self.actor_head(a_out)
        if not with_value:
            return logits, None, (ha, hc)
        c_out, hc = run_gru(self.critic_gru, x, hc, starts)
        return logits, self.critic_head(c_out).squeeze(-1), (ha, hc)

    def actor_parameters(self):
        return list(self.actor_gru.parameters()) + list(self.actor_head.parameters())
