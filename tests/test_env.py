"""The gymnasium env: API conformance, episodes, vector envs, no files written."""

import os

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vidur_ppo  # noqa: F401 - registers VidurRouting-v0
from vidur_ppo.eval.paired import evaluate_heuristics
from vidur_ppo.ppo.vector import make_vector_env
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.heuristics import HEURISTICS, JSQ
from vidur_ppo.sim.driver import ReplicaColumn

from conftest import PROMPTS, OUTPUTS

WL = {"kind": "synthetic", "num_requests": 40, "qps": 8.0, "prefill": PROMPTS, "decode": OUTPUTS}
CLUSTER = {"num_replicas": 2}


def test_check_env_passes():
    env = gym.make("VidurRouting-v0", cluster=CLUSTER, workload=WL).unwrapped
    check_env(env, skip_render_check=True)


def test_three_episodes_in_a_row_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = VidurRoutingEnv(cluster=CLUSTER, workload=WL)
    results = [run_episode(env, JSQ(), seed=s) for s in (0, 1, 0)]
    assert all(r["num_completed"] == 40 for r in results)
    assert results[0] == results[2] and results[0] != results[1]
    assert os.listdir(tmp_path) == []


def test_episode_reward_and_info():
    env = VidurRoutingEnv(cluster=CLUSTER, workload=WL, features="legacy", reward="legacy_hybrid")
    obs, info = env.reset(seed=3)
    assert obs["replicas"].shape == (2, len(ReplicaColumn)) and obs["features"].shape == (2, 2) and info["request_id"] == 0
    rewards, steps, done = [], 0, False
    while not done:
        obs, r, done, trunc, info = env.step(steps % 2)
        rewards.append(r)
        steps += 1
    assert steps == 40 and "episode_metrics" in info
    assert np.isfinite(rewards).all() and max(abs(x) for x in rewards) <= 4.0  # legacy clip
    with pytest.raises(RuntimeError):
        env.step(0)


@pytest.mark.parametrize("mode", ["sync", "async", "grouped"])
def test_vector_env_runs_whole_episodes(mode):
    venv = make_vector_env(2, mode=mode, cluster=CLUSTER, workload=WL)
    obs, _ = venv.reset(seed=[0, 1])
    assert obs["replicas"].shape == (2, 2, len(ReplicaColumn))
    finished = 0
    for _ in range(45):
        obs, r, term, trunc, info = venv.step(np.zeros(2, dtype=np.int64))
        finished += int(term.sum())
    venv.close()
    assert finished == 2


def test_all_heuristics_paired_on_same_trace():
    rows = evaluate_heuristics(sorted(HEURISTICS), VidurRoutingEnv(cluster=CLUSTER, workload=WL), seeds=[5])
    assert {r["scheduler"] for r in rows} == set(HEURISTICS)
    assert all(r["num_completed"] == 40 for r in rows)
    assert len({r["throughput_tps"] > 0 for r in rows}) == 1


def test_predicted_lengths_change_what_routers_see_not_the_simulation():
    from vidur_ppo.workloads import DEFAULT_WORKLOAD

    wl = {**DEFAULT_WORKLOAD, "num_requests": 120}
    exact = VidurRoutingEnv(workload=wl, length_predictor="oracle")
    noisy = VidurRoutingEnv(workload=wl)  # the default: lognormal sigma 0.5
    seen = {}
    for name, env in (("exact", exact), ("noisy", noisy)):
        obs, _ = env.reset(seed=7)
        lengths, left, done = [], [], False
        while not done:
            lengths.append(obs["request"][1])
            left.append(obs["replicas"][:, ReplicaColumn.decode_tokens_left].copy())
            obs, _, done, _, _ = env.step(len(lengths) % 4)  # the same actions in both
        seen[name] = (np.array(lengths), np.array(left), env.driver.per_request()["e2e"])
    true_len, noisy_len = seen["exact"][0], seen["noisy"][0]
    ratio = np.log(noisy_len / true_len)
    assert 0.3 < ratio.std() < 0.7 and np.all(noisy_len >= 1)
    # outstanding decode tokens are predicted too (a router knows produced tokens, not remaining ones)
    assert not np.array_equal(seen["exact"][1], seen["noisy"][1]) and (seen["noisy"][1] >= 0).all()
    np.testing.assert_array_equal(seen["exact"][2], seen["noisy"][2])  # same simulation
    obs, _ = noisy.reset(seed=7)
    assert obs["request"][1] == noisy_len[0]  # the prediction is a function of the episode: reproducible
    with pytest.raises(ValueError, match="length_predictor.sigma"):
        VidurRoutingEnv(length_predictor={"sigma": -1})


def test_outstanding_tokens_are_prediction_minus_produced():
    """A running request's decode tokens left, as a router with a predictor knows them: the
    prediction minus the tokens it has produced, at least 1 (never the true remaining ones)."""
    from vidur_ppo.routing.length_predictor import LengthPredictor
    from vidur_ppo.workloads import DEFAULT_WORKLOAD

    wl = {**DEFAULT_WORKLOAD, "num_requests": 60, "qps": 40.0}
    env = VidurRoutingEnv(cluster={**CLUSTER, "num_replicas": 1}, workload=wl, length_predictor="none")
    env.reset(seed=3)
    for _ in range(40):
        env.step(0)
    d = env.driver
    rs = d._replica_schedulers[0]
    expected = 0
    for r in list(rs._request_queue) + [d.requests[i] for i in rs._allocation_map]:
        produced = max(r._num_processed_tokens - r._num_prefill_tokens, 0)
        expected += max(LengthPredictor("none").cfg.prior_tokens - produced, 1)
    assert env._state[0, ReplicaColumn.decode_tokens_left] == expected > 0
