"""Curricula: ramps reach their targets, stages switch at their start update."""

import pytest

from vidur_ppo.ppo.curriculum import make_curriculum

WL = {"kind": "synthetic", "qps": 24.0, "num_requests": 100}
RW = {"name": "soft_logistic", "clip": 8.0, "latency_threshold": 0.05}


def test_load_ramp_linear_and_stepwise():
    lin = make_curriculum({"name": "load_ramp", "start_qps": 8.0, "ramp_updates": 10}, WL, RW)
    assert [lin.at(u)["workload"]["qps"] for u in (0, 5, 10, 20)] == [8.0, 16.0, 24.0, 24.0]
    step = make_curriculum({"name": "load_ramp", "start_qps": 8.0, "ramp_updates": 8, "mode": "stepwise", "steps": 2}, WL, RW)
    assert [step.at(u)["workload"]["qps"] for u in (0, 3, 4, 7, 8)] == [8.0, 8.0, 16.0, 16.0, 24.0]


def test_reward_ramp_tightens_to_target():
    c = make_curriculum({"name": "reward_ramp", "start_clip": 2.0, "start_threshold_scale": 1.5, "ramp_updates": 4}, WL, RW)
    start, end = c.at(0)["reward"], c.at(4)["reward"]
    assert start["clip"] == 2.0 and start["latency_threshold"] == pytest.approx(0.075)
    assert end["clip"] == 8.0 and end["latency_threshold"] == pytest.approx(0.05)


def test_staged_switches_and_rejects_cluster_changes():
    stages = [{"start": 0, "workload": {"qps": 8.0}}, {"start": 3, "workload": {"qps": 16.0}, "reward": {"clip": 2.0}}]
    c = make_curriculum({"name": "staged", "stages": stages}, WL, RW)
    assert c.at(2)["workload"]["qps"] == 8.0 and c.at(2)["reward"]["clip"] == 8.0
    assert c.at(3)["workload"]["qps"] == 16.0 and c.at(3)["reward"]["clip"] == 2.0
    with pytest.raises(ValueError, match="cluster cannot change"):
        make_curriculum({"name": "staged", "stages": [{"start": 1, "env": {"num_replicas": 8}}]}, WL, RW)
