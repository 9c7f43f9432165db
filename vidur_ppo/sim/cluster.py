"""The simulated cluster: one explicit spec turned into vidur's `SimulationConfig`.

vidur's defaults are not a scenario (Llama-3-8B on H100 TP8/PP2, the Mnemosyne replica
scheduler, a predictor that downloads profiles), so every field vidur reads is set here from
`ClusterSpec`. The spec also knows the replica's admission limits, so a trace that could never
finish (a prompt longer than vLLM's `max_tokens_in_batch`, a request larger than the KV cache)
is a clear error before the run instead of vidur's "Simulation ended with pending requests".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from vidur.config import (
    BaseExecutionTimePredictorConfig,
    BaseGlobalSchedulerConfig,
    BaseRequestGeneratorConfig,
    CacheConfig,
    ClusterConfig,
    LinearRegressionExecutionTimePredictorConfig,
    LORGlobalSchedulerConfig,
    OrcaSchedulerConfig,
    RandomForrestExecutionTimePredictorConfig,
    RandomGlobalSchedulerConfig,
    ReplicaConfig,
    RoundRobinGlobalSchedulerConfig,
    SarathiSchedulerConfig,
    VllmSchedulerConfig,
)
from vidur.entities import Request
from vidur.request_generator import RequestGeneratorRegistry
from vidur.request_generator.base_request_generator import BaseRequestGenerator
from vidur.scheduler.global_scheduler.base_global_scheduler import BaseGlobalScheduler
from vidur.scheduler.global_scheduler.global_scheduler_registry import GlobalSchedulerRegistry
from vidur.scheduler.replica_scheduler.replica_scheduler_registry import ReplicaSchedulerRegistry
from vidur.types import BaseIntEnum, ReplicaId
from vidur.utils.memory_planner import MemoryPlanner

from vidur_ppo.sim import compat
from vidur_ppo.sim.prefix_cache import (BlockHashes, PrefixCachingSchedulerType, PrefixCachingVllmSchedulerConfig,
                                        PrefixCachingVLLMReplicaScheduler)
from vidur_ppo.sim.workload import Trace

REPLICA_SCHEDULERS = ("vllm", "sarathi", "orca")
PREDICTORS = ("roofline", "vidur_random_forest", "vidur_linear_regression")
VIDUR_GLOBAL_SCHEDULERS = ("round_robin", "lor", "random")


class ScenarioError(ValueError):
    """A cluster spec or trace that vidur cannot run."""


# --- our own registry keys (values chosen not to collide with vidur's enums) -------------------


class ExtRequestGeneratorType(BaseIntEnum):
    GIVEN = 101


class ExtGlobalSchedulerType(BaseIntEnum):
    EXTERNAL = 101


@dataclass
class GivenRequestsConfig(BaseRequestGeneratorConfig):
    """Hands vidur a pre-generated `Trace` (our workloads) instead of its own generators.

    The trace is an attribute, not a dataclass field: vidur's CLI parser walks every config
    subclass's fields and only understands plain types.
    """

    trace = None  # set per simulation; deliberately not a dataclass field

    @staticmethod
    def get_type():
        return ExtRequestGeneratorType.GIVEN


class GivenRequestsGenerator(BaseRequestGenerator):
    """Turns the trace into fresh vidur `Request` entities (ids 0..n-1 after an id reset).

    Each request carries the hashes of its prompt's full blocks of the trace's `prefix_block_tokens`
    (`vp_prefix_hashes`, None without hashes; a trailing partial block is never reused) for a replica's
    prefix cache (sim/prefix_cache.py), which sets `vp_prefix_hit_tokens` at its first admission."""

    def generate_requests(self) -> List[Request]:
        t = self.config.trace
        hashes = t.prefix_hashes or [None] * len(t)
        g = t.prefix_block_tokens
        requests = []
        for a, p, d, h in zip(t.arrived_at, t.num_prefill_tokens, t.num_decode_tokens, hashes):
            requests.append(new_request(a, p, d, None if h is None else BlockHashes(h[: int(p) // g].tolist())))
        return requests


def new_request(arrived_at: float, prompt_tokens: int, output_tokens: int, prefix_hashes=None) -> Request:
    """A vidur `Request` with the attributes this project's schedulers read: its true output length
    (`vp_decode_tokens`, kept: a preemption restart rewrites _num_decode_tokens), its prompt's block hashes
    (`vp_prefix_hashes`, None: no prefix sharing) and the prefix cache's hit (`vp_prefix_hit_tokens`)."""
    r = Request(arrived_at=float(arrived_at), num_prefill_tokens=int(prompt_tokens), num_decode_tokens=int(output_tokens))
    r.vp_decode_tokens, r.vp_prefix_hashes, r.vp_prefix_hit_tokens = int(output_tokens), prefix_hashes, 0
    return r


