"""Feature sets: what the policy sees of each replica at a decision (a registry of named columns).

A feature set turns the driver's raw per-replica state (`REPLICA_STATE_COLUMNS`) and the arriving
request into a normalised matrix [replicas x features]. Each set declares its column names, so a
run can write and log them (and a model's input size follows `len(names)`). Sets may keep state
across decisions (trends), so they are objects with `reset()` at episode start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from vidur_ppo.checks import check, positive
from vidur_ppo.registry import build, typed_config
from vidur_ppo.routing.heuristics import cached_fraction
from vidur_ppo.routing.size_split import long_pool_size
from vidur_ppo.sim.driver import ReplicaColumn



class FeatureSet:
    """Base class. `names` are the per-replica columns of `__call__`'s output."""

    names: Sequence[str] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        pass

    def __call__(self, state: np.ndarray, request: np.ndarray, now: float) -> np.ndarray:
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        return len(self.names)


class LegacyFeatures(FeatureSet):
    """The legacy pipeline's observation: instantaneous per-replica load and utilisation only.

    load = outstanding requests (waiting + running) / `capacity`; kv_usage = fraction of KV blocks
    allocated. No queue age, no trend, no request size (PLAN.md section 2's "current" state).
    """

    names = ("load", "kv_usage")

    def __init__(self, cfg: "LegacyFeaturesConfig") -> None:
        super().__init__(cfg)
        self.capacity = float(cfg.capacity)

    def __call__(self, state, request, now):
        out = np.empty((state.shape[0], 2), dtype=np.float32)
        out[:, 0] = (state[:, ReplicaColumn.waiting] + state[:, ReplicaColumn.running]) / self.capacity
        out[:, 1] = state[:, ReplicaColumn.kv_usage]
        return out


class QueueFeatures(FeatureSet):
    """Queueing state per replica, normalised to about [0, 1] (PLAN.md section 2):

    waiting / queue_capacity, running / running_capacity, age of the oldest waiting request / SLO
    (capped at 1), outstanding prefill and decode tokens / token_capacity, KV usage, and the
    arriving request's prompt and output length / max_request_tokens (the same in every row, so
    a per-replica model sees it). Counts and times are capped at 1 (`cap`, set 0 for no cap).
    """

    names = ("waiting", "running", "oldest_wait", "prefill_left", "decode_left", "kv_usage",
             "req_prefill", "req_decode")

    def __init__(self, cfg: "QueueFeaturesConfig") -> None:
        super().__init__(cfg)
        self.scale = np.array([1 / cfg.queue_capacity, 1 / cfg.running_capacity, 1 / cfg.slo, 1 / cfg.token_capacity,
                               1 / cfg.token_capacity, 1.0], dtype=np.float64)
        self.cols = [ReplicaColumn.waiting, ReplicaColumn.running, ReplicaColumn.oldest_wait, ReplicaColumn.prefill_tokens_left,
                     ReplicaColumn.decode_tokens_left, ReplicaColumn.kv_usage]
        self.max_request_tokens = float(cfg.max_request_tokens)
        self.cap = float(cfg.cap)

    def __call__(self, state, request, now):
        out = np.empty((state.shape[0], len(QueueFeatures.names)), dtype=np.float32)
        replica = state[:, self.cols] * self.scale
        if self.cap > 0:
            np.minimum(replica, self.cap, out=replica)
        out[:, :6] = replica
        out[:, 6] = request[0] / self.max_request_tokens
        out[:, 7] = request[1] / self.max_request_tokens
        return out


class FullFeatures(QueueFeatures):
    """`queue` plus trends per replica (PLAN.md section 2): for waiting, running, KV usage and
    outstanding work (prefill + decode tokens left, normalised), the change since the previous
    decision (`d_*`, 0 at an episode's first decision) and the current value minus its
    exponential moving average over decisions (`x_*`, weight `ema_alpha` on the newest value).
    Trends of capped features lie in [-1, 1].
    """

    TREND = ("waiting", "running", "kv_usage", "work")
    names = QueueFeatures.names + tuple(f"d_{n}" for n in TREND) + tuple(f"x_{n}" for n in TREND)

    def __init__(self, cfg: "FullFeaturesConfig") -> None:
        super().__init__(cfg)
        self.alpha = float(cfg.ema_alpha)
        self.reset()

    def reset(self) -> None:
        self.prev = None
        self.ema = None

    def __call__(self, state, request, now):
        base = super().__call__(state, request, now)
        cur = np.stack([base[:, 0], base[:, 1], base[:, 5], np.minimum(base[:, 3] + base[:, 4], 1.0)], axis=1)
        if self.prev is None or self.prev.shape != cur.shape:
            self.prev, self.ema = cur.copy(), cur.copy()
        delta = cur - self.prev
        self.ema = self.alpha * cur + (1.0 - self.alpha) * self.ema
        self.prev = cur
        return np.concatenate([base, delta, cur - self.ema], axis=1).astype(np.float32)


