"""Capacity at SLO: the largest load rho (a fraction of the cluster's measured saturation throughput,
`workload.load`, routing/capacity.py) at which at least `target` of the requests meet both the TTFT
and the TPOT SLO, per router, found by bisection. This is the number operators buy GPUs by: a router
that lifts it serves the same traffic with fewer replicas. Every attainment comes from the paired
evaluation loop (`paired.evaluate`), so simulation and metrics are those of every other table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

import numpy as np

from vidur_ppo.build import EnvSpec
from vidur_ppo.checks import check, positive


@dataclass
class CapacityConfig:
    """The `eval.capacity` section: bracket, stopping width and budget of the bisection."""

    target: float = 0.9  # share of requests meeting both SLOs
    low: float = 0.2  # rho bracket searched
    high: float = 2.0
    tol: float = 0.02  # stop once the bracket is narrower than this
    seeds: int = 3  # evaluation seeds per attainment (from eval.seed_base up)
    num_requests: int = 600  # requests per episode
    replicas: List[int] = field(default_factory=lambda: [4])  # cluster sizes measured; [] = off
    mixes: bool = False  # also each mixed cluster (`replicas` groups) among a suite's listed scenarios

    def __post_init__(self) -> None:
        positive(self, "eval.capacity", "low", "high", "tol", "seeds", "num_requests")
        check(self.low < self.high, "eval.capacity.low", f"must be < eval.capacity.high ({self.high!r})", self.low)
        check(0.0 < self.target <= 1.0, "eval.capacity.target", "must be in (0, 1]", self.target)
        self.replicas = list(self.replicas)
        bad = [r for r in self.replicas if isinstance(r, bool) or not isinstance(r, int) or r <= 0]
        check(not bad, "eval.capacity.replicas", "must be a list of replica counts > 0", self.replicas)


@dataclass
class CapacityResult:
    capacity: float  # rho
    censored: str  # "": bracketed to tol; "<": even `low` misses the target; ">=": even `high` meets it
    evaluations: List[Tuple[float, float]]  # (rho, attainment) in the order tried


def attainment_at(spec: EnvSpec, router: Any, rho: float, seeds: Sequence[int], num_requests: int) -> float:
    """Mean over seeds of the share of requests meeting both SLOs, `router` (a heuristic name or a
    policy `paired.evaluate` accepts) on `spec` at load rho (QPS re-resolved on spec's cluster)."""
    from vidur_ppo.eval.paired import evaluate

    env = spec.scenario(workload={"load": float(rho)}, num_requests=int(num_requests)).make()
    rows = evaluate(env, {"router": router}, seeds)
    return float(np.mean([r["slo_attainment"] for r in rows]))


def capacity_at_slo(spec: EnvSpec, router: Any, cfg: CapacityConfig, seeds: Sequence[int]) -> CapacityResult:
    """Largest rho in [cfg.low, cfg.high] with attainment >= cfg.target, by bisection.

    Attainment need not be monotone in rho with few seeds: the bisection only keeps the invariant
    att(lo) >= target > att(hi), so it returns a measured passing load next to a measured failing one.
    """
    tried: List[Tuple[float, float]] = []

    def att(rho: float) -> float:
        a = attainment_at(spec, router, rho, seeds, cfg.num_requests)
        tried.append((float(rho), a))
        return a

    if att(cfg.low) < cfg.target:
        return CapacityResult(cfg.low, "<", tried)
    if att(cfg.high) >= cfg.target:
        return CapacityResult(cfg.high, ">=", tried)
    lo, hi = cfg.low, cfg.high
    while hi - lo >= cfg.tol:
        mid = 0.5 * (lo + hi)
        if att(mid) >= cfg.target:
            lo = mid
        else:
            hi = mid
    return CapacityResult(lo, "", tried)
