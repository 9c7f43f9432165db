"""eval=generalisation: the family x load x size grid with its splits, seed ranges (test vs
validation), leave-family-out enforcement, whole-family scenarios, and the suite end to end."""

import subprocess
import sys

import pandas as pd
import pytest

from vidur_ppo.build import env_spec
from vidur_ppo.checks import ConfigError
from vidur_ppo.eval.suite import VALIDATION_SEED_BASE, EvalConfig, GridConfig, check_held_out
from vidur_ppo.workloads import DEFAULT_WORKLOAD
from vidur_ppo.workloads.families import family_of, family_spec

from test_evaluate import _save


def test_grid_tags_every_scenario_with_its_split():
    grid = GridConfig(families=["chat", "uniform"], train_families=["chat"], loads=[0.5, 0.95], replicas=[2, 8],
                      overload_loads=[1.2], overload_replicas=[4])
    sc = grid.scenarios()
    assert len(sc) == 2 * (2 * 2 + 1)
    assert {s["split"] for s in sc if s["family"] == "chat" and s["load"] <= 1} == {"train"}
    assert {s["split"] for s in sc if s["family"] == "uniform" and s["load"] <= 1} == {"held_out"}
    assert [(s["num_replicas"], s["load"]) for s in sc if s["split"] == "overload"] == [(4, 1.2)] * 2
    assert sc[0]["name"] == "chat_r2_rho0.5"
    with pytest.raises(ConfigError, match="eval.grid.families"):
        GridConfig(families=["chatt"])
    with pytest.raises(ConfigError, match="eval.grid.train_families"):
        GridConfig(families=["uniform"], train_families=["chat"])
    with pytest.raises(ConfigError, match="eval.grid.overload_loads"):
        GridConfig(families=["chat"], overload_loads=[0.9])


def test_validation_seeds_never_meet_test_or_training_seeds():
    test, val = EvalConfig(seeds=5), EvalConfig(seeds=5, split="validation")
    assert test.seed_list() == [100_000 + i for i in range(5)]
    assert val.seed_list() == [VALIDATION_SEED_BASE + i for i in range(5)]
    with pytest.raises(ConfigError, match="eval.seeds"):
        EvalConfig(seeds=VALIDATION_SEED_BASE)  # test seeds would run into the validation range
    with pytest.raises(ConfigError, match="eval.split"):
        EvalConfig(split="train")


def test_families_are_recognised_by_shape_not_rate():
    assert family_of(DEFAULT_WORKLOAD, ["uniform", "chat"]) == "chat"  # the embedded default is the chat family
    assert family_of({**family_spec("uniform"), "qps": 3.0, "num_requests": 10}, ["chat", "uniform"]) == "uniform"
    assert family_of(family_spec("burstgpt"), ["chat", "uniform"]) is None


def test_a_family_scenario_replaces_the_run_workload_whole(tmp_path):
    """A run trained on bursty arrivals, evaluated on another family: no key of the run's workload
    (burst_factor, mean_on, ...) leaks into the family's."""
    _save(tmp_path, "attn_gru")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(tmp_path / "config.yaml")
    cfg.workload = OmegaConf.create(family_spec("mmpp_bursty"))
    spec = env_spec(cfg).for_suite_scenario({"name": "u", "family": "uniform", "num_replicas": 2}, 50)
    assert spec.workload["arrival"] == "poisson" and spec.workload.get("burst_factor") is None
    assert spec.workload["decode"] == family_spec("uniform")["decode"] and spec.cluster.num_replicas == 2
    assert spec.workload["qps"] == pytest.approx(family_spec("uniform")["qps"] / 2)  # scaled to 2 of 4 replicas


def test_a_policy_trained_on_a_held_out_family_is_refused(tmp_path):
    _save(tmp_path, "attn_gru")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(tmp_path / "config.yaml")
    cfg.workload = OmegaConf.create(family_spec("uniform"))
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    grid = GridConfig(families=["chat", "uniform"], train_families=["chat"])
    with pytest.raises(ConfigError, match="eval.grid.train_families.*'uniform'"):
        check_held_out({"p": str(tmp_path)}, grid)
    check_held_out({"p": str(tmp_path)}, GridConfig(families=["chat", "uniform"], train_families=["uniform"]))


def test_generalisation_smoke_suite_end_to_end(tmp_path):
    """Two policies, two families (one held out) and a mixed cluster, every report part: summary lines, W/T/L matrices,
    capacity at SLO, heat map, rows tagged with family, load, split and the length predictor."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _save(a, "attn_gru"), _save(b, "attn_gru")
    out = subprocess.run([sys.executable, "-m", "vidur_ppo.evaluate", f"policies={{pa: {a}, pb: {b}}}",
                          "eval=generalisation_smoke", f"out={tmp_path / 'out'}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Generalisation (leave-family-out)" in report
    assert "- pa: never worse than the best heuristic in" in report and "of 1 held-out scenarios" in report
    assert "### Win/tie/loss, held-out families (E2E P99)" in report and "| pb |" in report
    assert "### Capacity at SLO" in report and (tmp_path / "out" / "generalisation_heatmap.png").stat().st_size > 0
    rows = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert set(rows["split"]) == {"train", "held_out", "mixed_held_out"} and set(rows["family"]) == {"chat", "uniform"}
    # the capacity-aware heuristic runs where replicas differ; on identical ones it is least_work_left
    assert set(rows[rows["split"] != "mixed_held_out"]["scheduler"]) == {"pa", "pb", "round_robin", "jsq", "sita_e"}
    assert set(rows[rows["split"] == "mixed_held_out"]["scheduler"]) == {"pa", "pb", "round_robin", "jsq", "sita_e",
                                                                         "least_work_left_time"}
    assert "### Routers on held-out mixed clusters" in report and "of 1 held-out mixed-cluster scenarios" in report
    assert set(rows["length_predictor"]) == {"lognormal"}
    # paired: every router ran the same requests of each (scenario, seed)
    assert rows.groupby(["scenario", "seed"])["num_completed"].nunique().eq(1).all()
    cap = pd.read_csv(tmp_path / "out" / "capacity.csv")
    assert len(cap) == 2 * 5 and cap["capacity"].between(0.5, 1.5).all()


def test_grid_mixes_are_hetero_scenarios_with_their_own_split():
    mix = [{"count": 2, "device": "a100"}, {"count": 2, "device": "h100"}]
    grid = GridConfig(families=["chat", "uniform"], train_families=["chat"], loads=[0.8], replicas=[2],
                      mixes={"a100x2_h100x2": mix, "h100x4": [{"count": 4, "device": "h100"}]},
                      train_mixes=["a100x2_h100x2"])
    hetero = {s["name"]: s for s in grid.scenarios() if s.get("replicas")}
    assert hetero["hetero_a100x2_h100x2_chat_rho0.8"]["split"] == "mixed_train"
    assert hetero["hetero_a100x2_h100x2_uniform_rho0.8"]["split"] == "mixed_held_out"
    assert hetero["hetero_h100x4_chat_rho0.8"]["split"] == "mixed_held_out"  # a train family on a held-out mix
    assert hetero["hetero_a100x2_h100x2_chat_rho0.8"]["replicas"] == mix
    with pytest.raises(ConfigError, match="eval.grid.mixes.bad"):
        GridConfig(families=["chat"], mixes={"bad": [{"count": 2, "device": "tpu"}]})
    with pytest.raises(ConfigError, match="eval.grid.train_mixes"):
        GridConfig(families=["chat"], mixes={"m": mix}, train_mixes=["other"])
