"""Heuristic global schedulers, with the same interface as a learned policy (obs -> action).

They read the env's observation (`obs["replicas"]`, columns `REPLICA_STATE_COLUMNS`, and the arriving
request, `obs["request"]`, columns `RequestColumn`), go
through the same driver, traces and metrics as PPO, and double as behaviour-cloning teachers.
Ties go to the lowest replica index, as in vidur. Random choices use each heuristic's own
seeded generator (vidur's `random` scheduler uses Python's global `random` state).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import numpy as np

from vidur_ppo.registry import lookup
from vidur_ppo.routing.size_split import long_pool_size
from vidur_ppo.sim.driver import PREFIX_KEY_SPACE, ReplicaColumn, RequestColumn
from vidur_ppo.sim.prefix_hash import mix


def outstanding(replicas: np.ndarray) -> np.ndarray:
    """Requests at each replica, waiting + running: a queue length, as jsq and sgl-router count load."""
    return replicas[:, ReplicaColumn.waiting] + replicas[:, ReplicaColumn.running]


def work_left(replicas: np.ndarray) -> np.ndarray:
    """Tokens each replica still has to process: prefill + (predicted) decode."""
    return replicas[:, ReplicaColumn.prefill_tokens_left] + replicas[:, ReplicaColumn.decode_tokens_left]


def cached_fraction(replicas: np.ndarray, request: np.ndarray) -> np.ndarray:
    """Per replica, the share of the arriving request's prompt its prefix cache would serve now."""
    return replicas[:, ReplicaColumn.cached_prefix] / max(float(request[RequestColumn.prefill_tokens]), 1.0)


def first_min(*keys: np.ndarray) -> int:
    """The replica with the smallest (keys[0], keys[1], ...), then the lowest index."""
    return int(np.lexsort(keys[::-1])[0])


class Heuristic:
    """Base: `reset(seed)` at each episode start, `act(obs) -> replica index`."""

    name = "heuristic"

    def reset(self, seed: Optional[int] = None) -> None:
        pass

    def act(self, obs: Mapping[str, np.ndarray]) -> int:
        raise NotImplementedError

    def __call__(self, obs: Mapping[str, np.ndarray]) -> int:
        return self.act(obs)


class RoundRobin(Heuristic):
    """vidur's `round_robin`: request k goes to replica k mod R."""

    name = "round_robin"

    def reset(self, seed: Optional[int] = None) -> None:
        self._k = 0

    def act(self, obs):
        r = self._k % obs["replicas"].shape[0]
        self._k += 1
        return r


class Random(Heuristic):
    """Uniformly random replica (own seeded generator)."""

    name = "random"

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs):
        return int(self._rng.integers(obs["replicas"].shape[0]))


class _ArgMin(Heuristic):
    """Pick the replica minimising one load measure (first index on ties)."""

    def load(self, replicas: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act(self, obs):
        return int(np.argmin(self.load(obs["replicas"])))


class LOR(_ArgMin):
    """vidur's `lor`: fewest requests *waiting* in the replica queue; running ones are ignored
    (faithful to `lor_global_scheduler.py`, so a weak baseline at light load)."""

    name = "lor"

    def load(self, replicas):
        return replicas[:, ReplicaColumn.waiting]


class JSQ(_ArgMin):
    """Join the shortest queue: fewest outstanding requests (waiting + running)."""

    name = "jsq"

    def load(self, replicas):
        return outstanding(replicas)


class LeastWorkLeft(_ArgMin):
    """Fewest outstanding tokens (prefill + decode still to process)."""

    name = "least_work_left"

    def load(self, replicas):
        return work_left(replicas)


class PowerOfTwo(Heuristic):
    """Power-of-two choices: sample two distinct replicas, keep the one with fewer outstanding
    requests (waiting + running)."""

    name = "power_of_two"

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, replicas: np.ndarray) -> np.ndarray:
        """What the two sampled replicas are compared by (lower wins, then the lower index)."""
        return outstanding(replicas)

    def act(self, obs):
        rep = obs["replicas"]
        n = rep.shape[0]
        if n == 1:
            return 0
        a, b = self._rng.choice(n, size=2, replace=False)
        load = self.score(rep)
        return int(a if (load[a], a) <= (load[b], b) else b)


