"""Workload configs (the `workload` config group) and the bridge to the simulator's generators.

The defaults are the embedded "chat" workload: 4 x Llama-2-7B/A100 (vLLM) serve chat-like requests
with heavy-tailed lengths (lognormal prompts, median 512 tokens, and outputs, median 128) at
24 QPS, about the cluster's capacity (throughput levels off at 21-23 req/s beyond it; round-robin's
E2E P99 is ~6-7x its P50 there). Light load is 8 QPS. See README "Default scenario" and
experiments/sweep_load.py. Values are checked by the simulator's own workload classes
(`vidur_ppo.sim.workload`), so a check is written once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from omegaconf import MISSING

from vidur_ppo.checks import ConfigError, StrEnum, choice
from vidur_ppo.sim import workload as sim_workload

CHAT_PREFILL: Dict[str, Any] = {"kind": "lognormal", "median": 512, "sigma": 0.8, "min": 32, "max": 3072}
CHAT_DECODE: Dict[str, Any] = {"kind": "lognormal", "median": 128, "sigma": 0.9, "min": 8, "max": 1000}
LIGHT_QPS = 8.0


class Arrival(StrEnum):
    poisson = "poisson"
    gamma = "gamma"  # renewal process, gamma gaps with coefficient of variation `cv`
    mmpp = "mmpp"  # on/off Markov-modulated Poisson: burst_factor, mean_on, mean_off
    diurnal = "diurnal"  # sinusoidal rate: amplitude, period


@dataclass
class SyntheticWorkloadConfig:
    kind: str = "synthetic"
    num_requests: int = 1000
    qps: float = 24.0
    arrival: Arrival = Arrival.poisson
    cv: float = 1.0
    # length distributions (sim/workload.py); None: the chat shapes above. A YAML option gives a
    # whole spec, which replaces the default (a merge would mix keys of two distributions)
    prefill: Optional[Dict[str, Any]] = None
    decode: Optional[Dict[str, Any]] = None
    start_time: float = 0.0
    qps_max: Optional[float] = None  # set: each episode's QPS ~ U[qps, qps_max] (load randomisation)
    # `qps` stays the mean rate of every arrival process (sim/workload.py checks every key below; None: off)
    burst_factor: Optional[float] = None  # arrival=mmpp: ON rate / qps, in [1, (mean_on + mean_off) / mean_on]
    mean_on: Optional[float] = None  # arrival=mmpp: mean ON duration (s, exponential)
    mean_off: Optional[float] = None  # arrival=mmpp: mean OFF duration (s, exponential)
    amplitude: Optional[float] = None  # arrival=diurnal: rate qps * (1 - amplitude * cos(2 pi t / period))
    period: Optional[float] = None  # arrival=diurnal: seconds (None: one cycle per episode, num_requests / qps)
    # Gaussian copula between prefill and decode lengths: correlation of the latent normals (of the
    # log-lengths for lognormal specs); None: independent. Marginals are unchanged.
    correlation: Optional[float] = None
    # prefill and decode both kind=mixture with the same weights: a request takes both lengths from one
    # component (a tenant). False: the two mixtures draw their components independently
    paired_mixture: bool = False
    # rho, load relative to capacity: set, qps = load x the cluster's saturation throughput for these
    # lengths (workloads/capacity.py, measured once and cached); resolved by build.env_spec
    load: Optional[float] = None

    def __post_init__(self) -> None:
        choice(self, "workload", "arrival", Arrival)
        self.prefill = dict(CHAT_PREFILL if self.prefill is None else self.prefill)
        self.decode = dict(CHAT_DECODE if self.decode is None else self.decode)
        spec = workload_spec(self)
        if spec.get("load") is not None:
            from vidur_ppo.workloads.capacity import check_load

            check_load(spec)
            spec.pop("load")
        make_workload(spec)  # the simulator's checks, once


class TraceArrival(StrEnum):
    trace = "trace"  # the file's arrived_at column
    poisson = "poisson"  # generated at `qps`, seeded by the episode (length-only traces too)
    gamma = "gamma"


class TraceWindow(StrEnum):
    seed = "seed"  # the episode seed picks where a `num_requests` window starts
    first = "first"  # always the first `num_requests` requests


class Overlong(StrEnum):
    error = "error"  # a request the cluster can never serve stops the run, naming it
    clip = "clip"  # shorten it to the cluster's per-request limit (as vidur's own replayer does)
    drop = "drop"  # leave it out


@dataclass
class TraceWorkloadConfig:
    """Replay of a CSV trace (`sim/trace.py`); the simulator checks every value."""

    kind: str = "trace"
    path: str = MISSING
    qps: Optional[float] = None  # rescale arrivals to this rate (or the rate of generated arrivals)
    time_window: Optional[List[float]] = None  # [start, end] seconds of the trace
    subsample: Optional[float] = None  # keep this fraction of requests, by the episode seed
    num_requests: Optional[int] = None  # requests per episode (None: the whole trace)
    window: TraceWindow = TraceWindow.seed
    arrival: TraceArrival = TraceArrival.trace
    cv: float = 1.0  # arrival=gamma: coefficient of variation of the gaps
    overlong: Overlong = Overlong.error
    max_total_tokens: Optional[int] = None  # prefill + decode limit for `overlong` (default: the cluster's)

    def __post_init__(self) -> None:
        for key, enum in (("window", TraceWindow), ("arrival", TraceArrival), ("overlong", Overlong)):
            choice(self, "workload", key, enum)


from vidur_ppo.workloads.zoo import ZooWorkloadConfig, make_zoo  # noqa: E402 (the zoo builds on the two above)

WorkloadConfig = Union[SyntheticWorkloadConfig, TraceWorkloadConfig, ZooWorkloadConfig]
WORKLOADS = {"synthetic": SyntheticWorkloadConfig, "trace": TraceWorkloadConfig, "zoo": ZooWorkloadConfig}


def workload_spec(spec: Union[WorkloadConfig, Mapping[str, Any], None]) -> Dict[str, Any]:
    """A workload config as the plain mapping the simulator's `make_workload` reads."""
    if spec is None:
        spec = SyntheticWorkloadConfig()
    if not isinstance(spec, Mapping):
        spec = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(spec).items()}
    spec = dict(spec)
    if "load" in spec and spec["load"] is None:  # off: the simulator never sees it
        spec.pop("load")
    if spec.get("kind", "synthetic") == "synthetic":
        spec["prefill"] = dict(spec.get("prefill") or CHAT_PREFILL)
        spec["decode"] = dict(spec.get("decode") or CHAT_DECODE)
    if spec.get("kind") == "trace" and "num_requests" in spec:  # the simulator's name for it
        n = spec.pop("num_requests")
        spec["max_requests"] = spec.get("max_requests") or n
    return spec


def make_workload(spec: Union[WorkloadConfig, Mapping[str, Any], None]) -> sim_workload.Workload:
    """The simulator's workload (synthetic generator or trace replay) for a config; one-line errors."""
    spec = workload_spec(spec)
    if spec.get("kind") == "zoo":
        return make_zoo(spec)
    if "load" in spec:
        raise ConfigError("workload.load needs a cluster to resolve against: build the env through "
                          "vidur_ppo.build.env_spec (or set workload.qps)")
    try:
        return sim_workload.make_workload(spec)
    except ConfigError:
        raise
    except ValueError as exc:  # "synthetic workload: 'qps' must be > 0, got 0" -> "workload.qps must be > 0, got 0"
        line = str(exc).splitlines()[0]
        named = re.match(r"^[^:']*: '(\w+)' (.*)$", line)
        raise ConfigError(f"workload.{named[1]} {named[2]}" if named else f"workload: {line}") from None


#: The embedded default workload as a plain mapping (for scripts that vary one key of it).
DEFAULT_WORKLOAD: Dict[str, Any] = workload_spec(SyntheticWorkloadConfig())
