"""Safety monitor (PLAN.md section 5): counts decisions that breach a latency cutoff or let a
replica's queue grow or starve, during training and evaluation, and can end a training episode
early with a penalty. It never drops a request: without `terminate`, every episode runs until
all requests have finished (the driver asserts it); with it, the simulation is abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from vidur_ppo.sim.driver import REPLICA_STATE_COLUMNS

COL = {name: i for i, name in enumerate(REPLICA_STATE_COLUMNS)}


@dataclass
class SafetyMonitor:
    latency_cutoff: float = 2.0  # x the E2E SLO, per completed request
    max_queue: int = 64  # waiting requests at one replica
    max_wait: float = 2.0  # x the E2E SLO: the oldest waiting request at a replica (starvation)
    terminate: bool = False  # end the episode at the first trigger (training only)
    penalty: float = 10.0  # subtracted from the reward of the terminating step
    slo_e2e: float = 8.0

    @classmethod
    def from_mapping(cls, spec: Optional[Mapping[str, Any]], slo_e2e: float) -> "SafetyMonitor":
        spec = dict(spec or {})
        unknown = set(spec) - {"latency_cutoff", "max_queue", "max_wait", "terminate", "penalty"}
        if unknown:
            raise ValueError(f"unknown safety key(s) {sorted(unknown)}")
        return cls(**spec, slo_e2e=slo_e2e)

    def reset(self) -> None:
        self.counts = {"latency": 0, "queue": 0}

    def check(self, completed: Sequence[Any], state: np.ndarray) -> Dict[str, int]:
        """Triggers of this step: requests over the latency cutoff, replicas over queue/wait limits."""
        cutoff = self.latency_cutoff * self.slo_e2e
        latency = sum(1 for r in completed if r._completed_at - r._arrived_at > cutoff)
        queue = int(np.sum((state[:, COL["waiting"]] > self.max_queue)
                           | (state[:, COL["oldest_wait"]] > self.max_wait * self.slo_e2e)))
        self.counts["latency"] += latency
        self.counts["queue"] += queue
        return {"latency": latency, "queue": queue}
