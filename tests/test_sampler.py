"""Rollouts collected by workers that run the policy reproduce the learner's log-probs exactly."""

import numpy as np
import torch

from vidur_ppo.models import make_model
from vidur_ppo.ppo.samplers import PolicyWorkerSampler

from conftest import OUTPUTS, PROMPTS

KW = {"cluster": {"num_replicas": 3}, "features": "queue",
      "workload": {"kind": "synthetic", "num_requests": 20, "qps": 10.0, "prefill": PROMPTS, "decode": OUTPUTS}}
SPEC = {"name": "attn_gru", "embed_dim": 16, "heads": 2, "gru_hidden": 16}


def test_worker_rollouts_match_the_learner():
    torch.manual_seed(0)
    model = make_model(SPEC, 3, 8)
    sampler = PolicyWorkerSampler(KW, num_envs=3, num_workers=2, model_cfg=SPEC, num_replicas=3, num_features=8)
    try:
        sampler.reset([1, 2, 3])
        first = sampler.collect(model, 16)
        second = sampler.collect(model, 16)  # episodes and recurrent state carry over between rollouts
    finally:
        sampler.close()
    a = first
    assert a.feats.shape == (16, 3, 3, 8) and a.states[0].shape == (16, 1, 3, 16)
    assert a.starts[0].tolist() == [1.0, 1.0, 1.0] and second.starts[0].sum() < 3
    assert (a.dones.sum() + second.dones.sum()) >= 1 and first.returns + second.returns
    for arr in (a, second):
        with torch.no_grad():
            for e in range(3):  # replay each env's whole rollout from its stored initial state
                state = tuple(s[0, :, e:e + 1] for s in arr.states)
                logits, _, _ = model(arr.feats[:, e:e + 1], state, arr.starts[:, e:e + 1])
                logp = torch.log_softmax(logits, -1).gather(-1, arr.actions[:, e:e + 1, None])[..., 0]
                torch.testing.assert_close(logp, arr.logp[:, e:e + 1], atol=1e-5, rtol=0)
