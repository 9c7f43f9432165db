"""Behaviour cloning imitates a heuristic teacher."""

import torch

from vidur_ppo.ppo.bc import agreement, collect_demos, train_bc
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.models import make_model

from conftest import OUTPUTS, PROMPTS

WL = {"kind": "synthetic", "num_requests": 150, "qps": 12.0, "prefill": PROMPTS, "decode": OUTPUTS}


def test_bc_reaches_90_percent_agreement_with_lor():
    # vidur's LOR looks only at *waiting* requests, which the queue features show (the legacy
    # features mix waiting and running, and reach ~65% agreement)
    env = VidurRoutingEnv(cluster={"num_replicas": 3}, workload=WL, features="queue")
    demos = collect_demos(env, "lor", seeds=[1, 2, 3, 4, 5])
    torch.manual_seed(0)
    model = make_model({"name": "gru", "actor_hidden": 320, "actor_layers": 3, "critic_hidden": 64,
                        "critic_layers": 1}, 3, env.features.num_features)
    before = agreement(model, demos[4:])
    losses = train_bc(model, demos[:4], epochs=30, lr=2e-3, seq_len=32)
    after = agreement(model, demos[4:])
    assert losses[-1] < losses[0]
    assert after >= 0.9, f"agreement {after:.3f} (before training {before:.3f})"
