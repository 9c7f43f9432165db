"""Recurrent PPO pieces: GAE by hand, rollout-time == update-time log-probs, loss sanity."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vidur_ppo.env import make_vector_env
from vidur_ppo.models import make_model
from vidur_ppo.ppo.buffer import RolloutBuffer, compute_gae
from vidur_ppo.ppo.loss import ppo_loss
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


def _small_trainer(tmp_path, steps=24, envs=2):
    cfg = OmegaConf.create({"ppo": {"rollout_steps": steps, "num_updates": 1, "epochs": 1, "minibatches": 2,
                                    "seq_len": 8, "gamma": 0.95, "gae_lambda": 0.9, "clip": 0.15,
                                    "entropy_coef": 0.02, "value_coef": 0.5, "clip_value": False,
                                    "max_grad_norm": 0.5, "norm_adv": True}, "checkpoint_every": 100})
    venv = make_vector_env(envs, mode="sync", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **SMALL)
    torch.manual_seed(0)
    model = make_model({"name": "gru", "actor_hidden": 32, "actor_layers": 2, "critic_hidden": 32,
                        "critic_layers": 2, "value_norm": True}, 3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    class NullLogger:
        def log(self, row):
            self.row = row

    trainer = PPOTrainer(cfg, venv, model, opt, NullLogger(), tmp_path, np.random.default_rng(0), seed_limit=1000)
    return trainer, venv, model


def test_minibatch_chunks_reproduce_rollout_logprobs(tmp_path):
    trainer, venv, model = _small_trainer(tmp_path)
    obs = trainer._reset_envs()
    trainer._ep_return = np.zeros(2)
    state, starts = model.initial_state(2), torch.ones(2)
    buf = RolloutBuffer(24, 2, obs["features"].shape[1:], state)
    stats = {"time_env": 0.0, "time_policy": 0.0, "returns": [], "episodes": [], "reward_parts": {}}
    trainer.collect(obs, state, starts, buf, stats)
    venv.close()
    assert buf.dones.sum() >= 1  # an episode boundary inside the rollout (20-request episodes)
    buf.finish(torch.zeros(2), 0.95, 0.9)
    seen = 0
    for mb in buf.chunks(8, 2, np.random.default_rng(1)):
        with torch.no_grad():
            logits, _, _ = model(mb["feats"], mb["state"], mb["starts"])
        logp = torch.distributions.Categorical(logits=logits).log_prob(mb["actions"])
        ratio = (logp - mb["logp"]).exp()
        torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
        seen += ratio.numel()
    assert seen == 48


def test_trainer_update_logs_and_guards_nan(tmp_path):
    from vidur_ppo.ppo.trainer import TrainingDiverged

    trainer, venv, model = _small_trainer(tmp_path)
    trainer.save = lambda: None
    trainer.run()
    row = trainer.logger.row
    assert row["update"] == 1 and np.isfinite(row["policy_loss"]) and row["entropy"] > 0
    trainer.ppo.num_updates = 2
    trainer.loss_fn = lambda *a, **k: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(TrainingDiverged, match="non-finite loss .* update 2"):
        trainer.run()
    venv.close()


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
