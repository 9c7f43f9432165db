"""Safety monitor (PLAN.md section 5): counts decisions that breach a latency cutoff or let a
replica's queue grow or starve, during training and evaluation, and can end a training episode
early with a penalty. It never drops a request: without `terminate`, every episode runs until
all requests have finished (the driver asserts it); with it, the simulation is abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from vidur_ppo.checks import check, from_mapping, positive
from vidur_ppo.sim.driver import ReplicaColumn



@dataclass
class SafetyConfig:
    """Triggers are counted and logged; `terminate` ends a training episode at the first trigger
    with `penalty` (evaluation never terminates)."""

    latency_cutoff: float = 2.0  # x the E2E SLO, per completed request
    max_queue: int = 64  # waiting requests at one replica
    max_wait: float = 2.0  # x the E2E SLO: the oldest waiting request at a replica (starvation)
    terminate: bool = False  # end the episode at the first trigger (training only)
    penalty: float = 10.0  # subtracted from the reward of the terminating step

    def __post_init__(self) -> None:
        positive(self, "safety", "latency_cutoff", "max_queue", "max_wait")
        check(self.penalty >= 0, "safety.penalty", "must be >= 0", self.penalty)

    @classmethod
    def of(cls, spec: "SafetyConfig | Mapping[str, Any] | None") -> "SafetyConfig":
        return spec if isinstance(spec, SafetyConfig) else from_mapping(cls, spec or {}, "safety")


class SafetyMonitor:
    def __init__(self, cfg: SafetyConfig, slo_e2e: float) -> None:
        self.cfg, self.slo_e2e = cfg, float(slo_e2e)
        self.latency_cutoff, self.max_queue, self.max_wait = cfg.latency_cutoff, cfg.max_queue, cfg.max_wait
        self.terminate, self.penalty = cfg.terminate, cfg.penalty
        self.reset()

    def reset(self) -> None:
        self.counts = {"latency": 0, "queue": 0}

    def check(self, completed: Sequence[Any], state: np.ndarray) -> Dict[str, int]:
        """Triggers of this step: requests over the latency cutoff, replicas over queue/wait limits."""
        cutoff = self.latency_cutoff * self.slo_e2e
        latency = sum(1 for r in completed if r._completed_at - r._arrived_at > cutoff)
        queue = int(np.sum((state[:, ReplicaColumn.waiting] > self.max_queue)
                           | (state[:, ReplicaColumn.oldest_wait] > self.max_wait * self.slo_e2e)))
        self.counts["latency"] += latency
        self.counts["queue"] += queue
        return {"latency": latency, "queue": queue}
