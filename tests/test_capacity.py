"""workload.load: a request rate relative to the cluster's measured saturation throughput (cached), for
synthetic families and for traces (measured on the trace's own lengths)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from vidur_ppo import build
from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs, validate
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.routing import capacity
from vidur_ppo.workloads import DEFAULT_WORKLOAD, SyntheticWorkloadConfig, TraceWorkloadConfig, make_workload

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
    code = ("import vidur_ppo.routing.capacity as c\n"
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


def _trace(path, n=300, seed=0, prefill=(50, 1500), decode=(10, 300)):
    rng = np.random.default_rng(seed)
    pd.DataFrame({"arrived_at": np.cumsum(rng.exponential(1 / 5, n)), "num_prefill_tokens": rng.integers(*prefill, n),
                  "num_decode_tokens": rng.integers(*decode, n)}).to_csv(path, index=False)
    return str(path)


def test_load_needs_a_cluster_and_no_other_rate(counted, tmp_path):
    path = _trace(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="^workload.load cannot be combined with workload.qps on a trace"):
        TraceWorkloadConfig(path=path, qps=5.0, load=0.8)
    spec = build.env_spec(validate(_compose(["workload.num_requests=50"])))
    with pytest.raises(ConfigError, match="^workload.load cannot be combined with workload.qps on a trace"):
        spec.for_suite_scenario({"name": "t", "load": 0.5, "workload": {"kind": "trace", "path": path, "qps": 5.0}}, 50)
    with pytest.raises(ConfigError, match="workload.load needs a cluster"):
        make_workload({**DEFAULT_WORKLOAD, "load": 0.5})
    with pytest.raises(ConfigError, match="workload.load needs a cluster"):
        make_workload({"kind": "trace", "path": path, "load": 0.5})
    assert counted == []


def test_a_trace_is_measured_on_its_own_lengths_cached_by_content(counted, tmp_path, monkeypatch):
    """The burst is the trace's own requests (drawn from the whole file, over-long ones handled as the
    trace says at the cluster's limit); the cache key is the parsed length columns, not the file."""
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 100)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", 100)
    c2 = ClusterSpec(num_replicas=2)
    path = _trace(tmp_path / "t.csv", prefill=(50, 6000))  # some longer than the 4,096-token context
    limit = c2.request_token_limit()
    clip = capacity.lengths_at(c2, {"kind": "trace", "path": path, "overlong": "clip"})
    assert clip["max_total_tokens"] == limit
    b = capacity.burst(clip, 400)
    assert len(b) == 400 and b.max_total_tokens <= limit and not b.arrived_at.any()
    drop = capacity.burst(capacity.lengths_at(c2, {"kind": "trace", "path": path, "overlong": "drop"}), 400)
    rows = pd.read_csv(path)
    fits = rows[rows.num_prefill_tokens + rows.num_decode_tokens <= limit]
    assert set(zip(drop.num_prefill_tokens, drop.num_decode_tokens)) <= set(zip(fits.num_prefill_tokens,
                                                                               fits.num_decode_tokens))
    sat = capacity.saturation_rps(c2, {"kind": "trace", "path": path, "overlong": "drop", "qps": 3.0})
    assert sat > 0 and counted == [2]
    # the same lengths with other arrival times, under another name: the cached value
    same = pd.read_csv(path).assign(arrived_at=lambda d: 2 * d.arrived_at)
    same.to_csv(tmp_path / "other.csv", index=False)
    assert capacity.saturation_rps(c2, {"kind": "trace", "path": str(tmp_path / "other.csv"), "overlong": "drop",
                                        "num_requests": 20, "arrival": "poisson", "qps": 1.0}) == sat
    assert counted == [2]
    shorter = _trace(tmp_path / "short.csv", decode=(2, 20))
    assert capacity.saturation_rps(c2, {"kind": "trace", "path": shorter}) > sat  # short outputs: more req/s
    assert counted == [2, 2]
    with pytest.raises(ValueError, match="overlong"):  # overlong=error: the over-long request is named
        capacity.saturation_rps(c2, {"kind": "trace", "path": path})


def test_trace_load_rescales_its_arrivals_to_rho_of_capacity(tmp_path, monkeypatch):
    """`workload=trace workload.load=0.95`: qps = 0.95 x the cluster's capacity for the trace's lengths,
    and every replayed window arrives at that mean rate."""
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 100)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", 100)
    path = _trace(tmp_path / "t.csv")
    spec = build.env_spec(validate(_compose(["workload=trace", f"workload.path={path}", "workload.load=0.95",
                                             "workload.num_requests=50", "env.num_replicas=2"])))
    sat = capacity.saturation_rps(spec.cluster, {"kind": "trace", "path": path})
    assert spec.load == 0.95 and spec.workload["qps"] == pytest.approx(0.95 * sat) and "load" not in spec.workload
    trace = spec.make().workload.generate(7)
    assert len(trace) == 50 and trace.qps == pytest.approx(0.95 * sat)
    four = spec.scenario(num_replicas=4)  # the run's rho, re-resolved on the scenario cluster
    assert four.load == 0.95 and four.workload["qps"] == pytest.approx(
        0.95 * capacity.saturation_rps(ClusterSpec(num_replicas=4), {"kind": "trace", "path": path}))


def test_a_mixed_clusters_replica_speeds_on_a_trace_use_its_lengths(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setattr(capacity, "REQUESTS_PER_REPLICA", 100)
    monkeypatch.setattr(capacity, "MIN_REQUESTS", 100)
    mixed = ClusterSpec(num_replicas=2, replicas=[{"count": 1, "device": "a100"}, {"count": 1, "device": "h100"}])
    trace = {"kind": "trace", "path": _trace(tmp_path / "t.csv"), "overlong": "clip"}
    speed = capacity.replica_speeds(mixed, trace)
    assert speed.mean() == pytest.approx(1.0) and speed[0] < 1 < speed[1]
    keys = set(json.loads((cache_dir / "capacity.json").read_text()))
    assert keys == {capacity.cache_key(g, capacity.lengths_at(mixed, trace)) for _, g in mixed.groups()}
