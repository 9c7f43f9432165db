"""SLOs per application: each workload family carries its own TTFT/TPOT SLOs (conf/workload files, the rule
in sim/metrics.py), which follow it into zoo episodes, suite scenarios and result rows; the run's top-level
slo_ttft/slo_tpot override them for the run's own workload only."""

import numpy as np
import pytest

from vidur_ppo.build import EnvSpec
from vidur_ppo.checks import ConfigError
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.features import features_config
from vidur_ppo.routing.rewards import reward_config
from vidur_ppo.routing.safety import SafetyConfig
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.metrics import DEFAULT_SLO_TPOT, DEFAULT_SLO_TTFT, UNLOADED_TTFT_MULTIPLE
from vidur_ppo.workloads import SyntheticWorkloadConfig, workload_spec, zoo
from vidur_ppo.workloads.families import family_names, family_spec

OWN = [f for f in family_names() if family_spec(f).get("slo_ttft") is not None]


def unloaded_p90_ttft(family: str) -> float:
    """The family's P90 TTFT on one idle A100: 200 requests 50 s apart, as the rule was measured."""
    wl = {**family_spec(family), "qps": 0.02, "num_requests": 200}
    env = VidurRoutingEnv(cluster={"num_replicas": 1}, workload=wl)
    run_episode(env, lambda obs: 0, seed=1)
    return float(np.percentile(env.driver.per_request()["ttft"], 90))


def test_the_chatbot_defaults_are_the_rule_on_chat():
    assert DEFAULT_SLO_TTFT == pytest.approx(UNLOADED_TTFT_MULTIPLE * unloaded_p90_ttft("chat"), abs=0.025)


@pytest.mark.parametrize("family", ["code_completion", "summarisation", "two_tenant"])  # the rest: perf_attempts.md
def test_family_slos_follow_the_rule(family):
    spec = family_spec(family)
    assert spec["slo_ttft"] == pytest.approx(UNLOADED_TTFT_MULTIPLE * unloaded_p90_ttft(family), abs=0.03)
    assert spec["slo_tpot"] in (0.1, 0.15, 0.2)  # DistServe Table 1: chatbot, summarisation, code completion


def test_long_prompt_families_get_looser_ttft_and_code_its_own_tpot():
    assert {"code_completion", "summarisation", "prefill_heavy", "burstgpt", "two_tenant", "uniform"} <= set(OWN)
    assert family_spec("chat").get("slo_ttft") is None  # the chatbot defaults
    assert family_spec("code_completion")["slo_tpot"] == 0.2 and family_spec("summarisation")["slo_tpot"] == 0.15


def _spec(workload, **slos) -> EnvSpec:
    return EnvSpec(cluster=ClusterSpec(num_replicas=2), workload=workload_spec(workload), reward=reward_config(None),
                   features=features_config(None), safety=SafetyConfig(), **slos)


def test_each_zoo_episode_is_held_to_its_family_slos_and_rows_say_which():
    members = [{**family_spec(f), "num_requests": 30, "qps": 4.0} for f in ("chat", "code_completion")]
    env = VidurRoutingEnv(cluster={"num_replicas": 2}, workload={"kind": "zoo", "families": ["chat", "code_completion"],
                                                                 "load_min": 0.5, "load_max": 0.5, "num_requests": 30,
                                                                 "members": members})
    seen = {}
    for seed in range(6):
        family = ("chat", "code_completion")[env.workload.draw(seed)[0]]
        row = run_episode(env, lambda obs: 0, seed=seed)
        seen[family] = (row["slo_ttft"], row["slo_tpot"])
    assert seen == {"chat": (DEFAULT_SLO_TTFT, DEFAULT_SLO_TPOT), "code_completion": (0.6, 0.2)}


def test_the_run_override_holds_for_its_workload_and_a_family_scenario_keeps_its_own():
    run = _spec(family_spec("code_completion"), slo_ttft=2.0)
    assert run.make().slos == {"slo_ttft": 2.0, "slo_tpot": 0.2}  # override, else the workload's own
    variant = run.scenario(workload={"qps": 3.0})
    assert variant.make().slos["slo_ttft"] == 2.0  # a variant of the run's workload: the run's SLO
    family = run.scenario(workload=family_spec("summarisation"), replace_workload=True)
    assert family.make().slos == {"slo_ttft": 0.6, "slo_tpot": 0.15}
    assert _spec(None).make().slos == {"slo_ttft": DEFAULT_SLO_TTFT, "slo_tpot": DEFAULT_SLO_TPOT}


def test_a_trace_scenario_carries_its_own_slos(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" +
                    "".join(f"{0.1 * i},{200 + i},{20 + i}\n" for i in range(20)))
    spec = _spec(None).scenario(workload={"kind": "trace", "path": str(path), "slo_ttft": 1.5, "slo_tpot": 0.2})
    row = run_episode(spec.make(), lambda obs: 0, seed=0)
    assert (row["slo_ttft"], row["slo_tpot"]) == (1.5, 0.2)


def test_the_simulator_and_capacity_never_see_slo_keys():
    # a family with other SLOs is the same family (leave-family-out matching) and the same lengths
    from vidur_ppo.routing.capacity import cache_key
    from vidur_ppo.workloads.families import family_of

    mine = {**family_spec("code_completion"), "slo_ttft": 9.0}
    assert family_of(mine, family_names()) == "code_completion"
    cluster = ClusterSpec(num_replicas=2)
    assert cache_key(cluster, mine) == cache_key(cluster, family_spec("code_completion"))
    assert zoo.make_zoo(zoo.resolve({"families": ["code_completion"], "num_requests": 5, "load_min": 0.5,
                                     "load_max": 0.5}, lambda m: 1.0))


@pytest.mark.parametrize("key", ["slo_ttft", "slo_tpot"])
def test_a_bad_slo_names_its_key(key):
    with pytest.raises(ConfigError, match=f"workload.{key} must be > 0"):
        SyntheticWorkloadConfig(**{key: -1.0})
