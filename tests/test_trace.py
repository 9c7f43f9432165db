"""Trace replay options, one-line errors and the per-process parse cache (small files in tmp_path)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from vidur_ppo.sim import trace_csv
from vidur_ppo.sim.trace import Trace, TraceError, TraceWorkload, load_trace
from vidur_ppo.sim.workload import SyntheticWorkload, make_workload

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.fixture(autouse=True)
def _fresh_cache():
    trace_csv.clear_trace_cache()
    yield
    trace_csv.clear_trace_cache()


def _trace_file(tmp_path, n=200, name="t.csv", prefill=None, decode=None):
    """Row i arrives at 0.5*i with decode i+1, so a window's rows are recognisable."""
    p = np.full(n, 100) if prefill is None else np.asarray(prefill)
    d = np.arange(1, n + 1) if decode is None else np.asarray(decode)
    path = tmp_path / name
    Trace(np.arange(n) * 0.5, p, d).to_csv(path)
    return str(path)


def _one_line_error(fn, key):
    with pytest.raises(TraceError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg and key in msg, msg
    return msg


# ---------------------------------------------------------------- windows
def test_seed_picks_a_deterministic_window(tmp_path):
    w = TraceWorkload(_trace_file(tmp_path), max_requests=20)
    starts = {int(w.generate(s).num_decode_tokens[0]) for s in range(8)}
    assert len(starts) >= 6  # different seeds replay different requests without subsampling
    a, b = w.generate(3), w.generate(3)
    assert np.array_equal(a.num_decode_tokens, b.num_decode_tokens) and np.array_equal(a.arrived_at, b.arrived_at)
    assert len(a) == 20 and np.all(np.diff(a.num_decode_tokens) == 1)  # consecutive rows
    # times restart: the previous row arrived at 0, so the first gap (0.5 s) is kept
    assert a.arrived_at[0] == pytest.approx(0.5) and a.arrived_at[-1] == pytest.approx(10.0)


def test_first_window_and_no_window_keep_todays_behaviour(tmp_path):
    path = _trace_file(tmp_path)
    first = TraceWorkload(path, max_requests=20, window="first")
    assert all(list(first.generate(s).num_decode_tokens) == list(range(1, 21)) for s in range(3))
    assert first.generate(0).arrived_at[0] == 0.0
    whole = TraceWorkload(path)  # no max_requests: every seed replays the whole trace
    assert len(whole.generate(5)) == 200 and whole.generate(5).arrived_at[0] == 0.0
    assert len(TraceWorkload(path, max_requests=10_000).generate(1)) == 200


# ---------------------------------------------------------------- over-long requests
def test_overlong_clip_trims_the_prompt_and_counts(tmp_path):
    path = _trace_file(tmp_path, n=4, prefill=[100, 900, 50, 10], decode=[10, 50, 1200, 5])
    t = TraceWorkload(path, overlong="clip", max_total_tokens=1000).generate(0)
    assert list(t.num_prefill_tokens) == [100, 900, 1, 10] and list(t.num_decode_tokens) == [10, 50, 999, 5]
    assert t.num_clipped == 1 and t.summary()["num_clipped"] == 1 and t.max_total_tokens <= 1000
    t = TraceWorkload(path, overlong="clip", max_total_tokens=500).generate(0)
    assert list(t.num_prefill_tokens) == [100, 450, 1, 10] and t.num_clipped == 2


def test_overlong_drop_keeps_a_full_window(tmp_path):
    decode = np.where(np.arange(200) % 10 == 3, 5000, 10)  # every 10th request is too long
    path = _trace_file(tmp_path, decode=decode)
    w = TraceWorkload(path, overlong="drop", max_total_tokens=1000, max_requests=25)
    for seed in range(5):
        t = w.generate(seed)
        assert len(t) == 25 and t.max_total_tokens <= 1000 and t.num_dropped in (2, 3)
    t = TraceWorkload(path, overlong="drop", max_total_tokens=1000).generate(0)
    assert len(t) == 180 and t.num_dropped == 20 and t.summary()["num_dropped"] == 20
    assert np.all(np.diff(t.arrived_at) > 0)


def test_overlong_error_and_missing_limit(tmp_path):
    path = _trace_file(tmp_path, n=3, decode=[10, 2000, 10])
    msg = _one_line_error(lambda: TraceWorkload(path, max_total_tokens=1000).generate(0), "'overlong'")
    assert "request 1" in msg and "max_total_tokens=1000" in msg
    assert len(TraceWorkload(path).generate(0)) == 3  # no limit given: the cluster checks, as before
    _one_line_error(lambda: TraceWorkload(path, overlong="clip").generate(0), "'max_total_tokens'")
    w = TraceWorkload(path, overlong="drop").with_token_limit(1000)
    assert len(w.generate(0)) == 2 and w.with_token_limit(5000).max_total_tokens == 1000


# ---------------------------------------------------------------- length-only traces
def test_length_only_trace_gets_generated_arrivals(tmp_path):
    path = tmp_path / "lengths.csv"
    rng = np.random.default_rng(0)
    rows = [f"{p},{d}" for p, d in zip(rng.integers(1, 500, 4000), rng.integers(1, 200, 4000))]
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "\n".join(rows) + "\n")
    w = TraceWorkload(path, arrival="poisson", qps=8.0)
    t = w.generate(1)
    assert len(t) == 4000 and t.qps == pytest.approx(8.0, rel=0.05)
    assert np.array_equal(t.arrived_at, w.generate(1).arrived_at)
    assert not np.array_equal(t.arrived_at, w.generate(2).arrived_at)
    assert np.array_equal(t.num_prefill_tokens, w.generate(2).num_prefill_tokens)  # lengths as written
    g = TraceWorkload(path, arrival="gamma", cv=3.0, qps=8.0).generate(1)
    gaps = np.diff(g.arrived_at)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.2)
    _one_line_error(lambda: TraceWorkload(path).generate(0), "'arrived_at'")
    _one_line_error(lambda: TraceWorkload(path, arrival="poisson"), "'qps'")


