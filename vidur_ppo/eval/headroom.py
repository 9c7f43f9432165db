"""How much better than the best heuristic could any router do? An offline search over assignments.

A router decides online with predicted lengths; this search knows the whole trace (arrivals and true
lengths) and may re-simulate it as often as its budget allows. It starts from the best heuristic's
assignment of the same trace and hill-climbs on the episode's own metric (E2E P99 by default): each
step moves one request to another replica and re-runs vidur on the whole trace, keeping the move if
the metric improves. Moves target the tail: a request among the slowest, or one that shared a replica
with a slow request and arrived before it. The result is *achievable* (a real assignment, simulated),
so `best heuristic - found` is a lower bound on the headroom; the true optimum may be lower still.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from vidur_ppo.routing.env import VidurRoutingEnv, run_episode


class FixedAssignment:
    """A router that sends request id i to `assignment[i]` (it reads the id from the bound env)."""

    name = "fixed_assignment"

    def __init__(self, assignment: np.ndarray):
        self.assignment = np.asarray(assignment, dtype=np.int64)

    def bind(self, env: VidurRoutingEnv) -> None:
        self.env = env

    def __call__(self, obs) -> int:
        return int(self.assignment[self.env.driver.current_request.id])


@dataclass
class SearchResult:
    start: float  # the starting assignment's metric
    best: float  # the best found
    assignment: np.ndarray
    evaluations: int
    history: List[float] = field(default_factory=list)  # the best metric after each evaluation


def evaluate_assignment(env: VidurRoutingEnv, trace, seed: int, assignment: np.ndarray, key: str) -> tuple:
    """(metric, per-request E2E) of one full simulation of `trace` under a fixed assignment."""
    m = run_episode(env, FixedAssignment(assignment), seed=seed, trace=trace)
    req = env.driver.per_request()
    e2e = np.full(len(assignment), np.inf)
    e2e[np.asarray(req["request_id"])] = np.asarray(req["e2e"], dtype=float)
    return float(m[key]), e2e


def local_search(env: VidurRoutingEnv, trace, seed: int, start: np.ndarray, budget: int = 200,
                 key: str = "e2e_p99", tail: int = 20, rng: Optional[np.random.Generator] = None) -> SearchResult:
    """Hill-climb from `start` (an assignment by request id) for `budget` simulations of `trace`."""
    rng = rng or np.random.default_rng(seed)
    r = env.cluster.num_replicas
    arrived = np.asarray(trace.arrived_at, dtype=float)
    best_assign = np.asarray(start, dtype=np.int64).copy()
    best, e2e = evaluate_assignment(env, trace, seed, best_assign, key)
    result = SearchResult(start=best, best=best, assignment=best_assign, evaluations=1, history=[best])
    while result.evaluations < budget:
        slow = np.argsort(-e2e)[:tail]
        victim = int(rng.choice(slow))
        if rng.random() < 0.5:  # move the slow request itself
            mover = victim
        else:  # or one that shared its replica and arrived before it (it slowed it down)
            ahead = np.flatnonzero((best_assign == best_assign[victim]) & (arrived <= arrived[victim])
                                   & (arrived + e2e >= arrived[victim]))
            mover = int(rng.choice(ahead)) if len(ahead) else victim
        trial = best_assign.copy()
        trial[mover] = (trial[mover] + 1 + int(rng.integers(r - 1))) % r
        value, trial_e2e = evaluate_assignment(env, trace, seed, trial, key)
        result.evaluations += 1
        if value < best:
            best, best_assign, e2e = value, trial, trial_e2e
            result.best, result.assignment = best, best_assign
        result.history.append(best)
    return result


def headroom_job(args) -> Dict[str, Any]:
    """One (scenario, seed) in a worker: every heuristic on the trace, then the search from the best one's
    assignment. args: (env spec, scenario name, seed, heuristics, budget, key)."""
    from vidur_ppo.routing.heuristics import make_heuristic

    spec, name, seed, heuristics, budget, key = args
    env = spec.make()
    trace = env.workload.generate(int(seed))
    rows, assignments = {}, {}
    for h in heuristics:
        rows[h] = float(run_episode(env, make_heuristic(h), seed=int(seed), trace=trace)[key])
        assignments[h] = env.driver.assignment.copy()
    best_h = min(rows, key=rows.get)
    res = local_search(env, trace, int(seed), assignments[best_h], budget=budget, key=key)
    return {"scenario": name, "seed": int(seed), "key": key, "best_heuristic": best_h, **rows,
            "search_start": res.start, "search_best": res.best, "evaluations": res.evaluations}
