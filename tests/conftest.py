"""Small real vidur scenarios shared by the tests (sized for 2 cores)."""

import pytest

from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.workload import SyntheticWorkload

PROMPTS = {"kind": "uniform", "min": 256, "max": 2048}
OUTPUTS = {"kind": "uniform", "min": 32, "max": 512}


def small_workload(num_requests: int = 120, qps: float = 6.0) -> SyntheticWorkload:
    return SyntheticWorkload(num_requests=num_requests, qps=qps, prefill=PROMPTS, decode=OUTPUTS)


@pytest.fixture
def cluster2() -> ClusterSpec:
    return ClusterSpec(num_replicas=2)


@pytest.fixture
def preempting_cluster() -> ClusterSpec:
    """A KV cache of 6,400 tokens per replica: a handful of long requests forces preemption."""
    return ClusterSpec(num_replicas=2, num_blocks=400)
