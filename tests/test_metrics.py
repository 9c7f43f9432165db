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
