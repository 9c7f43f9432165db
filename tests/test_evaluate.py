"""Paired evaluation: identical traces for every scheduler; suites via the CLI; a fixed-size
model on another replica count is reported clearly, not crashed on."""

import subprocess
import sys

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo import checkpoint
from vidur_ppo.config import register_configs
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.eval.paired import best_heuristic, evaluate, summary_table
from vidur_ppo.routing.heuristics import make_heuristic
from vidur_ppo.models import make_model
from vidur_ppo.build import env_spec

from conftest import OUTPUTS, PROMPTS
from test_config import CONF

register_configs()


class Recorder:
    """Wraps a heuristic and records the requests it is asked to route."""

    def __init__(self, name):
        self.inner, self.seen = make_heuristic(name), []

    def reset(self, seed=None):
        self.inner.reset(seed)

    def __call__(self, obs):
        self.seen.append(tuple(obs["request"]))
        return self.inner(obs)


def test_every_scheduler_sees_identical_traces():
    env = VidurRoutingEnv(cluster={"num_replicas": 3},
                          workload={"kind": "synthetic", "num_requests": 40, "qps": 12.0, "prefill": PROMPTS, "decode": OUTPUTS})
    recs = {n: Recorder(n) for n in ("round_robin", "jsq", "random", "least_work_left")}
    rows = evaluate(env, recs, seeds=[100_000, 100_001])
    seqs = [tuple(r.seen) for r in recs.values()]
    assert len(set(seqs)) == 1 and len(seqs[0]) == 80
    assert len({r["e2e_p99"] for r in rows if r["seed"] == 100_000}) > 1  # but different decisions
    table = summary_table(rows)
    assert best_heuristic(rows) in recs and "E2E P99 vs best" in table


def _save(tmp_path, model_opt):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model_opt}", "features=queue"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    names = env_spec(cfg).make().features.names
    torch.manual_seed(0)
    model = make_model(OmegaConf.to_container(cfg.model), 4, len(names))
    checkpoint.save(tmp_path, {"model": model.state_dict(), "feature_names": list(names)})


def _cli(tmp_path):
    return subprocess.run([sys.executable, "-m", "vidur_ppo.evaluate", f"checkpoint={tmp_path}", "eval=smoke"],
                          capture_output=True, text=True, timeout=300)


def test_suite_cli_runs_an_attention_policy_on_other_cluster_sizes(tmp_path):
    _save(tmp_path, "attn_gru")
    out = _cli(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "evaluate_smoke" / "report.md").read_text()
    assert "## r2_light (2 replicas" in report and "| ppo |" in report and "| ppo_sampled |" in report
    assert "Not evaluated" not in report
    assert list((tmp_path / "evaluate_smoke").glob("attention_*.png")) and (tmp_path / "evaluate_smoke" / "metrics.csv").exists()


def test_suite_cli_reports_a_fixed_size_model_clearly(tmp_path):
    _save(tmp_path, "gru")
    out = _cli(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "evaluate_smoke" / "report.md").read_text()
    assert "r2_light: ppo cannot run here: model=gru was built for 4 replicas" in report
    assert "## r2_light (2 replicas" in report  # the heuristics are still evaluated there
