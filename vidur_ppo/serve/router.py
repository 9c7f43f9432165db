"""`LearnedRequestRouter`: a trained vidur-ppo policy as a Ray Serve request router (Ray's alpha API).

Per request, `choose_replicas` orders the replicas by their reported `rank`, rebuilds the env's replica-state
matrix from their latest routing stats (serve/stats.py), reads the request's prompt length and predicted
output length (serve/request.py), runs the run's features and policy (serve/policy.py) and ranks the chosen
replica first. It falls back to Serve's power-of-two choice, and counts it, when a replica has not reported
(or its report is older than `max_stats_age_s`), the request carries no sizes, or anything raises.

Configure it on the deployment whose replicas report the stats::

    RequestRouterConfig(request_router_class="vidur_ppo.serve.router.LearnedRequestRouter",
                        request_router_kwargs={"run_dir": "<trained run dir>"},
                        request_routing_stats_period_s=0.1)

Each handle (proxy, ingress replica) holds its own router; `router_report()` sums those of this process.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter, deque
from typing import Any, Deque, Dict, List, Optional, Sequence

import numpy as np
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica

from vidur_ppo.serve.policy import LearnedRouting
from vidur_ppo.serve.request import MissingRequestSize, request_sizes, request_vector
from vidur_ppo.serve.stats import RANK, REPORTED_AT, RoutedRequest, is_complete, not_yet_reported

logger = logging.getLogger(__name__)

DEFAULT_MAX_STATS_AGE_S = 2.0
DECISION_TIMES_KEPT = 100_000

#: the routers of this process (Serve's RequestRouter is unhashable, so no WeakSet)
_ROUTERS: List["weakref.ref[LearnedRequestRouter]"] = []
#: how often a request is sent to its learned pick before Serve's default places it (a pick may miss Serve's
#: queue-length probe deadline on a busy host; retries otherwise pile up on a replica that does not answer)
ATTEMPTS_PER_PICK = 3


class NoRoutingStats(RuntimeError):
    """A replica has not reported (complete) routing stats, or its last report is too old."""


class LearnedRequestRouter(PowerOfTwoChoicesRequestRouter):
    """Routes each request to the replica a trained policy picks; power-of-two choices as the fallback."""

    def initialize_state(self, run_dir: str, max_stats_age_s: float = DEFAULT_MAX_STATS_AGE_S, **_: Any) -> None:
        """Called by Serve with `request_router_kwargs`: the trained run dir, the oldest report trusted."""
        self.routing = LearnedRouting(run_dir)
        self.max_stats_age_s = float(max_stats_age_s)
        self.num_decisions = 0
        self.fallbacks: Counter = Counter()  # reason -> count
        self.decision_s: Deque[float] = deque(maxlen=DECISION_TIMES_KEPT)
        self._routed: Dict[ReplicaID, List[RoutedRequest]] = {}
        self._chosen: Dict[str, List[Any]] = {}  # internal request id -> [the learned pick, attempts] (retries)
        # Serve may ship this class by value (cloudpickle), with globals of its own: register in the imported module
        from vidur_ppo.serve import router as this_module

        this_module._ROUTERS.append(weakref.ref(self))

    async def choose_replicas(self, candidate_replicas: List[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> List[List[RunningReplica]]:
        try:
            chosen = self.learned_choice(candidate_replicas, pending_request)
        except (NoRoutingStats, MissingRequestSize) as exc:
            return await self._fall_back(type(exc).__name__, candidate_replicas, pending_request)
        except Exception:  # noqa: BLE001 - a router must route: any failure of the policy path falls back
            logger.exception("learned routing failed; falling back to power-of-two choices")
            return await self._fall_back("error", candidate_replicas, pending_request)
        if chosen is None:  # its pick did not take it ATTEMPTS_PER_PICK times: let Serve's default place it
            return await self._fall_back("retry", candidate_replicas, pending_request)
        return [[chosen]]

    def learned_choice(self, candidates: Sequence[RunningReplica],
                       pending_request: Optional[PendingRequest]) -> Optional[RunningReplica]:
        """The policy's replica for this request (a retry: the same pick, None once it was tried
        ATTEMPTS_PER_PICK times); raises when it cannot decide."""
        if pending_request is None:
            raise MissingRequestSize("no request to read sizes from")
        key = pending_request.metadata.internal_request_id
        if key in self._chosen:
            pick = self._chosen[key]
            pick[1] += 1
            return self._replicas.get(pick[0]) if pick[1] <= ATTEMPTS_PER_PICK else None
        prompt, predicted = request_sizes(pending_request.args, pending_request.kwargs)
        now = time.time()
        replicas = self.ordered(candidates, now)
        start = time.perf_counter()
        stats = [r.routing_stats for r in replicas]
        routed = [not_yet_reported(self._routed.get(r.replica_id, []), s[REPORTED_AT]) for r, s in zip(replicas, stats)]
        action, _ = self.routing.route(stats, request_vector(prompt, predicted), now, routed)
        self.decision_s.append(time.perf_counter() - start)
        chosen = replicas[action]
        self._routed[chosen.replica_id] = routed[action] + [RoutedRequest(now, prompt, predicted)]
        self._chosen[key] = [chosen.replica_id, 1]
        if len(self._chosen) > DECISION_TIMES_KEPT:
            self._chosen.pop(next(iter(self._chosen)))
        self.num_decisions += 1
        return chosen

    def ordered(self, candidates: Sequence[RunningReplica], now: float) -> List[RunningReplica]:
        """The replicas in the env's row order (their `rank`); raises NoRoutingStats if one cannot be used."""
        for r in candidates:
            stats = r.routing_stats
            if not is_complete(stats):
                raise NoRoutingStats(f"{r.replica_id} has not reported routing stats")
            if now - float(stats[REPORTED_AT]) > self.max_stats_age_s:
                raise NoRoutingStats(f"{r.replica_id}'s routing stats are {now - stats[REPORTED_AT]:.1f} s old")
        return sorted(candidates, key=lambda r: (r.routing_stats[RANK], r.replica_id.unique_id))

    async def _fall_back(self, reason: str, candidates, pending_request) -> List[List[RunningReplica]]:
        self.fallbacks[reason] += 1
        return await super().choose_replicas(candidates, pending_request)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._chosen.pop(internal_request_id, None)

    def report(self) -> Dict[str, Any]:
        """Decisions, fallbacks (by reason) and decision overhead percentiles (ms) of this router."""
        return summarise([self])


def summarise(routers: Sequence[LearnedRequestRouter]) -> Dict[str, Any]:
    """Decisions, fallbacks and decision-time percentiles (ms) over routers."""
    times = np.array([t for r in routers for t in r.decision_s], dtype=float) * 1e3
    fallbacks: Counter = Counter()
    for r in routers:
        fallbacks.update(r.fallbacks)
    decisions = sum(r.num_decisions for r in routers)
    total = decisions + sum(fallbacks.values())
    out: Dict[str, Any] = {"routers": len(routers), "learned_decisions": decisions, "fallbacks": dict(fallbacks),
                           "fallback_rate": sum(fallbacks.values()) / total if total else 0.0}
    for q in (50, 90, 99):
        out[f"decision_ms_p{q}"] = float(np.percentile(times, q)) if len(times) else None
    return out


def router_report() -> Dict[str, Any]:
    """`summarise` over every LearnedRequestRouter of this process (an ingress replica's handles)."""
    return summarise([r for r in (ref() for ref in _ROUTERS) if r is not None])
