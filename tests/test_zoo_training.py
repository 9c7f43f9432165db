"""Training over the zoo (workloads/zoo.py): each episode draws a family and a load by its seed, at that
family's own measured capacity on the run's cluster; the suite counts every zoo family as trained on."""

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from vidur_ppo import build
from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs, validate
from vidur_ppo.routing import capacity
from vidur_ppo.workloads import make_workload
from vidur_ppo.workloads.families import family_names, family_spec, shape
from vidur_ppo.workloads.zoo import ZooWorkloadConfig

from test_config import CONF

register_configs()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(capacity, "_MEMORY", {})
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 100)  # the draw and the scaling are tested, not the value


def _spec(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["workload=zoo", "env.num_replicas=2", "workload.num_requests=40",
                                                       "workload.families=[chat,uniform]", *overrides])
    return build.env_spec(validate(cfg))


def test_each_episode_draws_a_family_and_a_load_at_that_familys_capacity():
    spec = _spec()
    sat = {m["decode"]["kind"]: m["qps"] for m in spec.workload["members"]}
    assert sat["lognormal"] == pytest.approx(capacity.saturation_rps(spec.cluster, {**family_spec("chat"),
                                                                                     "num_requests": 40}))
    env = spec.make()
    draws = [env.workload.draw(seed) for seed in range(40)]
    assert {i for i, _ in draws} == {0, 1} and all(0.5 <= rho <= 0.95 for _, rho in draws)
    for seed in (0, 1, 2, 3):
        i, rho = env.workload.draw(seed)
        trace = env.workload.generate(seed)
        member = env.workload.members[i]
        assert len(trace.arrived_at) == 40
        # the episode's lengths are its family's (uniform decodes stay in their range), its rate rho x capacity
        if spec.workload["families"][i] == "uniform":
            d = family_spec("uniform")["decode"]
            assert d["min"] <= trace.num_decode_tokens.min() and trace.num_decode_tokens.max() <= d["max"]
        np.testing.assert_array_equal(trace.arrived_at, type(member)(**{**member.__dict__, "qps": member.qps * rho})
                                      .generate(seed).arrived_at)
    # another cluster size re-measures every family there
    other = spec.scenario(num_replicas=3)
    assert [m["qps"] for m in other.workload["members"]] != [m["qps"] for m in spec.workload["members"]]


def test_bad_zoo_settings_name_their_key():
    with pytest.raises(ConfigError, match="workload.families"):
        ZooWorkloadConfig(families=["chatty"])
    with pytest.raises(ConfigError, match="workload.load_min"):
        ZooWorkloadConfig(load_min=0.9, load_max=0.5)
    with pytest.raises(ConfigError, match="kind=zoo needs a cluster"):
        make_workload({"kind": "zoo", "families": ["chat"], "load_min": 0.5, "load_max": 0.9, "num_requests": 10})
    assert "zoo" not in family_names() and shape(family_spec("chat"))  # the zoo is not a family itself


def test_the_suite_counts_every_zoo_family_as_trained_on(tmp_path):
    from omegaconf import OmegaConf

    from vidur_ppo.eval.suite import GridConfig, check_held_out

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["workload=zoo", "env.num_replicas=2", "workload.num_requests=40",
                                                       "workload.families=[chat,uniform]"])
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    from vidur_ppo.eval import suite

    suite._POLICY_CACHE[str(tmp_path)] = (None, cfg)
    try:
        check_held_out(str(tmp_path), GridConfig(families=["chat", "uniform", "burstgpt"],
                                                 train_families=["chat", "uniform"]))
        with pytest.raises(ConfigError, match="eval.grid.train_families"):
            check_held_out(str(tmp_path), GridConfig(families=["chat", "uniform"], train_families=["chat"]))
    finally:
        suite._POLICY_CACHE.pop(str(tmp_path))
