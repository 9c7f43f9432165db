"""Heuristic global schedulers, with the same interface as a learned policy (obs -> action).

They read the env's observation (`obs["replicas"]`, columns `REPLICA_STATE_COLUMNS`), go
through the same driver, traces and metrics as PPO, and double as behaviour-cloning teachers.
Ties go to the lowest replica index, as in vidur. Random choices use each heuristic's own
seeded generator (vidur's `random` scheduler uses Python's global `random` state).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional

import numpy as np

from vidur_ppo.registry import lookup
from vidur_ppo.routing.size_split import long_pool_size
from vidur_ppo.sim.driver import ReplicaColumn



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
        return replicas[:, ReplicaColumn.waiting] + replicas[:, ReplicaColumn.running]


class LeastWorkLeft(_ArgMin):
    """Fewest outstanding tokens (prefill + decode still to process)."""

    name = "least_work_left"

    def load(self, replicas):
        return replicas[:, ReplicaColumn.prefill_tokens_left] + replicas[:, ReplicaColumn.decode_tokens_left]


class PowerOfTwo(Heuristic):
    """Power-of-two choices: sample two distinct replicas, keep the one with fewer outstanding
    requests (waiting + running)."""

    name = "power_of_two"

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = np.random.default_rng(seed)

    def score(self, replicas: np.ndarray) -> np.ndarray:
        """What the two sampled replicas are compared by (lower wins, then the lower index)."""
        return replicas[:, ReplicaColumn.waiting] + replicas[:, ReplicaColumn.running]

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
        work = rep[pool, ReplicaColumn.prefill_tokens_left] + rep[pool, ReplicaColumn.decode_tokens_left]
        return int(pool[np.argmin(work)])


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
        work = replicas[:, ReplicaColumn.prefill_tokens_left] + replicas[:, ReplicaColumn.decode_tokens_left]
        return work / replicas[:, ReplicaColumn.speed]


class PowerOfTwoECT(PowerOfTwo):
    """Power-of-two choices on expected completion time: of two random replicas, the one where
    (outstanding requests + 1) / speed is smaller."""

    name = "power_of_two_ect"

    def score(self, replicas):
        return (replicas[:, ReplicaColumn.waiting] + replicas[:, ReplicaColumn.running] + 1) / replicas[:, ReplicaColumn.speed]


HEURISTICS: Dict[str, Callable[[], Heuristic]] = {
    cls.name: cls for cls in (RoundRobin, Random, LOR, JSQ, LeastWorkLeft, PowerOfTwo, SITAE,
                              WeightedRoundRobin, LeastWorkLeftTime, PowerOfTwoECT)
}
#: the heuristics that know replica speeds (the rest are capacity-blind, as most deployments run)
CAPACITY_AWARE = ("weighted_round_robin", "least_work_left_time", "power_of_two_ect")
#: what each capacity-aware heuristic is on identical replicas (tests/test_hetero.py), where suites run the twin only
BLIND_TWIN = dict(zip(CAPACITY_AWARE, ("round_robin", "least_work_left", "power_of_two")))


def make_heuristic(name: str) -> Heuristic:
    return lookup(HEURISTICS, name, "heuristic")()
