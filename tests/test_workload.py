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


# ---------------------------------------------------------------- unchanged outputs
def _legacy_lengths(spec, rng, n):
    """The four length samplers as they were before mixtures and the copula (a verbatim copy)."""
    if spec["kind"] == "fixed":
        return np.full(n, spec["value"], dtype=np.int64)
    if spec["kind"] == "uniform":
        return rng.integers(spec["min"], spec["max"], size=n, endpoint=True, dtype=np.int64)
    if spec["kind"] == "zipf":
        w = np.arange(1, spec["max"] - spec["min"] + 2, dtype=np.float64) ** -float(spec["theta"])
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        idx = np.searchsorted(cdf, rng.random(n), side="right")
        return spec["min"] + np.minimum(idx, len(cdf) - 1).astype(np.int64)
    x = np.rint(spec["median"] * np.exp(spec["sigma"] * rng.standard_normal(n)))
    return np.clip(x, spec["min"], spec["max"]).astype(np.int64)


def _legacy_generate(seed, num_requests, qps, arrival="poisson", cv=1.0, *, prefill, decode, start_time=0.0,
                     qps_max=None):
    """SyntheticWorkload.generate as it was before mmpp/diurnal/mixture/correlation (a verbatim copy)."""
    r_arr, r_pre, r_dec, r_qps = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    q = qps if qps_max is None else float(r_qps.uniform(qps, qps_max))
    if arrival == "poisson":
        gaps = r_arr.exponential(1.0 / q, num_requests)
    else:
        k = 1.0 / cv ** 2
        gaps = r_arr.gamma(k, (1.0 / q) / k, num_requests)
    return (start_time + np.cumsum(gaps), _legacy_lengths(prefill, r_pre, num_requests),
            _legacy_lengths(decode, r_dec, num_requests))


_LEGACY_SPECS = [{"kind": "fixed", "value": 77}, {"kind": "uniform", "min": 3, "max": 900},
                 {"kind": "zipf", "theta": 1.1, "min": 5, "max": 2000},
                 {"kind": "lognormal", "median": 300, "sigma": 0.9, "min": 4, "max": 3000}]


@pytest.mark.parametrize("arrival, cv, qps_max", [("poisson", 1.0, None), ("gamma", 2.5, None), ("gamma", 0.5, 30.0),
                                                  ("poisson", 1.0, 30.0)])
def test_existing_generators_unchanged_bit_for_bit(arrival, cv, qps_max):
    """The new keys default to off; every existing generator gives the same trace for the same seed."""
    for pre in _LEGACY_SPECS:
        for dec in _LEGACY_SPECS:
            kw = dict(num_requests=700, qps=9.0, arrival=arrival, cv=cv, prefill=pre, decode=dec, start_time=3.0,
                      qps_max=qps_max)
            for seed in (0, 17):
                t = SyntheticWorkload(**kw).generate(seed)
                ref = _legacy_generate(seed, **kw)
                for got, want in zip((t.arrived_at, t.num_prefill_tokens, t.num_decode_tokens), ref):
                    assert np.array_equal(got, want)
    # the off values of every new key, as a config passes them, change nothing either
    off = dict(burst_factor=None, mean_on=None, mean_off=None, amplitude=None, period=None, correlation=None,
               paired_mixture=False)
    a = SyntheticWorkload(500, 4.0, arrival, cv, prefill=PRE, decode=DEC, qps_max=qps_max, **off).generate(5)
    assert _same(a, SyntheticWorkload(500, 4.0, arrival, cv, prefill=PRE, decode=DEC, qps_max=qps_max).generate(5))


def test_pinned_values():
    """A few values of two traces written down (catches a change in the shared primitives too)."""
    zipf = {"kind": "zipf", "theta": 1.1, "min": 5, "max": 2000}
    logn = {"kind": "lognormal", "median": 300, "sigma": 0.9, "min": 4, "max": 3000}
    unif = {"kind": "uniform", "min": 3, "max": 900}
    t = SyntheticWorkload(2000, 9.0, prefill=unif, decode=logn).generate(7)
    assert t.arrived_at[[0, 1, 999, 1999]] == pytest.approx(
        [0.13303789332422175, 0.14061546408384565, 120.43489061203388, 230.00366115110577], rel=1e-12)
    assert t.num_prefill_tokens[:6].tolist() == [614, 434, 361, 56, 400, 202]
    assert t.num_decode_tokens[:6].tolist() == [311, 813, 189, 658, 335, 877]
    assert (int(t.num_prefill_tokens.sum()), int(t.num_decode_tokens.sum())) == (896929, 880284)
    t = SyntheticWorkload(2000, 5.0, "gamma", 2.5, prefill=zipf, decode=unif, qps_max=12.0, start_time=3.0).generate(7)
    assert t.arrived_at[[0, 1, 999, 1999]] == pytest.approx(
        [3.0197348678049187, 3.0929349889833992, 96.44273127899265, 194.37720904045267], rel=1e-12)
    assert t.num_prefill_tokens[:6].tolist() == [17, 5, 6, 5, 5, 10]
    assert t.num_decode_tokens[:6].tolist() == [359, 570, 708, 440, 440, 33]
    assert (int(t.num_prefill_tokens.sum()), int(t.num_decode_tokens.sum())) == (351818, 910358)


