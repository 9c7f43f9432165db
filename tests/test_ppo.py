"""Recurrent PPO pieces: GAE by hand, rollout-time == update-time log-probs, loss sanity."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from vidur_ppo.ppo.vector import make_vector_env
from vidur_ppo.models import make_model
from vidur_ppo.ppo.buffer import compute_gae
from vidur_ppo.ppo.config import PPOConfig
from vidur_ppo.ppo.loss import ppo_loss
from vidur_ppo.ppo.samplers import VectorEnvSampler
from vidur_ppo.ppo.trainer import PPOTrainer

from conftest import OUTPUTS, PROMPTS


def test_gae_against_hand_computation():
    # one env, 3 steps, episode ends after step 1 (index 1); gamma 0.9, lambda 0.8
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [1.0], [1.5]])
    d = torch.tensor([[0.0], [1.0], [0.0]])
    last = torch.tensor([2.0])
    adv, ret = compute_gae(r, v, d, last, gamma=0.9, lam=0.8)
    delta2 = 3 + 0.9 * 2.0 - 1.5  # 3.3
    delta1 = 2 - 1.0  # terminal: no bootstrap
    delta0 = 1 + 0.9 * 1.0 - 0.5  # 1.4
    a2, a1 = delta2, delta1
    a0 = delta0 + 0.9 * 0.8 * a1
    assert torch.allclose(adv[:, 0], torch.tensor([a0, a1, a2]))
    assert torch.allclose(ret, adv + v)


SMALL = {"cluster": {"num_replicas": 3}, "workload": {"kind": "synthetic", "num_requests": 20, "qps": 10.0,
                                                      "prefill": PROMPTS, "decode": OUTPUTS},
         "features": {"name": "legacy"}, "reward": {"name": "legacy_hybrid"}}


def _small_trainer(steps=24, envs=2):
    cfg = PPOConfig(num_envs=envs, rollout_steps=steps, num_updates=1, epochs=1, minibatches=2, seq_len=8, gamma=0.95,
                    gae_lambda=0.9, clip=0.15, entropy_coef=0.02, value_coef=0.5, clip_value=False, max_grad_norm=0.5,
                    norm_adv=True)
    venv = make_vector_env(envs, mode="sync", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **SMALL)
    torch.manual_seed(0)
    model = make_model({"name": "gru", "actor_hidden": 32, "actor_layers": 2, "critic_hidden": 32,
                        "critic_layers": 2, "value_norm": True}, 3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = PPOTrainer(cfg, model, opt, np.random.default_rng(0), seed_limit=1000)
    return trainer, VectorEnvSampler(venv, model), model


def test_minibatch_chunks_reproduce_rollout_logprobs():
    trainer, sampler, model = _small_trainer()
    sampler.reset(trainer.episode_seeds(2))
    buf = trainer.buffer(sampler.collect(model, 24))
    sampler.close()
    assert buf.dones.sum() >= 1  # an episode boundary inside the rollout (20-request episodes)
    seen = 0
    for mb in buf.chunks(8, 2, np.random.default_rng(1)):
        with torch.no_grad():
            logits, _, _ = model(mb["feats"], mb["state"], mb["starts"])
        logp = torch.distributions.Categorical(logits=logits).log_prob(mb["actions"])
        ratio = (logp - mb["logp"]).exp()
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
        seen += ratio.numel()
    assert seen == 48


def test_trainer_update_logs_and_guards_nan():
    from vidur_ppo.ppo.trainer import TrainingDiverged

    trainer, sampler, model = _small_trainer()
    rows = []
    trainer.fit(sampler, rows.append, save=lambda: None, checkpoint_every=100)
    row = rows[-1]
    assert row["update"] == 1 and np.isfinite(row["policy_loss"]) and row["entropy"] > 0
    trainer.ppo.num_updates = 2
    trainer.loss_fn = lambda *a, **k: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(TrainingDiverged, match="non-finite loss .* update 2"):
        trainer.fit(sampler, rows.append, save=lambda: None, checkpoint_every=100)
    sampler.close()


def test_loss_clips_the_ratio():
    logits = torch.zeros(4, 1, 3, requires_grad=True)

    class Identity:
        normalize = staticmethod(lambda x: x)

    batch = {"actions": torch.zeros(4, 1, dtype=torch.long), "logp": torch.full((4, 1), np.log(1 / 3) - 1.0),
             "advantages": torch.ones(4, 1), "returns": torch.zeros(4, 1), "values": torch.zeros(4, 1)}
    loss, parts = ppo_loss(logits, torch.zeros(4, 1), batch, Identity(), clip=0.2, value_coef=0.5,
                           entropy_coef=0.0, clip_value=False, norm_adv=False)
    assert parts["clip_frac"] == 1.0  # ratio e^1 is far outside [0.8, 1.2]
    assert parts["policy_loss"] == pytest.approx(-1.2)
