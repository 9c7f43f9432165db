"""Tests for vidur_ppo.sim.workload (pure numpy/pandas; no vidur)."""

from __future__ import annotations

import numpy as np
import pytest

from vidur_ppo.sim.workload import (
    FixedLength, LognormalLength, SyntheticWorkload, Trace, TraceError, TraceWorkload,
    UniformLength, ZipfLength, load_trace, make_length_dist, make_workload,
)

PRE = {"kind": "uniform", "min": 256, "max": 2048}
DEC = {"kind": "lognormal", "median": 128, "sigma": 0.8, "min": 1, "max": 1024}


def _same(a: Trace, b: Trace) -> bool:
    return (np.array_equal(a.arrived_at, b.arrived_at)
            and np.array_equal(a.num_prefill_tokens, b.num_prefill_tokens)
            and np.array_equal(a.num_decode_tokens, b.num_decode_tokens))


def _write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- synthetic
def test_seed_determinism():
    w = SyntheticWorkload(500, 4.0, prefill=PRE, decode=DEC)
    assert _same(w.generate(1), w.generate(1))
    assert not _same(w.generate(1), w.generate(2))


def test_substreams_independent_of_length_dist():
    a = SyntheticWorkload(200, 4.0, prefill=PRE, decode=DEC).generate(3)
    b = SyntheticWorkload(200, 4.0, prefill={"kind": "fixed", "value": 7}, decode=DEC).generate(3)
    assert np.array_equal(a.arrived_at, b.arrived_at)
    assert np.array_equal(a.num_decode_tokens, b.num_decode_tokens)
    assert np.all(b.num_prefill_tokens == 7)


