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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Protocol, Union

import numpy as np

from vidur_ppo.sim.trace import TRACE_COLUMNS, Trace, TraceError, TraceWorkload, load_trace, renewal_arrivals
from vidur_ppo.sim.trace import coerce_number as _coerce

__all__ = [
    "Trace", "TraceError", "LengthDist", "FixedLength", "UniformLength", "ZipfLength",
    "LognormalLength", "MixtureLength", "make_length_dist", "SyntheticWorkload", "TraceWorkload",
    "load_trace", "make_workload", "mmpp_arrivals", "diurnal_arrivals", "SYNTHETIC_ARRIVALS",
    "TRACE_COLUMNS",
]

# ------------------------------------------------------------------ length dists
class LengthDist(Protocol):
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        """Lengths as a monotone transform of standard normals (the Gaussian copula of `correlation`)."""
        ...

    def cdf_table(self) -> tuple[int, np.ndarray]:
        """(lo, P(L <= lo + i) for i = 0..hi-lo): the exact distribution on its integer support."""
        ...


_erfc = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64)


class _Quantile:
    """`from_normal` of a distribution given by its CDF table: the inverse CDF at Phi(z)."""

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        lo, cdf = self.cdf_table()
        idx = np.searchsorted(cdf, _normal_cdf(z), side="right")
        return lo + np.minimum(idx, len(cdf) - 1).astype(np.int64)


def _check_bounds(min: int, max: int) -> None:
    if min < 1:
        raise ValueError(f"'min' must be >= 1, got {min}")
    if max < min:
        raise ValueError(f"'max' ({max}) must be >= 'min' ({min})")


@dataclass(frozen=True)
class FixedLength(_Quantile):
    value: int

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"'value' must be >= 1, got {self.value}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)

    def cdf_table(self) -> tuple[int, np.ndarray]:
        return self.value, np.ones(1)


@dataclass(frozen=True)
class UniformLength(_Quantile):
    """Uniform over the integers min..max inclusive."""
    min: int
    max: int

    def __post_init__(self) -> None:
        _check_bounds(self.min, self.max)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.min, self.max, size=n, endpoint=True, dtype=np.int64)

    def cdf_table(self) -> tuple[int, np.ndarray]:
        m = self.max - self.min + 1
        return self.min, np.arange(1, m + 1, dtype=np.float64) / m


@functools.lru_cache(maxsize=64)
def _zipf_cdf(theta: float, lo: int, hi: int) -> np.ndarray:
    w = np.arange(1, hi - lo + 2, dtype=np.float64) ** -theta
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


@dataclass(frozen=True)
class ZipfLength(_Quantile):
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

    def cdf_table(self) -> tuple[int, np.ndarray]:
        return self.min, _zipf_cdf(float(self.theta), self.min, self.max)


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
        return self.from_normal(rng.standard_normal(n))

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        x = np.rint(self.median * np.exp(self.sigma * z))
        return np.clip(x, self.min, self.max).astype(np.int64)

    def cdf_table(self) -> tuple[int, np.ndarray]:
        # P(rint(median e^{sigma Z}) <= k) = Phi((ln(k + 1/2) - ln median) / sigma), clipped to [min, max]
        k = np.arange(self.min, self.max + 1, dtype=np.float64)
        cdf = _normal_cdf((np.log(k + 0.5) - math.log(self.median)) / self.sigma)
        cdf[-1] = 1.0
        return self.min, cdf


