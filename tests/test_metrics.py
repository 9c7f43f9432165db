"""Summaries against hand-computed values."""

import numpy as np

from vidur_ppo.sim.metrics import summarize


def test_summary_by_hand():
    req = {
        "completed": np.array([True, True, True, True]),
        "ttft": np.array([0.1, 0.2, 0.3, 0.4]),
        "e2e": np.array([1.0, 2.0, 3.0, 14.0]),
        "sched_delay": np.zeros(4),
        "tbt_mean": np.full(4, 0.02),
        "num_decode_tokens": np.array([10, 10, 10, 10]),
        "arrived_at": np.array([0.0, 1.0, 2.0, 3.0]),
        "completed_at": np.array([1.0, 3.0, 5.0, 17.0]),
        "total_tokens": np.array([100, 100, 100, 100]),
        "restarts": np.array([0, 1, 0, 0]),
        "replica": np.array([0, 1, 0, 0]),
    }
    s = summarize(req, num_replicas=2, tbt_gaps=[0.01, 0.03], busy_time=np.array([8.5, 1.7]), slo_e2e=10.0)
    assert s["e2e_mean"] == 5.0 and s["e2e_p50"] == 2.5
    assert np.isclose(s["e2e_p99"], np.percentile([1, 2, 3, 14], 99))
    assert s["tbt_mean"] == 0.02 and s["tbt_p50"] == 0.02
    assert s["makespan"] == 17.0 and np.isclose(s["throughput_rps"], 4 / 17)
    assert np.isclose(s["throughput_tps"], 400 / 17)
    assert s["restarts"] == 1 and s["slo_violation_rate"] == 0.25
    assert np.isclose(s["imbalance_share_std"], 0.25)  # shares 0.75 / 0.25
    assert np.isclose(s["utilization_mean"], 0.3) and np.isclose(s["imbalance_util_std"], 0.2)


def _slo_requests():
    """Five requests (times exact in binary, so the <= boundaries are exact):
    r0 meets both (TPOT (1.125 - 0.125) / 10 = 0.1, on the bound); r1 misses TTFT (0.375);
    r2 meets TTFT on the bound (0.25) but misses TPOT (4 / 20 = 0.2); r3 has one output token
    (TPOT 0) and meets both; r4 never finished and meets nothing."""
    nan = float("nan")
    ttft = np.array([0.125, 0.375, 0.25, 0.0625, nan])
    e2e = np.array([1.125, 1.375, 4.25, 0.0625, nan])
    arrived = np.arange(5.0)
    return {
        "completed": np.array([True, True, True, True, False]),
        "ttft": ttft, "e2e": e2e, "sched_delay": np.zeros(5), "tbt_mean": np.zeros(5),
        "num_decode_tokens": np.array([11, 11, 21, 1, 5]),
        "arrived_at": arrived, "completed_at": arrived + e2e,
        "total_tokens": np.full(5, 100), "restarts": np.zeros(5, dtype=int), "replica": np.array([0, 1, 0, 1, 0]),
    }


def test_slo_attainment_and_goodput_by_hand():
    from vidur_ppo.sim.metrics import DEFAULT_SLO_TPOT, DEFAULT_SLO_TTFT, tpot

    assert (DEFAULT_SLO_TTFT, DEFAULT_SLO_TPOT) == (0.25, 0.1)  # DistServe's chatbot SLOs
    req = _slo_requests()
    assert np.allclose(tpot(req)[:4], [0.1, 0.1, 0.2, 0.0])
    s = summarize(req, num_replicas=2)  # default SLOs: TTFT 0.25 s, TPOT 0.1 s
    assert s["ttft_attainment"] == 0.6  # r0, r2, r3 of 5
    assert s["tpot_attainment"] == 0.6  # r0, r1, r3
    assert s["slo_attainment"] == 0.4  # r0, r3
    assert s["makespan"] == 6.25 and np.isclose(s["goodput_rps"], 2 / 6.25)  # last finish: r2 at 2 + 4.25
    assert np.isclose(s["throughput_rps"], 4 / 6.25)
    assert np.isclose(s["tpot_p50"], 0.1) and np.isclose(s["tpot_mean"], 0.4 / 3)  # r0..r2 (r3: one token)
    loose = summarize(req, num_replicas=2, slo_ttft=0.5, slo_tpot=0.25)
    assert loose["ttft_attainment"] == loose["tpot_attainment"] == loose["slo_attainment"] == 0.8
    assert np.isclose(loose["goodput_rps"], 4 / 6.25)
    tpot_only = summarize(req, num_replicas=2, slo_ttft=None)
    assert tpot_only["ttft_attainment"] == 0.8 and tpot_only["slo_attainment"] == 0.6  # unfinished r4 still misses


def test_slo_values_checked_naming_the_key():
    import pytest

    for kw, key in (({"slo_ttft": 0.0}, "slo_ttft"), ({"slo_tpot": -1.0}, "slo_tpot"),
                    ({"slo_tpot": "fast"}, "slo_tpot"), ({"slo_ttft": float("inf")}, "slo_ttft")):
        with pytest.raises(ValueError, match=f"'{key}'"):
            summarize(_slo_requests(), num_replicas=2, **kw)


def test_slo_costs_per_request_by_hand():
    import math

    import pytest

    from vidur_ppo.sim.metrics import SLO_MARGIN, slo_costs, slo_met, slo_summary

    def soft(z):  # SLO_MARGIN * softplus(z / SLO_MARGIN), z = (x - SLO) / SLO
        return SLO_MARGIN * math.log1p(math.exp(z / SLO_MARGIN))

    # a: TTFT 0.2 s, 10 tokens at 0.05 s after the first (meets both); b: TTFT 0.5 s, one token (misses TTFT,
    # TPOT 0): the lookahead test's pair, per request
    req = {"ttft": np.array([0.2, 0.5]), "e2e": np.array([0.2 + 9 * 0.05, 0.5]), "num_decode_tokens": np.array([10, 1])}
    a, b = soft(-0.2) + soft(-0.5), 1.0 + soft(1.0) + soft(-1.0)
    np.testing.assert_allclose(slo_costs(req, 0.25, 0.1), [a, b], rtol=1e-12)
    assert a + b == pytest.approx(2.0134, abs=1e-4)
    # an unfinished request meets nothing: a's miss is charged, its margins stay
    np.testing.assert_allclose(slo_costs({**req, "completed": np.array([False, True])}, 0.25, 0.1), [1.0 + a, b],
                               rtol=1e-12)
    # the same "meets" as attainment: one predicate
    five = _slo_requests()
    both = np.logical_and(*slo_met(five))
    assert both.tolist() == [True, False, False, True, False]
    assert slo_summary(five, 1.0)["slo_attainment"] == both.mean()
    with pytest.raises(ValueError, match="'slo_tpot'"):
        slo_costs(req, 0.25, 0.0)
