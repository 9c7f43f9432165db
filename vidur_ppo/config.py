"""The run's config: one typed dataclass per config group, each defined next to the component it
configures (so every default is written once, there), composed here into `TrainConfig` and
registered in Hydra's ConfigStore. A typo'd key fails at composition ("Key 'foo' not in
'PPOConfig'"), a bad value in the dataclass's `__post_init__` when `validate()` builds the
objects, before any training starts. YAML options in conf/<group>/ start from their schema
(`defaults: [schema_<option>]`) and only override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vidur_ppo.checks import ConfigError, check, positive
from vidur_ppo.eval.suite import EvalConfig
from vidur_ppo.executor import ExecutorConfig, ExecutorKind
from vidur_ppo.models import MODELS
from vidur_ppo.ppo.bc import BCConfig
from vidur_ppo.ppo.config import PPOConfig, VectorMode
from vidur_ppo.ppo.curriculum import CURRICULA, check_keeps_workload
from vidur_ppo.routing.env import DEFAULT_SLO_E2E
from vidur_ppo.routing.features import FEATURE_SETS
from vidur_ppo.routing.length_predictor import LengthPredictorConfig
from vidur_ppo.routing.rewards import REWARDS, Credit
from vidur_ppo.routing.safety import SafetyConfig
from vidur_ppo.runlog import LoggerConfig
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.workloads import SLO_KEYS, WORKLOADS

__all__ = ["ConfigError", "EnvConfig", "SlotConfig", "TrainConfig", "register_configs", "validate"]


@dataclass
class EnvConfig(ClusterSpec):
    """The simulated cluster (see `vidur_ppo.sim.cluster.ClusterSpec`, whose checks run here)."""

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ValueError as exc:
            raise ConfigError(f"env: {exc}") from None


@dataclass
class SlotConfig:
    """One cluster (and workload) of a multi-cluster run (`slots`): env k of the rollout runs slot
    k % len(slots), so one policy learns several clusters at once. Unset keys are the run's: `replicas`
    (groups, as `env.replicas`) makes the slot's cluster a mix of the run's `env`, `num_replicas` alone
    identical replicas of it; `workload` keys override the run's workload (build.slot_specs)."""

    name: str = MISSING
    replicas: Optional[List[Dict[str, Any]]] = None
    num_replicas: Optional[int] = None
    workload: Any = None  # a mapping of workload keys; typed Any so that an override on the null default works


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    workload: Any = MISSING
    reward: Any = MISSING
    features: Any = MISSING
    model: Any = MISSING
    ppo: PPOConfig = field(default_factory=PPOConfig)
    curriculum: Any = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # where a run's parallel work runs (conf/executor/): `ray` makes the policy workers Ray actors
    # (ppo.vector_mode=policy_workers) and labels bc.label_workers episodes at a time as Ray tasks
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    seed: int = 0
    resume: Optional[str] = None  # a run dir: continue it exactly from its last checkpoint
    overwrite: bool = False  # start over in a run dir that already holds a run
    checkpoint_every: int = 5  # updates
    slo_e2e: float = DEFAULT_SLO_E2E
    # SLOs for attainment, goodput and the SLO reward (sim/metrics.py): seconds to the first token and per output
    # token after it. None: each workload's own (conf/workload files set their application's), else the chatbot's
    # (DEFAULT_SLO_TTFT/TPOT); set, they hold for this run's workload, while a suite scenario with a workload of
    # its own (a family, a trace) keeps that workload's
    slo_ttft: Optional[float] = None
    slo_tpot: Optional[float] = None
    # what routers (policy and heuristics) are told of output lengths: predicted by default, `oracle` an ablation
    length_predictor: LengthPredictorConfig = field(default_factory=LengthPredictorConfig)
    torch_threads: int = 1  # during rollouts (env workers use the other cores)
    # threads of PPO and BC updates: a fixed count, because a float reduction split over more threads sums in
    # another order and the trained policy drifts (default run, 1/2/4 threads: E2E P99 21.6/21.9/22.1 s);
    # 0: every core (faster on a big machine; its numbers then depend on the core count)
    torch_threads_update: int = 2
    # multi-cluster training (conf/slots/): env k runs slots[k % len(slots)]; empty: every env runs `env` + `workload`
    slots: List[SlotConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        positive(self, "", "checkpoint_every", "slo_e2e", "torch_threads",
                 *(k for k in SLO_KEYS if getattr(self, k) is not None))
        check(self.seed >= 0, "seed", "must be >= 0", self.seed)
        check(self.torch_threads_update >= 0, "torch_threads_update", "must be >= 0", self.torch_threads_update)
        n = getattr(self.workload, "num_requests", None)
        if self.reward.credit == Credit.decision and n:
            check(self.ppo.rollout_steps % n == 0, "ppo.rollout_steps",
                  f"must be a multiple of workload.num_requests={n} for reward.credit=decision (whole episodes per "
                  "rollout)", self.ppo.rollout_steps)
        if self.slots:
            self._check_slots()
        check(self.executor.kind != ExecutorKind.ray or self.ppo.vector_mode == VectorMode.policy_workers
              or self.bc.label_workers > 1, "executor", "=ray needs work to run there: ppo.vector_mode=policy_workers "
              "(the rollout workers as Ray actors) or bc.label_workers > 1 (the teacher's episodes as Ray tasks)",
              str(self.executor.kind))
        check(self.executor.num_cpus is None or self.executor.num_cpus >= self.parallel_workers(), "executor.num_cpus",
              f"must be >= the run's parallel workers ({self.parallel_workers()}: ppo.num_workers, bc.label_workers): "
              "a rollout actor without a CPU would wait forever", self.executor.num_cpus)

    def parallel_workers(self) -> int:
        """The most processes this run keeps busy at once (policy workers, then label workers): a local
        Ray's CPUs unless `executor.num_cpus` says."""
        rollout = self.ppo.num_workers if self.ppo.vector_mode == VectorMode.policy_workers else 1
        return max(rollout, self.bc.label_workers)

    def _check_slots(self) -> None:
        """What a slot list must be before any slot is built (build.slot_specs checks each slot's cluster
        and workload, and that every slot has the run's replica count)."""
        names = [s.name for s in self.slots]
        for i, slot in enumerate(self.slots):
            check(bool(slot.name) and slot.name not in names[:i], f"slots[{i}].name", "must be a non-empty name no "
                  "other slot has", slot.name)
            check(slot.num_replicas is None or slot.num_replicas >= 1, f"slots[{i}].num_replicas", "must be >= 1",
                  slot.num_replicas)
            check(not (slot.replicas and slot.num_replicas), f"slots[{i}].num_replicas", "must be unset when the slot "
                  "has replicas (their counts make its size)", slot.num_replicas)
            check(slot.workload is None or isinstance(slot.workload, dict), f"slots[{i}].workload",
                  "must be a mapping of workload keys", slot.workload)
        check(self.ppo.num_envs >= len(self.slots), "ppo.num_envs", f"must be >= the number of slots "
              f"({len(self.slots)}): env k runs slot k % len(slots), so a slot past num_envs would never train",
              self.ppo.num_envs)
        check_keeps_workload(self.curriculum)


#: group -> option name -> schema, for the groups whose options have different schemas
SCHEMAS = {
    "workload": WORKLOADS,
    "reward": {name: cfg for name, (cfg, _) in REWARDS.items()},
    "features": {name: cfg for name, (cfg, _) in FEATURE_SETS.items()},
    "curriculum": {name: cfg for name, (cfg, _) in CURRICULA.items()},
    "model": {name: cfg for name, (cfg, _) in MODELS.items()},
}


def _hydra_dir(resume: Optional[str], default: str) -> str:
    """Hydra's own output dir: a resumed run's invocation files go under its run dir, not a new one."""
    return f"{resume}/.resume_hydra/{default.replace('/', '_')}" if resume else default


def _evaluated_dir(checkpoint: Optional[str], policies: Any) -> str:
    """Where `python -m vidur_ppo.evaluate` keeps Hydra's files: next to the (first) evaluated run."""
    if checkpoint:
        return str(checkpoint)
    return str(next(iter(policies.values()))) if policies else "outputs"


def register_configs() -> None:
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _hydra_dir)
    if not OmegaConf.has_resolver("evaluated_dir"):
        OmegaConf.register_new_resolver("evaluated_dir", _evaluated_dir)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=group, name=f"schema_{name}", node=node)
    for group, node in (("env", EnvConfig), ("ppo", PPOConfig), ("logger", LoggerConfig), ("eval", EvalConfig),
                        ("executor", ExecutorConfig)):
        cs.store(group=group, name="schema", node=node)


