"""Lookahead planners (routing/lookahead.py): they fork the real simulation without touching it, hide the
trace's future, read predicted lengths, and pick the replica whose copy does best."""

import math

import numpy as np
import pytest
from vidur.events.request_arrival_event import RequestArrivalEvent

from conftest import OUTPUTS, PROMPTS
from vidur_ppo.checks import ConfigError
from vidur_ppo.eval.suite import EvalConfig, suite_job, suite_jobs
from vidur_ppo.ppo.bc import BCConfig
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.lookahead import Lookahead, LookaheadConfig, _Fork, make_planner, slo_cost
from vidur_ppo.sim.metrics import SLO_MARGIN
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.workload import Trace


class Replay:
    """Takes the actions of an earlier episode, one per decision."""

    def __init__(self, actions):
        self.actions = list(actions)

    def __call__(self, obs):
        return self.actions.pop(0)


def _workload(n=40, qps=8.0):
    return {"kind": "synthetic", "num_requests": n, "qps": qps, "prefill": PROMPTS, "decode": OUTPUTS}


def _env(**kw):
    return VidurRoutingEnv(cluster=ClusterSpec(num_replicas=2), workload=_workload(), **kw)


def _event_ids():
    from vidur.events.base_event import BaseEvent

    from vidur_ppo.sim.compat import _all_subclasses

    return [c.__dict__["_id"] for c in _all_subclasses(BaseEvent) if "_id" in c.__dict__]


def test_planning_leaves_the_real_run_as_if_its_actions_were_replayed():
    env = _env()
    planner = make_planner("lookahead", {"horizon_s": 1.0, "samples": 1})
    planned = run_episode(env, planner, seed=3)
    actions = list(env._actions)
    assert len(planner.decision_seconds) == 40 and len(set(actions)) == 2  # it did plan, and used both replicas
    counters = _event_ids()
    replayed = run_episode(_env(), Replay(actions), seed=3)
    assert counters == _event_ids()  # forks number their events without shifting the real run's ids
    for key in ("e2e_p99", "e2e_p50", "ttft_p99", "tbt_p99", "makespan"):
        assert planned[key] == replayed[key], key


def test_the_fork_hides_the_future_and_runs_predicted_lengths():
    env = _env(length_predictor={"kind": "lognormal", "sigma": 0.5})
    obs, _ = env.reset(seed=5)
    for _ in range(12):
        obs, *_ = env.step(0)
    fork = _Fork(env.driver, env.cluster.request_token_limit())
    arrivals = [e for _, e in fork.events if isinstance(e, RequestArrivalEvent)]
    assert not arrivals  # the trace's future arrivals stay hidden
    unfinished = [r for r in fork.requests.values() if not r.completed]
    assert unfinished
    error = env.driver.length_error
    for r in unfinished:
        real = env.driver.requests[r.id]
        assert r.num_decode_tokens == max(real.num_decode_tokens + int(error[r.id]), 1) or \
            r.total_tokens == max(r.num_processed_tokens, r._num_stage_processed_tokens) + 1
    assert any(r.num_decode_tokens != env.driver.requests[r.id].num_decode_tokens for r in unfinished)
    # running the fork forward changes nothing in the real simulation
    before = [(r.num_processed_tokens, r.completed) for r in env.driver.requests]
    fork.run(1, make_planner("lookahead")._base(), float("inf"))
    assert all(r.completed for r in fork.window)
    assert before == [(r.num_processed_tokens, r.completed) for r in env.driver.requests]


def test_one_step_lookahead_avoids_the_replica_busy_with_a_long_request():
    # a long request lands on replica 0 first; the short one that follows is better off on replica 1
    trace = Trace(np.array([0.0, 0.05]), np.array([1500, 200]), np.array([400, 20]))
    env = VidurRoutingEnv(cluster=ClusterSpec(num_replicas=2), workload=_workload(2),
                          length_predictor={"kind": "oracle"})
    env.reset(options={"trace": trace, "episode_seed": 0})
    planner = make_planner("lookahead_one_step")
    planner.reset(0)
    planner.bind(env)
    env.step(0)
    assert planner(env._observe()) == 1


