"""A simulated LLM engine replica served in real time: one replica of vidur, paced by the wall clock.

Not a toy batching loop: the replica *is* vidur's (the one the env simulates), its vLLM replica scheduler
(continuous batching up to `max_tokens_in_batch` / `batch_size_cap`, paged KV blocks, preemption) and the
project's offline roofline execution-time model (sim/predictor.py) pricing every batch. The only change is
who owns the clock: vidur's events are popped when the wall clock (times `time_scale`) reaches them, and
requests arrive when a caller submits them. A request's TTFT ends with the batch that completes its prefill
and its E2E with the batch that produces its last token, both in simulated seconds.

Its routing stats are its row of `sim/driver.replica_state`, the very function the env observes replicas
with, told the predicted output lengths the router was given (serve/stats.py).

One engine per process: vidur numbers entities with class-level counters (`compat.reset_id_counters`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
from vidur.entities import Request
from vidur.events.batch_end_event import BatchEndEvent
from vidur.events.replica_schedule_event import ReplicaScheduleEvent
from vidur.simulator import Simulator
from vidur.types import ReplicaId

from vidur_ppo.sim import compat
from vidur_ppo.sim.cluster import ClusterSpec, new_request
from vidur_ppo.sim.driver import ReplicaColumn, replica_state
from vidur_ppo.sim.trace import Trace

_REPLICA = ReplicaId(0)


@dataclass(frozen=True)
class Served:
    """A finished request's times, in the engine's simulated seconds (`arrived_at` on its clock)."""

    arrived_at: float
    first_token_at: float
    completed_at: float
    prompt_tokens: int
    output_tokens: int
    restarts: int

    @property
    def ttft(self) -> float:
        return self.first_token_at - self.arrived_at

    @property
    def e2e(self) -> float:
        return self.completed_at - self.arrived_at

    def to_dict(self) -> Dict[str, float]:
        return {"arrived_at": self.arrived_at, "first_token_at": self.first_token_at,
                "completed_at": self.completed_at, "ttft": self.ttft, "e2e": self.e2e,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens, "restarts": self.restarts}


class SimulatedEngine:
    """One vidur replica (`spec`: a replica's ClusterSpec, its num_replicas ignored) served against the wall clock.

    `speed` is what it reports as ReplicaColumn.speed (its saturation throughput, absolute or relative);
    `time_scale` > 1 runs simulated time that many times faster than the wall clock."""

    def __init__(self, spec: ClusterSpec, speed: float = 1.0, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if spec.replicas:
            raise ValueError("a SimulatedEngine is one replica: pass one of ClusterSpec.replica_specs()")
        spec = dataclasses.replace(spec, num_replicas=1)
        self.spec, self.speed, self.time_scale, self.clock = spec, float(speed), float(time_scale), clock
        compat.reset_id_counters()
        # vidur wants a trace to build from: one placeholder request whose arrival is dropped at once
        self.sim = Simulator(spec.simulation_config(Trace([0.0], [1], [1]), "external"))
        self.sim._event_queue.clear()
        self.scheduler = self.sim.scheduler
        self.replica = self.scheduler.get_replica_scheduler(_REPLICA)
        self.num_blocks = int(self.replica._cache_config.num_blocks)
        self.requests: Dict[int, Request] = {}  # in flight, by vidur id
        self.length_error: Dict[int, int] = {}  # predicted - true output length, as replica_state reads it
        self._futures: Dict[int, asyncio.Future] = {}
        self._first_token_at: Dict[int, float] = {}
        self._wake: Optional[asyncio.Event] = None
        self._started = clock()
        self.num_served = 0

    # --- the clock --------------------------------------------------------------------------------

    def now(self) -> float:
        """Simulated seconds since the engine started."""
        return (self.clock() - self._started) * self.time_scale

    def advance(self, until: float) -> Optional[float]:
        """Handle vidur's events up to simulated time `until`; returns the next event's time (None: idle)."""
        sim, queue = self.sim, self.sim._event_queue
        while queue and queue[0][1]._time <= until:
            _, event = heapq.heappop(queue)
            sim._set_time(event._time)
            sim._add_events(event.handle_event(self.scheduler, sim._metric_store))
            if type(event) is BatchEndEvent:
                self._on_batch_end(event)
        return queue[0][1]._time if queue else None

    async def run(self) -> None:
        """The replica's loop: run vidur's events as the clock reaches them; a submit wakes it early."""
        self._wake = self._wake or asyncio.Event()
        while True:
            next_at = self.advance(self.now())
            self._wake.clear()
            timeout = None if next_at is None else max(next_at - self.now(), 0.0) / self.time_scale
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # --- requests ---------------------------------------------------------------------------------

    def submit(self, prompt_tokens: int, output_tokens: int, predicted_output_tokens: Optional[int] = None) -> asyncio.Future:
        """Queue a request at the replica now (vidur's GlobalScheduleEvent hand-over); the future resolves
        to its `Served` times. `output_tokens` is when generation stops (a real engine: EOS); the state the
        replica reports counts `predicted_output_tokens` (default: the true length)."""
        now = self.now()
        self.advance(now)  # every event before the arrival first, as vidur orders them
        self.sim._set_time(max(now, self.sim._time))
        request = new_request(self.sim._time, prompt_tokens, output_tokens)
        predicted = int(output_tokens if predicted_output_tokens is None else predicted_output_tokens)
        self.requests[request.id] = request
        self.length_error[request.id] = predicted - int(output_tokens)
        future = asyncio.get_running_loop().create_future()
        self._futures[request.id] = future
        self.replica.add_request(request)
        self.sim._add_events([ReplicaScheduleEvent(self.sim._time, _REPLICA)])
        if self._wake is not None:
            self._wake.set()
        return future

    def _on_batch_end(self, event: BatchEndEvent) -> None:
        t = event._time
        for r in event._batch._requests:
            if r._is_prefill_complete and r._id not in self._first_token_at:
                self._first_token_at[r._id] = t
            if r._completed:
                self._finish(r, t)

    def _finish(self, r: Request, t: float) -> None:
        self.requests.pop(r._id, None)
        self.length_error.pop(r._id, None)
        served = Served(arrived_at=r._arrived_at, first_token_at=self._first_token_at.pop(r._id, t), completed_at=t,
                        prompt_tokens=int(r._num_prefill_tokens), output_tokens=int(r.vp_decode_tokens),
                        restarts=int(r._num_restarts))
        self.num_served += 1
        future = self._futures.pop(r._id, None)
        if future is not None and not future.done():
            future.set_result(served)

    # --- what the router sees ---------------------------------------------------------------------

    def state_row(self) -> np.ndarray:
        """This replica's row of `replica_state` now; kv_capacity in KV blocks (the router makes it relative)."""
        self.advance(self.now())
        row = replica_state([self.replica], self.requests, self.now(), (), self.length_error,
                            np.array([self.speed]))[0]
        row[ReplicaColumn.kv_capacity] = self.num_blocks
        return row
