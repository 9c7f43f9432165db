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
`vidur_ppo.sim.trace`, the prefix-sharing families in `vidur_ppo.sim.prefix_workload` (both re-exported
here). None imports vidur; a separate driver
turns a :class:`Trace` into vidur requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional, Union

import numpy as np

from vidur_ppo.sim.lengths import (FixedLength, GeometricLength, LengthDist, LognormalLength, MixtureLength,
                                   UniformLength, ZipfLength, check_keys, length_dist_at, make_length_dist)
from vidur_ppo.sim.prefix_workload import (PREFIX_WORKLOADS, MultiTurnWorkload, PrefixRequests, RagWorkload,
                                           SystemPromptWorkload)
from vidur_ppo.sim.trace import TRACE_COLUMNS, Trace, TraceError, TraceWorkload, load_trace, renewal_arrivals
from vidur_ppo.sim.trace import coerce_number as _coerce

__all__ = [
    "Trace", "TraceError", "LengthDist", "FixedLength", "UniformLength", "ZipfLength", "GeometricLength",
    "LognormalLength", "MixtureLength", "make_length_dist", "SyntheticWorkload", "TraceWorkload",
    "load_trace", "make_workload", "mmpp_arrivals", "diurnal_arrivals", "SYNTHETIC_ARRIVALS",
    "TRACE_COLUMNS", "MultiTurnWorkload", "SystemPromptWorkload", "RagWorkload", "PrefixRequests", "PREFIX_WORKLOADS",
]

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
        pre, dec = (self._length_dist(key, w) for key in ("prefill", "decode"))  # fail early on bad specs
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

    def _length_dist(self, key: str, where: str):
        return length_dist_at(getattr(self, key), key, where)

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


Workload = Union[SyntheticWorkload, TraceWorkload, MultiTurnWorkload, SystemPromptWorkload, RagWorkload]


def _keys(cls: type) -> list:
    return [f.name for f in fields(cls)]


def _required(cls: type) -> list:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


_WORKLOAD_KEYS = {
    "synthetic": (SyntheticWorkload, _keys(SyntheticWorkload), ["num_requests", "qps", "prefill", "decode"]),
    "trace": (TraceWorkload, _keys(TraceWorkload), ["path"]),
    **{kind: (cls, _keys(cls), _required(cls)) for kind, cls in PREFIX_WORKLOADS.items()},
}


def _other_kinds_hint(kind: str, extra: list) -> str:
    """Names the kinds unknown keys belong to (a synthetic spec merged onto a trace one): each key under the
    first kind, in _WORKLOAD_KEYS order, that has the most of them."""
    parts, left = [], [k for k in extra if any(k in keys for other, (_, keys, _) in _WORKLOAD_KEYS.items()
                                                 if other != kind)]
    while left:
        other, keys = max(((o, [k for k in left if k in ks]) for o, (_, ks, _) in _WORKLOAD_KEYS.items()
                           if o != kind), key=lambda item: len(item[1]))
        parts.append(f"{', '.join(repr(k) for k in keys)} only apply to kind={other}")
        left = [k for k in left if k not in keys]
    return f" ({'; '.join(parts)})" if parts else ""


def make_workload(spec: Mapping) -> Workload:
    """Build a workload from a config dict with ``kind``: synthetic, trace, or a prefix family
    (multi_turn, system_prompt, rag: `vidur_ppo.sim.prefix_workload`)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"workload spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _WORKLOAD_KEYS:
        raise ValueError(f"workload spec: 'kind' must be one of {sorted(_WORKLOAD_KEYS)}, got {kind!r}")
    cls, allowed, required = _WORKLOAD_KEYS[kind]
    check_keys(spec, ["kind", *allowed], required, f"workload spec (kind={kind})",
                lambda extra: _other_kinds_hint(kind, extra))
    return cls(**{k: spec[k] for k in allowed if k in spec})
