"""Multi-cluster training (`slots`, build.slot_specs): env k of a rollout runs slot k % len(slots) in both
vector modes and demonstrations go round the slots; a bad slot is one line naming its key; without slots
the run's own spec is what trains; a slotted run trains, and resumes exactly; the generalisation suite
refuses a policy one of whose slots is a mix it holds out."""

import csv
import dataclasses

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo import build, rundir
from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs, validate
from vidur_ppo.input_checks import probe_env
from vidur_ppo.routing import capacity

from test_config import CONF

register_configs()
MIX = [{"count": 1, "device": "a100"}, {"count": 1, "device": "h100"}]
SLOTS = [{"name": "a100x2"}, {"name": "a100_h100", "replicas": MIX, "workload": {"qps": 3.0}}]
# two 2-replica clusters, 30-request episodes in 20-step rollouts (checkpoints fall inside episodes), a tiny
# model: a whole run is seconds
SMALL = ["env.num_replicas=2", "workload.num_requests=30", "ppo.num_envs=2", "ppo.rollout_steps=20", "ppo.seq_len=10",
         "ppo.minibatches=2", "ppo.epochs=1", "ppo.num_updates=2", "ppo.vector_mode=sync", "ppo.bc_coef=0",
         "model.embed_dim=16", "model.gru_hidden=16", "bc.enabled=false", "eval.seeds=1", "eval.num_requests=30",
         "eval.baselines=[round_robin]", "logger.progress=false", "checkpoint_every=1", "torch_threads_update=1"]


