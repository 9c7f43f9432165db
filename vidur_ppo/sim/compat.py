"""Compatibility fixes for vidur 0.0.26 (see ../shared/VIDUR_NOTES.md in the project docs).

Each fix names the upstream file it works around and has a test in tests/test_compat.py that
shows the upstream failure with the fix switched off. Runtime patches are applied by `apply()`
(idempotent), called when `vidur_ppo.sim.cluster` is imported, i.e. before any simulator of
ours exists.

Traps handled elsewhere (they need no patch of vidur itself):
- `lor` counts only waiting requests: kept faithful in `vidur_ppo.routing.heuristics.LOR`; JSQ is the
  fair "least outstanding" baseline.
- Poisson gaps clipped at 3/qps, fixed prompt:decode split, trace-replay rescaling:
  `vidur_ppo.sim.workload` generates requests itself.
- Off-by-one utilisation metrics (`metrics/metrics_store.py`): `vidur_ppo.sim.metrics` computes
  everything from the request entities and the batches the driver observes.
- vLLM never admits a prompt longer than `max_tokens_in_batch`: `vidur_ppo.sim.cluster`
  validates every trace against the replica limits before a run starts.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from vidur.config import MetricsConfig, SimulationConfig
from vidur.entities.base_entity import BaseEntity
from vidur.entities.request import Request
from vidur.events.base_event import BaseEvent
from vidur.execution_time_predictor.execution_time_predictor_registry import ExecutionTimePredictorRegistry
from vidur.scheduler.global_scheduler.base_global_scheduler import BaseGlobalScheduler
from vidur.scheduler.replica_scheduler.replica_scheduler_registry import ReplicaSchedulerRegistry

_ORIGINAL_RESTART = Request.restart
_ORIGINAL_GLOBAL_SCHEDULER_INIT = BaseGlobalScheduler.__init__


def _restart_resetting_stage_counters(self: Request) -> None:
    """`entities/request.py`: `Request.restart()` forgets the stage counters.

    After a KV-cache preemption vLLM/Sarathi restart the request as a longer prefill, but
    upstream leaves `_num_stage_processed_tokens` and `_is_prefill_stage_complete` at their old
    values, so `on_batch_stage_end`'s `num_stage_processed_tokens <= total_tokens` assertion (or
    a never-completing prefill stage) ends the run. Resetting them with the rest of the state
    is what the restart means.
    """
    _ORIGINAL_RESTART(self)
    self._num_stage_processed_tokens = 0
    self._is_prefill_stage_complete = False


def _global_scheduler_init_per_group(self: BaseGlobalScheduler, config, replicas) -> None:
    """`scheduler/global_scheduler/base_global_scheduler.py` (`__init__`, lines 18-45): one cluster,
    one replica config. Upstream builds a single execution-time predictor from
    `cluster_config.replica_config` and every replica scheduler from that config and the *same*
    `CacheConfig` object, whose `num_blocks` the first replica scheduler writes
    (`base_replica_scheduler.py`, lines 52-57), so every replica gets the first one's KV cache.

    A heterogeneous cluster (`ClusterSpec.replicas`, attached as `cluster_config.vp_groups`: one
    entry per group with its count, replica, cache, scheduler and predictor configs) gets vidur's
    own replica schedulers built per group, each group with its own predictor instance (the
    roofline predictor caches by token count, so one instance must never serve two devices) and its
    own `CacheConfig`. Without groups, upstream's `__init__` runs unchanged."""
    groups = getattr(config.cluster_config, "vp_groups", None)
    if not groups:
        return _ORIGINAL_GLOBAL_SCHEDULER_INIT(self, config, replicas)
    per_replica = [g for g in groups for _ in range(g["count"])]  # group order = replica index
    if len(per_replica) != len(replicas):
        raise ValueError(f"replica groups hold {len(per_replica)} replicas, the cluster {len(replicas)}")
    self._config, self._replicas, self._num_replicas = config, replicas, len(replicas)
    self._request_queue = []
    self._replica_schedulers = {}
    predictors = {}
    for (replica_id, replica), g in zip(replicas.items(), per_replica):
        if id(g) not in predictors:
            predictors[id(g)] = ExecutionTimePredictorRegistry.get(
                g["predictor_config"].get_type(), predictor_config=g["predictor_config"],
                replica_config=g["replica_config"], cache_config=g["cache_config"])
        self._replica_schedulers[replica_id] = ReplicaSchedulerRegistry.get(
            g["scheduler_config"].get_type(), replica_config=g["replica_config"],
            replica_scheduler_config=g["scheduler_config"], cache_config=g["cache_config"],
            request_generator_config=config.request_generator_config, replica=replica,
            num_stages=g["replica_config"].num_pipeline_stages, execution_time_predictor=predictors[id(g)])


