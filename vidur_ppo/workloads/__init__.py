"""Workload configs (the `workload` config group) and the bridge to the simulator's generators.

The defaults are the embedded "chat" workload: 4 x Llama-2-7B/A100 (vLLM) serve chat-like requests
with heavy-tailed lengths (lognormal prompts, median 512 tokens, and outputs, median 128) at
24 QPS, about the cluster's capacity (throughput levels off at 21-23 req/s beyond it; round-robin's
E2E P99 is ~6-7x its P50 there). Light load is 8 QPS. See README "Default scenario" and
experiments/sweep_load.py. Values are checked by the simulator's own workload classes
(`vidur_ppo.sim.workload`), so a check is written once.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Union

from vidur_ppo.sim import workload as sim_workload
from vidur_ppo.workloads.specs import (  # noqa: F401 (re-exported: the package's public names)
    BASE_WORKLOADS, CHAT_DECODE, CHAT_PREFILL, LENGTHS_CONF, LIGHT_QPS, PREFIX_CONFIGS, SLO_KEYS, Arrival,
    MultiTurnWorkloadConfig, Overlong, PrefixWorkloadConfig, RagWorkloadConfig, SyntheticWorkloadConfig,
    SystemPromptWorkloadConfig, TraceArrival, TraceFormat, TraceWindow, TraceWorkloadConfig, check_load, length_shapes,
    make_sim_workload, workload_spec)
from vidur_ppo.workloads.zoo import ZooWorkloadConfig, make_zoo

WorkloadConfig = Union[SyntheticWorkloadConfig, TraceWorkloadConfig, MultiTurnWorkloadConfig,
                       SystemPromptWorkloadConfig, RagWorkloadConfig, ZooWorkloadConfig]
WORKLOADS = {**BASE_WORKLOADS, "zoo": ZooWorkloadConfig}


def make_workload(spec: Union[WorkloadConfig, Mapping[str, Any], None]) -> sim_workload.Workload:
    """The simulator's workload for a config: a zoo draws a family per episode, the others are the
    simulator's own generators (`specs.make_sim_workload`); one-line errors."""
    spec = workload_spec(spec)
    return make_zoo(spec) if spec.get("kind") == "zoo" else make_sim_workload(spec)


#: The embedded default workload as a plain mapping (for scripts that vary one key of it).
DEFAULT_WORKLOAD: Dict[str, Any] = workload_spec(SyntheticWorkloadConfig())
