"""Lookahead planners: routers that fork the running vidur simulation and try each replica.

At an arrival the planner copies what is in flight (vidur's replica schedulers, batches, events and
the requests they hold; never the trace's future arrivals), sends the request to one candidate
replica in the copy, and simulates the copy forward with vidur's own events:

- `horizon_s: 0` is Block's one-step lookahead (arXiv 2508.03611): no further arrivals, so only the
  candidate replica is copied and run to completion with and without the request (its added cost);
- `horizon_s > 0` is Bertsekas' rollout algorithm: `samples` futures of arrivals drawn from a
  workload model fitted on the requests seen so far (Poisson at the recent arrival rate, prompt and
  predicted output lengths resampled from recent requests), routed in the copy by a `base`
  heuristic; every candidate sees the same sampled futures (common random numbers), so candidates
  differ only by the decision. The rollout is no worse than its base policy in expectation.

The candidate with the least cost accrued by every request in the window wins: `latency` is the
time-integral of requests in the system (total sojourn), `squared` the integral of twice their age,
sum (age_end^2 - age_start^2), which weighs long sojourns more (the tail); `own` is the routed
request's own predicted E2E (Block's "least predicted E2E", the copy stops once it is done),
`own_slo` the same with the request's own TTFT and TPOT SLOs met first, and `queue_slo` the SLO
misses of every request in the copy (queued, running, routed; `slo_cost`), so a decision that makes
others wait past their first-token SLO is charged for it. A real router does not
know output lengths: every request in the copy runs its *predicted* length (the env's length
predictor; at least one token more than it has produced), so the planner reads what the other
routers read. Id counters are restored after each plan, so planning never changes the real run.
"""

from __future__ import annotations

import copy
import heapq
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from vidur._native.entities import ExecutionTime as NativeExecutionTime
from vidur.entities import Request
from vidur.events.global_schedule_event import GlobalScheduleEvent
from vidur.events.request_arrival_event import RequestArrivalEvent
from vidur.types import ReplicaId

from vidur_ppo.checks import StrEnum, check, choice, from_mapping, positive
from vidur_ppo.routing.heuristics import HEURISTICS, Heuristic, LeastWorkLeftTime, make_heuristic
from vidur_ppo.sim import compat
from vidur_ppo.sim.driver import replica_state, request_vector
from vidur_ppo.sim.metrics import DEFAULT_SLO_TPOT, DEFAULT_SLO_TTFT, slo_costs, slo_met

# vidur's native execution times are immutable and cannot be pickled: a fork shares them
copy._deepcopy_dispatch.setdefault(NativeExecutionTime, copy._deepcopy_atomic)


class Cost(StrEnum):
    latency = "latency"  # time-integral of requests in the system over the window
    squared = "squared"  # sum over requests of age_end^2 - age_start^2 (long sojourns weigh more)
    own = "own"  # the routed request's own predicted E2E (Block's "least predicted E2E"; stops once it is done)
    # `own`, but meeting the run's TTFT and TPOT SLOs comes first: a replica where the request's predicted
    # TTFT or TPOT misses its SLO costs SLO_MISS_S more (own E2E alone queues requests behind fast replicas
    # however long their first token waits: experiments/results/headline.md)
    own_slo = "own_slo"
    # every request of the window (queued, running, routed, sampled): requests missing their TTFT or TPOT
    # SLO, plus a smooth margin (`slo_cost`); unfinished ones censored at the window's end (lower bounds)
    queue_slo = "queue_slo"


SLO_MISS_S = 1e4  # larger than any E2E: a lexicographic order (SLO met, then E2E)
OWN_COSTS = (Cost.own, Cost.own_slo)  # follow the routed request to its end, and only it


@dataclass
class LookaheadConfig:
    horizon_s: float = 3.0  # sampled arrivals over this window (0: none, Block's one-step lookahead)
    samples: int = 1  # sampled futures per candidate, the same for every candidate
    base: str = "least_work_left"  # routes the sampled arrivals inside the fork
    cost: Cost = Cost.squared
    drain: bool = False  # simulate until every request of the window is done (else: censor at the horizon)
    candidates: int = 0  # 0: every replica; k: only the k replicas with the least outstanding work (in seconds)
    history: int = 200  # recent arrivals the workload model is fitted on

    def __post_init__(self) -> None:
        p = "lookahead"
        check(self.horizon_s >= 0, f"{p}.horizon_s", "must be >= 0", self.horizon_s)
        positive(self, p, "samples", "history")
        check(self.candidates >= 0, f"{p}.candidates", "must be >= 0 (0: every replica)", self.candidates)
        check(self.base in HEURISTICS, f"{p}.base", f"must be a heuristic ({', '.join(HEURISTICS)})", self.base)
        choice(self, p, "cost", Cost)
        check(self.horizon_s > 0 or self.drain, f"{p}.drain", "must be true when horizon_s is 0 (nothing "
              "would be simulated)", self.drain)

    @classmethod
    def of(cls, spec: "LookaheadConfig | Mapping[str, Any] | None") -> "LookaheadConfig":
        return spec if isinstance(spec, cls) else from_mapping(cls, dict(spec or {}), "lookahead")


