"""Step vidur's own event loop decision by decision (inversion of control).

`vidur.simulator.Simulator.run()` pops events until the heap is empty and lets a built-in
global scheduler pick replicas. The driver builds the same `Simulator` (vidur's events,
entities, replica schedulers, memory planner and our predictor, all unchanged), pops the events
itself, and stops whenever a `GlobalScheduleEvent` finds requests waiting for a replica. Each
waiting request is one decision; once all are decided, vidur's own `GlobalScheduleEvent` hands
them to the replica schedulers. With round-robin decisions this reproduces vidur's `round_robin`
run request by request (tests/test_driver.py).

The driver also watches `BatchEndEvent`s (the only place a token is produced) to record the
per-token times that vidur does not keep, the newly completed requests (for rewards) and each
replica's busy time, and it writes nothing to disk.
"""

from __future__ import annotations

import heapq
from itertools import chain
from array import array
from enum import IntEnum
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from vidur.entities import Request
from vidur.events.batch_end_event import BatchEndEvent
from vidur.events.global_schedule_event import GlobalScheduleEvent
from vidur.simulator import Simulator
from vidur.types import ReplicaId

from vidur_ppo.sim import compat, metrics
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.prefix_cache import PrefixCachingVLLMReplicaScheduler
from vidur_ppo.sim.workload import Trace

class ReplicaColumn(IntEnum):
    """Columns of `SimDriver.replica_state()`, one row per replica: the one map every reader uses."""

    waiting = 0  # requests queued at the replica (vidur's num_pending_requests) + same-instant assignments
    running = 1  # requests holding KV cache (admitted, not finished)
    prefill_tokens_left = 2  # prompt tokens still to process, waiting + running
    decode_tokens_left = 3  # output tokens still to generate, waiting + running
    kv_usage = 4  # fraction of KV blocks allocated
    oldest_wait = 5  # seconds the oldest waiting request has waited (0 if none)
    speed = 6  # the replica's share of the cluster's throughput relative to the mean (1 on identical replicas)
    kv_capacity = 7  # the replica's KV blocks relative to the mean (1 on identical replicas)
    kv_tokens = 8  # tokens' worth of KV blocks allocated: kv_usage in absolute terms (Dynamo's router weighs blocks)
    cached_prefix = 9  # tokens of the arriving request's prompt its prefix cache would serve now (0 without one)
    cache_occupancy = 10  # fraction of KV blocks held by cached prefix blocks, referenced or not (0 without a cache)


REPLICA_STATE_COLUMNS = tuple(c.name for c in ReplicaColumn)


class RequestColumn(IntEnum):
    """Columns of `request_vector`: what a router is told of the arriving request."""

    prefill_tokens = 0  # prompt length
    decode_tokens = 1  # output length as predicted (routing/length_predictor.py), or the true one
    prefix_key = 2  # `prefix_key`: names the prompt's leading block, for consistent hashing (0: none)


#: `prefix_key`s lie in [0, PREFIX_KEY_SPACE): integers a float32 holds exactly
PREFIX_KEY_SPACE = 1 << 24


def prefix_key(request: Request) -> int:
    """A stable integer in [1, PREFIX_KEY_SPACE) naming the request's first full prompt block (and so the
    whole prefix it starts: a system prompt, a session's first message), 0 when it has none. Equal keys
    mean an equal leading block (distinct blocks collide with probability 2**-24)."""
    hashes = getattr(request, "vp_prefix_hashes", None)  # a lookahead fork's sampled arrivals have none
    return 1 + int(hashes[0]) % (PREFIX_KEY_SPACE - 1) if hashes else 0


def request_columns(prompt_tokens: float = 0.0, output_tokens: float = 0.0, key: float = 0.0) -> np.ndarray:
    """The `RequestColumn`s of a request from its sizes (the one layout: the env's and Serve's requests)."""
    out = np.zeros(len(RequestColumn), dtype=np.float32)
    out[RequestColumn.prefill_tokens] = prompt_tokens
    out[RequestColumn.decode_tokens] = output_tokens
    out[RequestColumn.prefix_key] = key
    return out