class SITAE(Heuristic):
    """Size-interval task assignment with equalised load (SITA-E, Harchol-Balter et al., 1999).

    Replicas are split into a *long pool* (`long_fraction` of them, at least one and never all)
    and a short pool; a request whose output length is at least the cut-off goes to the long
    pool, any other to the short pool, and inside a pool to the replica with the least work left.
    The cut-off is re-estimated at every arrival from the output lengths seen so far in the
    episode, so that the long pool receives its share of decode tokens (k/R): long decodes then
    stop slowing every replica's batches, which is where the E2E tail comes from under vLLM.
    It reads the request's true output length, as `least_work_left` does (vidur traces carry it).
    """

    name = "sita_e"

    def __init__(self, long_fraction: float = 0.25) -> None:
        if not 0.0 < long_fraction < 1.0:
            raise ValueError(f"sita_e: long_fraction must be in (0, 1), got {long_fraction}")
        self.long_fraction = long_fraction

    def reset(self, seed: Optional[int] = None) -> None:
        self._seen: list = []

    def long_share(self, num_replicas: int) -> float:
        """The share of output tokens the long pool should get: its share of the replicas."""
        return self.pool_size(num_replicas) / num_replicas

    def cutoff(self, num_replicas: int) -> float:
        """Smallest output length whose tail of the seen lengths carries the long pool's share."""
        d = np.sort(np.asarray(self._seen, dtype=np.float64))[::-1]
        tail = np.cumsum(d) / d.sum()
        i = int(np.searchsorted(tail, self.long_share(num_replicas)))
        return float(d[min(i, len(d) - 1)])

    def pool_size(self, num_replicas: int) -> int:
        return long_pool_size(num_replicas, self.long_fraction)

    def act(self, obs):
        rep = obs["replicas"]
        n = rep.shape[0]
        if n == 1:
            return 0
        decode = float(obs["request"][1])
        self._seen.append(decode)
        k = self.pool_size(n)
        pool = np.arange(k) if decode >= self.cutoff(n) else np.arange(k, n)
        return int(pool[np.argmin(work_left(rep[pool]))])


# --- capacity-aware: they weigh each replica by its measured speed (ReplicaColumn.speed, the replica's
# share of the cluster's saturation throughput, routing/capacity.replica_speeds); on identical
# replicas they are round-robin, least-work-left and power-of-two.


class WeightedRoundRobin(Heuristic):
    """Smooth weighted round-robin (nginx's): each replica gets requests in proportion to its speed,
    interleaved rather than in runs."""

    name = "weighted_round_robin"

    def reset(self, seed: Optional[int] = None) -> None:
        self._credit = None

    def act(self, obs):
        speed = obs["replicas"][:, ReplicaColumn.speed].astype(np.float64)
        if self._credit is None or self._credit.shape != speed.shape:
            self._credit = np.zeros_like(speed)
        self._credit += speed
        r = int(np.argmax(self._credit))
        self._credit[r] -= speed.sum()
        return r


class LeastWorkLeftTime(_ArgMin):
    """Least work left in *seconds*: outstanding tokens divided by the replica's speed."""

    name = "least_work_left_time"

    def load(self, replicas):
        return work_left(replicas) / replicas[:, ReplicaColumn.speed]


class PowerOfTwoECT(PowerOfTwo):
    """Power-of-two choices on expected completion time: of two random replicas, the one where
    (outstanding requests + 1) / speed is smaller."""

    name = "power_of_two_ect"

    def score(self, replicas):
        return (outstanding(replicas) + 1) / replicas[:, ReplicaColumn.speed]