# ---------------------------------------------------------------- mmpp / diurnal arrivals
MMPP = dict(arrival="mmpp", burst_factor=3.0, mean_on=5.0, mean_off=15.0)


def _mean_gap(w, seeds=range(20)):
    return np.mean([w.generate(s).arrived_at[-1] / w.num_requests for s in seeds])


@pytest.mark.parametrize("burst_factor", [1.0, 3.0, 4.0])  # 1: Poisson; 4 = (5 + 15) / 5: pure on/off
def test_mmpp_keeps_qps_the_mean_rate(burst_factor):
    w = SyntheticWorkload(5000, 10.0, prefill=PRE, decode=DEC, **{**MMPP, "burst_factor": burst_factor})
    assert _mean_gap(w) == pytest.approx(0.1, rel=0.05)


def test_mmpp_is_bursty_and_on_off_has_silences():
    w = SyntheticWorkload(20_000, 10.0, prefill=PRE, decode=DEC, **MMPP)
    t = w.generate(0).arrived_at
    counts = np.histogram(t, bins=np.arange(0.0, t[-1], 1.0))[0]
    assert counts.var() / counts.mean() > 4  # Poisson: 1
    poisson = SyntheticWorkload(20_000, 10.0, prefill=PRE, decode=DEC).generate(0).arrived_at
    c = np.histogram(poisson, bins=np.arange(0.0, poisson[-1], 1.0))[0]
    assert c.var() / c.mean() == pytest.approx(1.0, abs=0.15)
    # ON rate 3 x 10: about 30 arrivals per second in the busiest seconds
    assert np.percentile(counts, 95) == pytest.approx(30, rel=0.25)
    onoff = SyntheticWorkload(5000, 10.0, prefill=PRE, decode=DEC, **{**MMPP, "burst_factor": 4.0}).generate(0)
    assert np.diff(onoff.arrived_at).max() > 20  # OFF periods (mean 15 s) without a single arrival
    assert _same(w.generate(3), w.generate(3)) and not _same(w.generate(3), w.generate(4))
    # lengths do not depend on the arrival process
    assert np.array_equal(w.generate(3).num_decode_tokens,
                          SyntheticWorkload(20_000, 10.0, prefill=PRE, decode=DEC).generate(3).num_decode_tokens)


def test_diurnal_rate_follows_the_cosine_and_keeps_the_mean():
    a = 0.6
    w = SyntheticWorkload(20_000, 10.0, "diurnal", prefill=PRE, decode=DEC, amplitude=a)
    t = w.generate(0).arrived_at
    period = 20_000 / 10.0  # default: one cycle per episode
    assert t[-1] == pytest.approx(period, rel=0.03)
    # share of arrivals in the middle half of the cycle: integral of 1 - a cos = 1/2 + a/pi
    assert ((t > period / 4) & (t < 3 * period / 4)).mean() == pytest.approx(0.5 + a / np.pi, abs=0.015)
    first = (t < period / 10).mean()  # the trough: rate about (1 - a) x mean
    assert first == pytest.approx((0.1 - a / (2 * np.pi) * np.sin(0.2 * np.pi)), rel=0.1)
    short = SyntheticWorkload(5000, 10.0, "diurnal", prefill=PRE, decode=DEC, amplitude=a, period=50.0)
    assert _mean_gap(short) == pytest.approx(0.1, rel=0.02)  # many whole cycles
    flat = SyntheticWorkload(5000, 10.0, "diurnal", prefill=PRE, decode=DEC, amplitude=0.0)
    assert _mean_gap(flat) == pytest.approx(0.1, rel=0.02)
    assert np.all(np.diff(t) >= 0) and t[0] > 0


