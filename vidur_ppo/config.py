"""Structured configs: one dataclass schema per config-group option, registered in Hydra's
ConfigStore, so a typo'd key fails at composition ("Key 'foo' not in 'PPOConfig'") and a bad
value fails in `__post_init__` when `validate()` builds the objects, before any training starts.

Each YAML option in conf/<group>/ starts from its schema (`defaults: [schema_<option>]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vidur_ppo.sim.cluster import ClusterSpec


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def _check(cond: bool, key: str, msg: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key} {msg}, got {value!r}")


def _positive(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v is not None and v > 0, f"{prefix}.{n}", "must be > 0", v)


def _unit(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(0.0 <= v <= 1.0, f"{prefix}.{n}", "must be in [0, 1]", v)


# --- env ---------------------------------------------------------------------------------------


@dataclass
class EnvConfig(ClusterSpec):
    """The simulated cluster (see `vidur_ppo.sim.cluster.ClusterSpec`)."""

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ValueError as exc:
            raise ConfigError(f"env: {exc}") from None


# --- workload ----------------------------------------------------------------------------------


@dataclass
class SyntheticWorkloadConfig:
    kind: str = "synthetic"
    num_requests: int = 1000
    qps: float = 24.0
    arrival: str = "poisson"
    cv: float = 1.0
    prefill: Dict[str, Any] = field(default_factory=lambda: {"kind": "lognormal", "median": 512, "sigma": 0.8, "min": 32, "max": 3072})
    decode: Dict[str, Any] = field(default_factory=lambda: {"kind": "lognormal", "median": 128, "sigma": 0.9, "min": 8, "max": 1000})
    start_time: float = 0.0
    qps_max: Optional[float] = None  # set: each episode's QPS ~ U[qps, qps_max] (load randomisation)

    def __post_init__(self) -> None:
        _positive(self, "workload", "num_requests", "qps", "cv")
        _check(self.qps_max is None or self.qps_max >= self.qps, "workload.qps_max", f"must be >= workload.qps={self.qps}",
               self.qps_max)
        _check(self.arrival in ("poisson", "gamma"), "workload.arrival", "must be poisson or gamma", self.arrival)


@dataclass
class TraceWorkloadConfig:
    kind: str = "trace"
    path: str = MISSING
    qps: Optional[float] = None
    time_window: Optional[List[float]] = None
    subsample: Optional[float] = None
    max_requests: Optional[int] = None


# --- reward ------------------------------------------------------------------------------------


@dataclass
class LegacyHybridRewardConfig:
    name: str = "legacy_hybrid"
    latency_threshold: float = 8.0
    latency_penalty_slope: float = 20.0
    weights: Dict[str, float] = field(default_factory=lambda: {"latency": 4.0, "throughput": 0.5, "imbalance": 1.0})
    clip: float = 4.0
    throughput_scale_tokens: float = 1000.0
    latency_metric: str = "e2e"

    def __post_init__(self) -> None:
        _positive(self, "reward", "latency_threshold", "latency_penalty_slope", "clip", "throughput_scale_tokens")
        _check_reward_common(self)


def _check_reward_common(r: Any) -> None:
    unknown = set(r.weights) - {"latency", "throughput", "imbalance"}
    _check(not unknown, "reward.weights", "has unknown components (latency, throughput, imbalance)", sorted(unknown))
    _check(r.latency_metric in ("e2e", "e2e_per_token"), "reward.latency_metric", "must be e2e or e2e_per_token",
           r.latency_metric)


@dataclass
class SoftLogisticRewardConfig:
    name: str = "soft_logistic"
    latency_metric: str = "e2e_per_token"
    latency_threshold: float = 0.05
    bonus: float = 4.0
    penalty_max: float = 6.0
    penalty_center: float = 1.2
    penalty_slope: float = 8.0
    throughput_band: float = 0.1
    throughput_penalty_slope: float = 5.0
    throughput_penalty_cap: float = 1.0
    window_s: float = 30.0
    weights: Dict[str, float] = field(default_factory=lambda: {"latency": 1.0, "throughput": 0.5, "imbalance": 0.2})
    clip: float = 8.0

    def __post_init__(self) -> None:
        _positive(self, "reward", "latency_threshold", "penalty_max", "penalty_slope", "clip", "window_s")
        _check(self.bonus >= 0, "reward.bonus", "must be >= 0", self.bonus)
        _unit(self, "reward", "throughput_band")
        _check_reward_common(self)


@dataclass
class PiecewiseRewardConfig(SoftLogisticRewardConfig):
    name: str = "piecewise"
    penalty_slope: float = 10.0


# --- features ----------------------------------------------------------------------------------


@dataclass
class LegacyFeaturesConfig:
    name: str = "legacy"
    names: List[str] = field(default_factory=lambda: ["load", "kv_usage"])
    capacity: float = 64.0

    def __post_init__(self) -> None:
        _positive(self, "features", "capacity")


@dataclass
class QueueFeaturesConfig:
    name: str = "queue"
    names: List[str] = field(default_factory=lambda: ["waiting", "running", "oldest_wait", "prefill_left",
                                                      "decode_left", "kv_usage", "req_prefill", "req_decode"])
    queue_capacity: float = 16.0
    running_capacity: float = 128.0
    token_capacity: float = 32768.0
    slo: float = 8.0
    max_request_tokens: float = 4096.0
    cap: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "features", "queue_capacity", "running_capacity", "token_capacity", "slo",
                  "max_request_tokens")


@dataclass
class FullFeaturesConfig(QueueFeaturesConfig):
    name: str = "full"
    names: List[str] = field(default_factory=lambda: [
        "waiting", "running", "oldest_wait", "prefill_left", "decode_left", "kv_usage", "req_prefill", "req_decode",
        "d_waiting", "d_running", "d_kv_usage", "d_work", "x_waiting", "x_running", "x_kv_usage", "x_work"])
    ema_alpha: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 < self.ema_alpha <= 1, "features.ema_alpha", "must be in (0, 1]", self.ema_alpha)


@dataclass
class SizeAwareFeaturesConfig(FullFeaturesConfig):
    name: str = "size_aware"
    names: List[str] = field(default_factory=lambda: FullFeaturesConfig().names + [
        "mean_decode_left", "req_rank", "req_tail_share", "req_pool_share", "long_pool"])
    long_pool_fraction: float = 0.25  # as heuristics.SITAE's long_fraction

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 < self.long_pool_fraction < 1, "features.long_pool_fraction", "must be in (0, 1)",
               self.long_pool_fraction)


# --- model -------------------------------------------------------------------------------------


@dataclass
class GRUModelConfig:
    """Legacy separate actor/critic GRUs over the flattened replica features."""

    name: str = "gru"
    actor_hidden: int = 320
    actor_layers: int = 3
    critic_hidden: int = 384
    critic_layers: int = 4
    value_norm: bool = True

    def __post_init__(self) -> None:
        _positive(self, "model", "actor_hidden", "actor_layers", "critic_hidden", "critic_layers")


@dataclass
class AttnGRUModelConfig:
    """Cross-replica attention + GRU over time, per-replica scores (vidur_ppo/models/attn_gru.py)."""

    name: str = "attn_gru"
    embed_dim: int = 64
    heads: int = 4
    attn_layers: int = 1
    gru_hidden: int = 128
    gated: bool = False
    share_encoder: bool = True
    critic_hidden_size: int = 64
    critic_layers: int = 0
    value_norm: bool = True

    def __post_init__(self) -> None:
        _positive(self, "model", "embed_dim", "heads", "gru_hidden", "critic_hidden_size")
        _check(self.embed_dim % self.heads == 0, "model.heads", f"must divide model.embed_dim={self.embed_dim}", self.heads)
        _check(self.attn_layers >= 0 and self.critic_layers >= 0, "model.attn_layers/critic_layers", "must be >= 0",
               (self.attn_layers, self.critic_layers))


# --- ppo ---------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    name: str = "legacy"
    num_envs: int = 4
    vector_mode: str = "grouped"  # sync | async | grouped | policy_workers
    num_workers: int = 2
    rollout_steps: int = 128
    num_updates: int = 30
    epochs: int = 4
    minibatches: int = 4
    seq_len: int = 32
    lr: float = 3e-4
    gamma: float = 0.95
    gae_lambda: float = 0.90
    clip: float = 0.15
    entropy_coef: float = 0.02
    value_coef: float = 0.5
    clip_value: bool = False
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    normalize_reward: bool = False
    # strategy (PLAN.md section 4); the legacy values switch every item off
    entropy_schedule: str = "constant"  # constant | linear | exponential | target_entropy
    entropy_end: float = 0.0
    entropy_decay_updates: int = 0  # 0: num_updates
    target_entropy: Optional[float] = None
    entropy_lr: float = 0.05
    kl_control: str = "none"  # none | penalty | early_stop | both
    target_kl: float = 0.1
    kl_coef: float = 0.2
    early_stop_factor: float = 1.5
    kl_adapt_lr: bool = False
    bc_coef: float = 0.0  # fading BC: weight of the demonstration loss at update 0
    bc_fade_updates: int = 0  # ... reaching 0 at this update
    credit: str = "completion"  # completion: a request's reward at the step it finishes; decision: at its routing step
    decision_power: float = 2.0  # credit=decision: reward = -(E2E / SLO) ** power

    def __post_init__(self) -> None:
        _positive(self, "ppo", "num_envs", "num_workers", "rollout_steps", "num_updates", "epochs",
                  "minibatches", "seq_len", "lr", "clip", "max_grad_norm")
        _unit(self, "ppo", "gamma", "gae_lambda")
        _check(self.entropy_coef >= 0, "ppo.entropy_coef", "must be >= 0", self.entropy_coef)
        _check(self.value_coef >= 0, "ppo.value_coef", "must be >= 0", self.value_coef)
        _check(self.vector_mode in ("sync", "async", "grouped", "policy_workers"), "ppo.vector_mode",
               "must be sync, async, grouped or policy_workers", self.vector_mode)
        _check(self.rollout_steps % self.seq_len == 0, "ppo.seq_len", f"must divide ppo.rollout_steps={self.rollout_steps}", self.seq_len)
        _check(self.entropy_schedule in ("constant", "linear", "exponential", "target_entropy"), "ppo.entropy_schedule",
               "must be constant, linear, exponential or target_entropy", self.entropy_schedule)
        _check(self.entropy_schedule != "target_entropy" or self.target_entropy is not None, "ppo.target_entropy",
               "must be set for entropy_schedule=target_entropy", self.target_entropy)
        _check(self.credit in ("completion", "decision"), "ppo.credit", "must be completion or decision", self.credit)
        _check(self.decision_power > 0, "ppo.decision_power", "must be > 0", self.decision_power)
        _check(self.kl_control in ("none", "penalty", "early_stop", "both"), "ppo.kl_control",
               "must be none, penalty, early_stop or both", self.kl_control)
        _positive(self, "ppo", "target_kl", "early_stop_factor")
        _check(self.entropy_end >= 0 and self.kl_coef >= 0 and self.bc_coef >= 0, "ppo.entropy_end/kl_coef/bc_coef",
               "must be >= 0", (self.entropy_end, self.kl_coef, self.bc_coef))
        chunks = self.num_envs * self.rollout_steps // self.seq_len
        _check(chunks >= self.minibatches, "ppo.minibatches",
               f"must be <= the number of sequence chunks per rollout ({chunks})", self.minibatches)


# --- behaviour cloning, curriculum, logger, eval ---------------------------------------------


@dataclass
class BCConfig:
    enabled: bool = True
    teacher: str = "jsq"  # any heuristic name
    episodes: int = 6
    holdout_episodes: int = 2
    epochs: int = 25
    lr: float = 3e-3
    seq_len: int = 32
    batch_chunks: int = 32

    def __post_init__(self) -> None:
        from vidur_ppo.heuristics import HEURISTICS

        _check(self.teacher in HEURISTICS, "bc.teacher", f"must be one of {sorted(HEURISTICS)}", self.teacher)
        _positive(self, "bc", "episodes", "holdout_episodes", "epochs", "lr", "seq_len", "batch_chunks")


@dataclass
class CurriculumConfig:
    name: str = "none"


def _check_ramp(c: Any) -> None:
    _positive(c, "curriculum", "ramp_updates", "steps")
    _check(c.mode in ("linear", "stepwise"), "curriculum.mode", "must be linear or stepwise", c.mode)


@dataclass
class LoadRampConfig:
    name: str = "load_ramp"
    start_qps: float = 8.0
    ramp_updates: int = 10
    mode: str = "linear"
    steps: int = 4

    def __post_init__(self) -> None:
        _positive(self, "curriculum", "start_qps")
        _check_ramp(self)


@dataclass
class RewardRampConfig:
    name: str = "reward_ramp"
    start_clip: float = 2.0
    start_threshold_scale: float = 1.5
    ramp_updates: int = 10
    mode: str = "linear"
    steps: int = 4

    def __post_init__(self) -> None:
        _positive(self, "curriculum", "start_clip", "start_threshold_scale")
        _check_ramp(self)


@dataclass
class StagedConfig:
    name: str = "staged"
    stages: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, st in enumerate(self.stages):
            unknown = set(st) - {"start", "name", "workload", "reward"}
            _check(not unknown, f"curriculum.stages[{i}]", "may only set start, name, workload, reward", sorted(unknown))
            _check(int(st.get("start", 0)) >= 0, f"curriculum.stages[{i}].start", "must be >= 0", st.get("start"))


@dataclass
class LoggerConfig:
    name: str = "csv"
    csv: bool = True
    wandb: bool = False
    wandb_project: str = "vidur-ppo"
    wandb_mode: str = "offline"  # online | offline | disabled; WANDB_MODE in the environment wins
    wandb_group: Optional[str] = None
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.wandb_mode in ("online", "offline", "disabled"), "logger.wandb_mode",
               "must be online, offline or disabled", self.wandb_mode)


@dataclass
class EvalConfig:
    name: str = "default"
    seeds: int = 3
    seed_base: int = 100_000  # training draws episode seeds below this
    num_requests: int = 1000
    baselines: List[str] = field(default_factory=lambda: ["round_robin", "lor", "jsq"])
    deterministic: bool = True
    # suites (python -m vidur_ppo.evaluate): an empty list evaluates the run's own scenario
    scenarios: List[Dict[str, Any]] = field(default_factory=list)
    all_heuristics: bool = False  # every heuristic, not only `baselines`
    sampled: bool = False  # also the sampled (stochastic) policy
    workers: int = 2

    def __post_init__(self) -> None:
        from vidur_ppo.heuristics import HEURISTICS

        _positive(self, "eval", "seeds", "num_requests")
        bad = [b for b in self.baselines if b not in HEURISTICS]
        _check(not bad, "eval.baselines", f"must be heuristics from {sorted(HEURISTICS)}", bad)
        for i, sc in enumerate(self.scenarios):
            unknown = set(sc) - {"name", "num_replicas", "qps_per_replica", "workload", "num_requests"}
            _check("name" in sc and not unknown, f"eval.scenarios[{i}]",
                   "needs a name and may set num_replicas, qps_per_replica, workload, num_requests", dict(sc))


@dataclass
class SafetyConfig:
    """Safety monitor (vidur_ppo/safety.py): triggers are counted and logged; `terminate` ends a
    training episode at the first trigger with `penalty` (evaluation never terminates)."""

    latency_cutoff: float = 2.0
    max_queue: int = 64
    max_wait: float = 2.0
    terminate: bool = False
    penalty: float = 10.0

    def __post_init__(self) -> None:
        _positive(self, "safety", "latency_cutoff", "max_queue", "max_wait")
        _check(self.penalty >= 0, "safety.penalty", "must be >= 0", self.penalty)


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
    bc: BCConfig = field(default_factory=BCConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    seed: int = 0
    smoke: bool = False
    resume: Optional[str] = None
    checkpoint_every: int = 5
    slo_e2e: float = 8.0
    length_noise: float = 0.0  # sigma of lognormal noise on the output length routers are told (0: exact)
    torch_threads: int = 1
    torch_threads_update: int = 0  # 0: every core (env workers are idle during the update)

    def __post_init__(self) -> None:
        _positive(self, "", "checkpoint_every", "slo_e2e", "torch_threads")
        _check(self.seed >= 0, "seed", "must be >= 0", self.seed)
        _check(self.torch_threads_update >= 0, "torch_threads_update", "must be >= 0", self.torch_threads_update)
        _check(self.length_noise >= 0, "length_noise", "must be >= 0", self.length_noise)
        n = getattr(self.workload, "num_requests", None)
        if self.ppo.credit == "decision" and n:
            _check(self.ppo.rollout_steps % n == 0, "ppo.rollout_steps",
                   f"must be a multiple of workload.num_requests={n} for ppo.credit=decision (whole episodes per "
                   "rollout)", self.ppo.rollout_steps)


SCHEMAS = {
    "workload": {"synthetic": SyntheticWorkloadConfig, "trace": TraceWorkloadConfig},
    "reward": {"legacy_hybrid": LegacyHybridRewardConfig, "soft_logistic": SoftLogisticRewardConfig,
               "piecewise": PiecewiseRewardConfig},
    "features": {"legacy": LegacyFeaturesConfig, "queue": QueueFeaturesConfig, "full": FullFeaturesConfig,
                 "size_aware": SizeAwareFeaturesConfig},
    "curriculum": {"none": CurriculumConfig, "load_ramp": LoadRampConfig, "reward_ramp": RewardRampConfig,
                   "staged": StagedConfig},
    "model": {"gru": GRUModelConfig, "attn_gru": AttnGRUModelConfig},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=group, name=f"schema_{name}", node=node)
    for group, node in (("env", EnvConfig), ("ppo", PPOConfig), ("logger", LoggerConfig), ("eval", EvalConfig)):
        cs.store(group=group, name="schema", node=node)


def validate(cfg: DictConfig) -> TrainConfig:
    """Build the dataclass objects (runs every `__post_init__` check); raises ConfigError."""
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf validation errors carry the full key
        raise ConfigError(str(exc).splitlines()[0]) from None


SMOKE_BUDGET = {
    "ppo.num_envs": 2, "ppo.rollout_steps": 32, "ppo.seq_len": 16, "ppo.minibatches": 2, "ppo.epochs": 2,
    "ppo.num_updates": 2, "bc.episodes": 1, "bc.holdout_episodes": 1, "bc.epochs": 2, "eval.seeds": 1,
    "eval.num_requests": 60, "checkpoint_every": 1,
}


def smoke_overrides(cfg: DictConfig, explicit: Iterable[str] = ()) -> None:
    """`smoke=true`: shrink every budget the user did not set explicitly (`explicit` holds the
    command line's keys), so any option combination runs end to end in < 2 minutes."""
    explicit = set(explicit)
    budget = dict(SMOKE_BUDGET)
    budget["workload.num_requests" if cfg.workload.get("kind") == "synthetic" else "workload.max_requests"] = 60
    if cfg.ppo.get("credit") == "decision":  # whole episodes per rollout
        budget.update({"ppo.rollout_steps": 60, "ppo.seq_len": 20})
    for key, value in budget.items():
        if key not in explicit:
            OmegaConf.update(cfg, key, value, merge=False)
