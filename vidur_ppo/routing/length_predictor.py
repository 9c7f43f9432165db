"""What a router is told of output lengths: a *predicted* length per request, as a real router gets
from a length predictor, never vidur's true one unless asked (`oracle`, an ablation).

Every reader of a length goes through one per-episode array of predictions (`predict`): the arriving
request's output length (`env.request_vector`) and the decode tokens still to come of every queued
and running request (`sim/driver.replica_state`: predicted total minus tokens produced so far, at
least 1 while the request runs; a router can count produced tokens, not the remaining ones). The
simulation itself always runs the true lengths.

Kinds:
- `lognormal`: true x exp(N(0, sigma^2)) (default sigma 0.5: half of the predictions within a factor
  1.4 of the truth, median absolute relative error 33%, 95% within a factor 2.7; README "Length
  information" says which published accuracies this sits between);
- `bucketed`: a classifier over length buckets (`buckets`: upper edges) with a confusion matrix
  (`confusion`, rows = true bucket; default: `accuracy` on the diagonal, the rest to the adjacent
  buckets), predicting the bucket's geometric middle;
- `none`: no length information, every request predicted at `prior_tokens`;
- `oracle`: the true length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Union

import numpy as np

from vidur_ppo.checks import StrEnum, check, choice, from_mapping, positive, unit


class LengthInfo(StrEnum):
    oracle = "oracle"
    lognormal = "lognormal"
    bucketed = "bucketed"
    none = "none"


@dataclass
class LengthPredictorConfig:
    kind: LengthInfo = LengthInfo.lognormal
    sigma: float = 0.5  # lognormal: multiplicative error exp(N(0, sigma^2))
    buckets: List[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024])  # bucketed: upper edges
    accuracy: float = 0.8  # bucketed: P(predicted bucket = true bucket) when `confusion` is not given
    confusion: Optional[List[List[float]]] = None  # bucketed: [true bucket][predicted bucket], rows sum to 1
    prior_tokens: int = 128  # none: the one length every request is predicted at

    def __post_init__(self) -> None:
        p = "length_predictor"
        choice(self, p, "kind", LengthInfo)
        check(self.sigma >= 0, f"{p}.sigma", "must be >= 0", self.sigma)
        positive(self, p, "prior_tokens")
        unit(self, p, "accuracy")
        edges = list(self.buckets)
        check(len(edges) >= 1 and all(b > 0 for b in edges) and edges == sorted(set(edges)), f"{p}.buckets",
              "must be increasing positive token counts", edges)
        if self.confusion is not None:
            m = np.asarray(self.confusion, dtype=float)
            k = len(edges) + 1
            check(m.shape == (k, k) and (m >= 0).all() and np.allclose(m.sum(1), 1.0), f"{p}.confusion",
                  f"must be a {k}x{k} matrix (one row and column per bucket) of rows summing to 1",
                  self.confusion)

    @classmethod
    def of(cls, spec: Union["LengthPredictorConfig", Mapping[str, Any], str, None]) -> "LengthPredictorConfig":
        """A config from itself, a mapping, a kind name, or None (the default)."""
        if isinstance(spec, cls):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            return cls(kind=spec)
        return from_mapping(cls, spec, "length_predictor")


class LengthPredictor:
    """Predicted output lengths of an episode's requests, seeded by the episode (same for every
    router on a trace, so paired comparisons stay paired)."""

    def __init__(self, cfg: Union[LengthPredictorConfig, Mapping[str, Any], str, None] = None) -> None:
        self.cfg = LengthPredictorConfig.of(cfg)
        edges = np.asarray(self.cfg.buckets, dtype=float)
        lower = np.concatenate([[1.0], edges])
        upper = np.concatenate([edges, [2.0 * edges[-1]]])
        self._edges = edges
        self._middle = np.sqrt(lower * np.maximum(upper - 1.0, lower))  # geometric middle of [lower, upper)
        self._cum_confusion = np.cumsum(self.confusion(), axis=1)

    @property
    def exact(self) -> bool:
        return self.cfg.kind == LengthInfo.oracle

    def confusion(self) -> np.ndarray:
        """The bucket classifier's confusion matrix [true bucket, predicted bucket]."""
        if self.cfg.confusion is not None:
            return np.asarray(self.cfg.confusion, dtype=float)
        k, acc = len(self._edges) + 1, float(self.cfg.accuracy)
        m = np.eye(k) * acc
        for b in range(k):
            near = [n for n in (b - 1, b + 1) if 0 <= n < k]
            for n in near:
                m[b, n] = (1.0 - acc) / len(near)
            if not near:
                m[b, b] = 1.0
        return m

    @staticmethod
    def draws(seed: int, count: int) -> np.ndarray:
        """The per-request randomness of an episode, [count, 2]: a standard normal (lognormal
        error) and a uniform (bucket choice). Request i's draws do not depend on `count`."""
        normal = np.random.default_rng([int(seed), 0x5EED]).standard_normal(count)
        uniform = np.random.default_rng([int(seed), 0xB0C]).random(count)
        return np.stack([normal, uniform], axis=1)

    def apply(self, true: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Predicted lengths (integers >= 1) of requests with these true lengths and draws."""
        true = np.asarray(true, dtype=float)
        kind = self.cfg.kind
        if kind == LengthInfo.oracle:
            out = true
        elif kind == LengthInfo.lognormal:
            out = np.round(true * np.exp(self.cfg.sigma * draws[:, 0]))
        elif kind == LengthInfo.bucketed:
            bucket = np.searchsorted(self._edges, true, side="right")
            predicted = (draws[:, 1:2] >= self._cum_confusion[bucket]).sum(axis=1)
            out = np.round(self._middle[np.minimum(predicted, len(self._middle) - 1)])
        else:
            out = np.full(true.shape, float(self.cfg.prior_tokens))
        return np.maximum(out, 1.0).astype(np.int64)

    def predict(self, true: np.ndarray, seed: int) -> np.ndarray:
        """Predicted lengths of an episode's requests (index = request id), seeded by the episode."""
        return self.apply(true, self.draws(seed, len(true)))