@pytest.mark.parametrize("kw, key", [
    ({"arrival": "mmpp", "mean_on": 5.0, "mean_off": 15.0}, "burst_factor"),  # required
    ({**MMPP, "burst_factor": 4.5}, "burst_factor"),  # above (5 + 15) / 5
    ({**MMPP, "burst_factor": 0.5}, "burst_factor"),
    ({**MMPP, "mean_on": 0.0}, "mean_on"),
    ({**MMPP, "mean_off": -1.0}, "mean_off"),
    ({**MMPP, "mean_off": "long"}, "mean_off"),
    ({"burst_factor": 2.0}, "burst_factor"),  # only for arrival=mmpp
    ({"arrival": "gamma", "amplitude": 0.5}, "amplitude"),
    ({"arrival": "diurnal"}, "amplitude"),
    ({"arrival": "diurnal", "amplitude": 1.5}, "amplitude"),
    ({"arrival": "diurnal", "amplitude": 0.5, "period": 0.0}, "period"),
    ({"arrival": "diurnal", "amplitude": 0.5, "mean_on": 3.0}, "mean_on"),
    ({"correlation": 1.5}, "correlation"),
    ({"correlation": float("nan")}, "correlation"),
    ({"paired_mixture": "yes"}, "paired_mixture"),
    ({"paired_mixture": True}, "paired_mixture"),  # prefill/decode are not mixtures
    ({"arrival": "weibull"}, "arrival"),
])
def test_new_keys_checked_with_one_line_naming_the_key(kw, key):
    with pytest.raises(ValueError, match=f"'{key}'") as ei:
        SyntheticWorkload(num_requests=10, qps=1.0, prefill=PRE, decode=DEC, **kw)
    assert "\n" not in str(ei.value)


def test_config_errors_name_the_workload_key():
    from vidur_ppo.checks import ConfigError
    from vidur_ppo.workloads import SyntheticWorkloadConfig

    with pytest.raises(ConfigError, match=r"^workload\.burst_factor must be in \[1"):
        SyntheticWorkloadConfig(arrival="mmpp", burst_factor=9.0, mean_on=1.0, mean_off=1.0)
    with pytest.raises(ConfigError, match=r"^workload\.amplitude only applies to arrival=diurnal"):
        SyntheticWorkloadConfig(amplitude=0.3)
    with pytest.raises(ConfigError, match="workload.arrival must be one of"):
        SyntheticWorkloadConfig(arrival="bursty")
    cfg = SyntheticWorkloadConfig(arrival="mmpp", burst_factor=2.0, mean_on=1.0, mean_off=1.0, correlation=0.5)
    assert cfg.arrival == "mmpp" and cfg.correlation == 0.5


# ---------------------------------------------------------------- mixture, copula, tenants
MIX = {"kind": "mixture", "weights": [3, 1],
       "components": [{"kind": "uniform", "min": 10, "max": 20}, {"kind": "zipf", "theta": 1.0, "min": 100, "max": 200}]}


def test_mixture_lengths():
    d = make_length_dist(MIX)
    x = d.sample(np.random.default_rng(0), 40_000)
    assert (x <= 20).mean() == pytest.approx(0.75, abs=0.01)
    assert x.min() == 10 and x[x <= 20].max() == 20 and x[x > 20].min() == 100 and x.max() <= 200
    assert np.mean(x[x <= 20]) == pytest.approx(15, abs=0.1)
    lo, cdf = d.cdf_table()  # exact: 3/4 on 10..20, 1/4 on 100..200
    assert lo == 10 and len(cdf) == 191 and cdf[10] == pytest.approx(0.75) and cdf[89] == pytest.approx(0.75)
    assert cdf[0] == pytest.approx(0.75 / 11) and cdf[-1] == 1.0
    from omegaconf import OmegaConf
    assert make_length_dist(OmegaConf.create(MIX)) == d
    nested = {"kind": "mixture", "weights": [1, 1], "components": [MIX, {"kind": "fixed", "value": 7}]}
    assert (make_length_dist(nested).sample(np.random.default_rng(1), 10_000) == 7).mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("spec, key", [
    ({"kind": "mixture", "weights": [1], "components": []}, "weights"),
    ({"kind": "mixture", "weights": [1, 2], "components": [PRE]}, "weights"),
    ({"kind": "mixture", "weights": [1, 0], "components": [PRE, DEC]}, "weights"),
    ({"kind": "mixture", "weights": [1, "a"], "components": [PRE, DEC]}, "weights"),
    ({"kind": "mixture", "weights": 1, "components": [PRE]}, "weights"),
    ({"kind": "mixture", "weights": [1], "components": PRE}, "components"),
    ({"kind": "mixture", "weights": [1], "components": [{"kind": "uniform", "min": 5}]}, "max"),
    ({"kind": "mixture", "weights": [1]}, "components"),
])
def test_mixture_errors(spec, key):
    with pytest.raises(ValueError, match=f"'{key}'") as ei:
        make_length_dist(spec)
    assert "\n" not in str(ei.value)


