"""Reward properties: monotone in latency, no saturation 1.1x-1.3x SLO, bonus under the SLO,
clip bounds, and the legacy option reproducing the legacy formula."""

from types import SimpleNamespace

import numpy as np

from vidur_ppo.sim.driver import ReplicaColumn
import pytest

from vidur_ppo.routing.rewards import Step, make_reward

STATE = np.zeros((4, len(ReplicaColumn)))
STATE[:, 1] = [2, 2, 2, 2]  # running: perfectly balanced


def req(e2e, decode=100, prefill=400):
    return SimpleNamespace(_arrived_at=10.0, _completed_at=10.0 + e2e, total_tokens=prefill + decode,
                           vp_decode_tokens=decode, _num_prefill_tokens=prefill)


def latency_reward(name, x, **kw):
    r = make_reward({"name": name, **kw})
    thr = r.latency_threshold
    decode = 100
    e2e = x * thr * (decode if getattr(r, "latency_metric", "e2e") == "e2e_per_token" else 1)
    total, parts = r(Step([req(e2e, decode)], STATE, now=20.0, routed=None))
    return total, parts


@pytest.mark.parametrize("name", ["legacy_hybrid", "soft_logistic", "piecewise"])
def test_monotone_decreasing_in_latency(name):
    xs = np.linspace(0.1, 3.0, 40)
    lat = [latency_reward(name, x)[1]["latency"] for x in xs]
    assert all(a >= b for a, b in zip(lat, lat[1:]))


@pytest.mark.parametrize("name", ["soft_logistic", "piecewise"])
def test_no_saturation_between_110_and_130_percent_of_slo(name):
    l110, l120, l130 = (latency_reward(name, x)[1]["latency"] for x in (1.1, 1.2, 1.3))
    assert l110 - l120 > 0.5 and l120 - l130 > 0.5  # "bad" and "terrible" differ


def test_legacy_saturates_where_the_new_one_does_not():
    l110, l130 = (latency_reward("legacy_hybrid", x)[1]["latency"] for x in (1.1, 1.3))
    assert l110 - l130 < 0.25  # the steep logistic is already flat: what the plan complains about


def test_soft_logistic_reaches_old_floor_only_at_130_percent():
    r = make_reward("soft_logistic")
    assert r.latency_term(np.array([1.1]))[0] > -2.5
    assert r.latency_term(np.array([1.3]))[0] == pytest.approx(-4.0, abs=0.3)


@pytest.mark.parametrize("name", ["soft_logistic", "piecewise"])
def test_bonus_under_the_slo(name):
    at_80, at_20 = (latency_reward(name, x)[1]["latency"] for x in (0.8, 0.2))
    assert at_20 > at_80 > 0
    assert at_20 >= 3.0  # 20% of the SLO approaches +3/+4


@pytest.mark.parametrize("name,clip", [("legacy_hybrid", 4.0), ("soft_logistic", 8.0), ("piecewise", 8.0)])
def test_clip_bounds(name, clip):
    unbalanced = np.array([[0, 100, 0, 0, 0, 0]] * 3 + [[0, 0, 0, 0, 0, 0]], dtype=float)
    for weight in (1.0, 100.0):
        r = make_reward({"name": name, "weights": {"latency": weight, "imbalance": weight}})
        worst, _ = r(Step([req(1e4, decode=2, prefill=2) for _ in range(5)], unbalanced, 20.0))
        best, _ = r(Step([req(1e-4) for _ in range(50)], STATE, 20.0))
        assert -clip <= worst < 0 < best <= clip
    assert worst == -clip and best == clip  # with large weights the clip is what binds


def test_legacy_reproduces_the_legacy_formula():
    r = make_reward({"name": "legacy_hybrid", "latency_threshold": 8.0, "latency_penalty_slope": 20.0,
                     "weights": {"latency": 4.0, "throughput": 0.5, "imbalance": 1.0}, "clip": 4.0,
                     "throughput_scale_tokens": 1000.0})
    state = np.zeros((2, 6))
    state[:, 0], state[:, 1] = [1, 0], [3, 0]  # outstanding 4 and 0: CV = 1
    done = [req(6.0, 100, 400), req(10.0, 50, 150)]
    total, parts = r(Step(done, state, 0.0))
    lat = np.mean([1 - 2 / (1 + np.exp(-20 * (6 / 8 - 1))), 1 - 2 / (1 + np.exp(-20 * (10 / 8 - 1)))])
    expected = np.clip(4.0 * lat + 0.5 * (700 / 1000) - 1.0 * 1.0, -4, 4)
    assert total == pytest.approx(expected)
    assert parts == pytest.approx({"latency": lat, "throughput": 0.7, "imbalance": -1.0})


def test_throughput_penalty_is_zero_in_band_and_capped_outside():
    r = make_reward("soft_logistic")
    assert r.throughput_term(0.95) == 0.0
    assert -1.0 < r.throughput_term(0.85) < 0
    assert r.throughput_term(0.1) == -1.0


def test_unknown_reward_and_metric():
    with pytest.raises(ValueError, match="unknown reward"):
        make_reward("speedy")
    with pytest.raises(ValueError, match="latency_metric"):
        make_reward({"name": "soft_logistic", "latency_metric": "ttft"})
