"""Policies (actor-critic models) that read the env's `features` [replicas x features]."""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import nn

from vidur_ppo.models.attn_gru import AttnGRUActorCritic, AttnGRUModelConfig
from vidur_ppo.models.gru import GRUModelConfig, LegacyGRUActorCritic
from vidur_ppo.registry import build, typed_config

MODELS = {"gru": (GRUModelConfig, LegacyGRUActorCritic), "attn_gru": (AttnGRUModelConfig, AttnGRUActorCritic)}
ModelConfig = Union[GRUModelConfig, AttnGRUModelConfig]


def model_config(spec: Union[ModelConfig, Mapping[str, Any], str, None]) -> ModelConfig:
    """The typed config of a model: itself, or built from `{"name": ..., **params}` / a name."""
    return typed_config(MODELS, spec, AttnGRUModelConfig.name, "model")


def make_model(spec: Union[ModelConfig, Mapping[str, Any], str, None], num_replicas: int, num_features: int) -> nn.Module:
    return build(MODELS, spec, AttnGRUModelConfig.name, "model", num_replicas, num_features)
