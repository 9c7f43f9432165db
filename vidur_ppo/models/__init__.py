"""Policies (actor-critic models) that read the env's `features` [replicas x features]."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from vidur_ppo.models.attn_gru import AttnGRUActorCritic
from vidur_ppo.models.gru import LegacyGRUActorCritic
from vidur_ppo.registry import lookup, split_spec

MODELS = {"gru": LegacyGRUActorCritic, "attn_gru": AttnGRUActorCritic}


def make_model(spec: Mapping[str, Any], num_replicas: int, num_features: int) -> nn.Module:
    name, params = split_spec(spec, "gru")
    return lookup(MODELS, name, "model")(num_replicas=num_replicas, num_features=num_features, **params)