def test_generated_arrivals_replace_a_traces_times(tmp_path):
    t = TraceWorkload(_trace_file(tmp_path), arrival="poisson", qps=50.0, max_requests=100).generate(0)
    assert len(t) == 100 and not np.allclose(np.diff(t.arrived_at), 0.5)


# ---------------------------------------------------------------- errors: one line naming the key
@pytest.mark.parametrize("options, key", [
    ({"qps": -1}, "'qps'"), ({"qps": 0}, "'qps'"), ({"qps": "fast"}, "'qps'"),
    ({"subsample": 2}, "'subsample'"), ({"subsample": 0}, "'subsample'"),
    ({"time_window": [5, 1]}, "'time_window'"), ({"time_window": [1]}, "'time_window'"),
    ({"time_window": "0,10"}, "'time_window'"), ({"time_window": [-1, 10]}, "'time_window'"),
    ({"max_requests": 0}, "'max_requests'"), ({"max_requests": 2.5}, "'max_requests'"),
    ({"window": "last"}, "'window'"), ({"overlong": "trim"}, "'overlong'"), ({"arrival": "uniform"}, "'arrival'"),
    ({"cv": 0}, "'cv'"), ({"max_total_tokens": 1}, "'max_total_tokens'"),
])
def test_bad_options_fail_at_construction_with_one_line(tmp_path, options, key):
    path = _trace_file(tmp_path, n=5)
    _one_line_error(lambda: TraceWorkload(path, **options), key)
    _one_line_error(lambda: make_workload({"kind": "trace", "path": path, **options}), key)


def test_missing_file_is_one_line_naming_path_and_file(tmp_path):
    missing = str(tmp_path / "nope.csv")
    msg = _one_line_error(lambda: make_workload({"kind": "trace", "path": missing}), "'path'")
    assert missing in msg and "not found" in msg


