"""The workload kinds the simulator generates itself, synthetic arrivals, trace replay and the
prefix-sharing families (multi_turn, system_prompt, rag): their configs (the `workload` config group's
schemas), the plain mappings the simulator reads, and the simulator's checks written once. The zoo
(`zoo.py`) draws from these; `vidur_ppo.workloads` gathers them all."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import MISSING

from vidur_ppo import CONF_DIR
from vidur_ppo.checks import ConfigError, StrEnum, choice
from vidur_ppo.sim import workload as sim_workload
from vidur_ppo.sim.prefix_hash import PREFIX_BLOCK_TOKENS

#: conf/lengths/<name>.yaml: length shapes shared by several workload options (`- /lengths/<name>@_here_`)
LENGTHS_CONF = CONF_DIR / "lengths"


def length_shapes(name: str) -> Dict[str, Dict[str, Any]]:
    """{"prefill": spec, "decode": spec} of conf/lengths/<name>.yaml."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(LENGTHS_CONF / f"{name}.yaml"), resolve=True)


#: a workload's own SLOs (seconds; None: the chatbot defaults of sim/metrics.py): what its application
#: promises, so they travel with the workload into every scenario, zoo member and suite row; the run's
#: top-level `slo_ttft`/`slo_tpot`, when set, override them for its own workload (routing/env.py)
SLO_KEYS = ("slo_ttft", "slo_tpot")


def check_slos(cfg: Any) -> None:
    """A workload's own SLOs, when set, are seconds > 0."""
    from vidur_ppo.checks import positive

    positive(cfg, "workload", *(k for k in SLO_KEYS if getattr(cfg, k) is not None))


CHAT_PREFILL: Dict[str, Any] = length_shapes("chat")["prefill"]
CHAT_DECODE: Dict[str, Any] = length_shapes("chat")["decode"]
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
    # length distributions (sim/workload.py); None: the chat shapes (conf/lengths/chat.yaml, which the chat
    # options also take in their defaults, so `workload.decode.median=150` changes one key of them). A YAML
    # option's own spec replaces None whole (a merge into another kind's spec would mix their keys)
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
    # lengths (routing/capacity.py, measured once and cached); resolved by build.env_spec
    load: Optional[float] = None
    # this application's SLOs (SLO_KEYS; conf/workload files set them per family): None, the chatbot's
    slo_ttft: Optional[float] = None
    slo_tpot: Optional[float] = None

    def __post_init__(self) -> None:
        check_slos(self)
        choice(self, "workload", "arrival", Arrival)
        self.prefill = dict(CHAT_PREFILL if self.prefill is None else self.prefill)
        self.decode = dict(CHAT_DECODE if self.decode is None else self.decode)
        spec = workload_spec(self)
        if spec.get("load") is not None:
            check_load(spec)
            spec.pop("load")
        make_sim_workload(spec)  # the simulator's checks, once


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


class TraceFormat(StrEnum):
    auto = "auto"  # jsonl for a .jsonl file, else csv
    csv = "csv"  # arrived_at,num_prefill_tokens,num_decode_tokens; with session_id: a session trace
    jsonl = "jsonl"  # the Mooncake trace format (timestamp ms, input_length, output_length, hash_ids)


@dataclass
class TraceWorkloadConfig:
    """Replay of a trace file (CSV, session CSV or Mooncake JSONL: `sim/trace.py`); the simulator checks
    every value."""

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
    format: TraceFormat = TraceFormat.auto  # the file's format (sim/trace_csv.py)
    # rho: arrivals rescaled to load x the cluster's saturation throughput for this trace's own lengths
    # (routing/capacity.py); resolves to `qps` in build.env_spec, so set one of the two
    load: Optional[float] = None
    # the trace's application SLOs (SLO_KEYS): None, the chatbot's; set them for a code or summarisation trace
    slo_ttft: Optional[float] = None
    slo_tpot: Optional[float] = None

    def __post_init__(self) -> None:
        check_slos(self)
        for key, enum in (("window", TraceWindow), ("arrival", TraceArrival), ("overlong", Overlong),
                          ("format", TraceFormat)):
            choice(self, "workload", key, enum)
        if self.load is not None:
            check_load(workload_spec(self))


@dataclass
class PrefixWorkloadConfig:
    """What the prefix-sharing families share (`sim/prefix_workload.py` checks every value): requests
    whose prompts share prefixes, with the block hashes a prefix cache reads; `qps` the mean request rate.
    Length specs are the families' conf/workload files' (None here: a spec must be given)."""

    kind: str = MISSING
    num_requests: int = 1000
    qps: float = 10.0
    decode: Optional[Dict[str, Any]] = None  # output tokens
    max_total_tokens: int = 4096  # prompt + output of every request (the default cluster's limit)
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS  # tokens per hashed block
    load: Optional[float] = None  # rho: qps = rho x the cluster's saturation for this family (routing/capacity.py)
    slo_ttft: Optional[float] = None
    slo_tpot: Optional[float] = None

    def __post_init__(self) -> None:
        check_slos(self)
        spec = workload_spec(self)
        if spec.get("load") is not None:
            check_load(spec)
            spec.pop("load")
        make_sim_workload(spec)  # the simulator's checks, once


