"""workload.load: a request rate relative to the cluster's measured saturation throughput (cached)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from vidur_ppo import build
from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs, validate
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.workloads import DEFAULT_WORKLOAD, SyntheticWorkloadConfig, make_workload
from vidur_ppo.workloads import capacity

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(capacity, "_MEMORY", {})
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 250)  # a quarter of the real burst: these test the
    return tmp_path / "cache"                                      # caching and rescaling, not the value


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = capacity.simulate

    def simulate(cluster, spec):
        calls.append(cluster.num_replicas)
        return real(cluster, spec)

    monkeypatch.setattr(capacity, "simulate", simulate)
    return calls


def test_saturation_is_measured_once_and_cached(counted, cache_dir):
    c4 = ClusterSpec(num_replicas=4)
    first = capacity.saturation_rps(c4, DEFAULT_WORKLOAD)
    # rate, count and arrival process do not change the key; lengths do
    again = capacity.saturation_rps(c4, {**DEFAULT_WORKLOAD, "qps": 3.0, "num_requests": 50, "arrival": "gamma"})
    assert again == first and counted == [4]
    assert first > 0
    capacity._MEMORY.clear()  # a new process: the file answers
    assert capacity.saturation_rps(c4, DEFAULT_WORKLOAD) == first and counted == [4]
    assert list(json.loads((cache_dir / "capacity.json").read_text()).values()) == [first]
    other = {**DEFAULT_WORKLOAD, "decode": {"kind": "fixed", "value": 16}}
    assert capacity.cache_key(c4, other) != capacity.cache_key(c4, DEFAULT_WORKLOAD)


def test_cache_file_survives_a_new_process(cache_dir):
    c2 = ClusterSpec(num_replicas=2)
    value = capacity.saturation_rps(c2, DEFAULT_WORKLOAD)
    code = ("import vidur_ppo.workloads.capacity as c\n"
            "c.simulate = lambda *a: (_ for _ in ()).throw(AssertionError('simulated again'))\n"
            "from vidur_ppo.sim.cluster import ClusterSpec\nfrom vidur_ppo.workloads import DEFAULT_WORKLOAD\n"
            "print(repr(c.saturation_rps(ClusterSpec(num_replicas=2), DEFAULT_WORKLOAD)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "VIDUR_PPO_CACHE_DIR": str(cache_dir)})
    assert float(out.stdout.strip()) == value


def test_saturation_grows_about_linearly_with_replicas():
    s2 = capacity.saturation_rps(ClusterSpec(num_replicas=2), DEFAULT_WORKLOAD)
    s4 = capacity.saturation_rps(ClusterSpec(num_replicas=4), DEFAULT_WORKLOAD)
    assert 0.75 * 2 <= s4 / s2 <= 1.25 * 2


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_load_sets_qps_from_capacity_and_rescales_on_other_clusters(counted):
    cfg = validate(_compose(["workload.load=0.8", "workload.num_requests=50", "env.num_replicas=4"]))
    spec = build.env_spec(cfg)
    sat4 = capacity.saturation_rps(ClusterSpec(num_replicas=4), DEFAULT_WORKLOAD)
    assert spec.load == 0.8 and "load" not in spec.workload
    assert spec.workload["qps"] == pytest.approx(0.8 * sat4)
    env = spec.make()  # the simulator never sees `load`
    assert env.workload.qps == pytest.approx(0.8 * sat4) and env.workload.num_requests == 50
    # another cluster size: rho re-resolved on that cluster, not scaled
    two = spec.scenario(num_replicas=2)
    assert two.workload["qps"] == pytest.approx(0.8 * capacity.saturation_rps(ClusterSpec(num_replicas=2),
                                                                              DEFAULT_WORKLOAD))
    assert spec.scenario(qps=5.0).workload["qps"] == 5.0 and spec.scenario(qps=5.0).load is None
    # suite scenarios: load wins over qps_per_replica
    sc = spec.for_suite_scenario({"name": "x", "load": 0.5, "qps_per_replica": 1.0}, 50)
    assert sc.load == 0.5 and sc.workload["qps"] == pytest.approx(0.5 * sat4)
    assert sorted(set(counted)) == [2, 4]


def test_suite_scenario_load_on_a_qps_run():
    spec = build.env_spec(validate(_compose(["workload.num_requests=50"])))
    assert spec.load is None
    sc = spec.for_suite_scenario({"name": "heavy", "num_replicas": 2, "load": 0.95}, 50)
    assert sc.workload["qps"] == pytest.approx(0.95 * capacity.saturation_rps(ClusterSpec(num_replicas=2),
                                                                              DEFAULT_WORKLOAD))
    validate(_compose(["eval.scenarios=[{name: heavy, load: 0.95}]"]))


@pytest.mark.parametrize("kwargs,message", [
    ({"load": 0}, "workload.load must be a finite number > 0"),
    ({"load": -0.5}, "workload.load must be a finite number > 0"),
    ({"load": float("inf")}, "workload.load must be a finite number > 0"),
    ({"load": float("nan")}, "workload.load must be a finite number > 0"),
    ({"load": "heavy"}, "workload.load must be a number > 0"),
    ({"load": 0.8, "qps_max": 40.0}, "workload.load cannot be combined with workload.qps_max"),
])
def test_bad_load_is_a_one_line_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        SyntheticWorkloadConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_load_needs_a_synthetic_workload_and_a_cluster(counted):
    with pytest.raises(ConfigError, match="^workload.load needs a synthetic workload$"):
        capacity.saturation_rps(ClusterSpec(), {"kind": "trace", "path": "x.csv"})
    spec = build.env_spec(validate(_compose(["workload.num_requests=50"])))
    with pytest.raises(ConfigError, match="^workload.load needs a synthetic workload$"):
        spec.scenario(workload={"kind": "trace", "path": "x.csv", "load": 0.5})
    with pytest.raises(ConfigError, match="workload.load needs a cluster"):
        make_workload({**DEFAULT_WORKLOAD, "load": 0.5})
    assert counted == []