#: named planners (a suite's `eval.planners`): Block's one-step lookahead and the rollout algorithm
PLANNERS: Dict[str, Dict[str, Any]] = {
    "lookahead_one_step": {"horizon_s": 0.0, "samples": 1, "drain": True, "cost": "own"},
    "lookahead_one_step_slo": {"horizon_s": 0.0, "samples": 1, "drain": True, "cost": "own_slo"},
    "lookahead_one_step_queue_slo": {"horizon_s": 0.0, "samples": 1, "drain": True, "cost": "queue_slo"},
    "lookahead": {},  # LookaheadConfig's defaults
    # the rollout with every request's SLO misses; its sampled arrivals routed by speed (least_work_left on
    # identical replicas; least_work_left's speed-blind futures cost it 0.95 / 0.88 SLO attainment on mixes:
    # experiments/results/perf_attempts.md, session 7)
    "lookahead_queue_slo": {"cost": "queue_slo", "base": "least_work_left_time"},
}


def slo_cost(req: Mapping[str, np.ndarray], slo_ttft: Optional[float] = DEFAULT_SLO_TTFT,
             slo_tpot: Optional[float] = DEFAULT_SLO_TPOT) -> float:
    """Sum over requests of their SLO cost (`metrics.slo_costs`: misses plus a smooth margin)."""
    return float(slo_costs(req, slo_ttft, slo_tpot).sum())


