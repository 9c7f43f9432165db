"""Policies (actor-critic models) that read the env's `features` [replicas x features]."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from vidur_ppo.models.attn_gru import AttnGRUActorCritic
from vidur_ppo.models.gru import LegacyGRUActorCritic

MODELS = {"gru": LegacyGRUActorCritic, "attn_gru": AttnGRUActorCritic}


def make_model(spec: Mapping[str, Any], num_replicas: int, num_features: int) -> nn.Module:
    spec = dict(spec)
    name = spec.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_replicas=num_replicas, num_features=num_features, **spec)
