"""Each vidur 0.0.26 trap: the upstream failure with the fix off, and the fix working."""

import os

import pytest
from vidur.simulator import Simulator

from vidur_ppo.sim import compat
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.driver import SimDriver, run_vidur
from vidur_ppo.sim.workload import SyntheticWorkload

from conftest import OUTPUTS, PROMPTS, small_workload


def _drive_round_robin(cluster, trace):
    d = SimDriver(cluster, trace)
    req, k = d.next_decision(), 0
    while req is not None:
        req, k = d.assign(k % cluster.num_replicas), k + 1
    return d


def test_preemption_crashes_upstream_and_completes_with_fix(preempting_cluster):
    trace = SyntheticWorkload(num_requests=60, qps=20.0, prefill=PROMPTS, decode=OUTPUTS).generate(3)
    with compat.restart_fix_disabled():
        with pytest.raises(AssertionError):
            _drive_round_robin(preempting_cluster, trace)
    d = _drive_round_robin(preempting_cluster, trace)
    s = d.summary()
    assert s["num_completed"] == len(trace)
    assert s["restarts"] > 0  # the scenario really preempted


def test_second_simulator_fails_without_id_reset_and_works_with_it(cluster2):
    trace = small_workload(20).generate(0)
    run_vidur(cluster2, trace)  # first simulator in this test
    config = cluster2.simulation_config(trace, global_scheduler="round_robin")
    with pytest.raises(KeyError):
        Simulator(config).run()  # stale class-level id counters: replicas are numbered 2, 3
    compat.reset_id_counters()
    Simulator(cluster2.simulation_config(trace, global_scheduler="round_robin")).run()


def test_upstream_config_writes_into_cwd_quiet_config_does_not(tmp_path, monkeypatch, cluster2):
    from vidur.config import MetricsConfig

    monkeypatch.chdir(tmp_path)
    MetricsConfig()  # upstream: creates simulator_output/<timestamp>/
    assert os.listdir(tmp_path) == ["simulator_output"]
    (tmp_path / "simulator_output").rename(tmp_path.parent / f"{tmp_path.name}-upstream")
    d = _drive_round_robin(cluster2, small_workload(30).generate(0))
    run_vidur(cluster2, small_workload(30).generate(0))
    assert d.done and os.listdir(tmp_path) == []