@dataclass(frozen=True)
class MixtureLength(_Quantile):
    """A weighted mixture of length distributions: each request draws a component with
    probability weight / sum(weights), then its length from that component."""
    weights: tuple[float, ...]
    components: tuple[LengthDist, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.components) or not self.components:
            raise ValueError(f"'weights' must have one entry per component ({len(self.components)}), "
                             f"got {len(self.weights)}")
        if any(not w > 0 for w in self.weights):
            raise ValueError(f"'weights' must all be > 0, got {list(self.weights)}")

    @property
    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Component index of n requests."""
        cum = np.cumsum(self.probabilities)
        return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(cum) - 1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = self.pick(rng, n)
        out = np.empty(n, dtype=np.int64)
        for j, comp in enumerate(self.components):
            mask = idx == j
            out[mask] = comp.sample(rng, int(mask.sum()))
        return out

    def cdf_table(self) -> tuple[int, np.ndarray]:
        tables = [c.cdf_table() for c in self.components]
        lo = min(t[0] for t in tables)
        hi = max(t[0] + len(t[1]) - 1 for t in tables)
        cdf = np.zeros(hi - lo + 1)
        for p, (clo, ccdf) in zip(self.probabilities, tables):
            part = np.ones(hi - lo + 1)  # 1 above the component's support, 0 below it
            part[: clo - lo] = 0.0
            part[clo - lo: clo - lo + len(ccdf)] = ccdf
            cdf += p * part
        cdf[-1] = 1.0
        return lo, cdf


_LENGTH_KINDS: dict[str, tuple[type, dict[str, type]]] = {
    "fixed": (FixedLength, {"value": int}),
    "uniform": (UniformLength, {"min": int, "max": int}),
    "zipf": (ZipfLength, {"theta": float, "min": int, "max": int}),
    "lognormal": (LognormalLength, {"median": float, "sigma": float, "min": int, "max": int}),
    "mixture": (MixtureLength, {"weights": list, "components": list}),
}


def _check_keys(spec: Mapping, allowed: Sequence[str], required: Sequence[str], where: str,
                hint: Callable[[list], str] = lambda extra: "") -> None:
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra}{hint(extra)}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; required: {list(required)}")


def _mixture_args(spec: Mapping, where: str) -> dict:
    weights, components = spec["weights"], spec["components"]
    for key, value in (("weights", weights), ("components", components)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ValueError(f"{where}: '{key}' must be a list, got {value!r}")
    comps = []
    for i, c in enumerate(components):
        try:
            comps.append(make_length_dist(c))
        except ValueError as e:
            raise ValueError(f"{where}: 'components' [{i}]: {e}") from None
    return {"weights": tuple(_coerce("weights", w, float, where) for w in weights), "components": tuple(comps)}


def make_length_dist(spec: Mapping) -> LengthDist:
    """Build a length distribution from a config dict like {"kind": "uniform", "min": 1, "max": 9};
    {"kind": "mixture", "weights": [3, 1], "components": [spec, spec]} mixes whole specs."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"length spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _LENGTH_KINDS:
        raise ValueError(f"length spec: 'kind' must be one of {sorted(_LENGTH_KINDS)}, got {kind!r}")
    cls, params = _LENGTH_KINDS[kind]
    where = f"length spec (kind={kind})"
    _check_keys(spec, ["kind", *params], list(params), where)
    if kind == "mixture":
        kwargs = _mixture_args(spec, where)
    else:
        kwargs = {k: _coerce(k, spec[k], t, where) for k, t in params.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}; keys: {list(params)}") from None


# ------------------------------------------------------------------- synthetic
#: arrival processes of synthetic workloads; `qps` is the mean rate of each
SYNTHETIC_ARRIVALS = ("poisson", "gamma", "mmpp", "diurnal")
#: the keys each arrival process reads (None elsewhere: a key given to another process is an error)
_ARRIVAL_KEYS = {"mmpp": ("burst_factor", "mean_on", "mean_off"), "diurnal": ("amplitude", "period")}
_OPTIONAL_ARRIVAL_KEYS = ("period",)  # diurnal: None means one period per episode


def mmpp_arrivals(rng: np.random.Generator, n: int, qps: float, burst_factor: float, mean_on: float,
                  mean_off: float) -> np.ndarray:
    """Two-state (on/off) Markov-modulated Poisson process with long-run mean rate `qps`.

    ON periods last Exp(mean `mean_on` s) at rate burst_factor * qps; OFF periods Exp(mean `mean_off` s)
    at the rate that keeps the mean at qps (zero when burst_factor = (mean_on + mean_off) / mean_on:
    pure on/off). The first state is drawn from the stationary distribution, so the expected rate is
    qps at every instant. A unit-rate Poisson process is mapped through the inverse cumulative rate."""
    cycle = mean_on + mean_off
    rate_on = burst_factor * qps
    rate_off = max(qps * cycle - rate_on * mean_on, 0.0) / mean_off
    epochs = np.cumsum(rng.standard_exponential(n))
    first_on = bool(rng.random() < mean_on / cycle)
    batch = 64  # even: every batch starts in the state the first one did
    is_on = (np.arange(batch) % 2 == 0) == first_on
    mean_dur, rate = np.where(is_on, mean_on, mean_off), np.where(is_on, rate_on, rate_off)
    start_t, start_c, end_c = [], [], []
    t0 = c0 = 0.0
    while c0 < epochs[-1]:
        dur = rng.standard_exponential(batch) * mean_dur
        ends_t, ends_c = t0 + np.cumsum(dur), c0 + np.cumsum(dur * rate)
        start_t.append(np.concatenate([[t0], ends_t[:-1]]))
        start_c.append(np.concatenate([[c0], ends_c[:-1]]))
        end_c.append(ends_c)
        t0, c0 = float(ends_t[-1]), float(ends_c[-1])
    st, sc, ec = np.concatenate(start_t), np.concatenate(start_c), np.concatenate(end_c)
    k = np.searchsorted(ec, epochs, side="left")  # first segment whose cumulative count reaches the epoch
    rates = np.tile(rate, len(start_t))[k]  # > 0: a zero-rate segment never holds an epoch
    return np.maximum.accumulate(st[k] + (epochs - sc[k]) / rates)