def request_vector(request: Optional[Request], predicted: Optional[np.ndarray] = None) -> np.ndarray:
    """`RequestColumn`s of an arriving request (zeros for None); the output length as predicted
    (`predicted[request id]`; None: the request's own, the true one outside a lookahead fork)."""
    if request is None:
        return request_columns()
    output = request.num_decode_tokens if predicted is None else predicted[request.id]
    return request_columns(request.num_prefill_tokens, output, prefix_key(request))


class SimulationError(RuntimeError):
    """The simulation ended in a state that loses requests."""


class SimDriver:
    """One episode of vidur, stepped one routing decision at a time.

    Usage::

        d = SimDriver(ClusterSpec(), trace)
        req = d.next_decision()
        while req is not None:
            req = d.assign(replica_index)   # returns the next request to route, or None
        d.per_request(), d.tbt_gaps  # results
    """

    def __init__(self, cluster: ClusterSpec, trace: Trace, record_token_times: bool = True,
                 length_error: Optional[np.ndarray] = None, replica_speed: Optional[np.ndarray] = None):
        self.cluster = cluster
        self.replica_speed = replica_speed  # ReplicaColumn.speed (routing/capacity.replica_speeds); None: ones
        # predicted - true output length per request id, as routers are told them (None: exact)
        self.length_error = length_error
        self.trace = trace
        self.record_token_times = record_token_times
        config = cluster.simulation_config(trace, global_scheduler="external")
        compat.reset_id_counters()
        self.sim = Simulator(config)
        self.scheduler = self.sim.scheduler
        self.num_replicas = cluster.num_replicas
        self._replica_ids = [ReplicaId(i) for i in range(self.num_replicas)]
        self._replica_schedulers = [self.scheduler.get_replica_scheduler(r) for r in self._replica_ids]
        # whether any replica has a prefix cache (ClusterSpec.prefix_caching, per group): summaries then
        # report cache_hit_rate
        self.prefix_caching = any(isinstance(rs, PrefixCachingVLLMReplicaScheduler) for rs in self._replica_schedulers)
        # requests by id (ids are 0..n-1 after the counter reset, in trace order)
        self.requests: List[Request] = sorted(
            (ev._request for _, ev in self.sim._event_queue), key=lambda r: r.id
        )
        n = len(self.requests)
        self.assignment = np.full(n, -1, dtype=np.int64)
        self.busy_time = np.zeros(self.num_replicas)
        self.tbt_gaps = array("d")
        self.newly_completed: List[Request] = []
        self._last_token_at: Dict[int, float] = {}
        self._pending: List[Request] = []
        self._held_event: Optional[GlobalScheduleEvent] = None
        self.num_decisions = 0
        self.num_events = 0
        self.done = False

    # --- stepping -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.sim._time

    @property
    def current_request(self) -> Optional[Request]:
        return self._pending[0] if self._pending else None

    def next_decision(self) -> Optional[Request]:
        """Run vidur's events until a request needs a replica; None when the episode is over."""
        if self._pending:
            return self._pending[0]
        if self.done:
            return None
        sim, scheduler, store = self.sim, self.scheduler, self.sim._metric_store
        queue = sim._event_queue
        while queue:
            _, event = heapq.heappop(queue)
            sim._set_time(event._time)
            self.num_events += 1
            if type(event) is GlobalScheduleEvent and scheduler._request_queue:
                scheduler.sort_requests()  # as vidur's schedulers do: by arrival time
                self._pending = scheduler._request_queue
                scheduler._request_queue = []
                self._held_event = event
                return self._pending[0]
            new_events = event.handle_event(scheduler, store)
            if type(event) is BatchEndEvent:
                self._on_batch_end(event)
            sim._add_events(new_events)
        self._finish()
        return None

    def assign(self, replica: int) -> Optional[Request]:
        """Send the current request to `replica`; returns the next request to route (or None)."""
        if not self._pending:
            raise RuntimeError("no request is waiting for a decision; call next_decision() first")
        if not 0 <= replica < self.num_replicas:
            raise ValueError(f"replica {replica} out of range [0, {self.num_replicas})")
        request = self._pending.pop(0)
        self.scheduler.decisions.append((self._replica_ids[replica], request))
        self.assignment[request.id] = replica
        self.num_decisions += 1
        if self._pending:
            return self._pending[0]
        # all requests of this global-schedule point decided: vidur hands them over
        event, self._held_event = self._held_event, None
        self.sim._add_events(event.handle_event(self.scheduler, self.sim._metric_store))
        return self.next_decision()

    def per_request(self) -> Dict[str, np.ndarray]:
        """Per-request latencies (see `vidur_ppo.sim.metrics.per_request`)."""
        return metrics.per_request(self.requests, self.trace, self.assignment)

    def summary(self, slo_e2e: Optional[float] = None, **slos: Optional[float]) -> Dict[str, float]:
        """Episode summary (see `vidur_ppo.sim.metrics.summarize`; `slos`: slo_ttft, slo_tpot)."""
        return metrics.summarize(
            self.per_request(), self.num_replicas,
            tbt_gaps=self.tbt_gaps if self.record_token_times else None,
            busy_time=self.busy_time, slo_e2e=slo_e2e, prefix_caching=self.prefix_caching, **slos,
        )

    def pop_completed(self) -> List[Request]:
        """Requests completed since the last call (for rewards)."""
        out, self.newly_completed = self.newly_completed, []
        return out

    def _on_batch_end(self, event: BatchEndEvent) -> None:
        batch = event._batch
        t = event._time
        self.busy_time[batch._replica_id.id] += t - batch._scheduled_at
        last = self._last_token_at
        record = self.record_token_times
        for r in batch._requests:
            if r._is_prefill_complete:
                if record:
                    prev = last.get(r._id)
                    if prev is not None:
                        self.tbt_gaps.append(t - prev)
                    last[r._id] = t
                if r._completed:
                    self.newly_completed.append(r)
                    last.pop(r._id, None)

    def _finish(self) -> None:
        self.done = True
        unfinished = [r.id for r in self.requests if not r.completed]
        if unfinished or not self.scheduler.is_empty():
            raise SimulationError(
                f"simulation ended with {len(unfinished)} unfinished requests "
                f"(first ids {unfinished[:5]}); no request may be dropped"
            )

    # --- what a policy sees ---------------------------------------------------------------

    def cached_prefix_tokens(self, request: Request) -> np.ndarray:
        """Per replica, the tokens of `request`'s prompt its prefix cache would serve now (0 without one)."""
        return cached_prefix_tokens(self._replica_schedulers, request)

    def prefix_cache_occupancy(self) -> np.ndarray:
        """Per replica, the fraction of its KV blocks held by cached prefix blocks, referenced by running
        requests or not (0 without a cache)."""
        return prefix_cache_occupancy(self._replica_schedulers)

    def replica_state(self) -> np.ndarray:
        """[replicas x REPLICA_STATE_COLUMNS] at the current decision (raw units)."""
        return replica_state(self._replica_schedulers, self.requests, self.sim._time, self.scheduler.decisions,
                             self.length_error, self.replica_speed, self.current_request)