def test_poisson_not_clipped():
    qps = 10.0
    t = SyntheticWorkload(20_000, qps, prefill=PRE, decode=DEC).generate(0)
    gaps = np.diff(np.concatenate([[0.0], t.arrived_at]))
    assert t.arrived_at[0] > 0
    assert gaps.mean() == pytest.approx(1 / qps, rel=0.03)
    assert gaps.max() > 3 / qps  # vidur clips here; P(no gap > 3/qps in 20k) ~ 0
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert t.qps == pytest.approx(qps, rel=0.03)


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_cv(cv):
    t = SyntheticWorkload(20_000, 5.0, arrival="gamma", cv=cv, prefill=PRE, decode=DEC).generate(0)
    gaps = np.diff(np.concatenate([[0.0], t.arrived_at]))
    assert gaps.mean() == pytest.approx(0.2, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_start_time_offset():
    t = SyntheticWorkload(10, 1.0, start_time=100.0, prefill=PRE, decode=DEC).generate(0)
    assert t.arrived_at[0] > 100.0


@pytest.mark.parametrize("kw, msg", [
    ({"qps": 0.0}, "qps"), ({"num_requests": 0}, "num_requests"), ({"cv": 0.0}, "cv"),
    ({"arrival": "bursty"}, "arrival"), ({"num_requests": 2.5}, "num_requests"),
])
def test_synthetic_validation(kw, msg):
    args = {"num_requests": 10, "qps": 1.0, "prefill": PRE, "decode": DEC, **kw}
    with pytest.raises(ValueError, match=msg):
        SyntheticWorkload(**args)


# ---------------------------------------------------------------- lengths
def test_length_dists_bounds_and_moments():
    rng = np.random.default_rng(0)
    n = 50_000
    assert np.all(FixedLength(5).sample(rng, 10) == 5)
    u = UniformLength(10, 20).sample(rng, n)
    assert u.dtype == np.int64 and u.min() == 10 and u.max() == 20
    assert u.mean() == pytest.approx(15, abs=0.1)
    ln = LognormalLength(median=200, sigma=0.5, min=1, max=4096).sample(rng, n)
    assert ln.min() >= 1 and ln.max() <= 4096
    assert np.median(ln) == pytest.approx(200, rel=0.03)
    clipped = LognormalLength(median=200, sigma=2.0, min=50, max=300).sample(rng, n)
    assert clipped.min() == 50 and clipped.max() == 300
    z = ZipfLength(1.2, 10, 1000).sample(rng, n)
    assert z.dtype == np.int64 and z.min() == 10 and z.max() <= 1000
    counts = np.bincount(z - 10)
    assert counts[0] == counts.max() and counts[0] > 2 * counts[1] > 0  # 2^-1.2 ≈ 0.435
    p_min = 1 / np.sum(np.arange(1, 992, dtype=float) ** -1.2)
    assert counts[0] / n == pytest.approx(p_min, rel=0.05)


def test_zipf_single_value_range():
    assert np.all(ZipfLength(1.0, 7, 7).sample(np.random.default_rng(0), 100) == 7)


def test_make_length_dist_ok_and_omegaconf():
    from omegaconf import OmegaConf
    assert make_length_dist({"kind": "fixed", "value": 3}) == FixedLength(3)
    assert make_length_dist(OmegaConf.create(PRE)) == UniformLength(256, 2048)
    assert make_length_dist({"kind": "zipf", "theta": 1, "min": 1, "max": 9}) == ZipfLength(1.0, 1, 9)


@pytest.mark.parametrize("spec, key", [
    ({"kind": "pareto", "min": 1}, "kind"),
    ({"kind": "uniform", "min": 1}, "max"),
    ({"kind": "uniform", "min": 1, "max": 5, "mean": 3}, "mean"),
    ({"kind": "uniform", "min": 10, "max": 5}, "max"),
    ({"kind": "uniform", "min": -1, "max": 5}, "min"),
    ({"kind": "fixed", "value": 0}, "value"),
    ({"kind": "fixed", "value": "big"}, "value"),
    ({"kind": "lognormal", "median": 10, "sigma": 0, "min": 1, "max": 5}, "sigma"),
    ({"kind": "zipf", "theta": -1, "min": 1, "max": 5}, "theta"),
    ({"kind": "uniform", "min": 1.5, "max": 5}, "min"),
])
def test_make_length_dist_errors(spec, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        make_length_dist(spec)


# ---------------------------------------------------------------- trace
def test_trace_validation_and_props():
    with pytest.raises(ValueError, match="length"):
        Trace([0.0, 1.0], [1], [1])
    with pytest.raises(ValueError, match="sorted"):
        Trace([1.0, 0.5], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="num_decode_tokens"):
        Trace([0.0], [1], [0])
    t = Trace([1.0, 2.0, 3.0], [10, 20, 30], [5, 5, 50])
    assert len(t) == 3 and t.duration == 2.0 and t.qps == 1.0
    assert t.max_total_tokens == 80 and t.max_prefill_tokens == 30 and t.total_tokens == 120
    assert t.summary()["num_requests"] == 3
    with pytest.raises(ValueError):
        t.arrived_at[0] = 9.0  # read-only


def test_roundtrip(tmp_path):
    t = SyntheticWorkload(300, 3.0, prefill=PRE, decode=DEC).generate(5)
    t.to_csv(tmp_path / "x.csv")
    assert _same(t, load_trace(tmp_path / "x.csv"))


def test_extra_columns_ignored_and_no_scaling(tmp_path):
    p = _write(tmp_path, "id,arrived_at,num_prefill_tokens,num_decode_tokens\n"
                         "a,0.5,1000,10\nb,1.5,2000,20\n")
    t = load_trace(p)
    assert list(t.arrived_at) == [0.5, 1.5] and list(t.num_prefill_tokens) == [1000, 2000]


@pytest.mark.parametrize("body, pattern", [
    ("arrived_at,num_prefill_tokens\n0,1\n", r"missing column.*num_decode_tokens.*found columns"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,-4,1\n", r"row 2.*num_prefill_tokens"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,1,0\n", r"row 2.*num_decode_tokens"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n2,1,1\n1,1,1\n", r"row 3.*not sorted"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,abc,1\n", r"row 2.*non-numeric"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n-1,1,1\n", r"row 1.*negative time"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1.5,1\n", r"row 1.*integer"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n", r"no data rows"),
])
def test_bad_traces(tmp_path, body, pattern):
    p = _write(tmp_path, body)
    with pytest.raises(TraceError, match=pattern) as ei:
        load_trace(p)
    assert str(p) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nope.csv")


def test_window_subsample_max_qps(tmp_path):
    n = 10_000
    t = Trace(np.arange(n) * 0.1, np.full(n, 8), np.arange(1, n + 1))
    t.to_csv(tmp_path / "x.csv")
    p = tmp_path / "x.csv"
    w = load_trace(p, time_window=(100.0, 200.0))
    assert len(w) == 1000 and w.arrived_at[0] == pytest.approx(0.0) and w.arrived_at[-1] < 100.0
    assert w.num_decode_tokens[0] == 1001  # row at t=100.0 kept, lengths untouched
    s = load_trace(p, subsample=0.25, seed=1)
    assert 0.22 * n < len(s) < 0.28 * n
    assert _same(s, load_trace(p, subsample=0.25, seed=1))
    assert not _same(s, load_trace(p, subsample=0.25, seed=2))
    m = load_trace(p, max_requests=7)
    assert len(m) == 7 and m.num_decode_tokens[-1] == 7
    q = load_trace(p, qps=40.0, max_requests=100)
    assert q.qps == pytest.approx(40.0) and np.array_equal(q.num_prefill_tokens, np.full(100, 8))
    with pytest.raises(TraceError, match="no requests left"):
        load_trace(p, time_window=(5000.0, 6000.0))
    with pytest.raises(TraceError, match="subsample"):
        load_trace(p, subsample=0.0)


# ---------------------------------------------------------------- factory
def test_make_workload(tmp_path):
    from omegaconf import OmegaConf
    w = make_workload(OmegaConf.create({"kind": "synthetic", "num_requests": 50, "qps": 2,
                                        "arrival": "gamma", "cv": 3, "prefill": PRE, "decode": DEC}))
    assert isinstance(w, SyntheticWorkload) and len(w.generate(0)) == 50
    w.generate(0).to_csv(tmp_path / "x.csv")
    tw = make_workload(OmegaConf.create({"kind": "trace", "path": str(tmp_path / "x.csv"),
                                         "time_window": [0, 1e9], "subsample": 0.5}))
    assert isinstance(tw, TraceWorkload) and _same(tw.generate(4), tw.generate(4))
    with pytest.raises(ValueError, match="burst.*allowed"):
        make_workload({"kind": "synthetic", "num_requests": 5, "qps": 1, "prefill": PRE,
                       "decode": DEC, "burst": 2})
    with pytest.raises(ValueError, match="kind"):
        make_workload({"kind": "replay", "path": "x"})
    with pytest.raises(ValueError, match="decode"):
        make_workload({"kind": "synthetic", "num_requests": 5, "qps": 1, "prefill": PRE})


def test_qps_max_draws_each_episode_load_from_its_seed():
    from vidur_ppo.sim.workload import SyntheticWorkload

    spec = dict(num_requests=400, prefill={"kind": "fixed", "value": 100}, decode={"kind": "fixed", "value": 10})
    fixed = SyntheticWorkload(qps=8.0, **spec)
    mixed = SyntheticWorkload(qps=8.0, qps_max=24.0, **spec)
    rates = [400 / mixed.generate(s).arrived_at[-1] for s in range(12)]
    assert 6 < min(rates) and max(rates) < 28 and max(rates) - min(rates) > 6  # loads spread over the range
    assert np.array_equal(mixed.generate(3).arrived_at, mixed.generate(3).arrived_at)
    # the length streams do not depend on the load draw
    assert np.array_equal(mixed.generate(3).num_decode_tokens, fixed.generate(3).num_decode_tokens)
    with pytest.raises(ValueError, match="qps_max"):
        SyntheticWorkload(qps=8.0, qps_max=4.0, **spec)
