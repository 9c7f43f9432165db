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

_ORIGINAL_RESTART = Request.restart


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


def apply() -> None:
    """Apply every runtime fix (idempotent)."""
    Request.restart = _restart_resetting_stage_counters
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
