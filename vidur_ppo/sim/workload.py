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
This module holds the synthetic generator and `make_workload`; trace replay lives in
`vidur_ppo.sim.trace` (re-exported here). Neither imports vidur; a separate driver
turns a :class:`Trace` into vidur requests.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Protocol, Union

import numpy as np

from vidur_ppo.sim.trace import TRACE_COLUMNS, Trace, TraceError, TraceWorkload, load_trace, renewal_arrivals
from vidur_ppo.sim.trace import coerce_number as _coerce

__all__ = [
    "Trace", "TraceError", "LengthDist", "FixedLength", "UniformLength", "ZipfLength",
    "LognormalLength", "make_length_dist", "SyntheticWorkload", "TraceWorkload",
    "load_trace", "make_workload", "TRACE_COLUMNS",
]

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


def _check_keys(spec: Mapping, allowed: Sequence[str], required: Sequence[str], where: str,
                hint: Callable[[list], str] = lambda extra: "") -> None:
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}{hint(extra)}; allowed: {sorted(allowed)}")
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
        n = self.num_requests
        return Trace(self.start_time + renewal_arrivals(r_arr, n, qps, self.arrival, self.cv),
                     make_length_dist(self.prefill).sample(r_pre, n),
                     make_length_dist(self.decode).sample(r_dec, n))


Workload = Union[SyntheticWorkload, TraceWorkload]
_WORKLOAD_KEYS = {
    "synthetic": (SyntheticWorkload, ["num_requests", "qps", "arrival", "cv", "prefill", "decode",
                                      "start_time", "qps_max"], ["num_requests", "qps", "prefill", "decode"]),
    "trace": (TraceWorkload, [f.name for f in fields(TraceWorkload)], ["path"]),
}


def _other_kinds_hint(kind: str, extra: list) -> str:
    """Names the kind an unknown key belongs to (a synthetic spec merged onto a trace one)."""
    parts = [f"{', '.join(repr(k) for k in extra if k in keys)} only apply to kind={other}"
             for other, (_, keys, _) in _WORKLOAD_KEYS.items() if other != kind and any(k in keys for k in extra)]
    return f" ({'; '.join(parts)})" if parts else ""


def make_workload(spec: Mapping) -> Workload:
    """Build a workload from a config dict with ``kind: synthetic | trace``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"workload spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _WORKLOAD_KEYS:
        raise ValueError(f"workload spec: 'kind' must be one of {sorted(_WORKLOAD_KEYS)}, got {kind!r}")
    cls, allowed, required = _WORKLOAD_KEYS[kind]
    _check_keys(spec, ["kind", *allowed], required, f"workload spec (kind={kind})",
                lambda extra: _other_kinds_hint(kind, extra))
    return cls(**{k: spec[k] for k in allowed if k in spec})