@dataclass
class MultiTurnWorkloadConfig(PrefixWorkloadConfig):
    """Chat sessions: turn k's prompt is the session's history + a new user message."""

    kind: str = "multi_turn"
    turns: Optional[Dict[str, Any]] = None  # turns per session (a length spec)
    user: Optional[Dict[str, Any]] = None  # new user tokens per turn
    think_time: float = 30.0  # mean seconds (exponential) between an answer and the next turn
    answer_tpot: float = 0.1  # seconds per output token an answer takes to stream before the think time


@dataclass
class SystemPromptWorkloadConfig(PrefixWorkloadConfig):
    """Tenants' system prompts + few-shot templates (Zipf-popular) + a unique query."""

    kind: str = "system_prompt"
    tenants: int = 8
    templates_per_tenant: int = 4
    template_zipf: float = 1.0  # theta of template popularity (0: uniform)
    system: Optional[Dict[str, Any]] = None  # system prompt tokens per tenant
    examples: Optional[Dict[str, Any]] = None  # few-shot tokens per template
    query: Optional[Dict[str, Any]] = None  # unique tokens per request


@dataclass
class RagWorkloadConfig(PrefixWorkloadConfig):
    """A shared instruction + Zipf-popular documents of a corpus + a unique question."""

    kind: str = "rag"
    instruction_tokens: int = 128
    documents: int = 1000  # corpus size
    docs_per_request: int = 2  # distinct documents per prompt, in retrieval order
    doc_zipf: float = 1.0  # theta of document popularity (0: uniform)
    document: Optional[Dict[str, Any]] = None  # tokens per document
    question: Optional[Dict[str, Any]] = None  # unique tokens per request


#: the prefix-sharing families, by kind
PREFIX_CONFIGS = {c.kind: c for c in (MultiTurnWorkloadConfig, SystemPromptWorkloadConfig, RagWorkloadConfig)}
#: the kinds built here (the zoo, a mixture of families, is added by vidur_ppo.workloads)
BASE_WORKLOADS = {"synthetic": SyntheticWorkloadConfig, "trace": TraceWorkloadConfig, **PREFIX_CONFIGS}


def workload_spec(spec: Any) -> Dict[str, Any]:
    """A workload config as the plain mapping the simulator's `make_workload` reads."""
    if spec is None:
        spec = SyntheticWorkloadConfig()
    if not isinstance(spec, Mapping):
        spec = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(spec).items()}
    spec = dict(spec)
    for key in ("load", *SLO_KEYS):  # off: the simulator never sees it
        if key in spec and spec[key] is None:
            spec.pop(key)
    if spec.get("kind", "synthetic") == "synthetic":
        spec["prefill"] = dict(spec.get("prefill") or CHAT_PREFILL)
        spec["decode"] = dict(spec.get("decode") or CHAT_DECODE)
    if spec.get("kind") == "trace" and "num_requests" in spec:  # the simulator's name for it
        n = spec.pop("num_requests")
        spec["max_requests"] = spec.get("max_requests") or n
    return spec


def check_load(spec: Mapping[str, Any]) -> float:
    """`workload.load` (rho) of a spec, checked: one-line ConfigErrors naming workload.load. A rate
    given too would be silently overridden (a trace's `qps`, a synthetic `qps_max`): refused."""
    load = spec.get("load")
    try:
        value = float(load)
    except (TypeError, ValueError):
        raise ConfigError(f"workload.load must be a number > 0 (rho, a fraction of capacity), got {load!r}") from None
    if isinstance(load, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"workload.load must be a finite number > 0 (rho, a fraction of capacity), got {load!r}")
    if spec.get("qps_max") is not None:
        raise ConfigError("workload.load cannot be combined with workload.qps_max (set one of them)")
    if spec.get("kind") == "trace" and spec.get("qps") is not None:
        raise ConfigError("workload.load cannot be combined with workload.qps on a trace (set one of them)")
    return value


def make_sim_workload(spec: Any) -> sim_workload.Workload:
    """The simulator's synthetic generator or trace replay for a config; one-line errors naming the key."""
    spec = {k: v for k, v in workload_spec(spec).items() if k not in SLO_KEYS}  # the env's, not the simulator's
    if "load" in spec:
        raise ConfigError("workload.load needs a cluster to resolve against: build the env through "
                          "vidur_ppo.build.env_spec (or set workload.qps)")
    try:
        return sim_workload.make_workload(spec)
    except ConfigError:
        raise
    except ValueError as exc:  # "synthetic workload: 'qps' must be > 0, got 0" -> "workload.qps must be > 0, got 0"
        line = str(exc).splitlines()[0]
        named = re.match(r"^[^']*?: '([\w.]+)' (.*)$", line)
        raise ConfigError(f"workload.{named[1]} {named[2]}" if named else f"workload: {line}") from None
