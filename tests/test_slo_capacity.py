"""Capacity at SLO: bisection on the load rho, on small real simulations (2 replicas, short requests)."""

import dataclasses
import pickle

import pytest
from omegaconf import OmegaConf

from vidur_ppo.build import EnvSpec, env_spec
from vidur_ppo.eval import suite
from vidur_ppo.checks import ConfigError
from vidur_ppo.eval.slo_capacity import CapacityConfig, attainment_at, capacity_at_slo
from vidur_ppo.eval.suite import capacity_job
from vidur_ppo.routing.env import EVAL_SEED_BASE
from vidur_ppo.routing.features import features_config
from vidur_ppo.routing.rewards import reward_config
from vidur_ppo.routing.safety import SafetyConfig
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.workloads import workload_spec

from test_evaluate import _save

SEEDS = [EVAL_SEED_BASE]
# 200 short requests: round-robin meets a 0.1 s TTFT for >= 90% up to rho ~1.1 and falls to ~0.3 at 2.0
CFG = CapacityConfig(low=0.2, high=2.0, tol=0.1, seeds=1, num_requests=200, replicas=[2])


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """The saturation throughput behind workload.load is measured once, into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def spec() -> EnvSpec:
    wl = workload_spec({"kind": "synthetic", "num_requests": 200, "qps": 1.0,
                        "prefill": {"kind": "uniform", "min": 64, "max": 512},
                        "decode": {"kind": "uniform", "min": 16, "max": 128}})
    return EnvSpec(cluster=ClusterSpec(num_replicas=2), workload=wl, reward=reward_config(None),
                   features=features_config(None), safety=SafetyConfig(), slo_ttft=0.1)


def test_bisection_brackets_the_target(spec):
    res = capacity_at_slo(spec, "round_robin", CFG, SEEDS)
    assert res.censored == "" and CFG.low < res.capacity < CFG.high
    att = dict(res.evaluations)
    assert [rho for rho, _ in res.evaluations[:2]] == [CFG.low, CFG.high]
    assert att[res.capacity] >= CFG.target
    above = min(rho for rho in att if rho > res.capacity)  # the failing end of the final bracket
    assert att[above] < CFG.target and above - res.capacity < CFG.tol
    assert len(res.evaluations) == len(att)  # no load simulated twice
    # the recorded attainment is the paired evaluation's, reproducible
    assert attainment_at(spec, "round_robin", res.capacity, SEEDS, CFG.num_requests) == att[res.capacity]


def test_censored_both_ways(spec):
    hopeless = capacity_at_slo(dataclasses.replace(spec, slo_ttft=1e-6), "round_robin", CFG, SEEDS)
    assert (hopeless.capacity, hopeless.censored) == (CFG.low, "<")
    assert [rho for rho, _ in hopeless.evaluations] == [CFG.low]
    loose = dataclasses.replace(spec, slo_ttft=100.0, slo_tpot=100.0)
    easy = capacity_at_slo(loose, "round_robin", CFG, SEEDS)
    assert (easy.capacity, easy.censored) == (CFG.high, ">=")
    assert [rho for rho, _ in easy.evaluations] == [CFG.low, CFG.high]
    assert all(a >= CFG.target for _, a in easy.evaluations)


def test_capacity_job_is_picklable_and_tags_its_row(spec, tmp_path):
    loose = dataclasses.replace(spec, slo_ttft=100.0, slo_tpot=100.0)
    args = pickle.loads(pickle.dumps((loose, "jsq", None, CFG, SEEDS, {"replicas": 2})))
    row = capacity_job(args)
    assert row["replicas"] == 2 and row["scheduler"] == "jsq"
    assert (row["capacity"], row["censored"]) == (CFG.high, ">=") and len(row["evaluations"]) == 2
    # a trained run's policy (here untrained weights), loaded once per process
    _save(tmp_path, "attn_gru")
    run_spec = dataclasses.replace(loose, features=env_spec(OmegaConf.load(tmp_path / "config.yaml")).features)
    row = capacity_job((run_spec, "ppo", str(tmp_path), CFG, SEEDS, {}))
    assert (row["scheduler"], row["capacity"], row["censored"]) == ("ppo", CFG.high, ">=")
    policy = suite._POLICY_CACHE[str(tmp_path)][0]
    capacity_job((run_spec, "ppo", str(tmp_path), CFG, SEEDS, {}))
    assert suite._POLICY_CACHE[str(tmp_path)][0] is policy


def test_a_guarded_policy_that_always_falls_back_has_its_base_heuristics_capacity(spec, tmp_path):
    from vidur_ppo.routing.guard import GuardConfig

    _save(tmp_path, "attn_gru")
    run_spec = dataclasses.replace(spec, features=env_spec(OmegaConf.load(tmp_path / "config.yaml")).features)
    never_confident = GuardConfig(base="jsq", margin=1e6, novelty_z=None)
    guarded = capacity_job((run_spec, "ppo_guarded", str(tmp_path), CFG, SEEDS, {}, never_confident))
    base = capacity_job((run_spec, "jsq", None, CFG, SEEDS, {}))
    assert guarded["scheduler"] == "ppo_guarded" and guarded["censored"] == ""  # a bracketed capacity, not an edge
    assert (guarded["capacity"], guarded["evaluations"]) == (base["capacity"], base["evaluations"])


@pytest.mark.parametrize("kwargs,key", [
    ({"low": 0.0}, "eval.capacity.low"),
    ({"low": 2.0, "high": 1.0}, "eval.capacity.low"),
    ({"target": 0.0}, "eval.capacity.target"),
    ({"target": 1.5}, "eval.capacity.target"),
    ({"tol": 0.0}, "eval.capacity.tol"),
    ({"seeds": 0}, "eval.capacity.seeds"),
    ({"num_requests": 0}, "eval.capacity.num_requests"),
    ({"replicas": [0]}, "eval.capacity.replicas"),
])
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CapacityConfig(**kwargs)


def test_defaults_are_valid():
    cfg = CapacityConfig()
    assert (cfg.target, cfg.low, cfg.high, cfg.tol, cfg.seeds, cfg.replicas) == (0.9, 0.2, 2.0, 0.02, 3, [4])
    assert CapacityConfig(replicas=[]).replicas == []