# --- cache-aware: deployed routers that weigh each replica's prefix cache (ReplicaColumn.cached_prefix, the
# arriving request's prompt tokens it would serve, read from the replica's real cache as a router mirroring
# KV events would) against load; capacity-blind, as deployed. Without a cache (cached_prefix all 0) each is
# its load part alone.


class CacheAware(Heuristic):
    """SGLang's cache-aware router (sgl-router, src/policies/cache_aware.rs; defaults: sglang_router's
    RouterArgs). Load is outstanding requests (waiting + running). Imbalanced, i.e. max - min load >
    `balance_abs_threshold` and max > `balance_rel_threshold` x min: the shortest queue. Else the best
    match rate (cached_prefix / prompt) above `cache_threshold` goes to its replica, and a lower one to the
    "smallest tree", the replica caching least (cache_occupancy x kv_capacity); ties to the shorter queue.
    Without a cache it is jsq. (sglang_router's first Router had 0.5 / 32 / 1.0001.)"""

    name = "cache_aware"

    def __init__(self, cache_threshold: float = 0.3, balance_abs_threshold: float = 64,
                 balance_rel_threshold: float = 1.5) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def act(self, obs):
        rep = np.asarray(obs["replicas"], dtype=np.float64)
        load = outstanding(rep)
        hi, lo = load.max(), load.min()
        if hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold:
            return first_min(load)
        match = cached_fraction(rep, obs["request"])
        if match.max() > self.cache_threshold:
            return first_min(-match, load)
        return first_min(rep[:, ReplicaColumn.cache_occupancy] * rep[:, ReplicaColumn.kv_capacity], load)


class LlmdScorer(Heuristic):
    """llm-d's inference scheduler (the Gateway API Inference Extension's endpoint picker, default-plugins.yaml
    of its inferencepool chart): the highest weighted sum of a prefix-cache score (cached_prefix / prompt), a
    queue score (waiting, min-max normalised: shortest 1, longest 0, all equal 1) and a KV-cache score
    (1 - kv_usage), weights 3 / 2 / 2 (max-score-picker; ties to the lowest index). Without a cache: the queue
    and KV scores."""

    name = "llmd_scorer"

    def __init__(self, prefix_weight: float = 3.0, queue_weight: float = 2.0, kv_weight: float = 2.0) -> None:
        self.prefix_weight, self.queue_weight, self.kv_weight = prefix_weight, queue_weight, kv_weight

    def act(self, obs):
        rep = np.asarray(obs["replicas"], dtype=np.float64)
        q = rep[:, ReplicaColumn.waiting]
        queue = np.ones_like(q) if q.max() == q.min() else (q.max() - q) / (q.max() - q.min())
        score = (self.prefix_weight * cached_fraction(rep, obs["request"]) + self.queue_weight * queue
                 + self.kv_weight * (1.0 - rep[:, ReplicaColumn.kv_usage]))
        return int(np.argmax(score))


class DynamoKV(Heuristic):
    """NVIDIA Dynamo's KV router (docs/router, lib/llm/src/kv_router/scheduler.rs; router_temperature 0): the
    least overlap_score_weight (1) x prefill blocks + active blocks, here in tokens (blocks x block size, the
    same choice): prefill = prefill_tokens_left + the prompt's uncached part (prompt - cached_prefix), active
    = kv_tokens. Without a cache: the least queued prompt tokens + KV held."""

    name = "dynamo_kv"

    def __init__(self, overlap_score_weight: float = 1.0) -> None:
        self.overlap_score_weight = overlap_score_weight

    def act(self, obs):
        rep = np.asarray(obs["replicas"], dtype=np.float64)
        prefill = (rep[:, ReplicaColumn.prefill_tokens_left] + float(obs["request"][RequestColumn.prefill_tokens])
                   - rep[:, ReplicaColumn.cached_prefix])
        return int(np.argmin(self.overlap_score_weight * prefill + rep[:, ReplicaColumn.kv_tokens]))