def diurnal_arrivals(rng: np.random.Generator, n: int, qps: float, amplitude: float, period: float) -> np.ndarray:
    """Poisson arrivals at rate qps * (1 - amplitude * cos(2 pi t / period)): from the trough at t = 0
    up to the peak at period / 2 and back (a day compressed into `period` seconds); the mean rate
    over whole periods is qps. A unit-rate Poisson process is mapped through the inverse cumulative
    rate, qps * (t - amplitude * period / (2 pi) * sin(2 pi t / period)), by bisection."""
    target = np.cumsum(rng.standard_exponential(n)) / qps
    w = 2.0 * math.pi / period
    b = amplitude / w
    lo, hi = np.maximum(target - b, 0.0), target + b  # |b sin| <= b brackets the root
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = mid - b * np.sin(w * mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.maximum.accumulate(0.5 * (lo + hi))


def _optional_number(obj, key: str, where: str) -> Optional[float]:
    v = getattr(obj, key)
    if v is not None:
        v = _coerce(key, v, float, where)
        setattr(obj, key, v)
    return v


@dataclass
class SyntheticWorkload:
    """Arrivals (Poisson, gamma renewal, on/off MMPP or diurnal, all at mean rate `qps`) with
    prefill/decode lengths, independent unless `correlation` or `paired_mixture` couples them.

    With `qps_max`, each episode's rate is drawn uniformly from [qps, qps_max] by its seed, so
    training sees every load in between (domain randomisation over load).

    * arrival=mmpp: `burst_factor` (ON rate / qps, in [1, (mean_on + mean_off) / mean_on]), `mean_on`,
      `mean_off` (mean ON/OFF durations, s); see `mmpp_arrivals`.
    * arrival=diurnal: `amplitude` in [0, 1] and `period` (s; None: the episode's expected length
      num_requests / qps, one trough-peak-trough cycle per episode); see `diurnal_arrivals`.
    * `correlation` rho in [-1, 1]: a Gaussian copula between prefill and decode lengths (the latent
      normals have correlation rho: for lognormal lengths, the correlation of the log-lengths before
      rounding and clipping); the marginals are unchanged.
    * `paired_mixture`: prefill and decode are mixtures with the same weights and each request takes
      both lengths from one component (a tenant with its own prompt and output shapes).
    """

    num_requests: int
    qps: float
    arrival: str = "poisson"
    cv: float = 1.0
    prefill: Mapping = field(kw_only=True)
    decode: Mapping = field(kw_only=True)
    start_time: float = 0.0
    qps_max: Optional[float] = None
    burst_factor: Optional[float] = field(default=None, kw_only=True)
    mean_on: Optional[float] = field(default=None, kw_only=True)
    mean_off: Optional[float] = field(default=None, kw_only=True)
    amplitude: Optional[float] = field(default=None, kw_only=True)
    period: Optional[float] = field(default=None, kw_only=True)
    correlation: Optional[float] = field(default=None, kw_only=True)
    paired_mixture: bool = field(default=False, kw_only=True)

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
        if self.arrival not in SYNTHETIC_ARRIVALS:
            raise ValueError(f"{w}: 'arrival' must be one of {list(SYNTHETIC_ARRIVALS)}, got {self.arrival!r}")
        self._check_arrival_keys(w)
        pre, dec = make_length_dist(self.prefill), make_length_dist(self.decode)  # fail early on bad specs
        rho = _optional_number(self, "correlation", w)
        if rho is not None and not -1.0 <= rho <= 1.0:
            raise ValueError(f"{w}: 'correlation' must be in [-1, 1], got {rho}")
        if not isinstance(self.paired_mixture, (bool, np.bool_)):
            raise ValueError(f"{w}: 'paired_mixture' must be true or false, got {self.paired_mixture!r}")
        if self.paired_mixture and not (isinstance(pre, MixtureLength) and isinstance(dec, MixtureLength)
                                        and len(pre.weights) == len(dec.weights)
                                        and np.allclose(pre.probabilities, dec.probabilities)):
            raise ValueError(f"{w}: 'paired_mixture' needs prefill and decode of kind=mixture with the same "
                             f"weights, got {self.prefill.get('kind')!r} / {self.decode.get('kind')!r}")

    def _check_arrival_keys(self, w: str) -> None:
        for arrival, keys in _ARRIVAL_KEYS.items():
            for key in keys:
                v = _optional_number(self, key, w)
                if arrival != self.arrival and v is not None:
                    raise ValueError(f"{w}: '{key}' only applies to arrival={arrival}, got {v} with "
                                     f"arrival={self.arrival} (set it to null)")
                if arrival == self.arrival and v is None and key not in _OPTIONAL_ARRIVAL_KEYS:
                    raise ValueError(f"{w}: '{key}' is required for arrival={arrival}, got None")
        if self.arrival == "mmpp":
            for key in ("mean_on", "mean_off"):
                if not getattr(self, key) > 0:
                    raise ValueError(f"{w}: '{key}' must be > 0 (seconds), got {getattr(self, key)}")
            top = (self.mean_on + self.mean_off) / self.mean_on
            if not 1.0 <= self.burst_factor <= top:
                raise ValueError(f"{w}: 'burst_factor' must be in [1, (mean_on + mean_off) / mean_on = {top:.4g}] "
                                 f"(ON rate / mean rate), got {self.burst_factor}")
        if self.arrival == "diurnal":
            if not 0.0 <= self.amplitude <= 1.0:
                raise ValueError(f"{w}: 'amplitude' must be in [0, 1], got {self.amplitude}")
            if self.period is not None and not self.period > 0:
                raise ValueError(f"{w}: 'period' must be > 0 (seconds), got {self.period}")

    def arrivals(self, rng: np.random.Generator, n: int, qps: float) -> np.ndarray:
        """Arrival times (from 0) of n requests at mean rate qps."""
        if self.arrival == "mmpp":
            return mmpp_arrivals(rng, n, qps, self.burst_factor, self.mean_on, self.mean_off)
        if self.arrival == "diurnal":
            period = self.period if self.period is not None else n / qps
            return diurnal_arrivals(rng, n, qps, self.amplitude, period)
        return renewal_arrivals(rng, n, qps, self.arrival, self.cv)

    def generate(self, seed: int) -> Trace:
        """Same seed -> same trace; arrivals/prefill/decode use independent sub-streams (the first
        four children of SeedSequence(seed), as before the copula and mixtures existed: the outputs of
        poisson/gamma arrivals and independent lengths are unchanged), the tenant draw a fifth."""
        r_arr, r_pre, r_dec, r_qps, r_mix = (np.random.default_rng(s)
                                             for s in np.random.SeedSequence(seed).spawn(5))
        qps = self.qps if self.qps_max is None else float(r_qps.uniform(self.qps, self.qps_max))
        n = self.num_requests
        pre, dec = make_length_dist(self.prefill), make_length_dist(self.decode)
        z_pre = z_dec = None
        if self.correlation is not None:  # prefill's normals are those a lognormal prefill would draw
            rho = self.correlation
            z_pre = r_pre.standard_normal(n)
            z_dec = rho * z_pre + math.sqrt(max(1.0 - rho * rho, 0.0)) * r_dec.standard_normal(n)
        if self.paired_mixture:
            idx = pre.pick(r_mix, n)
            prefill, decode = np.empty(n, np.int64), np.empty(n, np.int64)
            for j, (p, d) in enumerate(zip(pre.components, dec.components)):
                m = idx == j
                prefill[m] = p.sample(r_pre, int(m.sum())) if z_pre is None else p.from_normal(z_pre[m])
                decode[m] = d.sample(r_dec, int(m.sum())) if z_dec is None else d.from_normal(z_dec[m])
        else:
            prefill = pre.sample(r_pre, n) if z_pre is None else pre.from_normal(z_pre)
            decode = dec.sample(r_dec, n) if z_dec is None else dec.from_normal(z_dec)
        return Trace(self.start_time + self.arrivals(r_arr, n, qps), prefill, decode)


Workload = Union[SyntheticWorkload, TraceWorkload]
_WORKLOAD_KEYS = {
    "synthetic": (SyntheticWorkload, [f.name for f in fields(SyntheticWorkload)],
                  ["num_requests", "qps", "prefill", "decode"]),
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
