"""Feature sets: names match columns, values normalised, trends evolve."""

import numpy as np
import pytest

from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.routing.features import FEATURE_SETS, make_feature_set

from conftest import OUTPUTS, PROMPTS


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_names_match_columns_and_values_are_bounded(name):
    env = VidurRoutingEnv(cluster={"num_replicas": 3}, features=name,
                          workload={"kind": "synthetic", "num_requests": 80, "qps": 30.0, "prefill": PROMPTS, "decode": OUTPUTS})
    obs, _ = env.reset(seed=0)
    rows, done = [obs["features"]], False
    while not done:
        obs, _, done, _, _ = env.step(int(np.argmin(obs["replicas"][:, 1])))
        rows.append(obs["features"])
    f = np.stack(rows)
    assert f.shape[1:] == (3, len(env.features.names))
    assert np.isfinite(f).all() and f.min() >= -1.0 and f.max() <= 1.0
    assert (f.std(axis=(0, 1)) > 0).sum() >= len(env.features.names) // 2  # mostly evolving, not constant


def test_full_trends_start_at_zero_and_follow_changes():
    fs = make_feature_set({"name": "full", "ema_alpha": 0.5})
    s = np.zeros((2, 6))
    first = fs(s, np.array([100.0, 10.0]), 0.0)
    assert np.all(first[:, 8:] == 0)
    s2 = s.copy()
    s2[0, 0] = 8  # 8 waiting at replica 0 = 0.5 of the queue capacity
    second = fs(s2, np.array([100.0, 10.0]), 1.0)
    names = list(fs.names)
    assert second[0, names.index("d_waiting")] == pytest.approx(0.5)
    assert second[0, names.index("x_waiting")] == pytest.approx(0.25)  # 0.5 - ema(0.25)
    assert second[1, names.index("d_waiting")] == 0
    fs.reset()
    assert np.all(fs(s2, np.array([1.0, 1.0]), 2.0)[:, 8:] == 0)


def test_declared_names_are_checked():
    with pytest.raises(ValueError, match="do not match"):
        make_feature_set({"name": "queue", "names": ["waiting", "running"]})


def test_size_aware_request_rank_tail_share_and_long_pool():
    fs = make_feature_set({"name": "size_aware", "max_request_tokens": 1000.0})
    names = list(fs.names)
    s = np.zeros((4, 6))
    s[1, 1], s[1, 3] = 2, 800  # replica 1: 2 running requests with 800 output tokens left
    first = fs(s, np.array([100.0, 10.0]), 0.0)
    assert first[:, names.index("req_rank")].tolist() == [0.5] * 4
    assert first[:, names.index("long_pool")].tolist() == [1, 0, 0, 0]
    assert first[1, names.index("mean_decode_left")] == pytest.approx(0.4)  # 400 per request / 1000
    for d in (10.0, 10.0, 10.0):
        fs(s, np.array([100.0, d]), 0.0)
    last = fs(s, np.array([100.0, 30.0]), 0.0)  # lengths seen: 10, 10, 10, 10, 30
    assert last[0, names.index("req_rank")] == pytest.approx(1.0)  # longer than every earlier one
    assert last[0, names.index("req_tail_share")] == pytest.approx(30 / 70)
    assert last[0, names.index("req_pool_share")] == 1.0  # 30/70 of the tokens > the pool's 1/4: capped
    fs.reset()
    for _ in range(100):
        fs(s, np.array([100.0, 1.0]), 0.0)
    long = fs(s, np.array([100.0, 10.0]), 0.0)  # 10 of 110 tokens, in units of the pool's quarter
    assert long[0, names.index("req_pool_share")] == pytest.approx(4 * 10 / 110)
    fs.reset()
    assert fs(s, np.array([100.0, 30.0]), 0.0)[0, names.index("req_rank")] == 0.5
    eight = make_feature_set("size_aware")(np.zeros((8, 6)), np.array([1.0, 1.0]), 0.0)
    assert eight[:, names.index("long_pool")].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
