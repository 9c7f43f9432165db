"""Request length distributions of synthetic workloads (fixed, uniform, Zipf, geometric, lognormal, mixtures),
each with a quantile function so prompt and output lengths can be correlated through a copula.
Built from config mappings by `make_length_dist`; no vidur import."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from vidur_ppo.sim.trace import coerce_number as _coerce

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


def _inverse_cdf(lo: int, cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Lengths at probabilities u of a distribution given by its CDF table."""
    idx = np.searchsorted(cdf, u, side="right")
    return lo + np.minimum(idx, len(cdf) - 1).astype(np.int64)


def mean_length(dist: "LengthDist") -> float:
    """The exact mean of a length distribution, from its CDF table: lo + sum_k P(L > lo + k)."""
    lo, cdf = dist.cdf_table()
    return float(lo + np.sum(1.0 - cdf[:-1]))


class _Quantile:
    """`from_normal` of a distribution given by its CDF table: the inverse CDF at Phi(z)."""

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        return _inverse_cdf(*self.cdf_table(), _normal_cdf(z))


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
        return _inverse_cdf(*self.cdf_table(), rng.random(n))

    def cdf_table(self) -> tuple[int, np.ndarray]:
        return self.min, _zipf_cdf(float(self.theta), self.min, self.max)


@functools.lru_cache(maxsize=64)
def _geometric_cdf(p: float, n: int) -> np.ndarray:
    cdf = np.cumsum((1.0 - p) ** np.arange(n, dtype=np.float64))
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


@dataclass(frozen=True)
class GeometricLength(_Quantile):
    """Truncated geometric: P(min + k) ∝ p (1 - p)^k for k = 0..max-min (a count that stops with
    probability p at each step, e.g. the turns of a conversation; mean min + (1 - p) / p untruncated)."""
    p: float
    min: int
    max: int

    def __post_init__(self) -> None:
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"'p' must be in (0, 1], got {self.p}")
        _check_bounds(self.min, self.max)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _inverse_cdf(*self.cdf_table(), rng.random(n))

    def cdf_table(self) -> tuple[int, np.ndarray]:
        return self.min, _geometric_cdf(float(self.p), self.max - self.min + 1)


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
    "geometric": (GeometricLength, {"p": float, "min": int, "max": int}),
    "lognormal": (LognormalLength, {"median": float, "sigma": float, "min": int, "max": int}),
    "mixture": (MixtureLength, {"weights": list, "components": list}),
}


def check_keys(spec: Mapping, allowed: Sequence[str], required: Sequence[str], where: str,
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


def length_dist_at(spec: Mapping, key: str, where: str) -> LengthDist:
    """`make_length_dist` of a workload's length spec under `key`; its errors name the spec's key
    ("synthetic workload: 'decode.median' must be > 0, got -1")."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: '{key}' must be a length spec (a mapping with a 'kind'), got {spec!r}")
    try:
        return make_length_dist(spec)
    except ValueError as e:
        named = re.sub(r"'(\w+)'", f"'{key}.\\1'", str(e), count=1)
        raise ValueError(f"{where}: {named if named != str(e) else f'{key}: {e}'}") from None


def max_length(dist: LengthDist) -> int:
    """The largest length a distribution draws."""
    lo, cdf = dist.cdf_table()
    return int(lo + len(cdf) - 1)


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
    check_keys(spec, ["kind", *params], list(params), where)
    if kind == "mixture":
        kwargs = _mixture_args(spec, where)
    else:
        kwargs = {k: _coerce(k, spec[k], t, where) for k, t in params.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}; keys: {list(params)}") from None