def _reject_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """Keys a schema does not have (appended with `+key=...`) would be ignored silently: refuse them."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        extra = [k for k in node.keys() if k not in known]
        check(not extra, f"{prefix}{extra[0] if extra else ''}", f"is not a key of {schema.__name__} (appended with +?)",
              extra)
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            _reject_unknown_keys(child, f"{prefix}{key}.")


def _source_key(cfg: DictConfig, message: str) -> str:
    """A check failed on an interpolated value (features.slo = ${slo_e2e}): name the key it comes from."""
    key = message.split(" ", 1)[0]
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node and OmegaConf.is_interpolation(node, leaf):
        raw = str(node._get_node(leaf)._value())
        if raw.startswith("${") and raw.endswith("}") and ":" not in raw:
            return message.replace(key, raw[2:-1], 1)
    return message


def validate(cfg: DictConfig) -> TrainConfig:
    """Build the dataclass objects (runs every `__post_init__` check); raises ConfigError."""
    try:
        _reject_unknown_keys(cfg)
        return OmegaConf.to_object(cfg)
    except ConfigError as exc:
        raise ConfigError(_source_key(cfg, str(exc))) from None
    except Exception as exc:  # omegaconf validation errors carry the full key
        line, key = str(exc).splitlines()[0], getattr(exc, "full_key", None)
        raise ConfigError(f"{key}: {line}" if key and key not in line else line) from None
