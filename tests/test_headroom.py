"""The offline search behind the headroom estimate (eval/headroom.py): a fixed assignment replays a
router exactly, hill-climbing never ends worse than where it started, and the SLO objective raises
attainment from an overloaded start."""

import numpy as np

from conftest import OUTPUTS, PROMPTS
from vidur_ppo.eval.headroom import FixedAssignment, evaluate_assignment, local_search, slo_excess
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.heuristics import make_heuristic


def _env(qps=10.0):
    return VidurRoutingEnv(cluster={"num_replicas": 2},
                           workload={"kind": "synthetic", "num_requests": 40, "qps": qps, "prefill": PROMPTS,
                                     "decode": OUTPUTS})


def test_a_fixed_assignment_replays_a_router_exactly():
    env = _env()
    trace = env.workload.generate(7)
    ref = run_episode(env, make_heuristic("round_robin"), seed=7, trace=trace)
    assignment = env.driver.assignment.copy()
    replay = run_episode(env, FixedAssignment(assignment), seed=7, trace=trace)
    assert replay["e2e_p99"] == ref["e2e_p99"] and np.array_equal(env.driver.assignment, assignment)


def test_local_search_only_keeps_improvements():
    env = _env()
    trace = env.workload.generate(7)
    start = np.arange(len(trace.arrived_at)) % 2  # round-robin
    res = local_search(env, trace, 7, start, budget=12, key="e2e_p99")
    assert res.evaluations == 12 and len(res.history) == 12
    assert res.best <= res.start and np.all(np.diff(res.history) <= 0)
    assert evaluate_assignment(env, trace, 7, res.assignment, "e2e_p99")[0] == res.best  # achievable, re-simulated


def test_slo_search_raises_attainment_from_an_overloaded_replica():
    env = _env(qps=20.0)
    trace = env.workload.generate(7)
    start = np.zeros(len(trace.arrived_at), dtype=np.int64)  # everything on replica 0: some miss their SLO
    m = run_episode(env, FixedAssignment(start), seed=7, trace=trace)
    excess = slo_excess(env.driver.per_request(), env.slos["slo_ttft"], env.slos["slo_tpot"])
    assert np.mean(excess == 0) == m["slo_attainment"] < 1  # the violators the moves target are the misses
    res = local_search(env, trace, 7, start, budget=30, key="slo")
    assert res.start == m["slo_attainment"] and res.best > res.start and np.all(np.diff(res.history) >= 0)
    assert len(res.history) == res.evaluations <= 30
    again = run_episode(env, FixedAssignment(res.assignment), seed=7, trace=trace)  # achievable, re-simulated
    assert again["slo_attainment"] == res.best == evaluate_assignment(env, trace, 7, res.assignment, "slo").value