class SeenLengths:
    """The output lengths an episode has seen, and where the newest ranks among them (`size_aware`'s
    `req_rank` and `req_tail_share`).

    A Serve router is one episode for as long as it runs, so its history only grows: rebuilding it from a
    list at every decision cost 1-3 ms after 100k requests (~13 ms after 1M), and reading the whole array
    still grows with it. So while every length is a whole number >= 0 (token counts) and their total is
    below 2**53, the lengths are also kept as counts per distinct length, and a decision costs
    O(distinct lengths): sums of such numbers are exact in any order, so the results are numpy's over
    the whole array, bit for bit. Any other length switches to that array (float64, grown by doubling)."""

    EXACT_TOTAL = 2.0 ** 53

    def __init__(self, capacity: int = 1024) -> None:
        self.buf, self.n = np.empty(capacity, dtype=np.float64), 0
        self.keys, self.counts = np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64)
        self.total, self.exact = 0.0, True

    def append(self, length: float) -> None:
        length = float(length)
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
        self.buf[self.n] = length
        self.n += 1
        if not self.exact:
            return
        if not (length.is_integer() and math.copysign(1.0, length) > 0 and self.total + length < self.EXACT_TOTAL):
            self.exact, self.keys, self.counts = False, None, None
            return
        i = int(np.searchsorted(self.keys, length))
        if i < len(self.keys) and self.keys[i] == length:
            self.counts[i] += 1
        else:
            self.keys, self.counts = np.insert(self.keys, i, length), np.insert(self.counts, i, 1)
        self.total += length

    def rank_and_tail_share(self, length: float) -> Tuple[float, float]:
        """(the share of the other lengths below `length`, ties counting half; the share of all tokens in lengths
        >= `length`) for `length` the newest of at least two."""
        if self.exact:
            i = int(np.searchsorted(self.keys, length))  # keys[i] == length: it was appended
            below, equal = int(self.counts[:i].sum()), int(self.counts[i])
            tail, total = float((self.keys[i:] * self.counts[i:]).sum()), self.total
        else:
            seen = self.buf[:self.n]
            below, equal = np.count_nonzero(seen < length), np.count_nonzero(seen == length)
            tail, total = seen[seen >= length].sum(), seen.sum()
        return (below + 0.5 * (equal - 1)) / (self.n - 1), tail / max(total, 1e-9)

    def __len__(self) -> int:
        return self.n


class SizeAwareFeatures(FullFeatures):
    """`full` plus what size-based routing needs, in forms that do not depend on the workload:

    - `mean_decode_left`: output tokens still to generate per outstanding request at the replica
      / max_request_tokens, the replica's *size profile* (whether it hosts long decodes), which
      a permutation-equivariant model cannot compute itself by dividing two features;
    - `req_rank`: the arriving request's output length as a quantile of the lengths seen so far in
      the episode (0.5 for the first request);
    - `req_tail_share`: the share of all output tokens seen so far that belongs to requests at
      least this long; SITA-E sends a request to its long pool when this share is below k/R;
    - `req_pool_share`: `req_tail_share` / (k/R), the long pool's share of the replicas, capped
      at 1: below 1 means "a long request" at any cluster size (what SITA-E tests), so a rule
      learnt on 4 replicas needs no extrapolation on 2 or 8;
    - `long_pool`: 1 for the replicas of a size-based long pool (the first `long_pool_fraction`
      of them, as SITA-E's), else 0: a *role* a permutation-equivariant model can tell replicas
      apart by, so a size split learnt on 4 replicas keeps its proportions on 2 or 8 (without it,
      the 4-replica policy funnelled every long request to one of 8 replicas).
    `req_rank` and `req_tail_share` are the same in every row (episode-level, reset with it).
    """

    names = FullFeatures.names + ("mean_decode_left", "req_rank", "req_tail_share", "req_pool_share", "long_pool")

    def __init__(self, cfg: "SizeAwareFeaturesConfig") -> None:
        super().__init__(cfg)
        self.long_pool_fraction = float(cfg.long_pool_fraction)

    def reset(self) -> None:
        super().reset()
        self.seen = SeenLengths()

    def __call__(self, state, request, now):
        full = super().__call__(state, request, now)
        n = state.shape[0]
        k = long_pool_size(n, self.long_pool_fraction)
        out = np.zeros((n, 5), dtype=np.float32)
        out[:k, 4] = 1.0
        outstanding = np.maximum(state[:, ReplicaColumn.waiting] + state[:, ReplicaColumn.running], 1.0)
        out[:, 0] = np.minimum(state[:, ReplicaColumn.decode_tokens_left] / outstanding / self.max_request_tokens, 1.0)
        decode = float(request[1])
        self.seen.append(decode)
        if len(self.seen) == 1:
            out[:, 1], out[:, 2] = 0.5, 1.0
        else:
            out[:, 1], out[:, 2] = self.seen.rank_and_tail_share(decode)
        out[:, 3] = np.minimum(out[:, 2] * n / k, 1.0)
        return np.concatenate([full, out], axis=1)