@dataclass
class ExternalGlobalSchedulerConfig(BaseGlobalSchedulerConfig):
    @staticmethod
    def get_type():
        return ExtGlobalSchedulerType.EXTERNAL


class ExternalGlobalScheduler(BaseGlobalScheduler):
    """A global scheduler whose decisions come from outside (the driver).

    vidur's `GlobalScheduleEvent` calls `schedule()` and hands each (replica, request) pair to
    the replica scheduler itself; the driver fills `decisions` before letting that event run,
    so vidur's own event code does the hand-off.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decisions: List[Tuple[ReplicaId, Request]] = []

    def schedule(self) -> List[Tuple[ReplicaId, Request]]:
        out, self.decisions = self.decisions, []
        return out


compat.apply()  # every simulator built through this module runs with the fixes
RequestGeneratorRegistry.register(ExtRequestGeneratorType.GIVEN, GivenRequestsGenerator)
GlobalSchedulerRegistry.register(ExtGlobalSchedulerType.EXTERNAL, ExternalGlobalScheduler)
ReplicaSchedulerRegistry.register(PrefixCachingSchedulerType.VLLM_PREFIX_CACHING, PrefixCachingVLLMReplicaScheduler)


# --- the spec -------------------------------------------------------------------------------


@dataclass
class ClusterSpec:
    """Everything vidur needs to know about the cluster (the `env` config group)."""

    num_replicas: int = 4
    model: str = "meta-llama/Llama-2-7b-hf"
    device: str = "a100"
    network_device: Optional[str] = None  # default: "<device>_pairwise_nvlink"
    tensor_parallel_size: int = 1
    pipeline_stages: int = 1
    replica_scheduler: str = "vllm"
    batch_size_cap: int = 128
    max_tokens_in_batch: int = 4096  # vllm: the largest prompt it admits
    chunk_size: int = 512  # sarathi: prefill chunk
    block_size: int = 16
    num_blocks: Optional[int] = None  # default: all KV memory left after the weights
    memory_margin_fraction: float = 0.1
    watermark_blocks_fraction: float = 0.01
    max_request_tokens: int = 4096  # vidur sizes per-request KV slots by this
    # vllm: vLLM's automatic prefix caching per replica (sim/prefix_cache.py), hits from the trace's
    # prefix_hashes, whose prefix_block_tokens must be a multiple of block_size
    prefix_caching: bool = False
    predictor: str = "roofline"
    predictor_options: Dict[str, Any] = field(default_factory=dict)
    # a heterogeneous cluster: groups of replicas, each {count: n, <any key above but these two>}
    # overriding this spec's values (e.g. [{count: 2, device: a100}, {count: 2, device: h100}]);
    # num_replicas is then their total. None: num_replicas copies of this spec
    replicas: Optional[List[Dict[str, Any]]] = None

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | "ClusterSpec" | None) -> "ClusterSpec":
        if spec is None:
            return cls()
        if isinstance(spec, ClusterSpec):
            return spec
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ScenarioError(f"unknown cluster key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**{k: (dict(v) if k == "predictor_options" else v) for k, v in spec.items()})

    # --- replica groups (a heterogeneous cluster) -------------------------------------------

    def groups(self) -> List[Tuple[int, "ClusterSpec"]]:
        """(count, spec of one of its replicas) per group; one group for a homogeneous cluster."""
        if not self.replicas:
            return [(self.num_replicas, self)]
        out = []
        for i, g in enumerate(self.replicas):
            g = dict(g)
            count = g.pop("count", None)
            bad = sorted(set(g) & {"num_replicas", "replicas"}) or sorted(set(g) - set(self.__dataclass_fields__))
            if bad or not isinstance(count, int) or count < 1:
                raise ScenarioError(f"replicas[{i}] needs count >= 1 and may set keys of the cluster spec "
                                    f"(not num_replicas/replicas), got count={count!r}, keys {bad or sorted(g)}")
            out.append((count, replace(self, replicas=None, num_replicas=count, **g)))
        return out

    def replica_specs(self) -> List["ClusterSpec"]:
        """The spec of every replica, in replica-index order."""
        return [spec for count, spec in self.groups() for _ in range(count)]

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.replicas:
            total = sum(count for count, _ in self.groups())
            if self.num_replicas != total:
                raise ScenarioError(f"num_replicas={self.num_replicas} but the replica groups hold {total}: "
                                    "set num_replicas to their total")
            for _, spec in self.groups():
                spec.validate()
            return
        if self.num_replicas < 1:
            raise ScenarioError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.replica_scheduler not in REPLICA_SCHEDULERS:
            raise ScenarioError(
                f"replica_scheduler={self.replica_scheduler!r}; choose one of {REPLICA_SCHEDULERS}"
            )
        if self.predictor not in PREDICTORS:
            raise ScenarioError(f"predictor={self.predictor!r}; choose one of {PREDICTORS}")
        if not isinstance(self.prefix_caching, bool):
            raise ScenarioError(f"prefix_caching must be true or false, got {self.prefix_caching!r}")
        if self.prefix_caching and self.replica_scheduler != "vllm":
            raise ScenarioError(f"prefix_caching needs replica_scheduler=vllm, got {self.replica_scheduler!r}")
        for key in ("tensor_parallel_size", "pipeline_stages", "batch_size_cap",
                    "max_tokens_in_batch", "chunk_size", "block_size", "max_request_tokens"):
            if getattr(self, key) < 1:
                raise ScenarioError(f"{key} must be >= 1, got {getattr(self, key)}")
        self.replica_config()  # vidur's own model and device names, before any run

    # --- vidur config objects ---------------------------------------------------------------

    def replica_config(self) -> ReplicaConfig:
        try:
            return ReplicaConfig(
                model_name=self.model,
                device=self.device,
                network_device=self.network_device or f"{self.device}_pairwise_nvlink",
                tensor_parallel_size=self.tensor_parallel_size,
                num_pipeline_stages=self.pipeline_stages,
            )
        except (KeyError, ValueError, AssertionError) as exc:
            raise ScenarioError(
                f"vidur rejects model={self.model!r} device={self.device!r} "
                f"tp={self.tensor_parallel_size} pp={self.pipeline_stages}: {exc!r}"
            ) from exc

    def _replica_scheduler_config(self, prefix_block_tokens: int):
        """`prefix_block_tokens`: the trace's tokens per prefix hash (read with prefix_caching only)."""
        if self.replica_scheduler == "vllm" and self.prefix_caching:
            return PrefixCachingVllmSchedulerConfig(
                batch_size_cap=self.batch_size_cap, max_tokens_in_batch=self.max_tokens_in_batch,
                prefix_block_tokens=prefix_block_tokens,
            )
        if self.replica_scheduler == "vllm":
            return VllmSchedulerConfig(
                batch_size_cap=self.batch_size_cap, max_tokens_in_batch=self.max_tokens_in_batch
            )
        if self.replica_scheduler == "sarathi":
            return SarathiSchedulerConfig(
                batch_size_cap=self.batch_size_cap, chunk_size=self.chunk_size
            )
        return OrcaSchedulerConfig(batch_size_cap=self.batch_size_cap)

    def _predictor_config(self) -> BaseExecutionTimePredictorConfig:
        opts = dict(self.predictor_options)
        if self.predictor == "roofline":
            from vidur_ppo.sim.predictor import RooflinePredictorConfig

            return RooflinePredictorConfig(**opts)
        if self.predictor == "vidur_random_forest":
            return RandomForrestExecutionTimePredictorConfig(**opts)
        return LinearRegressionExecutionTimePredictorConfig(**opts)

    def cache_config(self) -> CacheConfig:
        return CacheConfig(
            block_size=self.block_size,
            num_blocks=self.num_blocks,
            memory_margin_fraction=self.memory_margin_fraction,
            watermark_blocks_fraction=self.watermark_blocks_fraction,
        )

    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache one replica holds (what vidur's memory planner computes; the smallest
        replica's for a heterogeneous cluster)."""
        if self.replicas:
            return min(spec.kv_capacity_tokens() for _, spec in self.groups())
        if self.num_blocks:
            return self.num_blocks * self.block_size
        planner = MemoryPlanner(self.replica_config(), self.cache_config())
        max_tokens = planner.get_max_kv_cache_size_in_tokens()
        slots = max_tokens // self.max_request_tokens
        return (self.max_request_tokens // self.block_size) * slots * self.block_size

    def request_token_limit(self) -> int:
        """The most prefill + decode tokens one request may have and still finish on a replica
        (the limits `check_trace` enforces; a trace's `overlong: clip|drop` uses it). A router may
        send a request to any replica, so a heterogeneous cluster's limit is its smallest replica's."""
        if self.replicas:
            return min(spec.request_token_limit() for _, spec in self.groups())
        limits = [self.max_request_tokens, self.kv_capacity_tokens()]
        if self.replica_scheduler == "vllm":
            limits.append(self.max_tokens_in_batch)
        return int(min(limits))

    def check_trace(self, trace: Trace, name: Callable[[int], str] = "request {}".format) -> None:
        """Fail before the run on requests this replica (every replica group) could never finish;
        `name` formats the first one's index (a whole trace file names its row)."""
        if self.replicas:
            for _, spec in self.groups():
                spec.check_trace(trace, name)
            return
        total = trace.num_prefill_tokens + trace.num_decode_tokens
        checks = [(total > self.max_request_tokens,
                   f"total tokens exceed env.max_request_tokens={self.max_request_tokens}")]
        if self.replica_scheduler == "vllm":
            # a preempted request restarts as a prefill of everything processed so far
            checks.append((total > self.max_tokens_in_batch,
                           "vLLM never admits a prompt (incl. a restarted one) longer than "
                           f"env.max_tokens_in_batch={self.max_tokens_in_batch}"))
        capacity = self.kv_capacity_tokens()
        checks.append((total > capacity, f"request exceeds the replica's KV cache of {capacity} tokens"))
        if self.prefix_caching and trace.prefix_block_tokens % self.block_size:
            raise ScenarioError(f"prefix caching needs the trace's prefix_block_tokens={trace.prefix_block_tokens} "
                                f"to be a multiple of env.block_size={self.block_size}")
        for bad, why in checks:
            if bad.any():
                i = int(bad.argmax())
                raise ScenarioError(
                    f"{int(bad.sum())} of {len(bad)} requests can never run: {why}; the first is "
                    f"{name(i)} (prefill={int(trace.num_prefill_tokens[i])}, "
                    f"decode={int(trace.num_decode_tokens[i])}); a trace replays them with "
                    "workload.overlong=clip or drop"
                )

    def _request_generator_config(self, trace: Trace) -> GivenRequestsConfig:
        config = GivenRequestsConfig(max_tokens=self.max_request_tokens)
        config.trace = trace
        return config

    def simulation_config(self, trace: Trace, global_scheduler: "str | BaseGlobalSchedulerConfig" = "external"):
        """vidur's `SimulationConfig` for this cluster serving `trace`; writes nothing."""
        self.validate()
        self.check_trace(trace)
        if isinstance(global_scheduler, BaseGlobalSchedulerConfig):
            gs = global_scheduler
        elif global_scheduler == "external":
            gs = ExternalGlobalSchedulerConfig()
        elif global_scheduler == "round_robin":
            gs = RoundRobinGlobalSchedulerConfig()
        elif global_scheduler == "lor":
            gs = LORGlobalSchedulerConfig()
        elif global_scheduler == "random":
            gs = RandomGlobalSchedulerConfig()
        else:
            raise ScenarioError(
                f"global_scheduler={global_scheduler!r}; choose external or {VIDUR_GLOBAL_SCHEDULERS}"
            )
        first = self.groups()[0][1]  # vidur's cluster-wide configs (metrics, its own checks): group 0's
        cluster_config = ClusterConfig(
            num_replicas=self.num_replicas,
            replica_config=first.replica_config(),
            cache_config=first.cache_config(),
            global_scheduler_config=gs,
            replica_scheduler_config=first._replica_scheduler_config(trace.prefix_block_tokens),
        )
        if self.replicas:  # per-group schedulers, predictors and KV caches (compat._global_scheduler_init_per_group)
            cluster_config.vp_groups = [
                {"count": count, "replica_config": spec.replica_config(), "cache_config": spec.cache_config(),
                 "scheduler_config": spec._replica_scheduler_config(trace.prefix_block_tokens),
                 "predictor_config": spec._predictor_config()}
                for count, spec in self.groups()]
        return compat.QuietSimulationConfig(
            cluster_config=cluster_config,
            request_generator_config=self._request_generator_config(trace),
            execution_time_predictor_config=first._predictor_config(),
            metrics_config=compat.QuietMetricsConfig(output_dir="/nonexistent-vidur-output"),
        )