@pytest.mark.parametrize("body, pattern", [
    (HEADER + '0,1,1\n"1,2,3\n', "cannot parse CSV"),
    (HEADER + "0,1,1\n1,2\n", r"row 2, column 'num_decode_tokens': non-numeric"),
    (HEADER + "0,1,1\n1,,1\n", r"row 2, column 'num_prefill_tokens': non-numeric value, got ''"),
    (HEADER + "0,1,1\n1,1,NaN\n", r"row 2, column 'num_decode_tokens': non-numeric"),
    (HEADER + "0,1,1\n1,1,3000000000\n", r"row 2, column 'num_decode_tokens': length must be an integer"),
    ("", "cannot parse CSV"),
])
def test_malformed_files_are_one_line_with_row_and_column(tmp_path, body, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    msg = _one_line_error(lambda: load_trace(path), str(path))
    assert re.search(pattern, msg), msg


def test_rows_are_counted_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(trace_csv, "_CHUNK_ROWS", 7)
    lines = [f"{i},1,1" for i in range(30)]
    for bad_line, pattern in (("22,x,1", r"row 23, column 'num_prefill_tokens': non-numeric value, got 'x'"),
                              ("5,1,1", r"row 23, column 'arrived_at': times not sorted.*got 5")):
        path = tmp_path / "chunks.csv"
        path.write_text(HEADER + "\n".join(lines[:22] + [bad_line] + lines[23:]) + "\n")
        trace_csv.clear_trace_cache()
        assert re.search(pattern, _one_line_error(lambda: load_trace(path), "row 23"))
    path.write_text(HEADER + " 0 , 5 ,1\r\n" + "\r\n".join(lines[1:]) + "\r\n")  # spaces, CRLF
    t = load_trace(path)
    assert len(t) == 30 and t.num_prefill_tokens[0] == 5 and t.arrived_at[-1] == 29.0


def test_lone_cr_line_endings_grow_the_arrays(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_text(HEADER.replace("\n", "\r") + "\r".join(f"{i},2,3" for i in range(50)) + "\r", newline="")
    assert len(load_trace(path)) == 50


# ---------------------------------------------------------------- the cache
def test_generate_parses_the_file_once_per_process(tmp_path, monkeypatch):
    calls = []
    parse = trace_csv._parse_csv
    monkeypatch.setattr(trace_csv, "_parse_csv", lambda path: calls.append(path) or parse(path))
    path = _trace_file(tmp_path)
    w = TraceWorkload(path, max_requests=10)
    for seed in range(5):
        w.generate(seed)
    TraceWorkload(path, subsample=0.5).generate(0)  # another workload on the same file
    assert len(calls) == 1
    _trace_file(tmp_path, n=150)  # rewritten: other size and mtime
    os.utime(path, ns=(0, 0))
    assert len(w.generate(0)) == 10 and len(calls) == 2
    assert len(TraceWorkload(path).generate(0)) == 150
    cached = trace_csv.read_trace_file(path)
    assert cached.num_decode_tokens.dtype == np.int32 and not cached.num_decode_tokens.flags.writeable


# ---------------------------------------------------------------- make_workload
def test_unknown_keys_name_the_kind_they_belong_to(tmp_path):
    with pytest.raises(ValueError) as ei:
        make_workload({"kind": "trace", "path": _trace_file(tmp_path, n=5), "num_requests": 9, "prefill": {},
                       "burst": 1})
    msg = str(ei.value)
    assert "\n" not in msg and "('num_requests', 'prefill' only apply to kind=synthetic)" in msg and "'burst'" in msg
    w = make_workload({"kind": "trace", "path": _trace_file(tmp_path, n=5), "arrival": "gamma", "cv": 2,
                       "qps": 3, "overlong": "clip", "max_total_tokens": 64, "window": "first"})
    assert isinstance(w, TraceWorkload) and w.cv == 2.0 and len(w.generate(0)) == 5


def test_synthetic_arrivals_unchanged_by_the_shared_renewal_process():
    spec = {"prefill": {"kind": "fixed", "value": 5}, "decode": {"kind": "fixed", "value": 5}}
    for arrival, cv in (("poisson", 1.0), ("gamma", 2.0)):
        t = SyntheticWorkload(50, 4.0, arrival=arrival, cv=cv, start_time=1.0, **spec).generate(7)
        rng = np.random.default_rng(np.random.SeedSequence(7).spawn(4)[0])
        k = 1 / cv ** 2
        gaps = rng.exponential(0.25, 50) if arrival == "poisson" else rng.gamma(k, 0.25 / k, 50)
        assert np.array_equal(t.arrived_at, 1.0 + np.cumsum(gaps))