@pytest.fixture(scope="module", autouse=True)
def measured_once(tmp_path_factory):
    """The mix's replica speeds, measured once for the module on short bursts (workers read the disk cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(capacity, "_MEMORY", {})
        mp.setattr(capacity, "REQUESTS_PER_REPLICA", 50)
        mp.setattr(capacity, "MIN_REQUESTS", 50)
        yield


def _cfg(*overrides, slots=SLOTS):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*SMALL, *overrides])
    if slots is not None:
        OmegaConf.update(cfg, "slots", slots, merge=True)
    return cfg


def test_env_k_runs_slot_k_mod_n_and_demonstrations_go_round_the_slots():
    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.bc import collect_demos
    from vidur_ppo.ppo.curriculum import make_curriculum

    tc = validate(_cfg("ppo.num_envs=3", "features=hetero", "safety.terminate=true"))
    spec, specs, probes = probe_env(tc)
    assert [s.cluster for s in specs] == [spec.cluster, spec.mix(MIX)] and spec.cluster.replicas is None
    assert specs[1].workload["qps"] == 3.0 and specs[0].workload["qps"] == spec.workload["qps"] != 3.0
    assert all(s.safety == spec.safety and s.safety.terminate for s in specs)  # training keeps its safety monitor
    names = list(probes[0].features.names)
    model = make_model(tc.model, 2, len(names))
    sampler = build.make_sampler(specs, tc.ppo, model, tc.model, len(names), seed=0)
    try:
        # the run's curriculum stage (workload None with slots) swaps the reward and keeps each env's own workload
        sampler.call("configure", **make_curriculum(tc.curriculum, None, dataclasses.asdict(spec.reward)).at(0))
        assert sampler.call("cluster") == (specs[0].cluster, specs[1].cluster, specs[0].cluster)
        assert [w["qps"] for w in sampler.call("_workload_spec")] == [specs[0].workload["qps"], 3.0,
                                                                       specs[0].workload["qps"]]
    finally:
        sampler.close()
    speed = names.index("speed")
    demos = collect_demos(probes, "jsq", [1, 2, 3])  # episode i on slot i % 2: identical replicas, the mix, ...
    spread = [float(np.ptp(d.feats[0, :, speed].numpy())) for d in demos]
    assert spread[0] == spread[2] == 0.0 < spread[1]


def test_policy_workers_run_each_slot_too():
    from vidur_ppo.ppo.samplers import PolicyWorkerSampler

    tc = validate(_cfg())
    _, specs, probes = probe_env(tc)  # measures the mix here, so the worker reads it from the cache
    sampler = PolicyWorkerSampler([s.kwargs() for s in specs], num_envs=2, num_workers=1, model_cfg=tc.model,
                                  num_replicas=2, num_features=len(probes[0].features.names))
    try:
        assert sampler.call("cluster") == (specs[0].cluster, specs[1].cluster)
    finally:
        sampler.close()


@pytest.mark.parametrize("slots,overrides,message", [
    ([SLOTS[0], {"name": "bad", "replicas": [{"count": 0, "device": "a100"}]}], [], "slots[1].replicas: "),
    ([SLOTS[0], {"name": "bad", "replicas": [{"count": 2, "device": "b200"}]}], [], "slots[1].replicas: "),
    ([SLOTS[0], {"name": "bad", "workload": {"qpss": 3.0}}], [], "slots[1].workload: "),
    ([SLOTS[0], {"name": "bad", "num_replicas": 0}], [], "slots[1].num_replicas must be >= 1"),
    ([SLOTS[0], {"name": "bad", "replicas": MIX, "num_replicas": 2}], [], "slots[1].num_replicas must be unset"),
    ([SLOTS[0], {"name": "a100x2"}], [], "slots[1].name must be a non-empty name no other slot has"),
    ([SLOTS[0], {"name": "big", "num_replicas": 3}], [], "slots must each have the run's replica count"),
    (SLOTS, ["ppo.num_envs=1"], "ppo.num_envs must be >= the number of slots (2)"),
    (SLOTS, ["curriculum=load_ramp"], "curriculum changes the workload, which slots cannot follow"),
])
def test_a_bad_slot_is_one_line_naming_its_key(slots, overrides, message):
    with pytest.raises(ConfigError) as err:
        tc = validate(_cfg(*overrides, slots=slots))
        build.slot_specs(tc, build.env_spec(tc))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_without_slots_every_env_runs_the_runs_own_spec():
    tc = validate(_cfg(slots=None))
    spec, specs, probes = probe_env(tc)
    assert tc.slots == [] and specs == [spec] and specs[0] is spec and probes[0].cluster == spec.cluster


def _rows(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if not k.startswith("time") and k != "sps"} for r in csv.DictReader(f)]


def test_a_slotted_run_trains_and_resumes_exactly(tmp_path):
    from vidur_ppo.train import run

    whole, part = tmp_path / "whole", tmp_path / "part"
    run(_cfg(), whole)
    run(_cfg("ppo.num_updates=1"), part)  # stops after update 1, its checkpoint holds each slot's episodes in flight
    cfg, applied = rundir.resumed_config(_cfg(f"resume={part}"), part, ["ppo.num_updates=2"])
    assert [s["name"] for s in cfg.slots] == ["a100x2", "a100_h100"] and cfg.slots[1].replicas == MIX
    run(cfg, part, applied)
    assert [r["update"] for r in _rows(whole)] == ["1", "2"] and _rows(part) == _rows(whole)
    assert (part / "eval.csv").read_text() == (whole / "eval.csv").read_text()


def test_the_suite_refuses_a_policy_trained_on_one_of_its_held_out_mixes(tmp_path):
    from vidur_ppo.eval import suite
    from vidur_ppo.eval.suite import GridConfig, check_held_out

    suite._POLICY_CACHE[str(tmp_path)] = (None, _cfg())
    try:
        grid = dict(families=["chat", "uniform"], train_families=["chat"])
        check_held_out(str(tmp_path), GridConfig(**grid, mixes={"a100_h100": MIX}, train_mixes=["a100_h100"]))
        check_held_out(str(tmp_path), GridConfig(**grid, mixes={"h100x2": [{"count": 2, "device": "h100"}]}))
        with pytest.raises(ConfigError, match="eval.grid.train_mixes must include the mix .* 'h100_a100'"):
            check_held_out(str(tmp_path), GridConfig(**grid, mixes={"h100_a100": MIX[::-1]}))  # group order aside
    finally:
        suite._POLICY_CACHE.pop(str(tmp_path))


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "slots").glob("*.yaml")))
def test_every_slots_option_trains_on_no_mix_the_generalisation_suite_holds_out(option, tmp_path):
    from vidur_ppo.eval import suite
    from vidur_ppo.eval.suite import GridConfig, check_held_out

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"slots={option}"])
    tc = validate(cfg)
    specs = build.slot_specs(tc, build.env_spec(tc))
    assert len(specs) == max(1, len(tc.slots)) and len({repr(s.cluster) for s in specs}) == len(specs)
    grid = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / "generalisation.yaml").grid)
    suite._POLICY_CACHE[str(tmp_path)] = (None, cfg)
    try:
        check_held_out(str(tmp_path), GridConfig(**grid))
    finally:
        suite._POLICY_CACHE.pop(str(tmp_path))