class ConsistentHash(Heuristic):
    """Consistent hashing (Karger et al., STOC'97) on a ketama ring, as Envoy's ring_hash load balancer: each
    replica owns `virtual_nodes` points (libketama's 160), and a request goes to the owner of the first point
    at or after the hash of its prefix_key (its prompt's leading block: a system prompt, a session), so a
    prefix keeps its replica, and a replica added takes keys from the others and moves no other. Reads no
    load and no cache. A request without a key takes a random point, as Envoy does when no hash is
    computed (own seeded generator): random routing on prefix-free workloads."""

    name = "consistent_hash"

    def __init__(self, virtual_nodes: int = 160) -> None:
        self.virtual_nodes = virtual_nodes

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._num_replicas = 0  # the ring is built for this many replicas

    def _build(self, n: int) -> None:
        owner = np.repeat(np.arange(n), self.virtual_nodes)
        points = mix(owner, np.tile(np.arange(self.virtual_nodes), n))
        order = np.argsort(points, kind="stable")
        self._points, self._owner, self._num_replicas = points[order], owner[order], n

    def act(self, obs):
        n = obs["replicas"].shape[0]
        if n != self._num_replicas:
            self._build(n)
        key = int(obs["request"][RequestColumn.prefix_key])
        h = mix(key, PREFIX_KEY_SPACE)[0] if key else self._rng.integers(0, 1 << 64, dtype=np.uint64)
        return int(self._owner[np.searchsorted(self._points, h) % len(self._points)])


class PrebleE2(Heuristic):
    """Preble's E2 placement (Srivatsa et al., ICLR'25, arXiv:2407.00023; not its load rebalancing or prefix
    autoscaling): exploit when the best replica's cached tokens (cached_prefix) exceed the prompt's uncached
    ones there, going to the replica caching most (the least loaded of those); else explore to the least
    load, its outstanding work (prefill + predicted decode tokens left) plus this request's uncached prefill
    there (Preble's L + P, in tokens, as on identical replicas). Without a cache it is least_work_left."""

    name = "preble_e2"

    def act(self, obs):
        rep = np.asarray(obs["replicas"], dtype=np.float64)
        prompt = float(obs["request"][RequestColumn.prefill_tokens])
        cached = rep[:, ReplicaColumn.cached_prefix]
        load = work_left(rep) + prompt - cached
        if cached.max() > prompt - cached.max():
            return first_min(-cached, load)
        return first_min(load)


HEURISTICS: Dict[str, Callable[[], Heuristic]] = {
    cls.name: cls for cls in (RoundRobin, Random, LOR, JSQ, LeastWorkLeft, PowerOfTwo, SITAE,
                              WeightedRoundRobin, LeastWorkLeftTime, PowerOfTwoECT,
                              CacheAware, LlmdScorer, DynamoKV, ConsistentHash, PrebleE2)
}
#: the heuristics that know replica speeds (the rest are capacity-blind, as most deployments run)
CAPACITY_AWARE = ("weighted_round_robin", "least_work_left_time", "power_of_two_ect")
#: what each capacity-aware heuristic is on identical replicas (tests/test_hetero.py), where suites run the twin only
BLIND_TWIN = dict(zip(CAPACITY_AWARE, ("round_robin", "least_work_left", "power_of_two")))
#: deployed prefix-cache-aware routers: the baselines of prefix-sharing suites (not of the default lists, whose
#: results they would change); without a prefix cache all but consistent_hash are load balancers
CACHE_AWARE = ("cache_aware", "llmd_scorer", "dynamo_kv", "consistent_hash", "preble_e2")
#: what a cache-aware heuristic is without a prefix cache, where that is another heuristic (tests/test_cache_routing.py)
NO_CACHE_TWIN = {"cache_aware": "jsq", "preble_e2": "least_work_left"}


def make_heuristic(name: str) -> Heuristic:
    return lookup(HEURISTICS, name, "heuristic")()
