"""Request workloads: seeded synthetic arrivals/lengths and honest trace replay.

Why this exists instead of vidur's own generators (vidur 0.0.26):

* its Poisson interval generator clips every gap at 3/qps, so arrivals are not
  Poisson (bursts and lulls are cut off);
* its uniform length generator draws one total length and splits it by a fixed
  prompt:decode ratio, so prefill and decode are perfectly correlated;
* its trace replay expects other column names and silently rescales prompt
  lengths (x0.3) and time (x0.04).

Here arrivals and lengths are generated with numpy from an explicit seed, and
user traces are replayed as written (any rescaling is an explicit option).
This module deliberately does not import vidur; a separate driver turns a
:class:`Trace` into vidur requests.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union

import numpy as np
import pandas as pd

__all__ = [
    "Trace", "TraceError", "LengthDist", "FixedLength", "UniformLength", "ZipfLength",
    "LognormalLength", "make_length_dist", "SyntheticWorkload", "TraceWorkload",
    "load_trace", "make_workload", "TRACE_COLUMNS",
]

TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


class TraceError(ValueError):
    """A trace file is unusable; the message names the file and row/column."""


# --------------------------------------------------------------------------- trace
@dataclass(frozen=True, eq=False)
class Trace:
    """Immutable request list: arrival times (s) and prefill/decode token counts.

    Arrays are copied and made read-only; ``==`` is identity (compare arrays explicitly).
    """

    arrived_at: np.ndarray
    num_prefill_tokens: np.ndarray
    num_decode_tokens: np.ndarray

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

    def to_csv(self, path: str | os.PathLike) -> None:
        pd.DataFrame({c: getattr(self, c) for c in TRACE_COLUMNS}).to_csv(path, index=False)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"num_requests": len(self), "duration_s": self.duration,
                                 "qps": self.qps, "total_tokens": self.total_tokens}
        for name, a in (("prefill", self.num_prefill_tokens), ("decode", self.num_decode_tokens)):
            out.update({f"{name}_mean": float(a.mean()), f"{name}_p50": float(np.median(a)),
                        f"{name}_p99": float(np.percentile(a, 99)), f"{name}_max": int(a.max())})
        return out


# ------------------------------------------------------------------ length dists
class LengthDist(Protocol):
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...


def _check_bounds(min: int, max: int) -> None:
    if min < 1:
        raise ValueError(f"'min' must be >= 1, got {min}")
    if max < min:
        raise ValueError(f"'max' ({max}) must be >= 'min' ({min})")


@dataclass(frozen=True)
class FixedLength:
    value: int

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"'value' must be >= 1, got {self.value}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


@dataclass(frozen=True)
class UniformLength:
    """Uniform over the integers min..max inclusive."""
    min: int
    max: int

    def __post_init__(self) -> None:
        _check_bounds(self.min, self.max)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.min, self.max, size=n, endpoint=True, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _zipf_cdf(theta: float, lo: int, hi: int) -> np.ndarray:
    w = np.arange(1, hi - lo + 2, dtype=np.float64) ** -theta
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


@dataclass(frozen=True)
class ZipfLength:
    """Bounded Zipf: P(min + k - 1) ∝ k^-theta for rank k = 1..max-min+1 (short-heavy)."""
    theta: float
    min: int
    max: int

    def __post_init__(self) -> None:
        if not self.theta > 0:
            raise ValueError(f"'theta' must be > 0, got {self.theta}")
        _check_bounds(self.min, self.max)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cdf = _zipf_cdf(float(self.theta), self.min, self.max)
        idx = np.searchsorted(cdf, rng.random(n), side="right")
        return self.min + np.minimum(idx, len(cdf) - 1).astype(np.int64)


@dataclass(frozen=True)
class LognormalLength:
    """median * exp(sigma * N(0,1)), rounded and clipped to [min, max]."""
    median: float
    sigma: float
    min: int
    max: int

    def __post_init__(self) -> None:
        if not self.median > 0:
            raise ValueError(f"'median' must be > 0, got {self.median}")
        if not self.sigma > 0:
            raise ValueError(f"'sigma' must be > 0, got {self.sigma}")
        _check_bounds(self.min, self.max)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = np.rint(self.median * np.exp(self.sigma * rng.standard_normal(n)))
        return np.clip(x, self.min, self.max).astype(np.int64)


_LENGTH_KINDS: dict[str, tuple[type, dict[str, type]]] = {
    "fixed": (FixedLength, {"value": int}),
    "uniform": (UniformLength, {"min": int, "max": int}),
    "zipf": (ZipfLength, {"theta": float, "min": int, "max": int}),
    "lognormal": (LognormalLength, {"median": float, "sigma": float, "min": int, "max": int}),
}


def _coerce(key: str, value: Any, typ: type, where: str) -> Any:
    """int/float from config values; rejects bools, strings and non-integral ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: '{key}' must be finite, got {value!r}")
    if typ is int:
        if float(value) != int(value):
            raise ValueError(f"{where}: '{key}' must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_keys(spec: Mapping, allowed: Sequence[str], required: Sequence[str], where: str) -> None:
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; required: {list(required)}")


def make_length_dist(spec: Mapping) -> LengthDist:
    """Build a length distribution from a config dict like {"kind": "uniform", "min": 1, "max": 9}."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"length spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _LENGTH_KINDS:
        raise ValueError(f"length spec: 'kind' must be one of {sorted(_LENGTH_KINDS)}, got {kind!r}")
    cls, params = _LENGTH_KINDS[kind]
    where = f"length spec (kind={kind})"
    _check_keys(spec, ["kind", *params], list(params), where)
    kwargs = {k: _coerce(k, spec[k], t, where) for k, t in params.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}; keys: {list(params)}") from None


# ------------------------------------------------------------------- synthetic
@dataclass
class SyntheticWorkload:
    """Renewal-process arrivals (Poisson or gamma) with independent prefill/decode lengths.

    With `qps_max`, each episode's rate is drawn uniformly from [qps, qps_max] by its seed, so
    training sees every load in between (domain randomisation over load)."""

    num_requests: int
    qps: float
    arrival: str = "poisson"
    cv: float = 1.0
    prefill: Mapping = field(kw_only=True)
    decode: Mapping = field(kw_only=True)
    start_time: float = 0.0
    qps_max: Optional[float] = None

    def __post_init__(self) -> None:
        w = "synthetic workload"
        self.num_requests = _coerce("num_requests", self.num_requests, int, w)
        self.qps, self.cv, self.start_time = (_coerce(k, getattr(self, k), float, w)
                                              for k in ("qps", "cv", "start_time"))
        if self.num_requests < 1:
            raise ValueError(f"{w}: 'num_requests' must be >= 1, got {self.num_requests}")
        if self.qps <= 0:
            raise ValueError(f"{w}: 'qps' must be > 0, got {self.qps}")
        if self.cv <= 0:
            raise ValueError(f"{w}: 'cv' must be > 0, got {self.cv}")
        if self.start_time < 0:
            raise ValueError(f"{w}: 'start_time' must be >= 0, got {self.start_time}")
        if self.qps_max is not None:
            self.qps_max = _coerce("qps_max", self.qps_max, float, w)
            if self.qps_max < self.qps:
                raise ValueError(f"{w}: 'qps_max' must be >= 'qps' ({self.qps}), got {self.qps_max}")
        if self.arrival not in ("poisson", "gamma"):
            raise ValueError(f"{w}: 'arrival' must be 'poisson' or 'gamma', got {self.arrival!r}")
        make_length_dist(self.prefill), make_length_dist(self.decode)  # fail early on bad specs

    def generate(self, seed: int) -> Trace:
        """Same seed -> same trace; arrivals/prefill/decode use independent sub-streams."""
        r_arr, r_pre, r_dec, r_qps = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
        qps = self.qps if self.qps_max is None else float(r_qps.uniform(self.qps, self.qps_max))
        n, mean_gap = self.num_requests, 1.0 / qps
        if self.arrival == "poisson":
            gaps = r_arr.exponential(mean_gap, n)
        else:  # gamma with shape k = 1/cv^2 has mean k*scale and CV 1/sqrt(k)
            k = 1.0 / self.cv ** 2
            gaps = r_arr.gamma(k, mean_gap / k, n)
        return Trace(self.start_time + np.cumsum(gaps),
                     make_length_dist(self.prefill).sample(r_pre, n),
                     make_length_dist(self.decode).sample(r_dec, n))


# ----------------------------------------------------------------------- replay
def _read_trace_csv(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise TraceError(f"{path}: trace file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot parse CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise TraceError(f"{path}: missing column(s) {missing}; found columns {list(df.columns)}")
    if len(df) == 0:
        raise TraceError(f"{path}: trace has no data rows")
    cols = []
    for c in TRACE_COLUMNS:
        raw = df[c].str.strip()
        v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{path}: row {i + 1}, column '{c}': non-numeric value {raw.iloc[i]!r}")
        if c == "arrived_at":
            bad = v < 0
            what = "negative time"
        else:
            bad = (v < 1) | (v != np.floor(v))
            what = "length must be an integer >= 1"
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{path}: row {i + 1}, column '{c}': {what}, got {raw.iloc[i]!r}")
        cols.append(v)
    dec = np.flatnonzero(np.diff(cols[0]) < 0)
    if dec.size:
        i = int(dec[0]) + 1
        raise TraceError(f"{path}: row {i + 1}, column 'arrived_at': times not sorted "
                         f"({cols[0][i]!r} < previous {cols[0][i - 1]!r})")
    return cols[0], cols[1].astype(np.int64), cols[2].astype(np.int64)


def load_trace(path: str | os.PathLike, *, qps: float | None = None,
               time_window: Sequence[float] | None = None, subsample: float | None = None,
               max_requests: int | None = None, seed: int = 0) -> Trace:
    """Replay a CSV trace (arrived_at,num_prefill_tokens,num_decode_tokens) with no hidden scaling.

    Options apply in order: time_window [start, end) then shift to start; subsample (keep each
    row with probability ``subsample``, seeded); max_requests (first N); qps (scale all times so
    the mean arrival rate equals ``qps``). Token lengths are never changed.
    """
    path = os.fspath(path)
    t, p, d = _read_trace_csv(path)
    if time_window is not None:
        if len(time_window) != 2:
            raise TraceError(f"{path}: time_window must be (start, end), got {time_window!r}")
        start, end = float(time_window[0]), float(time_window[1])
        if not 0 <= start < end:
            raise TraceError(f"{path}: time_window needs 0 <= start < end, got {time_window!r}")
        keep = (t >= start) & (t < end)
        t, p, d = t[keep] - start, p[keep], d[keep]
    if subsample is not None:
        if not 0 < subsample <= 1:
            raise TraceError(f"{path}: subsample must be in (0, 1], got {subsample!r}")
        keep = np.random.default_rng(seed).random(len(t)) < subsample
        t, p, d = t[keep], p[keep], d[keep]
    if max_requests is not None:
        if max_requests < 1:
            raise TraceError(f"{path}: max_requests must be >= 1, got {max_requests!r}")
        t, p, d = t[:max_requests], p[:max_requests], d[:max_requests]
    if len(t) == 0:
        raise TraceError(f"{path}: no requests left after time_window={time_window!r}, "
                         f"subsample={subsample!r}, max_requests={max_requests!r}")
    trace = Trace(t, p, d)
    if qps is not None:
        if not qps > 0:
            raise TraceError(f"{path}: qps must be > 0, got {qps!r}")
        if trace.duration <= 0:
            raise TraceError(f"{path}: cannot rescale to qps={qps}: need >= 2 distinct arrival times")
        trace = Trace(t * (trace.qps / qps), p, d)
    return trace


@dataclass
class TraceWorkload:
    """A CSV trace plus replay options; the seed only affects subsampling."""

    path: str
    qps: float | None = None
    time_window: Sequence[float] | None = None
    subsample: float | None = None
    max_requests: int | None = None

    def generate(self, seed: int = 0) -> Trace:
        return load_trace(self.path, qps=self.qps, time_window=self.time_window,
                          subsample=self.subsample, max_requests=self.max_requests, seed=seed)


Workload = Union[SyntheticWorkload, TraceWorkload]
_WORKLOAD_KEYS = {
    "synthetic": (SyntheticWorkload, ["num_requests", "qps", "arrival", "cv", "prefill", "decode",
                                      "start_time", "qps_max"], ["num_requests", "qps", "prefill", "decode"]),
    "trace": (TraceWorkload, ["path", "qps", "time_window", "subsample", "max_requests"], ["path"]),
}


def make_workload(spec: Mapping) -> Workload:
    """Build a workload from a config dict with ``kind: synthetic | trace``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"workload spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _WORKLOAD_KEYS:
        raise ValueError(f"workload spec: 'kind' must be one of {sorted(_WORKLOAD_KEYS)}, got {kind!r}")
    cls, allowed, required = _WORKLOAD_KEYS[kind]
    _check_keys(spec, ["kind", *allowed], required, f"workload spec (kind={kind})")
    kwargs = {k: spec[k] for k in allowed if k in spec}
    if kind == "trace" and kwargs.get("time_window") is not None:
        kwargs["time_window"] = tuple(kwargs["time_window"])
    return cls(**kwargs)
