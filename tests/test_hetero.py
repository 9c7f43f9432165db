"""Heterogeneous clusters: replica groups of different devices, TP degrees and replica schedulers in
one vidur simulation (`ClusterSpec.replicas`), built by vidur's own classes per group."""

import numpy as np
import pytest

from vidur_ppo.sim import compat
from vidur_ppo.sim.cluster import ClusterSpec, ScenarioError
from vidur_ppo.sim.driver import SimDriver
from vidur_ppo.sim.trace import Trace

RNG = np.random.default_rng(0)
N = 160
TRACE = Trace(np.sort(RNG.uniform(0, 8, N)), RNG.integers(50, 1500, N), RNG.integers(10, 300, N))
A100_H100 = [{"count": 2, "device": "a100"}, {"count": 2, "device": "h100"}]
A40_A100TP2 = [{"count": 2, "device": "a40"},
               {"count": 1, "device": "a100", "tensor_parallel_size": 2, "replica_scheduler": "sarathi",
                "batch_size_cap": 64}]


def round_robin(cluster: ClusterSpec) -> SimDriver:
    d = SimDriver(cluster, TRACE)
    req, k = d.next_decision(), 0
    while req is not None:
        req, k = d.assign(k % cluster.num_replicas), k + 1
    return d


def test_a_homogeneous_list_is_todays_cluster_exactly():
    today = round_robin(ClusterSpec(num_replicas=4)).per_request()["e2e"]
    for groups in ([{"count": 4}], [{"count": 2}, {"count": 2}]):
        np.testing.assert_array_equal(round_robin(ClusterSpec(num_replicas=4, replicas=groups)).per_request()["e2e"], today)


def test_each_replica_runs_on_its_own_device_tp_and_scheduler():
    d = round_robin(ClusterSpec(num_replicas=4, replicas=A100_H100))
    devices = [rs._replica_config.device for rs in d._replica_schedulers]
    assert devices == ["a100", "a100", "h100", "h100"]
    preds = [rs._execution_time_predictor for rs in d._replica_schedulers]
    assert preds[0] is preds[1] and preds[2] is preds[3] and preds[0] is not preds[2]  # one predictor per group
    e2e = d.per_request()["e2e"]
    slow, fast = e2e[d.assignment < 2].mean(), e2e[d.assignment >= 2].mean()
    assert fast < 0.7 * slow  # the same kind of requests, served faster on H100

    m = round_robin(ClusterSpec(num_replicas=3, replicas=A40_A100TP2))
    kinds = [(type(rs).__name__, rs._replica_config.tensor_parallel_size, rs._config.batch_size_cap)
             for rs in m._replica_schedulers]
    assert kinds == [("VLLMReplicaScheduler", 1, 128)] * 2 + [("SarathiReplicaScheduler", 2, 64)]
    blocks = [rs._cache_config.num_blocks for rs in m._replica_schedulers]
    assert blocks[0] == blocks[1] and blocks[2] > 3 * blocks[0]  # 2 x 80 GB vs 48 GB of KV memory


def test_upstream_gives_every_replica_the_first_groups_config():
    """`base_global_scheduler.py`: without the per-group patch every replica is group 0's."""
    with compat.per_group_fix_disabled():
        m = round_robin(ClusterSpec(num_replicas=3, replicas=A40_A100TP2))
    assert {rs._replica_config.device for rs in m._replica_schedulers} == {"a40"}
    assert len({rs._cache_config.num_blocks for rs in m._replica_schedulers}) == 1


def test_limits_are_the_smallest_replicas_and_bad_groups_are_named():
    mixed = ClusterSpec(num_replicas=3, replicas=A40_A100TP2)
    assert mixed.request_token_limit() == min(ClusterSpec(device="a40").request_token_limit(),
                                             ClusterSpec(device="a100", tensor_parallel_size=2).request_token_limit())
    with pytest.raises(ScenarioError, match="num_replicas=4 but the replica groups hold 3"):
        ClusterSpec(num_replicas=4, replicas=A40_A100TP2).validate()
    with pytest.raises(ScenarioError, match=r"replicas\[0\] needs count"):
        ClusterSpec(num_replicas=2, replicas=[{"count": 2, "gpu": "a100"}]).validate()


