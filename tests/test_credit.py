"""Decision credit: each request's latency reward lands on the decision that routed it."""

import numpy as np
import pytest
import torch

from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.routing import credit

from conftest import OUTPUTS, PROMPTS


def test_env_reports_decision_rewards_in_routing_order():
    env = VidurRoutingEnv(cluster={"num_replicas": 2}, reward={"credit": "decision", "decision_power": 2.0}, slo_e2e=4.0,
                          workload={"kind": "synthetic", "num_requests": 50, "qps": 20.0, "prefill": PROMPTS, "decode": OUTPUTS})
    obs, _ = env.reset(seed=3)
    done, steps, rewards = False, 0, []
    while not done:
        obs, r, done, _, info = env.step(steps % 2)
        rewards.append(r)
        steps += 1
    dec = info["decision_rewards"]
    req = env.driver.per_request()
    assert dec.shape == (steps,) == (50,)
    # decision k routed the k-th arrival: request ids are in arrival order
    order = np.argsort(req["arrived_at"], kind="stable")
    np.testing.assert_allclose(dec, -(req["e2e"][order] / 4.0) ** 2, rtol=1e-9)
    assert (dec < 0).all() and np.ptp(dec) > 0


def test_assign_replaces_whole_episodes_and_refuses_partial_ones():
    raw = torch.zeros((6, 2))
    out = credit.assign(raw, [(2, 0, np.array([1.0, 2.0, 3.0])), (5, 0, np.array([4.0, 5.0, 6.0])),
                              (5, 1, np.arange(6.0))])
    assert out[:, 0].tolist() == [1, 2, 3, 4, 5, 6] and out[:, 1].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError, match="multiple of the episode length"):
        credit.assign(raw, [(1, 0, np.arange(3.0))])  # began in an earlier rollout
    with pytest.raises(RuntimeError, match="ends inside an episode"):
        credit.assign(raw, [(3, 0, np.arange(4.0)), (5, 1, np.arange(6.0))])  # env 0's steps 4-5 unfinished


def _episode(reference, policy, metric="e2e"):
    from vidur_ppo.routing.heuristics import make_heuristic

    env = VidurRoutingEnv(cluster={"num_replicas": 2}, slo_e2e=4.0,
                          reward={"credit": "decision", "decision_power": 1.0, "reference": reference,
                                  "decision_metric": metric},
                          workload={"kind": "synthetic", "num_requests": 50, "qps": 20.0, "prefill": PROMPTS,
                                    "decode": OUTPUTS})
    h = make_heuristic(policy)
    obs, _ = env.reset(seed=3)
    h.reset(3)
    done = False
    while not done:
        obs, _, done, _, info = env.step(h(obs))
    return env, info["decision_rewards"]


def _episode_rewards(reference, policy):
    env, rewards = _episode(reference, policy)
    return rewards, env.driver.per_request()


def test_reference_rewards_cancel_the_trace_and_keep_the_difference():
    # the reference itself driving: every request's reward is exactly 0 (same trace, same predictions)
    same, _ = _episode_rewards("jsq", "jsq")
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    # another router: the rewards sum to the reference's total latency minus its own (power 1: the
    # time-integral of requests in the system, in SLO units)
    rel, req = _episode_rewards("jsq", "random")
    absolute, ref_req = _episode_rewards(None, "jsq")
    assert np.sum(rel) == pytest.approx((ref_req["e2e"].sum() - req["e2e"].sum()) / 4.0, rel=1e-9)
    assert np.abs(rel).max() > 0


def test_a_reference_needs_decision_credit():
    from vidur_ppo.checks import ConfigError
    from vidur_ppo.routing.rewards import RewardConfig

    with pytest.raises(ConfigError, match="reward.reference"):
        RewardConfig(reference="jsq")
    with pytest.raises(ConfigError, match="reward.reference"):
        RewardConfig(credit="decision", reference="oracle")
    with pytest.raises(ConfigError, match="reward.decision_metric"):
        RewardConfig(decision_metric="slo")  # a per-request cost needs the decision that routed the request
    with pytest.raises(ConfigError, match="reward.decision_metric"):
        RewardConfig(credit="decision", decision_metric="goodput")
    assert RewardConfig(credit="decision", decision_metric="slo").decision_metric == "slo"


def test_slo_decision_rewards_charge_each_request_its_slo_cost():
    from vidur_ppo.sim.metrics import slo_costs

    env, dec = _episode(None, "jsq", "slo")
    req = env.driver.per_request()
    order = np.argsort(req["arrived_at"], kind="stable")  # decision k routed the k-th arrival
    assert dec.shape == (50,)
    np.testing.assert_allclose(dec, -slo_costs(req, **env.slos)[order], rtol=1e-12)
    env.slos = {"slo_ttft": 1e3, "slo_tpot": 1e3}  # every request meets both: only a vanishing margin
    assert ((env.decision_rewards() < 0) & (env.decision_rewards() > -0.01)).all()
    env.slos = {"slo_ttft": 1e-4, "slo_tpot": 1e-4}  # every request misses its first token's SLO
    assert (env.decision_rewards() <= -1.0).all()
    # the reference itself driving: every request's reward is exactly 0 (same trace, same predictions)
    _, same = _episode("jsq", "jsq", "slo")
    np.testing.assert_allclose(same, 0.0, atol=1e-12)


def test_slo_decision_rewards_count_unfinished_requests_times_so_far():
    # mid-episode (as when the safety monitor ends one): a request without its first token yet has waited
    # now - arrival for it, a lower bound that already misses a 0.1 ms TTFT SLO
    env = VidurRoutingEnv(cluster={"num_replicas": 2}, slo_ttft=1e-4, reward={"credit": "decision", "decision_metric": "slo"},
                          workload={"kind": "synthetic", "num_requests": 50, "qps": 20.0, "prefill": PROMPTS,
                                    "decode": OUTPUTS})
    env.reset(seed=3)
    for k in range(20):
        env.step(k % 2)
    req = env.driver.per_request()
    assert (req["first_token_at"][env._routed] == 0).any()  # some routed requests wait for their first token
    dec = env.decision_rewards()
    assert dec.shape == (20,) and (dec <= -1.0).all()