def apply() -> None:
    """Apply every runtime fix (idempotent)."""
    Request.restart = _restart_resetting_stage_counters
    BaseGlobalScheduler.__init__ = _global_scheduler_init_per_group
    # vidur's logger prints INFO lines (e.g. "Number of replicas") at every simulator start.
    logging.getLogger("vidur").setLevel(logging.WARNING)


@contextmanager
def restart_fix_disabled() -> Iterator[None]:
    """Temporarily run upstream's `Request.restart` (for the test that shows the bug)."""
    Request.restart = _ORIGINAL_RESTART
    try:
        yield
    finally:
        apply()


@contextmanager
def per_group_fix_disabled() -> Iterator[None]:
    """Temporarily run upstream's `BaseGlobalScheduler.__init__` (for the test that shows the trap)."""
    BaseGlobalScheduler.__init__ = _ORIGINAL_GLOBAL_SCHEDULER_INIT
    try:
        yield
    finally:
        apply()


def _all_subclasses(cls: type) -> list[type]:
    out, stack = [], [cls]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c.__subclasses__())
    return out


def reset_id_counters() -> None:
    """`entities/base_entity.py`, `events/base_event.py`: ids are class-level counters.

    They never reset, so a second `Simulator` in one process numbers its replicas 4..7 while
    the global schedulers address `ReplicaId(0..3)` (`KeyError: ReplicaId(id=0)`), and event
    ids, which break ties between simultaneous events, would differ from a fresh process.
    Resetting before each simulator makes every episode identical to a first run.
    """
    for cls in _all_subclasses(BaseEntity):
        if "_id" in cls.__dict__:
            cls._id = -1
    for cls in _all_subclasses(BaseEvent):
        if "_id" in cls.__dict__:
            cls._id = 0


@contextmanager
def saved_id_counters() -> Iterator[None]:
    """The id counters of `reset_id_counters`, put back on exit: a simulation forked and run inside
    (routing/lookahead.py) numbers its new requests, batches and events without shifting the ids, and
    so the tie-breaks, of the simulation it was forked from."""
    saved = [(cls, cls.__dict__["_id"]) for cls in (*_all_subclasses(BaseEntity), *_all_subclasses(BaseEvent))
             if "_id" in cls.__dict__]
    try:
        yield
    finally:
        for cls, value in saved:
            cls._id = value


@dataclass
class QuietMetricsConfig(MetricsConfig):
    """`config/config.py`: `MetricsConfig.__post_init__` creates `simulator_output/<timestamp>/`
    in the current directory. A library call writes nothing unless asked, so this variant keeps
    `output_dir` as given and creates nothing; with `write_metrics=False`, no chrome/json trace
    and no plots, vidur never touches it."""

    write_metrics: bool = False
    enable_chrome_trace: bool = False
    write_json_trace: bool = False
    store_plots: bool = False
    store_request_metrics: bool = False
    store_batch_metrics: bool = False
    store_utilization_metrics: bool = False

    def __post_init__(self) -> None:  # noqa: D105 - deliberately no makedirs
        pass


@dataclass
class QuietSimulationConfig(SimulationConfig):
    """`config/config.py`: `SimulationConfig.__post_init__` writes `config.json` into the metrics
    output dir. This variant writes nothing."""

    def __post_init__(self) -> None:  # noqa: D105 - deliberately no config.json
        pass
