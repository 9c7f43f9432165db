"""Trace replay: the request list (`Trace`) and the options that make a real trace usable.

Replay options apply in this order: time_window, subsample, drop over-long requests, a window of
max_requests rows (its start picked by the seed, or the first rows), clip over-long requests,
then arrival times (the trace's, rescaled to qps if given, or generated at qps for a length-only
trace). Token lengths are never rescaled. A file's prefix hashes (a session CSV, a Mooncake JSONL) stay
with their requests through every step; a clipped prompt keeps the hashes of its whole blocks. Reading
the files (CSV, session CSV, JSONL) lives in `trace_csv`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from vidur_ppo.sim.prefix_hash import PREFIX_BLOCK_TOKENS
from vidur_ppo.sim.trace_csv import (FORMATS, MAX_LENGTH, TRACE_COLUMNS, TraceError, check_path, file_format,
                                     read_trace_file)

__all__ = ["Trace", "TraceError", "TraceWorkload", "load_trace", "renewal_arrivals", "coerce_number",
           "TRACE_COLUMNS", "ARRIVALS", "WINDOWS", "OVERLONG", "FORMATS"]

ARRIVALS = ("trace", "poisson", "gamma")  # "trace": the file's arrived_at column
WINDOWS = ("seed", "first")  # where a max_requests window starts: picked by the seed, or row 0
OVERLONG = ("error", "clip", "drop")  # what to do with requests over max_total_tokens
# independent random streams of an episode seed (the subsample keeps default_rng(seed), as before)
_WINDOW_STREAM, _ARRIVAL_STREAM = 0x71D0, 0xA441


# --------------------------------------------------------------------------- trace
@dataclass(frozen=True, eq=False)
class Trace:
    """Immutable request list: arrival times (s) and prefill/decode token counts.

    Arrays are copied and made read-only; ``==`` is identity (compare arrays explicitly).
    ``num_clipped``/``num_dropped`` count over-long requests a replay clipped or dropped.
    ``prefix_hashes`` (optional, for prefix caching): per request, the hashes of its prompt's blocks of
    ``prefix_block_tokens`` tokens, in order, each naming the whole prefix up to its block's end (equal
    hashes mean a reusable prefix, as vLLM's block hashes and the Mooncake trace's ``hash_ids``); at most
    ceil(prompt / prefix_block_tokens) of them (a trailing partial block may be hashed, it is never reused).
    """

    arrived_at: np.ndarray
    num_prefill_tokens: np.ndarray
    num_decode_tokens: np.ndarray
    num_clipped: int = 0
    num_dropped: int = 0
    prefix_hashes: Optional[tuple] = None
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS

    def __post_init__(self) -> None:
        t = np.array(self.arrived_at, dtype=np.float64)
        p = np.array(self.num_prefill_tokens, dtype=np.int64)
        d = np.array(self.num_decode_tokens, dtype=np.int64)
        if t.ndim != 1 or p.ndim != 1 or d.ndim != 1:
            raise ValueError("Trace arrays must be 1-D")
        if not (len(t) == len(p) == len(d)):
            raise ValueError(f"Trace arrays differ in length: arrived_at={len(t)}, "
                             f"num_prefill_tokens={len(p)}, num_decode_tokens={len(d)}")
        if len(t) == 0:
            raise ValueError("Trace is empty")
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("Trace arrived_at must be finite and >= 0")
        bad = np.flatnonzero(np.diff(t) < 0)
        if bad.size:
            raise ValueError(f"Trace arrived_at not sorted: index {bad[0] + 1} is earlier than index {bad[0]}")
        for name, a in (("num_prefill_tokens", p), ("num_decode_tokens", d)):
            if np.any(a < 1):
                raise ValueError(f"Trace {name} must be >= 1 (index {int(np.argmax(a < 1))})")
        for name, a in (("arrived_at", t), ("num_prefill_tokens", p), ("num_decode_tokens", d)):
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        if self.prefix_hashes is not None:
            object.__setattr__(self, "prefix_hashes", self._checked_hashes(p))

    def _checked_hashes(self, p: np.ndarray) -> tuple:
        g = self.prefix_block_tokens
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
            raise ValueError(f"Trace prefix_block_tokens must be a positive integer, got {g!r}")
        if len(self.prefix_hashes) != len(p):
            raise ValueError(f"Trace prefix_hashes has {len(self.prefix_hashes)} entries for {len(p)} requests")
        out = []
        for i, h in enumerate(self.prefix_hashes):
            a = np.array(h, dtype=np.int64).reshape(-1)
            if len(a) > -(-int(p[i]) // g):
                raise ValueError(f"Trace prefix_hashes[{i}] has {len(a)} blocks of {g} tokens for a "
                                 f"{int(p[i])}-token prompt")
            a.setflags(write=False)
            out.append(a)
        return tuple(out)

    def rows(self, index: np.ndarray, arrived_at: Optional[np.ndarray] = None) -> "Trace":
        """The requests at `index` (in that order), their prefix hashes kept; new arrival times if given."""
        index = np.asarray(index, dtype=np.int64)
        hashes = None if self.prefix_hashes is None else tuple(self.prefix_hashes[i] for i in index)
        t = self.arrived_at[index] if arrived_at is None else arrived_at
        return Trace(t, self.num_prefill_tokens[index], self.num_decode_tokens[index],
                     prefix_hashes=hashes, prefix_block_tokens=self.prefix_block_tokens)

    def __len__(self) -> int:
        return len(self.arrived_at)

    @property
    def total_tokens(self) -> int:
        return int(self.num_prefill_tokens.sum() + self.num_decode_tokens.sum())

    @property
    def max_total_tokens(self) -> int:
        """Largest prefill+decode of one request (must fit the model's context)."""
        return int((self.num_prefill_tokens + self.num_decode_tokens).max())

    @property
    def max_prefill_tokens(self) -> int:
        return int(self.num_prefill_tokens.max())

    @property
    def duration(self) -> float:
        """Seconds from first to last arrival."""
        return float(self.arrived_at[-1] - self.arrived_at[0])

    @property
    def qps(self) -> float:
        """Mean arrival rate (n-1)/duration; nan for 1 request, inf if all arrive at once."""
        if len(self) < 2:
            return float("nan")
        return (len(self) - 1) / self.duration if self.duration > 0 else float("inf")

    def prefix_reuse(self) -> float:
        """Share of prompt tokens in whole blocks whose prefix an earlier request (in arrival order) already
        had: what a prefix cache that never evicts could skip; nan without prefix hashes."""
        if self.prefix_hashes is None:
            return float("nan")
        g, seen, reused = self.prefix_block_tokens, set(), 0
        for p, hashes in zip(self.num_prefill_tokens, self.prefix_hashes):
            keys = hashes.tolist()
            run = next((j for j, h in enumerate(keys) if h not in seen), len(keys))
            reused += min(run, int(p) // g) * g
            seen.update(keys)
        return reused / float(self.num_prefill_tokens.sum())

    def to_csv(self, path: str | os.PathLike) -> None:
        pd.DataFrame({c: getattr(self, c) for c in TRACE_COLUMNS}).to_csv(path, index=False)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"num_requests": len(self), "duration_s": self.duration, "qps": self.qps,
                                 "total_tokens": self.total_tokens, "num_clipped": self.num_clipped,
                                 "num_dropped": self.num_dropped}
        for name, a in (("prefill", self.num_prefill_tokens), ("decode", self.num_decode_tokens)):
            out.update({f"{name}_mean": float(a.mean()), f"{name}_p50": float(np.median(a)),
                        f"{name}_p99": float(np.percentile(a, 99)), f"{name}_max": int(a.max())})
        if self.prefix_hashes is not None:
            out["prefix_reuse"] = self.prefix_reuse()
        return out


def renewal_arrivals(rng: np.random.Generator, n: int, qps: float, arrival: str = "poisson",
                     cv: float = 1.0) -> np.ndarray:
    """Arrival times of a renewal process at mean rate qps: exponential gaps (Poisson), or gamma
    gaps with coefficient of variation cv (bursty for cv > 1). Shared by synthetic workloads and
    length-only trace replay, so both mean the same thing by `arrival`/`cv`."""
    mean_gap = 1.0 / qps
    if arrival == "poisson":
        gaps = rng.exponential(mean_gap, n)
    else:  # gamma with shape k = 1/cv^2 has mean k*scale and CV 1/sqrt(k)
        k = 1.0 / cv ** 2
        gaps = rng.gamma(k, mean_gap / k, n)
    return np.cumsum(gaps)


def coerce_number(key: str, value: Any, typ: type, where: str, error: type = ValueError) -> Any:
    """int/float from config values; rejects bools, strings, non-finite and non-integral ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"{where}: '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise error(f"{where}: '{key}' must be finite, got {value!r}")
    if typ is int:
        if float(value) != int(value):
            raise error(f"{where}: '{key}' must be an integer, got {value!r}")
        return int(value)
    return float(value)


# ----------------------------------------------------------------------- replay
_WHERE = "trace workload"


def _require(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise TraceError(f"{_WHERE}: '{key}' {what}, got {value!r}")


@dataclass
class TraceWorkload:
    """A trace file (CSV, session CSV or Mooncake JSONL, `format`) plus replay options (the module
    docstring gives their order).

    The seed picks the subsample, the window's start (window="seed" and max_requests smaller than
    what is left) and generated arrivals. window="first" without subsample replays the same
    requests for every seed, as before windows existed."""

    path: str
    qps: Optional[float] = None  # rescale the trace's times to this mean rate, or the generated rate
    time_window: Optional[Sequence[float]] = None  # [start, end) in trace seconds, shifted to 0
    subsample: Optional[float] = None  # keep each row with this probability
    max_requests: Optional[int] = None  # the window's size
    window: str = "seed"
    arrival: str = "trace"
    cv: float = 1.0  # of gamma inter-arrival gaps
    overlong: str = "error"
    max_total_tokens: Optional[int] = None  # prefill + decode limit for `overlong`
    format: str = "auto"  # csv (a session_id column: a session trace) | jsonl (Mooncake) | auto: by suffix

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        file_format(self.path, self.format)
        self.format = str(self.format)
        check_path(self.path)
        for key, typ in (("qps", float), ("subsample", float), ("max_requests", int), ("max_total_tokens", int)):
            if getattr(self, key) is not None:
                setattr(self, key, coerce_number(key, getattr(self, key), typ, _WHERE, TraceError))
        self.cv = coerce_number("cv", self.cv, float, _WHERE, TraceError)
        _require(self.qps is None or self.qps > 0, "qps", "must be > 0", self.qps)
        _require(self.subsample is None or 0 < self.subsample <= 1, "subsample", "must be in (0, 1]", self.subsample)
        _require(self.max_requests is None or self.max_requests >= 1, "max_requests", "must be >= 1",
                 self.max_requests)
        _require(self.max_total_tokens is None or 2 <= self.max_total_tokens <= MAX_LENGTH, "max_total_tokens",
                 f"must be in [2, {MAX_LENGTH}]", self.max_total_tokens)
        _require(self.cv > 0, "cv", "must be > 0", self.cv)
        for key, choices in (("window", WINDOWS), ("arrival", ARRIVALS), ("overlong", OVERLONG)):
            _require(getattr(self, key) in choices, key, f"must be one of {list(choices)}", getattr(self, key))
            setattr(self, key, str(getattr(self, key)))  # a config's enum member: its name, in messages too
        _require(self.arrival == "trace" or self.qps is not None, "qps",
                 f"is needed to generate arrivals (arrival={self.arrival})", self.qps)
        if self.time_window is not None:
            tw = self.time_window
            _require(not isinstance(tw, (str, bytes)) and isinstance(tw, Sequence) and len(tw) == 2,
                     "time_window", "must be [start, end]", tw)
            start, end = (coerce_number("time_window", x, float, _WHERE, TraceError) for x in tw)
            _require(0 <= start < end, "time_window", "needs 0 <= start < end", tw)
            self.time_window = (start, end)

    def with_token_limit(self, limit: int) -> "TraceWorkload":
        """This workload with max_total_tokens at most `limit` (the cluster's per-request limit)."""
        own = self.max_total_tokens
        return replace(self, max_total_tokens=int(limit) if own is None else min(own, int(limit)))

    def generate(self, seed: int = 0) -> Trace:
        f = read_trace_file(self.path, self.format)
        # the columns a replay selects rows of; "row" (file row numbers) only to pick prefix hashes
        cols = {"t": f.arrived_at, "p": f.num_prefill_tokens, "d": f.num_decode_tokens,
                "row": None if f.prefix_hashes is None else np.arange(len(f.num_prefill_tokens))}
        if cols["t"] is None and (self.arrival == "trace" or self.time_window is not None):
            raise TraceError(f"{self.path}: no 'arrived_at' column; a length-only trace needs 'arrival' "
                             f"poisson or gamma (with 'qps') and no 'time_window'")
        if self.time_window is not None:
            lo, hi = np.searchsorted(cols["t"], self.time_window, side="left")
            cols = _take(cols, slice(lo, hi))
            cols["t"] = cols["t"] - self.time_window[0]
        if self.subsample is not None:
            cols = _take(cols, np.random.default_rng(seed).random(len(cols["p"])) < self.subsample)
        cols, dropped = self._window(cols, seed)
        p, d, clipped = self._fit_tokens(cols["p"], cols["d"])
        hashes = None
        if f.prefix_hashes is not None:  # a clipped prompt keeps its whole blocks' hashes
            g = f.prefix_block_tokens
            hashes = tuple(f.prefix_hashes[r] if n == p0 else f.prefix_hashes[r][: n // g]
                           for r, n, p0 in zip(cols["row"].tolist(), p.tolist(), cols["p"].tolist()))
        return Trace(self._arrivals(cols["t"], len(p), seed), p, d, num_clipped=clipped, num_dropped=dropped,
                     prefix_hashes=hashes, prefix_block_tokens=f.prefix_block_tokens)

    def every_request(self) -> Trace:
        """Every row a replay of any seed could hold (the time window's, not subsampled, none
        dropped or clipped), arrivals at 0: what a whole-file check reads (row i is file row i + 1)."""
        f = read_trace_file(self.path, self.format)
        p, d = f.num_prefill_tokens, f.num_decode_tokens
        if self.time_window is not None and f.arrived_at is not None:
            lo, hi = np.searchsorted(f.arrived_at, self.time_window, side="left")
            p, d = p[lo:hi], d[lo:hi]
        if len(p) == 0:
            raise TraceError(f"{self.path}: no requests in time_window={self.time_window!r}")
        return Trace(np.zeros(len(p)), p, d)

    def _token_limit(self) -> int:
        if self.max_total_tokens is None:
            raise TraceError(f"{_WHERE}: 'overlong'={self.overlong!r} needs 'max_total_tokens' "
                             "(the cluster's per-request token limit)")
        return self.max_total_tokens

    def _window(self, cols: dict, seed: int):
        """max_requests rows of those left after dropping over-long ones. A window after row 0 has
        its times shifted so that the previous row arrived at 0 (its first gap is kept)."""
        p, d, t = cols["p"], cols["d"], cols["t"]
        bad = np.flatnonzero(p > self._token_limit() - d) if self.overlong == "drop" else np.empty(0, np.int64)
        n_left = len(p) - len(bad)
        if n_left == 0:
            raise TraceError(f"{self.path}: no requests left after time_window={self.time_window!r}, "
                             f"subsample={self.subsample!r}, overlong={self.overlong!r}")
        size = n_left if self.max_requests is None else min(self.max_requests, n_left)
        first = 0
        if self.window == "seed" and size < n_left:
            first = int(np.random.default_rng([seed, _WINDOW_STREAM]).integers(0, n_left - size + 1))
        kept_before_bad = bad - np.arange(len(bad))  # kept row k is row k + #(kept_before_bad <= k)
        lo = first + int(np.searchsorted(kept_before_bad, first, side="right"))
        last = first + size - 1
        hi = last + int(np.searchsorted(kept_before_bad, last, side="right")) + 1
        inner = bad[(bad >= lo) & (bad < hi)] - lo
        out = {k: None if v is None else np.delete(v[lo:hi], inner) for k, v in cols.items()}
        if t is not None:
            out["t"] = out["t"] - (t[lo - 1] if lo > 0 else 0.0)
        return out, len(inner)

    def _fit_tokens(self, p: np.ndarray, d: np.ndarray):
        """Requests over the token limit: "error" names the first; "clip" trims the prompt as vidur's
        own replayer does (and the output too where it alone reaches the limit)."""
        limit = self.max_total_tokens if self.overlong == "error" else self._token_limit()
        over = (p.astype(np.int64) + d > limit) if limit is not None else np.zeros(len(p), bool)
        if not over.any():
            return p, d, 0
        if self.overlong == "error":
            i = int(np.argmax(over))
            raise TraceError(f"{self.path}: request {i} of the replay (prefill={int(p[i])}, decode={int(d[i])}) "
                             f"exceeds max_total_tokens={limit} ({int(over.sum())} such); set 'overlong' "
                             "to clip or drop")
        d = np.minimum(d, limit - 1)
        return np.minimum(p, limit - d), d, int(over.sum())

    def _arrivals(self, t: Optional[np.ndarray], n: int, seed: int) -> np.ndarray:
        if self.arrival != "trace":
            rng = np.random.default_rng([seed, _ARRIVAL_STREAM])
            return renewal_arrivals(rng, n, self.qps, self.arrival, self.cv)
        if self.qps is None:
            return t
        if n < 2 or t[-1] <= t[0]:
            raise TraceError(f"{self.path}: cannot rescale to qps={self.qps}: need >= 2 distinct arrival times")
        return t * ((n - 1) / (t[-1] - t[0]) / self.qps)


def _take(cols: dict, sel) -> dict:
    """The rows `sel` (a slice or mask) of every column present."""
    return {k: None if v is None else v[sel] for k, v in cols.items()}


def load_trace(path: str | os.PathLike, *, seed: int = 0, window: str = "first", **options: Any) -> Trace:
    """Replay a trace file once with `TraceWorkload`'s options (here a max_requests window is the
    first rows unless window="seed")."""
    return TraceWorkload(path, window=window, **options).generate(seed)