class _Fork:
    """A copy of the simulation's in-flight state that can run forward on its own."""

    def __init__(self, driver, token_limit: int, replica: Optional[int] = None):
        """`replica`: copy only that replica (its scheduler, events and requests) and the arriving request:
        with no further arrivals (the one-step lookahead) no other replica can change."""
        sim, scheduler = driver.sim, driver.scheduler
        now = driver.now
        only = None if replica is None else ReplicaId(replica)
        # the trace's future arrivals stay hidden; everything else in flight is copied
        live = [e for e in sim._event_queue if type(e[1]) is not RequestArrivalEvent
                and (only is None or getattr(e[1], "_replica_id", None) == only)]
        memo: Dict[int, Any] = {id(sim._config): sim._config}
        for i, rs in enumerate(driver._replica_schedulers):
            memo[id(rs._execution_time_predictor)] = rs._execution_time_predictor
            memo[id(rs._config)] = rs._config
            memo[id(rs._replica_config)] = rs._replica_config
            if only is not None and i != replica:
                memo[id(rs)] = rs  # never touched: no event or decision of the fork reaches it
        pending = driver._pending if only is None else driver._pending[:1]
        self.scheduler, self.events, self.store, self.pending, self.held = copy.deepcopy(
            (scheduler, live, sim._metric_store, list(pending), driver._held_event), memo)
        elsewhere = set()  # same-instant decisions for other replicas: copied along, but never run here
        if only is not None:
            elsewhere = {d[1]._id for d in self.scheduler.decisions if d[0] != only}
            self.scheduler.decisions = [d for d in self.scheduler.decisions if d[0] == only]
        heapq.heapify(self.events)
        self.now = now
        self.replica_schedulers = [self.scheduler.get_replica_scheduler(ReplicaId(i))
                                   for i in range(driver.num_replicas)]
        self.requests: Dict[int, Request] = {v._id: v for v in memo.values() if type(v) is Request}
        self.token_limit = token_limit
        error = driver.length_error  # predicted - true output length (None: the router is told the truth)
        if error is not None:  # the router's view: every request runs its predicted length
            for r in self.requests.values():
                if not r._completed:
                    self._set_length(r, r._num_decode_tokens + int(error[r._id]))
        self.window = [r for r in self.requests.values() if not r._completed and r._id not in elsewhere]
        self.speed = driver.replica_speed

    def _set_length(self, r: Request, decode: int) -> None:
        done = max(r._num_processed_tokens, r._num_stage_processed_tokens)
        total = min(max(r._num_prefill_tokens + max(decode, 1), done + 1), max(self.token_limit, done + 1))
        r._num_decode_tokens = total - r._num_prefill_tokens

    def add_arrivals(self, arrivals: np.ndarray) -> None:
        """(time, prompt tokens, output tokens) rows as vidur arrivals in the copy."""
        for t, p, d in arrivals:
            r = Request(arrived_at=float(t), num_prefill_tokens=int(p), num_decode_tokens=int(d))
            self.requests[r._id] = r
            self.window.append(r)
            ev = RequestArrivalEvent(float(t), r)
            heapq.heappush(self.events, (ev._priority_number, ev))

    def _route_pending(self, base: Heuristic) -> None:
        for r in self.pending:
            state = replica_state(self.replica_schedulers, self.requests, self.now, self.scheduler.decisions,
                                  None, self.speed, r)
            obs = {"replicas": state, "request": request_vector(r)}  # r runs its predicted length here
            self.scheduler.decisions.append((ReplicaId(base.act(obs)), r))
        self.pending = []

    def run(self, first: Optional[int], base: Heuristic, until: float, stop_when_routed_done: bool = False) -> None:
        """Send the waiting request to `first` (None: leave it out), the rest by `base`; simulate to `until`
        (inf: until every request is done), or only until the routed request is done."""
        request = self.routed = self.pending.pop(0)
        if first is None:
            self.window.remove(request)
        else:
            self.scheduler.decisions.append((ReplicaId(first), request))
        self._route_pending(base)
        if self.held is not None:
            self._push(self.held.handle_event(self.scheduler, self.store))
        events, scheduler, store = self.events, self.scheduler, self.store
        watch = request if stop_when_routed_done else None
        while events and events[0][1]._time <= until and not (watch is not None and watch._completed):
            _, event = heapq.heappop(events)
            self.now = event._time
            if type(event) is GlobalScheduleEvent and scheduler._request_queue:
                scheduler.sort_requests()
                self.pending, scheduler._request_queue = scheduler._request_queue, []
                self._route_pending(base)
            self._push(event.handle_event(scheduler, store))
        self.now = until if until != float("inf") else self.now

    def _push(self, new_events) -> None:
        for ev in new_events:
            heapq.heappush(self.events, (ev._priority_number, ev))

    def cost(self, start: float, kind: Cost, slos: Optional[Mapping[str, float]] = None) -> float:
        """Cost accrued in [start, self.now] by the window's requests (unfinished ones censored at now);
        `own_slo` and `queue_slo` read the run's `slos` (slo_ttft, slo_tpot; VidurRoutingEnv.slos)."""
        if kind in OWN_COSTS:
            r = self.routed
            e2e = (r._completed_at if r._completed else self.now) - r._arrived_at
            if kind == Cost.own or not r._completed:
                return e2e
            ttft = r._prefill_completed_at - r._arrived_at
            ttft_ok, tpot_ok = slo_met({"e2e": np.array([e2e]), "ttft": np.array([ttft]),
                                        "num_decode_tokens": np.array([r.num_decode_tokens])}, **(slos or {}))
            return e2e + (0.0 if (ttft_ok & tpot_ok).all() else SLO_MISS_S)
        if kind == Cost.queue_slo:  # an unfinished request's TTFT and TPOT so far: lower bounds at its length
            window = self.window
            arrived = np.fromiter((r._arrived_at for r in window), float, len(window))
            first = np.fromiter((r._prefill_completed_at if r._prefill_completed_at > 0 else self.now
                                 for r in window), float, len(window))
            last = np.fromiter((r._completed_at if r._completed else self.now for r in window), float, len(window))
            decode = np.fromiter((r._num_decode_tokens for r in window), float, len(window))
            return slo_cost({"ttft": first - arrived, "e2e": last - arrived, "num_decode_tokens": decode},
                            **(slos or {}))
        total = 0.0
        for r in self.window:
            begin = max(r._arrived_at, start)
            end = r._completed_at if r._completed else self.now
            if end <= begin:
                continue
            if kind == Cost.latency:
                total += end - begin
            else:
                total += (end - r._arrived_at) ** 2 - (begin - r._arrived_at) ** 2
        return total