LIGHT = {"kind": "synthetic", "num_requests": 120, "qps": 30.0, "prefill": {"kind": "uniform", "min": 50, "max": 400},
         "decode": {"kind": "uniform", "min": 10, "max": 100}}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_PPO_CACHE_DIR", str(tmp_path))
    return tmp_path


def actions(env, name, seed=5):
    from vidur_ppo.routing.env import run_episode
    from vidur_ppo.routing.heuristics import make_heuristic

    run_episode(env, make_heuristic(name), seed=seed)
    return env.driver.assignment.copy()


def test_capacity_aware_heuristics_are_the_blind_ones_on_identical_replicas(cache_dir):
    from vidur_ppo.routing.env import VidurRoutingEnv

    env = VidurRoutingEnv(cluster={"num_replicas": 3}, workload=LIGHT)
    from vidur_ppo.routing.heuristics import BLIND_TWIN, CAPACITY_AWARE

    assert set(BLIND_TWIN) == set(CAPACITY_AWARE)
    for aware, blind in BLIND_TWIN.items():
        np.testing.assert_array_equal(actions(env, aware), actions(env, blind))
    assert not list(cache_dir.iterdir())  # identical replicas: nothing measured


def test_replica_speeds_are_measured_per_group_and_weigh_the_routers(cache_dir):
    from vidur_ppo.routing.env import VidurRoutingEnv
    from vidur_ppo.sim.driver import ReplicaColumn
    from vidur_ppo.routing.capacity import saturation_rps

    cluster = ClusterSpec(num_replicas=4, replicas=A100_H100)
    env = VidurRoutingEnv(cluster=cluster, workload=LIGHT)
    speed = env.replica_speed
    assert speed.mean() == pytest.approx(1.0) and speed[0] == speed[1] < 1 < speed[2] == speed[3]
    assert saturation_rps(cluster, LIGHT) == pytest.approx(sum(saturation_rps(s, LIGHT) for _, s in cluster.groups()))
    obs, _ = env.reset(seed=1)
    np.testing.assert_allclose(obs["replicas"][:, ReplicaColumn.speed], speed, rtol=1e-6)
    wrr = actions(env, "weighted_round_robin")
    share = np.bincount(wrr, minlength=4) / len(wrr)
    np.testing.assert_allclose(share, speed / speed.sum(), atol=0.02)  # requests in proportion to speed
    assert (np.bincount(actions(env, "least_work_left_time"), minlength=4)[2:] >
            np.bincount(actions(env, "least_work_left_time"), minlength=4)[:2].max()).all()


def test_a_mixed_runs_homogeneous_scenarios_are_identical_replicas():
    """A suite row `{num_replicas: 4}` means 4 identical replicas even for a run trained on a 4-replica
    mix (it used to keep the mix when the counts matched, and refuse other sizes)."""
    from vidur_ppo.build import EnvSpec
    from vidur_ppo.routing.features import FeaturesConfig
    from vidur_ppo.routing.rewards import RewardConfig
    from vidur_ppo.routing.safety import SafetyConfig

    mixed = ClusterSpec(num_replicas=4, replicas=A100_H100)
    spec = EnvSpec(cluster=mixed, workload={"kind": "synthetic", "qps": 8.0, "num_requests": 10},
                   reward=RewardConfig(), features=FeaturesConfig(), safety=SafetyConfig())
    for r in (2, 4, 8):
        row = spec.for_suite_scenario({"name": f"chat_r{r}", "num_replicas": r}, 10).cluster
        assert row.replicas is None and row.num_replicas == r and row.device == "a100"
    assert spec.for_suite_scenario({"name": "own"}, 10).cluster == mixed  # no size given: the run's own mix
    other = spec.for_suite_scenario({"name": "h", "replicas": A40_A100TP2}, 10).cluster
    assert other.replicas == A40_A100TP2 and other.num_replicas == 3
