"""The Serve router decides as the env's policy does: same state, same observation, same replica.

A real trained run (debug=smoke, one PPO update, the recurrent attn_gru model, `hetero` features on a mixed
A100 + H100 cluster so the relative speed / KV-capacity columns matter) routes a real env episode; at every
decision the env's replica state is turned into the routing-stats dicts Serve replicas report, and the Serve
side's decision code (`LearnedRouting.route`, what `LearnedRequestRouter` calls) must rebuild the env's
observation exactly and pick the env policy's replica, its feature trends and recurrent state carried along. Its
traced forward (`TracedPolicy`) must give the eager forward's logits bit for bit, on any replica count.
"""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from vidur_ppo.build import env_spec
from vidur_ppo.routing.features import SeenLengths
from vidur_ppo.checkpoint import load_policy
from vidur_ppo.serve.policy import LearnedRouting, TracedPolicy
from vidur_ppo.serve.request import request_sizes, request_vector
from vidur_ppo.serve.stats import (RANK, REPORTED_AT, ROUTING_STATS_KEYS, RoutedRequest, env_reports,
                                   not_yet_reported, routing_stats, state_matrix)
from vidur_ppo.sim.driver import ReplicaColumn

from test_config import CONF

SEED = 100_000
DECISIONS = 40
MIXED = "env.replicas=[{count:1,device:a100},{count:1,device:h100}]"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run of the real training code, written as any run dir is."""
    from vidur_ppo.train import run

    path = tmp_path_factory.mktemp("serve") / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "debug=smoke", "env.num_replicas=2", MIXED, "features=hetero", "model=attn_gru", "bc.enabled=false",
            "ppo.vector_mode=sync", "ppo.num_updates=1", "eval.baselines=[round_robin]", "logger.progress=false"])
    run(cfg, path)
    return path


def test_serve_router_decides_as_the_env(run_dir):
    env = env_spec(load_policy(run_dir)[1]).for_suite_scenario({"name": "parity"}, DECISIONS + 20).make()
    assert len(set(env.replica_speed)) == 2  # a mixed cluster: speed and kv_capacity differ per replica
    env_policy, _ = load_policy(run_dir)
    serve_side = LearnedRouting(run_dir)
    assert isinstance(serve_side.policy, TracedPolicy)  # the serving path, not the env's eager one
    assert serve_side.feature_names == tuple(env.features.names)
    obs, _ = env.reset(seed=SEED)
    env_policy.reset()
    picks = []
    for _ in range(DECISIONS):
        now = env.driver.now
        state, reports = env.driver.replica_state(), env_reports(env, now)
        assert all(set(ROUTING_STATS_KEYS) <= set(r) for r in reports)
        np.testing.assert_allclose(state_matrix(reports, now), state, rtol=1e-12)
        # the client's request body: prompt length and the predicted output length the env told its router
        body = {"prompt_tokens": int(obs["request"][0]), "predicted_output_tokens": int(obs["request"][1])}
        request = request_vector(*request_sizes((), body))
        action, features = serve_side.route(reports, request, now)
        env_action = env_policy(obs)
        np.testing.assert_array_equal(features, obs["features"])
        assert torch.equal(serve_side.policy.logits, env_policy.logits)  # bit for bit, not only the argmax
        assert action == env_action
        picks.append(action)
        obs, _, terminated, truncated, _ = env.step(env_action)
        assert not (terminated or truncated)
    assert serve_side.policy.state is not None  # a recurrent model: its state was carried across decisions


def test_traced_policy_is_the_eager_policy_on_any_replica_count(run_dir):
    """A replica joining or leaving mid-episode: the traced forward traces the new shape and still gives the eager
    forward's logits bit for bit, the recurrent state carried across shapes; a reset starts both afresh."""
    eager, _ = load_policy(run_dir)
    traced = TracedPolicy(load_policy(run_dir)[0])
    rng = np.random.default_rng(0)
    num_features = eager.model.num_features
    for episode in range(2):
        eager.reset()
        traced.reset()
        for replicas in (2, 2, 3, 5, 2, 3, 1):
            obs = {"features": rng.random((replicas, num_features), dtype=np.float32) * (1 + episode)}
            eager.attention_sum = None  # its episode's attention map sums one replica count only
            assert traced(obs) == eager(obs)
            assert torch.equal(traced.logits, eager.logits)
    assert len(traced._steps) == 4  # one trace per replica count


@pytest.mark.parametrize("kind", ["tokens", "fractional", "a fraction late", "zero and negative zero"])
def test_length_history_ranks_as_numpy_over_all_lengths(kind):
    """A Serve router is one episode as long as it runs: `SeenLengths` ranks a length in O(distinct lengths) while
    they are token counts, and must give numpy's results over every length seen, bit for bit, in any case."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 3000, 2000).astype(float)
    if kind == "fractional":
        lengths = rng.random(2000) * 3000
    elif kind == "a fraction late":
        lengths[1000] = 12.5
    elif kind == "zero and negative zero":
        lengths[::7], lengths[500] = 0.0, -0.0
    seen = SeenLengths(capacity=16)  # grown many times
    for i, length in enumerate(lengths):
        seen.append(length)
        if i == 0:
            continue
        a = lengths[:i + 1]
        rank = (np.count_nonzero(a < length) + 0.5 * (np.count_nonzero(a == length) - 1)) / i
        tail = a[a >= length].sum() / max(a.sum(), 1e-9)
        assert seen.rank_and_tail_share(length) == (rank, tail)
    assert seen.exact == (kind == "tokens")


def test_stale_reports_count_what_was_routed_since():
    """Between reports the router counts its own routings as waiting requests (as the env counts same-instant
    decisions) and ages the oldest waiting request; a report taken after a routing already includes it."""
    row = np.zeros(len(ReplicaColumn))
    row[[ReplicaColumn.waiting, ReplicaColumn.oldest_wait, ReplicaColumn.speed, ReplicaColumn.kv_capacity]] = 2, 0.5, 1, 100
    reports = [routing_stats(row, 0, reported_at=10.0), routing_stats(row, 1, reported_at=10.0)]
    routed = [RoutedRequest(10.2, 300, 40), RoutedRequest(9.9, 700, 80)]
    fresh = not_yet_reported(routed, reports[0][REPORTED_AT])
    assert fresh == routed[:1]
    state = state_matrix(reports, now=10.5, routed_since=[fresh, []])
    np.testing.assert_allclose(state[:, ReplicaColumn.waiting], [3, 2])
    np.testing.assert_allclose(state[:, ReplicaColumn.prefill_tokens_left], [300, 0])
    np.testing.assert_allclose(state[:, ReplicaColumn.decode_tokens_left], [40, 0])
    np.testing.assert_allclose(state[:, ReplicaColumn.oldest_wait], [1.0, 1.0])
    np.testing.assert_allclose(state[:, ReplicaColumn.kv_capacity], [1.0, 1.0])  # relative to the mean
    assert [r[RANK] for r in reports] == [0, 1]


def test_a_forward_that_cannot_be_traced_decides_eagerly(run_dir, monkeypatch, caplog):
    """torch.jit is deprecated: where tracing fails, one warning, and the eager forward decides (the same picks)."""
    import torch

    from vidur_ppo.eval.paired import TorchPolicy

    def no_trace(*args, **kwargs):
        raise RuntimeError("torch.jit.trace is gone")

    monkeypatch.setattr(torch.jit, "trace", no_trace)
    with caplog.at_level("WARNING"):
        routing = LearnedRouting(run_dir)
    assert type(routing.policy) is TorchPolicy
    assert "could not be traced (torch.jit.trace is gone)" in caplog.text