def test_the_slo_costs_keep_a_short_request_off_a_fast_replica_queued_with_long_prompts():
    # 4 long prompts wait on the H100; a short request that follows still finishes sooner there (own E2E
    # picks it), but its first token waits past the TTFT SLO: `own_slo`, and `queue_slo` (every request of the
    # copy: the H100's queue with it, against the same queue without it), send it to the idle A40
    trace = Trace(np.array([0.0, 0.0, 0.0, 0.0, 0.02]), np.array([3500] * 4 + [100]), np.array([400] * 4 + [300]))
    mix = ClusterSpec(num_replicas=2, replicas=[{"count": 1, "device": "h100"}, {"count": 1, "device": "a40"}])
    env = VidurRoutingEnv(cluster=mix, workload=_workload(5), length_predictor={"kind": "oracle"})
    env.reset(options={"trace": trace, "episode_seed": 0})
    for _ in range(4):
        env.step(0)
    picks = {}
    names = ("lookahead_one_step", "lookahead_one_step_slo", "lookahead_one_step_queue_slo", "lookahead_queue_slo")
    for name in names:
        planner = make_planner(name)
        planner.reset(0)
        planner.bind(env)
        picks[name] = planner(env._observe())
    assert picks == {"lookahead_one_step": 0, "lookahead_one_step_slo": 1, "lookahead_one_step_queue_slo": 1,
                     "lookahead_queue_slo": 1}
    assert EvalConfig(planners=list(names)).planners == list(names)  # selectable in eval.planners
    assert BCConfig(teacher="lookahead_one_step_queue_slo").teacher == "lookahead_one_step_queue_slo"  # bc.teacher


def test_the_queue_slo_cost_counts_misses_and_a_smooth_margin():
    # request a: TTFT 0.2 s, 10 tokens at 0.05 s after the first (both SLOs met); b: TTFT 0.5 s, one token
    # (TTFT missed, TPOT 0): one miss, plus SLO_MARGIN * softplus((x - SLO) / SLO / SLO_MARGIN) per request and SLO
    req = {"ttft": np.array([0.2, 0.5]), "e2e": np.array([0.2 + 9 * 0.05, 0.5]), "num_decode_tokens": np.array([10, 1])}

    def soft(z):
        return SLO_MARGIN * math.log1p(math.exp(z / SLO_MARGIN))

    margin = soft(-0.2) + soft(-0.5) + soft(1.0) + soft(-1.0)  # ttft a, tpot a, ttft b, tpot b (SLOs 0.25, 0.1)
    assert slo_cost(req, 0.25, 0.1) == pytest.approx(1.0 + margin, rel=1e-12)
    assert 1.0 + margin == pytest.approx(2.0134, abs=1e-4)  # b's TTFT at twice its SLO: ~1 on top of its miss
    assert slo_cost(req, 0.25, None) == pytest.approx(1.0 + soft(-0.2) + soft(1.0), rel=1e-12)  # None: not charged
    # 2% apart, both inside the SLO or both past it: still ordered
    def one(ttft):  # a one-token request: its TTFT only
        req = {"ttft": np.array([ttft]), "e2e": np.array([ttft]), "num_decode_tokens": np.array([1])}
        return slo_cost(req, 0.25, 0.1)

    assert one(0.240) < one(0.245) < 1.0 < one(0.50) < one(0.51)


def test_bad_planner_settings_name_their_key():
    with pytest.raises(ConfigError, match="lookahead.base"):
        LookaheadConfig(base="nope")
    with pytest.raises(ConfigError, match="lookahead.drain"):
        LookaheadConfig(horizon_s=0, drain=False)
    with pytest.raises(ConfigError, match="eval.planners"):
        EvalConfig(planners=["oracle_planner"])
    with pytest.raises(ConfigError, match="lookahead.samples"):
        EvalConfig(planners=["lookahead"], lookahead={"samples": 0})
    with pytest.raises(ConfigError, match="bind"):
        Lookahead().act({"request": np.zeros(2), "replicas": np.ones((2, 8))})


def test_a_suite_job_runs_planners_on_the_same_trace_as_the_heuristics(tmp_path):
    from test_evaluate import _save  # an untrained attention policy's run dir

    _save(tmp_path, "attn_gru")
    run_dir = str(tmp_path)
    ev = EvalConfig(baselines=["round_robin"], planners=["lookahead"], lookahead={"horizon_s": 1.0, "samples": 1},
                    num_requests=30, scenarios=[{"name": "s", "num_replicas": 2}])
    job = suite_jobs(run_dir, ev)[0]
    rows = {r["scheduler"]: r for r in suite_job(job)["rows"]}
    assert set(rows) == {"ppo", "round_robin", "lookahead"}
    assert rows["lookahead"]["decision_ms"] > 0 and "decision_ms" not in rows["round_robin"]
    assert rows["lookahead"]["num_requests"] == rows["round_robin"]["num_requests"] == 30