LOGN_P = {"kind": "lognormal", "median": 400, "sigma": 0.7, "min": 1, "max": 100_000}
LOGN_D = {"kind": "lognormal", "median": 200, "sigma": 0.9, "min": 1, "max": 100_000}


@pytest.mark.parametrize("rho", [0.7, -0.5, 0.0])
def test_copula_correlates_log_lengths_and_keeps_marginals(rho):
    n = 40_000
    t = SyntheticWorkload(n, 10.0, prefill=LOGN_P, decode=LOGN_D, correlation=rho).generate(0)
    ind = SyntheticWorkload(n, 10.0, prefill=LOGN_P, decode=LOGN_D).generate(0)
    r = np.corrcoef(np.log(t.num_prefill_tokens), np.log(t.num_decode_tokens))[0, 1]
    assert r == pytest.approx(rho, abs=0.02)
    assert np.array_equal(t.num_prefill_tokens, ind.num_prefill_tokens)  # prefill draws as before
    assert np.array_equal(t.arrived_at, ind.arrived_at)
    q = [10, 50, 90, 99]
    assert np.percentile(t.num_decode_tokens, q) == pytest.approx(np.percentile(ind.num_decode_tokens, q), rel=0.05)


def test_copula_works_for_every_marginal():
    n = 20_000
    zipf = {"kind": "zipf", "theta": 0.8, "min": 8, "max": 2048}
    unif = {"kind": "uniform", "min": 16, "max": 512}
    for pre, dec in ((zipf, unif), (MIX, LOGN_D), (unif, {"kind": "fixed", "value": 9})):
        t = SyntheticWorkload(n, 10.0, prefill=pre, decode=dec, correlation=0.9).generate(1)
        ind = SyntheticWorkload(n, 10.0, prefill=pre, decode=dec).generate(1)
        for got, want in ((t.num_prefill_tokens, ind.num_prefill_tokens), (t.num_decode_tokens, ind.num_decode_tokens)):
            assert np.percentile(got, [10, 50, 90]) == pytest.approx(np.percentile(want, [10, 50, 90]), rel=0.15, abs=1)
        if dec["kind"] != "fixed":
            ranks = [np.argsort(np.argsort(a)) for a in (t.num_prefill_tokens, t.num_decode_tokens)]
            assert np.corrcoef(*ranks)[0, 1] > 0.8  # Spearman of a rho=0.9 Gaussian copula: ~0.89
    same = SyntheticWorkload(2000, 10.0, prefill=unif, decode=unif, correlation=1.0).generate(2)
    assert np.array_equal(same.num_prefill_tokens, same.num_decode_tokens)


def _tenants(**kw):
    pre = {"kind": "mixture", "weights": [0.7, 0.3],
           "components": [{"kind": "uniform", "min": 10, "max": 20}, {"kind": "uniform", "min": 1000, "max": 2000}]}
    dec = {"kind": "mixture", "weights": [7, 3],  # the same weights, unnormalised
           "components": [{"kind": "uniform", "min": 500, "max": 600}, {"kind": "fixed", "value": 3}]}
    return SyntheticWorkload(20_000, 10.0, prefill=pre, decode=dec, **kw)


def test_paired_mixture_takes_both_lengths_from_one_tenant():
    t = _tenants(paired_mixture=True).generate(0)
    chat = t.num_prefill_tokens <= 20
    assert chat.mean() == pytest.approx(0.7, abs=0.01)
    assert np.all((t.num_decode_tokens >= 500) == chat) and np.all(t.num_decode_tokens[~chat] == 3)
    loose = _tenants().generate(0)  # independent mixtures: tenants mix
    mixed = (loose.num_prefill_tokens <= 20) != (loose.num_decode_tokens >= 500)
    assert mixed.mean() == pytest.approx(2 * 0.7 * 0.3, abs=0.015)
    c = _tenants(paired_mixture=True, correlation=0.8).generate(0)  # copula within each tenant
    chat = c.num_prefill_tokens <= 20
    assert np.all((c.num_decode_tokens >= 500) == chat)
    assert np.corrcoef(c.num_prefill_tokens[chat], c.num_decode_tokens[chat])[0, 1] > 0.6
    with pytest.raises(ValueError, match="'paired_mixture'.*same weights"):
        SyntheticWorkload(10, 1.0, prefill=MIX, decode={**MIX, "weights": [1, 1]}, paired_mixture=True)
