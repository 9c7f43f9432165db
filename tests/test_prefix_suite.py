"""eval=prefix (conf/eval/prefix.yaml, experiments/prefix_cache.py): the prefix families on A100 replicas
with a prefix cache, every heuristic and the cache-aware ones; the grid's `cluster` keys reach every
scenario; a heuristics-only suite runs end to end and reports each router's cache hit rate."""

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs
from vidur_ppo.eval.slo_capacity import CapacityConfig
from vidur_ppo.eval.suite import EvalConfig, GridConfig, base_spec, capacity_targets, run_suite, scenario_spec
from vidur_ppo.routing import capacity
from vidur_ppo.routing.heuristics import CACHE_AWARE, HEURISTICS

from test_config import CONF

register_configs()


def test_the_prefix_suite_composes_with_every_heuristic_on_cached_a100s():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ev = OmegaConf.to_object(compose("evaluate", overrides=["eval=prefix"]).eval)
    assert set(ev.baselines) == set(HEURISTICS) and set(CACHE_AWARE) <= set(ev.baselines)
    assert ev.grid.families == ["system_prompt", "rag", "multi_turn"] and ev.grid.cluster == {"prefix_caching": True}
    scenarios = ev.all_scenarios()
    assert [(s["num_replicas"], s["load"]) for s in scenarios] == [(4, 0.8), (4, 0.95)] * 3
    assert all(s["cluster"] == {"prefix_caching": True} and s["length_predictor"]["kind"] == "lognormal"
               for s in scenarios)
    assert all(sc["cluster"] == {"prefix_caching": True} for sc, _ in capacity_targets(ev))
    spec = base_spec({})  # heuristics only: the default cluster, the scenario's keys over it
    assert not spec.cluster.prefix_caching
    wl = {"kind": "system_prompt", "tenants": 2, "templates_per_tenant": 1, "num_requests": 5, "qps": 1.0,
          "system": {"kind": "fixed", "value": 64}, "examples": {"kind": "fixed", "value": 64},
          "query": {"kind": "fixed", "value": 8}, "decode": {"kind": "fixed", "value": 4}}
    cached = scenario_spec(spec, {"name": "x", "workload": wl, "num_replicas": 2, "cluster": {"prefix_caching": True}}, 5)
    assert cached.cluster.prefix_caching and cached.cluster.num_replicas == 2 and cached.cluster.device == "a100"


@pytest.mark.parametrize("cluster,message", [
    ({"prefix_caching": "yes"}, "prefix_caching must be true or false"),
    ({"num_replicas": 2}, "may not set num_replicas or replicas"),
    ({"prefix_cache": True}, "unknown cluster key"),
    ({"prefix_caching": True, "replica_scheduler": "sarathi"}, "prefix_caching needs replica_scheduler=vllm"),
])
def test_bad_cluster_keys_name_their_key(cluster, message):
    with pytest.raises(ConfigError, match=f"eval.grid.cluster.*{message}"):
        GridConfig(families=["rag"], cluster=cluster)
    with pytest.raises(ConfigError, match=rf"eval.scenarios\[0\].cluster.*{message}"):
        EvalConfig(scenarios=[{"name": "a", "cluster": cluster}])


def test_a_tiny_heuristics_only_prefix_suite_reports_cache_hit_rates(tmp_path, monkeypatch):
    """1 family, 1 seed, 40 requests, 2 replicas, no policy; the family's saturation is written to the capacity
    cache here (a stand-in value, not measured: the rate only sets how busy the 40 requests are)."""
    monkeypatch.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path / "cache"))  # the suite's workers read it there
    monkeypatch.setattr(capacity, "_MEMORY", {})
    monkeypatch.setattr(capacity, "simulate", lambda cluster, workload: 20.0)
    grid = GridConfig(families=["system_prompt"], loads=[0.8], replicas=[2], overload_replicas=[],
                      cluster={"prefix_caching": True})
    ev = EvalConfig(grid=grid, seeds=1, num_requests=40, baselines=["jsq", "cache_aware", "consistent_hash"],
                    capacity=CapacityConfig(replicas=[]), workers=1)
    scenario_spec(base_spec({}), ev.all_scenarios()[0], 40)  # the stand-in saturation, into the cache file
    _, failed = run_suite({}, ev, tmp_path / "out")
    assert failed == {}
    rows = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert set(rows["scheduler"]) == {"jsq", "cache_aware", "consistent_hash"} and (rows["num_completed"] == 40).all()
    assert rows["qps"].iloc[0] == pytest.approx(0.8 * 20.0) and (rows["replicas"] == 2).all()
    assert rows["cache_hit_rate"].between(0.05, 1).all()  # a shared template already cached in 40 requests
    assert "# Evaluation of `the heuristics`" in (tmp_path / "out" / "report.md").read_text()


def test_system_prompt_slo_follows_the_rule_with_its_many_tenants():
    """128 tenants changed the prompt lengths' spread: TTFT SLO = 3.2 x the unloaded P90 TTFT (sim/metrics.py)."""
    from test_application_slos import unloaded_p90_ttft
    from vidur_ppo.sim.metrics import UNLOADED_TTFT_MULTIPLE
    from vidur_ppo.workloads.families import family_spec

    assert family_spec("system_prompt")["slo_ttft"] == pytest.approx(
        UNLOADED_TTFT_MULTIPLE * unloaded_p90_ttft("system_prompt"), abs=0.03)
