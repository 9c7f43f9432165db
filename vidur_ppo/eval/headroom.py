"""How much better than the best heuristic could any router do? An offline search over assignments.

A router decides online with predicted lengths; this search knows the whole trace (arrivals and true
lengths) and may re-simulate it as often as its budget allows. It starts from the best heuristic's
assignment of the same trace and hill-climbs on an objective (`Objective`): each step moves one request
to another replica and re-runs vidur on the whole trace, keeping the move if the objective improves.
Moves target the requests the objective blames (E2E P99: the slowest; SLO attainment: those missing
their SLO), or one that shared a replica with such a request and arrived before it. The result is
*achievable* (a real assignment, simulated), so the gap to the best heuristic is a lower bound on the
headroom; the true optimum may be better still.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.sim.metrics import tpot

# `slo_excess` of an unfinished request, and the cap of every request's in the tie-break (10x its SLO)
EXCESS_CAP = 10.0


class FixedAssignment:
    """A router that sends request id i to `assignment[i]` (it reads the id from the bound env)."""

    name = "fixed_assignment"

    def __init__(self, assignment: np.ndarray):
        self.assignment = np.asarray(assignment, dtype=np.int64)

    def bind(self, env: VidurRoutingEnv) -> None:
        self.env = env

    def __call__(self, obs) -> int:
        return int(self.assignment[self.env.driver.current_request.id])


def slo_excess(req: Mapping[str, np.ndarray], slo_ttft: float, slo_tpot: float) -> np.ndarray:
    """Per request (in `req`'s order): how far it is beyond its SLOs, relative to them, summed over TTFT and
    TPOT (0: meets both, as `metrics.slo_met` counts it; 0.5: e.g. a TTFT 1.5x its SLO); an unfinished
    request EXCESS_CAP."""
    over = (np.maximum(np.asarray(req["ttft"], float) / slo_ttft - 1.0, 0.0)
            + np.maximum(tpot(req) / slo_tpot - 1.0, 0.0))
    return np.where(np.asarray(req["completed"], dtype=bool), over, EXCESS_CAP)


@dataclass(frozen=True)
class Objective:
    """What the search minimises and which requests its moves target. `key`: the episode metric reported
    (start, best, history). The plain objective is the metric itself and targets the `tail` slowest
    requests (E2E)."""

    key: str = "e2e_p99"
    tail: int = 20

    def measure(self, env: VidurRoutingEnv, metrics: Mapping[str, float],
                req: Mapping[str, np.ndarray]) -> Tuple[float, float, np.ndarray]:
        """(score to minimise, the reported metric, ids of the requests to target) of one simulation."""
        e2e = by_id(req, np.asarray(req["e2e"], dtype=float))
        return float(metrics[self.key]), float(metrics[self.key]), np.argsort(-e2e)[: self.tail]


@dataclass(frozen=True)
class SloObjective(Objective):
    """Maximise SLO attainment (the env's TTFT and TPOT SLOs), lexicographically ahead of a tie-break:
    score = -attainment + mean(min(slo_excess, EXCESS_CAP)) over the violators / EXCESS_CAP / (n + 1).
    The tie-break is below one request's worth of attainment (1/n), so it never trades a met SLO for
    slack, but a move that brings the misses closer to their SLOs counts as progress (attainment alone
    is flat for most single moves). Targets: every request missing its SLO."""

    key: str = "slo_attainment"

    def measure(self, env, metrics, req):
        excess = by_id(req, slo_excess(req, env.slos["slo_ttft"], env.slos["slo_tpot"]))
        miss = np.flatnonzero(excess > 0)
        tie = float(np.minimum(excess[miss], EXCESS_CAP).mean()) / EXCESS_CAP if len(miss) else 0.0
        value = float(metrics[self.key])
        return -value + tie / (len(excess) + 1), value, miss


def objective_of(objective: Union[str, Objective], tail: int = 20) -> Objective:
    """An Objective, or its name: "slo" (`SloObjective`), else a lower-is-better episode metric such as
    "e2e_p99", whose moves target its `tail` slowest requests."""
    if isinstance(objective, Objective):
        return objective
    return SloObjective() if objective == "slo" else Objective(key=objective, tail=tail)


def by_id(req: Mapping[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    """`values` (one per row of `req`) indexed by request id."""
    out = np.full(len(values), np.inf)
    out[np.asarray(req["request_id"])] = values
    return out


@dataclass
class SearchResult:
    start: float  # the starting assignment's metric (the objective's key)
    best: float  # the metric of the best assignment found (best by the objective's score)
    assignment: np.ndarray
    evaluations: int
    history: List[float] = field(default_factory=list)  # the best's metric after each evaluation


class Evaluation(NamedTuple):
    """One full simulation of a trace under a fixed assignment, as the search sees it."""

    value: float  # the objective's metric
    score: float  # the objective's score, lower is better
    targets: np.ndarray  # ids of the requests the objective blames
    e2e: np.ndarray  # per request id


def measure_episode(env: VidurRoutingEnv, metrics: Mapping[str, float], objective: Objective) -> Evaluation:
    """The objective on the episode `env` just ran (its `metrics`)."""
    req = env.driver.per_request()
    score, value, targets = objective.measure(env, metrics, req)
    return Evaluation(value, score, targets, by_id(req, np.asarray(req["e2e"], dtype=float)))


def evaluate_assignment(env: VidurRoutingEnv, trace, seed: int, assignment: np.ndarray,
                        key: Union[str, Objective] = "e2e_p99") -> Evaluation:
    """One full simulation of `trace` under a fixed assignment, measured by the objective `key`."""
    m = run_episode(env, FixedAssignment(assignment), seed=seed, trace=trace)
    return measure_episode(env, m, objective_of(key))


def local_search(env: VidurRoutingEnv, trace, seed: int, start: np.ndarray, budget: int = 200,
                 key: Union[str, Objective] = "e2e_p99", tail: int = 20,
                 rng: Optional[np.random.Generator] = None) -> SearchResult:
    """Hill-climb from `start` (an assignment by request id) for `budget` simulations of `trace`, on the
    objective `key` (`objective_of`; `tail`: how many slowest requests a plain metric targets). Stops
    early once the objective blames no request (every SLO met)."""
    objective = objective_of(key, tail)
    rng = rng or np.random.default_rng(seed)
    r = env.cluster.num_replicas
    arrived = np.asarray(trace.arrived_at, dtype=float)
    best_assign = np.asarray(start, dtype=np.int64).copy()
    best = evaluate_assignment(env, trace, seed, best_assign, objective)
    result = SearchResult(start=best.value, best=best.value, assignment=best_assign, evaluations=1,
                          history=[best.value])
    while result.evaluations < budget and len(best.targets):
        victim = int(rng.choice(best.targets))
        if rng.random() < 0.5:  # move the blamed request itself
            mover = victim
        else:  # or one that shared its replica and arrived before it (it slowed it down)
            ahead = np.flatnonzero((best_assign == best_assign[victim]) & (arrived <= arrived[victim])
                                   & (arrived + best.e2e >= arrived[victim]))
            mover = int(rng.choice(ahead)) if len(ahead) else victim
        trial = best_assign.copy()
        trial[mover] = (trial[mover] + 1 + int(rng.integers(r - 1))) % r
        found = evaluate_assignment(env, trace, seed, trial, objective)
        result.evaluations += 1
        if found.score < best.score:
            best, best_assign = found, trial
            result.best, result.assignment = best.value, best_assign
        result.history.append(best.value)
    return result


def headroom_job(args) -> Dict[str, Any]:
    """One (scenario, seed) in a worker: every heuristic on the trace, then the search from the best one's
    assignment (best by the objective's score). args: (env spec, scenario name, seed, heuristics, budget,
    objective name or Objective)."""
    from vidur_ppo.routing.heuristics import make_heuristic

    spec, name, seed, heuristics, budget, key = args
    objective = objective_of(key)
    env = spec.make()
    trace = env.workload.generate(int(seed))
    rows, scores, assignments = {}, {}, {}
    for h in heuristics:
        ev = measure_episode(env, run_episode(env, make_heuristic(h), seed=int(seed), trace=trace), objective)
        rows[h], scores[h] = ev.value, ev.score
        assignments[h] = env.driver.assignment.copy()
    best_h = min(scores, key=scores.get)
    res = local_search(env, trace, int(seed), assignments[best_h], budget=budget, key=objective)
    return {"scenario": name, "seed": int(seed), "key": objective.key, "best_heuristic": best_h, **rows,
            "search_start": res.start, "search_best": res.best, "evaluations": res.evaluations}
