"""Cross-replica attention policy (PLAN.md section 3): per-replica MLP embedding, self-attention
across replicas at each step, a GRU over time on the pooled context, and one score per replica.

Nothing depends on the replica index or count: the embedding is one Linear stack applied to
every replica, attention has no positional encoding, the GRU sees a mean over replicas and the
actor scores each replica from its own embedding plus the shared context (pointer style). So
permuting replicas permutes the action probabilities, and a checkpoint trained on 4 replicas
runs on 2 or 8. The critic shares the encoder (a light head) or has its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from vidur_ppo.checks import check, positive
from vidur_ppo.models.gru import run_gru
from vidur_ppo.models.value_norm import ValueNorm


class ReplicaAttention(nn.Module):
    """One transformer-encoder block over the replica axis; keeps its attention weights.

    `gated`: the residual is gated (x + sigmoid(W[x; a]) * a) as in gated-transformer RL
    policies, so the block can start close to the identity.
    """

    def __init__(self, dim: int, heads: int, gated: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.gate = nn.Linear(2 * dim, dim) if gated else None
        self.weights: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, keep_weights: bool = False) -> torch.Tensor:
        a, w = self.attn(x, x, x, need_weights=keep_weights, average_attn_weights=True)
        if keep_weights:
            self.weights = w.detach()
        if self.gate is not None:
            a = torch.sigmoid(self.gate(torch.cat([x, a], -1))) * a
        x = self.norm1(x + a)
        return self.norm2(x + self.ff(x))


class Encoder(nn.Module):
    """feats [T, B, R, F] -> per-replica embeddings [T, B, R, D] and a GRU context [T, B, H]."""

    def __init__(self, num_features: int, embed_dim: int, heads: int, attn_layers: int, gru_hidden: int,
                 gated: bool) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(num_features, embed_dim), nn.ReLU(),
                                   nn.Linear(embed_dim, embed_dim), nn.ReLU())
        self.blocks = nn.ModuleList(ReplicaAttention(embed_dim, heads, gated) for _ in range(attn_layers))
        self.gru = nn.GRU(embed_dim, gru_hidden, 1)

    def forward(self, feats, h, starts, keep_weights: bool = False):
        T, B, R, F = feats.shape
        x = self.embed(feats).reshape(T * B, R, -1)
        for block in self.blocks:
            x = block(x, keep_weights)
        x = x.reshape(T, B, R, -1)
        ctx, h = run_gru(self.gru, x.mean(2), h, starts)
        return x, ctx, h


@dataclass
class AttnGRUModelConfig:
    """Cross-replica attention + GRU over time, per-replica scores."""

    name: str = "attn_gru"
    embed_dim: int = 64
    heads: int = 4
    attn_layers: int = 1
    gru_hidden: int = 128
    gated: bool = False
    share_encoder: bool = True
    critic_hidden_size: int = 64
    critic_layers: int = 0  # 0: a single Linear on the shared encoding
    value_norm: bool = True

    def __post_init__(self) -> None:
        positive(self, "model", "embed_dim", "heads", "gru_hidden", "critic_hidden_size")
        check(self.embed_dim % self.heads == 0, "model.heads", f"must divide model.embed_dim={self.embed_dim}", self.heads)
        check(self.attn_layers >= 0 and self.critic_layers >= 0, "model.attn_layers/critic_layers", "must be >= 0",
              (self.attn_layers, self.critic_layers))


class AttnGRUActorCritic(nn.Module):
    def __init__(self, cfg: AttnGRUModelConfig, num_replicas: int, num_features: int) -> None:
        super().__init__()
        embed_dim, heads, attn_layers, gru_hidden = cfg.embed_dim, cfg.heads, cfg.attn_layers, cfg.gru_hidden
        share_encoder, critic_hidden_size, critic_layers = cfg.share_encoder, cfg.critic_hidden_size, cfg.critic_layers
        gated, value_norm = cfg.gated, cfg.value_norm
        self.num_features = num_features
        self.encoder = Encoder(num_features, embed_dim, heads, attn_layers, gru_hidden, gated)
        self.critic_encoder = None if share_encoder else Encoder(num_features, embed_dim, heads, attn_layers, gru_hidden, gated)
        self.actor_head = nn.Sequential(nn.Linear(embed_dim + gru_hidden, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))
        nn.init.orthogonal_(self.actor_head[-1].weight, 0.01)
        nn.init.zeros_(self.actor_head[-1].bias)
        d = embed_dim + gru_hidden
        layers, width = [], d
        for _ in range(critic_layers):
            layers += [nn.Linear(width, critic_hidden_size), nn.ReLU()]
            width = critic_hidden_size
        self.critic_head = nn.Sequential(*layers, nn.Linear(width, 1))
        self.value_norm = ValueNorm(value_norm)
        self.record_attention = False

    def initial_state(self, batch: int) -> Tuple[torch.Tensor, ...]:
        h = torch.zeros(1, batch, self.encoder.gru.hidden_size)
        return (h,) if self.critic_encoder is None else (h, h.clone())

    def attention_weights(self) -> Optional[torch.Tensor]:
        """The last step's replica-to-replica attention [B, R, R] of the first block (if recorded)."""
        return self.encoder.blocks[0].weights if self.encoder.blocks else None

    def forward(self, feats: torch.Tensor, state, starts: torch.Tensor, with_value: bool = True):
        """feats [T, B, R, F], starts [T, B] -> logits [T, B, R], values [T, B] (normalised), state."""
        if feats.shape[-1] != self.num_features:
            raise ValueError(f"model=attn_gru was built for {self.num_features} features per replica, got "
                             f"{feats.shape[-1]}: evaluate with the feature set it was trained on")
        x, ctx, h = self.encoder(feats, state[0], starts, keep_weights=self.record_attention)
        R = x.shape[2]
        logits = self.actor_head(torch.cat([x, ctx.unsqueeze(2).expand(-1, -1, R, -1)], -1)).squeeze(-1)
        if not with_value:
            return logits, None, (h,) + tuple(state[1:])
        if self.critic_encoder is None:
            cx, cctx, new_state = x, ctx, (h,)
        else:
            cx, cctx, hc = self.critic_encoder(feats, state[1], starts)
            new_state = (h, hc)
        value = self.critic_head(torch.cat([cx.mean(2), cctx], -1)).squeeze(-1)
        return logits, value, new_state

    def actor_parameters(self):
        return list(self.encoder.parameters()) + list(self.actor_head.parameters())
