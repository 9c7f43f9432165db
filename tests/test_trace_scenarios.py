"""A user trace as an evaluation scenario of a run trained on a synthetic workload (issue 15's
README case): the trace replaces the run's workload, over-long requests are clipped, and each
evaluation seed replays a different window, so the CIs are real. Whatever a run was trained on
(a synthetic rate or load, the zoo, a trace at a load), a suite's trace and family scenarios run at
the rate the scenario says (issue 23)."""

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from test_config import CONF
from test_evaluate import _save
from vidur_ppo import build
from vidur_ppo.config import validate
from vidur_ppo.eval.suite import suite_job
from vidur_ppo.routing import capacity
from vidur_ppo.workloads.families import family_spec


def _user_trace(path, n=400):
    rng = np.random.default_rng(0)
    pd.DataFrame({"arrived_at": np.cumsum(rng.exponential(1 / 12, n)),
                  "num_prefill_tokens": rng.integers(50, 6000, n),  # some longer than the 4,096-token context
                  "num_decode_tokens": rng.integers(5, 300, n)}).to_csv(path, index=False)
    return str(path)


def test_trace_scenario_on_a_synthetic_run_gives_a_window_per_seed(tmp_path):
    _save(tmp_path, "attn_gru")
    trace = _user_trace(tmp_path / "trace.csv")
    scenario = {"name": "t", "workload": {"kind": "trace", "path": trace, "overlong": "clip"}}
    rows = []
    for seed in range(100_000, 100_005):
        out = suite_job((str(tmp_path), scenario, seed, ["round_robin"], False, 40))
        assert not out["errors"], out["errors"]
        rows += [r for r in out["rows"] if r["scheduler"] == "round_robin"]
    assert len(rows) == 5 and all(r["num_completed"] == 40 for r in rows)
    assert len({round(r["e2e_p99"], 6) for r in rows}) == 5  # five different windows


def test_qps_per_replica_never_rescales_a_trace_silently(tmp_path):
    from omegaconf import OmegaConf

    from vidur_ppo.build import env_spec
    from vidur_ppo.checks import ConfigError

    _save(tmp_path, "attn_gru")
    spec = env_spec(OmegaConf.load(tmp_path / "config.yaml"))
    with pytest.raises(ConfigError, match=r"eval.scenarios\[t\].qps_per_replica would rescale the trace"):
        spec.for_suite_scenario({"name": "t", "qps_per_replica": 3.0,
                                 "workload": {"kind": "trace", "path": str(tmp_path / "none.csv")}}, 40)


# --- every kind of run x every kind of scenario ------------------------------------------------------
RUNS = {"synthetic_qps": [], "synthetic_load": ["workload.load=0.8"],
        "zoo": ["workload=zoo", "workload.families=[chat,uniform]"],
        "trace_load": ["workload=trace", "workload.path={trace}", "workload.load=0.9", "workload.overlong=clip"]}
SCENARIOS = {"trace": {"workload": {"kind": "trace", "path": "{trace}", "overlong": "clip"}},
             "trace_load": {"workload": {"kind": "trace", "path": "{trace}", "overlong": "clip"}, "load": 0.5},
             "family": {"family": "uniform"}, "family_load": {"family": "uniform", "load": 0.7}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One capacity cache (tiny measuring bursts), one user trace and each run's spec, for the module."""
    root = tmp_path_factory.mktemp("trace_scenarios")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDUR_PPO_CACHE_DIR", str(root / "cache"))
        mp.setattr(capacity, "_MEMORY", {})
        mp.setattr(capacity, "REQUESTS_PER_REPLICA", 100)  # the rule is tested, not the value
        mp.setattr(capacity, "MIN_REQUESTS", 100)
        trace = _user_trace(root / "user.csv")
        specs = {}

        def spec(run):
            if run not in specs:
                with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                    cfg = compose(config_name="config", overrides=["env.num_replicas=2", "workload.num_requests=40",
                                                                   *(o.format(trace=trace) for o in RUNS[run])])
                specs[run] = build.env_spec(validate(cfg))
            return specs[run]

        yield trace, spec


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("run", RUNS)
def test_a_scenario_runs_at_its_own_rate_whatever_the_run_trained_on(world, run, scenario):
    trace, spec = world
    run_spec = spec(run)
    sc = dict(SCENARIOS[scenario], name=scenario)
    if "workload" in sc:
        sc["workload"] = {**sc["workload"], "path": trace}
    out = run_spec.for_suite_scenario(sc, 40)
    wl, cluster = out.workload, run_spec.cluster
    trace_lengths = {"kind": "trace", "path": trace, "overlong": "clip"}
    if scenario.startswith("trace"):
        assert wl["kind"] == "trace" and wl["path"] == trace and wl["max_requests"] == 40
        if scenario == "trace_load":
            expected = (0.5, 0.5 * capacity.saturation_rps(cluster, trace_lengths))
        elif run == "trace_load":  # a variant of the run's own workload kind: the run's rho carries over
            expected = (0.9, 0.9 * capacity.saturation_rps(cluster, trace_lengths))
        else:  # the trace's own arrival times
            expected = (None, None)
    else:
        uniform = family_spec("uniform")
        assert wl["kind"] == "synthetic" and wl["decode"] == uniform["decode"] and "families" not in wl
        expected = (0.7, 0.7 * capacity.saturation_rps(cluster, uniform)) if scenario == "family_load" \
            else (None, uniform["qps"])  # the family's own rate, not the run's
    assert out.load == expected[0]
    assert wl.get("qps") == (None if expected[1] is None else pytest.approx(expected[1]))
    episode = out.make().workload.generate(100_000)
    assert len(episode) == 40
    if scenario.startswith("trace") and expected[1] is not None:
        assert episode.qps == pytest.approx(expected[1])  # the trace's arrivals rescaled to that rate


def test_a_run_trained_at_a_load_evaluates_on_a_user_trace(tmp_path, monkeypatch):
    """End to end: `workload.load` training (debug=smoke), then a suite with a user-trace scenario
    (it used to fail: `workload.load needs a synthetic workload`)."""
    from vidur_ppo.eval.suite import EvalConfig, run_suite
    from vidur_ppo.train import run

    monkeypatch.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path / "cache"))  # the suite's workers read it there
    monkeypatch.setattr(capacity, "_MEMORY", {})
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 100)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", 100)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["debug=smoke", "workload.load=0.8", "env.num_replicas=2",
                                                       "bc.enabled=false", "ppo.vector_mode=sync", "ppo.num_updates=1",
                                                       "eval.baselines=[round_robin]", "logger.progress=false"])
    run(cfg, tmp_path / "run")
    scenario = {"name": "usertrace", "workload": {"kind": "trace", "path": _user_trace(tmp_path / "user.csv"),
                                                  "overlong": "clip"}}
    suite = EvalConfig(scenarios=[scenario], seeds=1, num_requests=40, baselines=["round_robin"], workers=1)
    _, failed = run_suite(str(tmp_path / "run"), suite, tmp_path / "suite")
    assert failed == {}
    rows = pd.read_csv(tmp_path / "suite" / "metrics.csv")
    assert set(rows["scheduler"]) == {"ppo", "round_robin"} and (rows["num_completed"] == 40).all()
