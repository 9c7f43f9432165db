"""A user trace as an evaluation scenario of a run trained on a synthetic workload (issue 15's
README case): the trace replaces the run's workload, over-long requests are clipped, and each
evaluation seed replays a different window, so the CIs are real."""

import numpy as np
import pandas as pd

from test_evaluate import _save
from vidur_ppo.eval.suite import suite_job


def test_trace_scenario_on_a_synthetic_run_gives_a_window_per_seed(tmp_path):
    _save(tmp_path, "attn_gru")
    rng = np.random.default_rng(0)
    n = 400
    pd.DataFrame({"arrived_at": np.cumsum(rng.exponential(1 / 12, n)),
                  "num_prefill_tokens": rng.integers(50, 6000, n),  # some longer than the 4,096-token context
                  "num_decode_tokens": rng.integers(5, 300, n)}).to_csv(tmp_path / "trace.csv", index=False)
    scenario = {"name": "t", "workload": {"kind": "trace", "path": str(tmp_path / "trace.csv"), "overlong": "clip"}}
    rows = []
    for seed in range(100_000, 100_005):
        out = suite_job((str(tmp_path), scenario, seed, ["round_robin"], False, 40))
        assert not out["errors"], out["errors"]
        rows += [r for r in out["rows"] if r["scheduler"] == "round_robin"]
    assert len(rows) == 5 and all(r["num_completed"] == 40 for r in rows)
    assert len({round(r["e2e_p99"], 6) for r in rows}) == 5  # five different windows


def test_qps_per_replica_never_rescales_a_trace_silently(tmp_path):
    import pytest

    from vidur_ppo.build import env_spec
    from vidur_ppo.checks import ConfigError
    from omegaconf import OmegaConf

    _save(tmp_path, "attn_gru")
    spec = env_spec(OmegaConf.load(tmp_path / "config.yaml"))
    with pytest.raises(ConfigError, match=r"eval.scenarios\[t\].qps_per_replica would rescale the trace"):
        spec.for_suite_scenario({"name": "t", "qps_per_replica": 3.0,
                                 "workload": {"kind": "trace", "path": str(tmp_path / "none.csv")}}, 40)