class Lookahead(Heuristic):
    """A planner with the router interface: `bind(env)` after each reset (run_episode does), then
    `act(obs)`. `decision_seconds` keeps the wall time of every decision (ms per decision)."""

    name = "lookahead"

    def __init__(self, cfg: "LookaheadConfig | Mapping[str, Any] | None" = None, name: Optional[str] = None):
        self.cfg = LookaheadConfig.of(cfg)
        if name:
            self.name = name
        self.env = None
        self.decision_seconds: List[float] = []

    def reset(self, seed: Optional[int] = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._seen: List[tuple] = []  # (arrival time, prompt, predicted output) of every request routed
        self._own_base = make_heuristic(self.cfg.base)  # the base heuristic on the real episode (ties)
        self._own_base.reset(seed)

    def bind(self, env) -> None:
        self.env = env

    def act(self, obs) -> int:
        check(self.env is not None, "lookahead", "needs the env: call bind(env) after reset (run_episode does)", None)
        t0 = time.perf_counter()
        driver = self.env.driver
        request = driver.current_request
        self._seen.append((request._arrived_at, float(obs["request"][0]), float(obs["request"][1])))
        candidates = self._candidates(obs["replicas"])
        fallback = self._own_base.act(obs)  # equal costs (e.g. all censored) go to the base heuristic's choice
        choice_ = candidates[0] if len(candidates) == 1 else self._plan(driver, candidates, fallback)
        self.decision_seconds.append(time.perf_counter() - t0)
        return int(choice_)

    def _candidates(self, replicas: np.ndarray) -> np.ndarray:
        k = self.cfg.candidates
        if not k or k >= len(replicas):
            return np.arange(len(replicas))
        work = LeastWorkLeftTime().load(replicas)  # outstanding tokens / replica speed
        return np.sort(np.argsort(work, kind="stable")[:k])

    def _futures(self, now: float) -> List[np.ndarray]:
        """`samples` arrival sequences over the horizon, from the recent rate and lengths."""
        cfg = self.cfg
        if cfg.horizon_s <= 0:
            return [np.zeros((0, 3))]
        recent = np.asarray(self._seen[-cfg.history:])
        span = recent[-1, 0] - recent[0, 0]
        rate = (len(recent) - 1) / span if len(recent) > 1 and span > 0 else 0.0
        out = []
        for _ in range(cfg.samples):
            n = self._rng.poisson(rate * cfg.horizon_s)
            times = np.sort(now + self._rng.uniform(0, cfg.horizon_s, n))
            rows = recent[self._rng.integers(len(recent), size=n)]
            out.append(np.column_stack([times, rows[:, 1], np.maximum(rows[:, 2], 1)]))
        return out

    def _base(self) -> Heuristic:
        """The base policy of one fork, afresh (a heuristic's state must not leak between candidates)."""
        base = make_heuristic(self.cfg.base)
        base.reset(0)
        return base

    def _plan(self, driver, candidates: np.ndarray, fallback: int) -> int:
        cfg = self.cfg
        now = driver.now
        # `own` follows the routed request to its end (arrivals still only within the horizon)
        until = float("inf") if cfg.drain or cfg.cost in OWN_COSTS else now + cfg.horizon_s
        limit = self.env.cluster.request_token_limit()
        costs = np.zeros(len(candidates))
        with compat.saved_id_counters():
            if cfg.horizon_s == 0:  # one-step: no arrivals, so only the candidate replica changes: its added cost
                runs = ((None, -1.0), ) if cfg.cost not in OWN_COSTS else ()
                for j, c in enumerate(candidates):
                    for first, sign in ((int(c), 1.0), *runs):
                        fork = _Fork(driver, limit, replica=int(c))
                        fork.run(first, self._base(), until, stop_when_routed_done=cfg.cost in OWN_COSTS)
                        costs[j] += sign * fork.cost(now, cfg.cost, self.env.slos)
                return self._pick(candidates, costs, fallback)
            for future in self._futures(now):
                for j, c in enumerate(candidates):
                    fork = _Fork(driver, limit)
                    fork.add_arrivals(future)
                    fork.run(int(c), self._base(), until, stop_when_routed_done=cfg.cost in OWN_COSTS)
                    costs[j] += fork.cost(now, cfg.cost, self.env.slos)
        return self._pick(candidates, costs, fallback)

    @staticmethod
    def _pick(candidates: np.ndarray, costs: np.ndarray, fallback: int) -> int:
        """The least cost; among equal costs (within 1e-9 relative) the base heuristic's choice, else the first."""
        tied = candidates[costs <= costs.min() + 1e-9 * max(abs(costs.min()), 1.0)]
        return int(fallback) if fallback in tied else int(tied[0])


def make_planner(name: str, overrides: Optional[Mapping[str, Any]] = None) -> Lookahead:
    """A named planner (`PLANNERS`), its settings overridden by `overrides` (e.g. eval.lookahead)."""
    check(name in PLANNERS, "eval.planners", f"must name planners ({', '.join(PLANNERS)})", name)
    return Lookahead({**PLANNERS[name], **dict(overrides or {})}, name=name)
