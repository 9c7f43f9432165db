"""The workload zoo (conf/workload/): every family composes through Hydra, says where its shape comes
from, keeps its load where its `qps` says, fits the cluster, and runs an episode end to end."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo.config import register_configs, validate
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.heuristics import make_heuristic
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.metrics import SLO_METRICS
from vidur_ppo.workloads import make_workload

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()
# generated families: not zoo (many families) nor trace replays (trace, mooncake: a file's own rate and lengths)
SYNTHETIC = sorted(p.stem for p in (CONF / "workload").glob("*.yaml")
                   if p.stem != "zoo" and "schema_trace" not in p.read_text())
# the zoo of issue 15 (chat is chat_heavy / chat_light; prefill_heavy predates it)
ZOO = ["burstgpt", "code_completion", "summarisation", "uniform", "two_tenant", "mmpp_bursty", "diurnal",
       "correlated"]


def _workload(option, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"workload={option}", *overrides])
    validate(cfg)
    return OmegaConf.to_container(cfg.workload, resolve=True)


def test_zoo_has_at_least_eight_families_besides_chat():
    assert set(ZOO) <= set(SYNTHETIC) and len(ZOO) >= 8
    assert {"chat_heavy", "chat_light"} <= set(SYNTHETIC)


@pytest.mark.parametrize("family", ZOO)
def test_family_names_its_source(family):
    head = (CONF / "workload" / f"{family}.yaml").read_text().splitlines()
    comment = " ".join(line for line in head if line.startswith("#"))
    assert head[0].startswith("# ") and any(ch.isdigit() for ch in comment)  # a cited paper / year


@pytest.mark.parametrize("family", SYNTHETIC)
def test_family_keeps_qps_the_mean_rate_and_fits_the_cluster(family):
    wl = _workload(family, "workload.num_requests=4000")
    w = make_workload(wl)
    traces = [w.generate(s) for s in range(8)]
    mean_gap = np.mean([t.duration / (len(t) - 1) for t in traces])
    assert 1.0 / mean_gap == pytest.approx(wl["qps"], rel=0.1)
    limit = ClusterSpec.from_mapping(None).request_token_limit()
    assert max(t.max_total_tokens for t in traces) <= limit


@pytest.mark.parametrize("family", SYNTHETIC)
def test_family_runs_an_episode(family):
    """What `python -m vidur_ppo.train workload=<family> debug=smoke` needs: the composed workload
    builds the env, and a heuristic serves a short episode of it, SLO metrics included."""
    wl = _workload(family, "debug=smoke", "workload.num_requests=40")
    env = VidurRoutingEnv(workload=wl)
    m = run_episode(env, make_heuristic("jsq"), seed=3)
    assert m["num_completed"] == 40
    for key in SLO_METRICS:
        assert np.isfinite(m[key])
    assert 0.0 <= m["slo_attainment"] <= min(m["ttft_attainment"], m["tpot_attainment"]) <= 1.0


def test_family_shapes_are_what_their_comments_say():
    def lengths(family, n=20_000):
        t = make_workload(_workload(family, f"workload.num_requests={n}")).generate(0)
        return t.num_prefill_tokens, t.num_decode_tokens

    p, d = lengths("code_completion")
    assert np.median(p) == pytest.approx(1500, rel=0.05) and np.median(d) == pytest.approx(13, abs=1)
    p, d = lengths("summarisation")
    assert np.median(p) > 1800 and np.median(d) == pytest.approx(256, rel=0.05) and np.percentile(d, 99) > 900
    p, d = lengths("two_tenant")  # bimodal outputs: chat ~128, code ~13; a tenant's prompt goes with its output
    assert 0.4 < (d < 40).mean() < 0.6
    assert np.median(p[d < 20]) > 2 * np.median(p[d > 100])
    p, d = lengths("correlated")
    assert np.corrcoef(np.log(p), np.log(d))[0, 1] > 0.45  # 0.6 before clipping
    p, d = lengths("chat_heavy")
    assert abs(np.corrcoef(np.log(p), np.log(d))[0, 1]) < 0.03


def test_a_zoo_draws_prefix_families_and_refuses_a_trace():
    """Prefix-sharing families have a measured capacity (routing/capacity.burst keeps their hashes), so a zoo may
    draw them (experiment=prefix_router); a trace replay has its own rate and is refused, naming the key."""
    from vidur_ppo.checks import ConfigError
    from vidur_ppo.workloads.zoo import ZooWorkloadConfig

    assert ZooWorkloadConfig(families=["system_prompt", "multi_turn", "chat"]).families[0] == "system_prompt"
    with pytest.raises(ConfigError, match="workload.families"):
        ZooWorkloadConfig(families=["chat", "trace"])