def cached_prefix_tokens(replica_schedulers: Sequence, request: Optional[Request]) -> np.ndarray:
    """Per replica, the tokens of `request`'s prompt its prefix cache would serve now (0 without a cache
    or a request)."""
    return np.array([rs.cached_prefix_tokens(request) if request is not None
                     and isinstance(rs, PrefixCachingVLLMReplicaScheduler) else 0 for rs in replica_schedulers],
                    dtype=np.int64)


def prefix_cache_occupancy(replica_schedulers: Sequence) -> np.ndarray:
    """Per replica, the fraction of its KV blocks held by cached prefix blocks (0 without a cache)."""
    return np.array([rs.prefix_cache.num_cached_blocks / rs._cache_config.num_blocks
                     if isinstance(rs, PrefixCachingVLLMReplicaScheduler) else 0.0 for rs in replica_schedulers])


def replica_state(replica_schedulers: Sequence, requests, now: float,
                  decisions: Sequence[Tuple[ReplicaId, Request]] = (),
                  length_error: Optional[np.ndarray] = None, speed: Optional[np.ndarray] = None,
                  request: Optional[Request] = None) -> np.ndarray:
    """What a global scheduler can see of each replica, from vidur's replica schedulers.

    `requests[id]` looks a request up by id (for those holding KV cache); `decisions` are the
    requests already routed at this same global-schedule point, not yet queued at their replica
    (vidur's own LOR counts them the same way). `length_error[id]` (predicted - true output length)
    makes the decode tokens left what a router with a length predictor knows: predicted length
    minus tokens produced so far, at least 1 (routing/length_predictor.py); None: the true ones.
    `speed` fills ReplicaColumn.speed (None: ones, identical replicas). `request` is the one being
    routed, whose prompt ReplicaColumn.cached_prefix looks up (None: zeros); a same-instant decision's
    prefix is not cached yet (blocks are cached once their prefill is done).
    """
    out = np.zeros((len(replica_schedulers), len(REPLICA_STATE_COLUMNS)), dtype=np.float64)
    for i, rs in enumerate(replica_schedulers):
        waiting = rs._request_queue
        pre = dec = 0
        oldest = 0.0
        for r in chain(waiting, [requests[rid] for rid in rs._allocation_map]):
            left_pre = r._num_prefill_tokens - r._num_processed_tokens
            if left_pre < 0:
                left_pre = 0
            pre += left_pre
            # output tokens still to come (a preemption restart moves produced tokens into the prompt, so
            # this counts from the current split); predicted: the prediction minus those produced, >= 1
            left = r._num_prefill_tokens + r._num_decode_tokens - r._num_processed_tokens - left_pre
            if length_error is not None:
                left = max(left + int(length_error[r._id]), 1)
            dec += left
        if waiting:
            oldest = now - min(r._arrived_at for r in waiting)
        row = out[i]
        row[ReplicaColumn.waiting] = len(waiting)
        row[ReplicaColumn.running] = len(rs._allocation_map)
        row[ReplicaColumn.prefill_tokens_left] = pre
        row[ReplicaColumn.decode_tokens_left] = dec
        row[ReplicaColumn.kv_usage] = rs._num_allocated_blocks / rs._cache_config.num_blocks
        row[ReplicaColumn.kv_tokens] = rs._num_allocated_blocks * rs._cache_config.block_size
        row[ReplicaColumn.oldest_wait] = oldest
    blocks = np.array([rs._cache_config.num_blocks for rs in replica_schedulers], dtype=np.float64)
    out[:, ReplicaColumn.kv_capacity] = blocks / blocks.mean()
    out[:, ReplicaColumn.speed] = 1.0 if speed is None else speed
    out[:, ReplicaColumn.cached_prefix] = cached_prefix_tokens(replica_schedulers, request)
    out[:, ReplicaColumn.cache_occupancy] = prefix_cache_occupancy(replica_schedulers)
    for rid, r in decisions:
        out[rid.id, ReplicaColumn.waiting] += 1
        out[rid.id, ReplicaColumn.prefill_tokens_left] += r.num_prefill_tokens
        out[rid.id, ReplicaColumn.decode_tokens_left] += r.num_decode_tokens + (
            0 if length_error is None else int(length_error[r.id]))
    return out


def run_vidur(cluster: ClusterSpec, trace: Trace, global_scheduler="round_robin") -> List[Request]:
    """Run vidur's own `Simulator.run()` with one of its global schedulers (writes nothing).

    The reference the driver is checked against, and the raw speed it is benchmarked against.
    """
    config = cluster.simulation_config(trace, global_scheduler=global_scheduler)
    compat.reset_id_counters()
    sim = Simulator(config)
    requests = sorted((ev._request for _, ev in sim._event_queue), key=lambda r: r.id)
    sim.run()
    return requests
