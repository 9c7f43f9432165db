"""The guard (routing/guard.py): a trained policy handed to its base heuristic on novel states or low
confidence, counted per episode, and reported as a `<name>_guarded` suite row with its fallback rate."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from vidur_ppo.build import env_spec
from vidur_ppo.checkpoint import load_policy
from vidur_ppo.checks import ConfigError
from vidur_ppo.eval.paired import TorchPolicy
from vidur_ppo.eval.suite import EvalConfig
from vidur_ppo.routing.env import run_episode
from vidur_ppo.routing.guard import FeatureStats, GuardConfig, Guarded, training_stats
from vidur_ppo.routing.heuristics import make_heuristic

from test_config import CONF

SEED = 100_000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (debug=smoke, one update): its metrics.csv holds the feature statistics."""
    from vidur_ppo.train import run

    path = tmp_path_factory.mktemp("guard") / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=smoke", "env.num_replicas=2", "bc.enabled=false",
                                                       "ppo.vector_mode=sync", "ppo.num_updates=1",
                                                       "eval.baselines=[round_robin]", "logger.progress=false"])
    run(cfg, path)
    return path


class Recorder:
    """Records what a policy picks (and passes `reset` on); `shift` moves every feature it is shown."""

    def __init__(self, inner, shift=0.0):
        self.inner, self.shift, self.picks = inner, shift, []

    def reset(self, seed=None):
        self.inner.reset(seed)

    def __call__(self, obs):
        if self.shift:
            obs = {**obs, "features": obs["features"] * 10 + self.shift}
        self.picks.append(self.inner(obs))
        return self.picks[-1]


def _episode(run_dir, policy, shift=0.0):
    env = env_spec(load_policy(run_dir)[1]).for_suite_scenario({"name": "t"}, 40).make()
    rec = Recorder(policy, shift)
    run_episode(env, rec, seed=SEED, trace=env.workload.generate(SEED))
    return rec.picks


def test_every_decision_falls_back_on_states_far_outside_training(run_dir):
    policy, _ = load_policy(run_dir)
    stats = training_stats(str(run_dir))
    assert stats is not None and stats.mean.shape == stats.std.shape and (stats.std >= 0).all()
    guarded = Guarded(policy, GuardConfig(margin=0.0, novelty_z=4.0), stats)
    picks = _episode(run_dir, guarded, shift=1e4)
    assert guarded.decisions == len(picks) == 40 and guarded.fallback_rate == 1.0
    assert picks == _episode(run_dir, make_heuristic("least_work_left"))


def test_no_margin_and_no_novelty_test_never_fall_back(run_dir):
    policy, _ = load_policy(run_dir)
    guarded = Guarded(policy, GuardConfig(margin=0.0, novelty_z=None), training_stats(str(run_dir)))
    picks = _episode(run_dir, guarded)
    assert guarded.fallbacks == 0 and guarded.fallback_rate == 0.0
    assert picks == _episode(run_dir, load_policy(run_dir)[0])


def test_fallbacks_are_counted_and_the_policy_sees_every_state(run_dir):
    policy, cfg = load_policy(run_dir)
    env = env_spec(cfg).for_suite_scenario({"name": "t"}, 40).make()
    obs, _ = env.reset(seed=SEED)
    seen = []
    for _ in range(6):
        seen.append({k: np.array(v, copy=True) for k, v in obs.items()})
        obs, *_ = env.step(len(seen) % 2)
    # novelty on hand-set statistics: decisions 1, 3 and 4 are far from them
    stats = FeatureStats(np.zeros(obs["features"].shape[1], np.float32), np.ones(obs["features"].shape[1], np.float32))
    far = [{**o, "features": np.full_like(o["features"], 10.0 if i in (1, 3, 4) else 0.5)} for i, o in enumerate(seen)]
    guarded = Guarded(policy, GuardConfig(margin=0.0, novelty_z=4.0), stats)
    guarded.reset(SEED)
    plain, lwl = TorchPolicy(policy.model), make_heuristic("least_work_left")
    plain.reset(SEED)
    mine = [plain(o) for o in far[:5]]  # the policy sees every state, fallback or not
    expected = [lwl(o) if i in (1, 3, 4) else mine[i] for i, o in enumerate(far[:5])]
    assert [guarded(o) for o in far[:5]] == expected
    assert (guarded.decisions, guarded.fallbacks, guarded.fallback_rate) == (5, 3, 0.6)
    guarded.reset(SEED)
    assert guarded.decisions == 0 and np.isnan(guarded.fallback_rate)

    # confidence: with a margin no lead reaches, exactly the decisions where the picks differ fall back,
    # and the recurrent state advances as the unguarded policy's does
    plain.reset(SEED)
    guarded = Guarded(policy, GuardConfig(margin=1e9, novelty_z=None))
    guarded.reset(SEED)
    differ = sum(plain(o) != lwl(o) for o in seen)
    picks = [guarded(o) for o in seen]
    assert guarded.fallbacks == differ and picks == [lwl(o) for o in seen]
    assert torch.equal(guarded.policy.logits, plain.logits)


def test_a_bad_guard_is_one_error_naming_the_key(tmp_path, capsys):
    for kwargs, key in (({"base": "nope"}, "eval.guard.base"), ({"margin": -1.0}, "eval.guard.margin"),
                        ({"margin": float("inf")}, "eval.guard.margin"), ({"novelty_z": 0.0}, "eval.guard.novelty_z")):
        with pytest.raises(ConfigError, match=key):
            EvalConfig(guard=kwargs)
    with pytest.raises(ConfigError, match=r"eval.guard has unknown key\(s\)"):
        EvalConfig(guard={"z": 3})
    with pytest.raises(ConfigError, match="eval.guard must be a mapping"):
        EvalConfig(guard=3)
    # a run dir without feature statistics: the novelty test is off, one warning line, no crash
    assert training_stats(str(tmp_path)) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "novelty test off" in err[0]


def test_a_suite_reports_the_guarded_policy_and_its_fallback_rate(run_dir):
    out = subprocess.run([sys.executable, "-m", "vidur_ppo.evaluate", f"checkpoint={run_dir}", "eval=smoke",
                          "eval.sampled=false", "eval.workers=1", "eval.baselines=[round_robin]",
                          "eval.guard={margin:1.0,novelty_z:4.0}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "novelty test off" not in out.stderr
    report = (run_dir / "evaluate_smoke" / "report.md").read_text()
    assert "| ppo_guarded |" in report and " fallback |" in report
    with (run_dir / "evaluate_smoke" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    guarded = [r for r in rows if r["scheduler"] == "ppo_guarded"]
    assert {r["scenario"] for r in guarded} == {"trained_size", "r2_light"}
    assert all(0.0 <= float(r["fallback_rate"]) <= 1.0 for r in guarded)
    assert all(r["fallback_rate"] == "" for r in rows if r["scheduler"] != "ppo_guarded")
    line = next(ln for ln in report.splitlines() if ln.startswith("| ppo_guarded |"))
    assert line.rstrip(" |").endswith("%")