class HeteroFeatures(SizeAwareFeatures):
    """`size_aware` plus what a mixed cluster's replicas differ in, relative to the cluster's mean
    (1 on identical replicas, so a policy trained on any mix runs on any other):
    - `speed`: the replica's share of the cluster's saturation throughput (routing/capacity.py);
    - `kv_capacity`: its KV-cache blocks.
    """

    names = SizeAwareFeatures.names + ("speed", "kv_capacity")

    def __call__(self, state, request, now):
        base = super().__call__(state, request, now)
        cap = state[:, [ReplicaColumn.speed, ReplicaColumn.kv_capacity]].astype(np.float32)
        return np.concatenate([base, cap], axis=1)


class PrefixFeatures(HeteroFeatures):
    """`hetero` plus what each replica's prefix cache offers the arriving request, relative, so any cluster,
    prompt length and KV size reads alike (0, 1/speed and 0 without a cache):
    - `cached_fraction`: the share of its prompt the replica's cache would serve now;
    - `prefill_time`: its prefill there relative to an uncached one on a mean replica: the uncached share
      over the replica's speed (work / speed, the time estimate of least_work_left_time and the lookahead);
    - `cache_occupancy`: the share of the replica's KV blocks cached prefix blocks hold.
    """

    names = HeteroFeatures.names + ("cached_fraction", "prefill_time", "cache_occupancy")

    def __call__(self, state, request, now):
        base = super().__call__(state, request, now)
        hit = cached_fraction(state, request)
        cache = np.stack([hit, (1.0 - hit) / state[:, ReplicaColumn.speed], state[:, ReplicaColumn.cache_occupancy]],
                         axis=1)
        return np.concatenate([base, cache.astype(np.float32)], axis=1)


# --- configs: every default written once, here --------------------------------------------------


@dataclass
class FeaturesConfig:
    name: str = "full"
    names: List[str] = field(default_factory=list)  # declared columns, checked against what the set builds

    def check_names(self, built: Sequence[str]) -> None:
        check(not self.names or list(self.names) == list(built), "features.names",
              f"do not match what feature set {self.name!r} builds: {list(built)}", list(self.names))


@dataclass
class LegacyFeaturesConfig(FeaturesConfig):
    name: str = "legacy"
    names: List[str] = field(default_factory=lambda: list(LegacyFeatures.names))
    capacity: float = 64.0

    def __post_init__(self) -> None:
        positive(self, "features", "capacity")
        self.check_names(LegacyFeatures.names)


@dataclass
class QueueFeaturesConfig(FeaturesConfig):
    name: str = "queue"
    names: List[str] = field(default_factory=lambda: list(QueueFeatures.names))
    queue_capacity: float = 16.0
    running_capacity: float = 128.0
    token_capacity: float = 32768.0
    slo: float = 8.0  # seconds; Hydra sets it to the run's slo_e2e
    max_request_tokens: float = 4096.0  # Hydra sets it to env.max_request_tokens
    cap: float = 1.0

    def __post_init__(self) -> None:
        positive(self, "features", "queue_capacity", "running_capacity", "token_capacity", "slo", "max_request_tokens")
        self.check_names(FEATURE_SETS[self.name][1].names)


@dataclass
class FullFeaturesConfig(QueueFeaturesConfig):
    name: str = "full"
    names: List[str] = field(default_factory=lambda: list(FullFeatures.names))
    ema_alpha: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.ema_alpha <= 1, "features.ema_alpha", "must be in (0, 1]", self.ema_alpha)


@dataclass
class SizeAwareFeaturesConfig(FullFeaturesConfig):
    name: str = "size_aware"
    names: List[str] = field(default_factory=lambda: list(SizeAwareFeatures.names))
    long_pool_fraction: float = 0.25  # as SITA-E's long pool (routing/size_split.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.long_pool_fraction < 1, "features.long_pool_fraction", "must be in (0, 1)",
              self.long_pool_fraction)


@dataclass
class HeteroFeaturesConfig(SizeAwareFeaturesConfig):
    name: str = "hetero"
    names: List[str] = field(default_factory=lambda: list(HeteroFeatures.names))


@dataclass
class PrefixFeaturesConfig(HeteroFeaturesConfig):
    name: str = "prefix"
    names: List[str] = field(default_factory=lambda: list(PrefixFeatures.names))


FEATURE_SETS: Dict[str, Tuple[type, type]] = {
    "legacy": (LegacyFeaturesConfig, LegacyFeatures), "queue": (QueueFeaturesConfig, QueueFeatures),
    "full": (FullFeaturesConfig, FullFeatures), "size_aware": (SizeAwareFeaturesConfig, SizeAwareFeatures),
    "hetero": (HeteroFeaturesConfig, HeteroFeatures), "prefix": (PrefixFeaturesConfig, PrefixFeatures),
}


def features_config(spec: FeaturesConfig | Mapping[str, Any] | str | None) -> FeaturesConfig:
    """The typed config of a feature set: itself, or built from `{"name": ..., **params}` / a name."""
    return typed_config(FEATURE_SETS, spec, FeaturesConfig.name, "features")


def make_feature_set(spec: FeaturesConfig | Mapping[str, Any] | str | None) -> FeatureSet:
    """Build a feature set from its config (the `features` config group)."""
    return build(FEATURE_SETS, spec, FeaturesConfig.name, "features")
