"""Every option of the reward, features and curriculum groups trains for a few updates (the defaults once:
`reward=soft_logistic`, whose features, model and reward normalisation are the default ones)."""

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from vidur_ppo.config import register_configs
from vidur_ppo.train import run

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()

CASES = [
    ["reward=soft_logistic"], ["reward=piecewise"], ["reward=legacy_hybrid", "features=queue"],
    ["curriculum=load_ramp", "curriculum.ramp_updates=2"], ["curriculum=reward_ramp", "curriculum.ramp_updates=2"],
    ["curriculum=staged", "curriculum.stages=[{start: 0, workload: {qps: 8.0}}, {start: 1, workload: {qps: 16.0}}]"],
    ["model=attn_gru", "features=full", "ppo.vector_mode=policy_workers"], ["model=attn_gru", "model.share_encoder=false", "model.gated=true"],
    ["ppo=adaptive", "bc.enabled=true"], ["ppo=adaptive", "ppo.entropy_schedule=target_entropy", "ppo.target_entropy=0.5",
                                          "ppo.kl_adapt_lr=true"],
    ["experiment=headline", "bc.enabled=true", "bc.label_workers=2"], ["experiment=headline", "reward.credit=decision"],
    ["reward.credit=decision", "ppo.vector_mode=policy_workers", "ppo.num_workers=1"], ["experiment=slo_reward"],
    ["workload=system_prompt", "env.prefix_caching=true", "features=prefix"],  # experiment=prefix_router's parts
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_option_trains_a_few_updates(overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = [] if "bc.enabled=true" in overrides else ["bc.enabled=false"]
        if not any(o.startswith("ppo.vector_mode") for o in overrides):
            base.append("ppo.vector_mode=sync")
        cfg = compose(config_name="config", overrides=overrides + base + ["debug=smoke", "ppo.num_updates=3",
                                                                   "eval.baselines=[round_robin]", "logger.progress=false"])
    objective = run(cfg, tmp_path)
    assert objective > 0
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    names = json.loads((tmp_path / "features.json").read_text())["names"]
    assert all(f"feat/{n}/mean" in rows[0] for n in names)
    assert any(k.startswith("reward/latency") for k in rows[0])
    if any(o.startswith("ppo=adaptive") for o in overrides):
        coefs = [float(r["entropy_coef"]) for r in rows]
        assert "kl_coef" in rows[0] and "early_stopped" in rows[0]
        if "bc.enabled=true" in overrides:
            assert coefs[0] > coefs[-1] and float(rows[0]["bc_coef"]) > 0 and "bc_loss" in rows[0]
    if "bc.enabled=true" in overrides:  # the warm start is kept as a policy dir of its own, PPO moved on from it
        import torch

        distilled = torch.load(tmp_path / "distilled" / "checkpoint.pt", weights_only=False)
        final = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        assert distilled["update"] == 0 and final["update"] == 3
        assert any(not torch.equal(distilled["model"][k], final["model"][k]) for k in final["model"])
        assert (tmp_path / "distilled" / "config.yaml").read_text() == (tmp_path / "config.yaml").read_text()
    if any(o.startswith("curriculum=") for o in overrides):
        events = (tmp_path / "events.csv").read_text()
        assert "curriculum" in events
        assert len({r["curriculum/qps"] for r in rows}) >= (2 if "reward_ramp" not in overrides[0] else 1)
