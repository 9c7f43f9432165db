"""The one factory: a run's config -> the env spec, scenario variants of it, the model and the
rollout sampler. Training, evaluation, the vidur plugin and every experiment script build their
envs here, so a run's safety settings, SLO, length noise and seed range cannot drift between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from omegaconf import DictConfig, OmegaConf

from vidur_ppo.checks import ConfigError, check, from_mapping
from vidur_ppo.executor import ExecutorConfig, ExecutorKind
from vidur_ppo.routing.capacity import qps_at_load, saturation_rps
from vidur_ppo.routing.env import DEFAULT_SLO_E2E, EVAL_SEED_BASE, VidurRoutingEnv
from vidur_ppo.routing.features import FeaturesConfig, features_config
from vidur_ppo.routing.length_predictor import LengthPredictorConfig
from vidur_ppo.routing.rewards import RewardConfig, reward_config
from vidur_ppo.routing.safety import SafetyConfig
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.workloads import SLO_KEYS, WORKLOADS, check_load, workload_spec, zoo


@dataclass(frozen=True)
class EnvSpec:
    """Everything a `VidurRoutingEnv` is built from (typed, picklable for worker processes)."""

    cluster: ClusterSpec
    workload: Mapping[str, Any]
    reward: RewardConfig
    features: FeaturesConfig
    safety: SafetyConfig
    slo_e2e: float = DEFAULT_SLO_E2E
    # the run's SLOs; None: the workload's own (VidurRoutingEnv.episode_slos)
    slo_ttft: Optional[float] = None
    slo_tpot: Optional[float] = None
    seed_limit: int = EVAL_SEED_BASE
    # what routers are told of output lengths (routing/length_predictor.py; default: predicted)
    length_predictor: LengthPredictorConfig = dataclasses.field(default_factory=LengthPredictorConfig)
    # workload.load (rho) the workload's qps was resolved from (qps = rho x the cluster's saturation
    # throughput, routing/capacity.py; a zoo: its fixed rho); None: qps as given. Variants re-resolve it
    load: Optional[float] = None

    def kwargs(self) -> Dict[str, Any]:
        """The env's constructor arguments (`load` is already in the workload's qps)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "load"}

    def make(self) -> VidurRoutingEnv:
        return VidurRoutingEnv(**self.kwargs())

    def scenario(self, num_replicas: Optional[int] = None, qps: Optional[float] = None,
                 num_requests: Optional[int] = None, workload: Optional[Mapping[str, Any]] = None,
                 length_predictor: Union[LengthPredictorConfig, Mapping[str, Any], str, None] = None,
                 serve_all: bool = True, replace_workload: bool = False,
                 replicas: Optional[list] = None) -> "EnvSpec":
        """This spec on another cluster size / load / workload. `workload` keys override the run's (a
        variant of its workload), unless they are of another kind or `replace_workload` (a family): then
        they replace it, a whole spec that inherits nothing of the run's. The rate: the scenario's own
        (`qps`, workload.qps, or workload.load: rho of the scenario cluster's capacity for the scenario's
        lengths, a trace's included; on a zoo a fixed rho per episode); else a variant keeps the run's
        (its `load` re-resolved on the scenario cluster, or its QPS), and a replacing workload runs at its
        own (a family's qps, a trace's own times); a synthetic QPS so kept scales with the replica count
        (`num_replicas` / the run's). `replicas` (groups, see ClusterSpec.replicas) makes the scenario
        cluster a mix, and `num_replicas` without them makes it identical replicas of the base spec
        (`env.device`...); `serve_all` switches off the safety monitor's episode termination (evaluation
        serves every request)."""
        wl = dict(workload or {})
        load = wl.pop("load", None)
        kind = wl.get("kind", self.workload.get("kind"))
        if load is not None:
            check_load({**wl, "kind": kind, "load": load})  # its own keys: a trace's qps and load is an error
        variant = not replace_workload and kind == self.workload.get("kind")
        if variant:
            if load is None and qps is None and "qps" not in wl:
                load = self.load  # the run's rho carries to a variant of its workload that sets no rate
            wl = {**self.workload, **wl}
        else:
            check(kind in WORKLOADS, "workload.kind", f"must be one of {sorted(WORKLOADS)}", kind)
            wl = workload_spec(from_mapping(WORKLOADS[kind], {**wl, "kind": kind}, "workload"))  # replaced
        cluster = self.cluster
        if replicas:
            cluster = self.mix(replicas)
            num_replicas = None if num_replicas in (None, cluster.num_replicas) else num_replicas
        elif num_replicas is not None and cluster.replicas:
            # an explicit size without groups means identical replicas (the cluster's base spec): a mixed
            # run's homogeneous suite rows must not silently keep its mix
            cluster = dataclasses.replace(cluster, replicas=None)
        if num_replicas is not None:
            if wl.get("kind") == "synthetic" and qps is None and load is None and wl.get("qps"):
                scale = num_replicas / cluster.num_replicas
                wl["qps"] = float(wl["qps"]) * scale
                if wl.get("qps_max"):
                    wl["qps_max"] = float(wl["qps_max"]) * scale
            cluster = dataclasses.replace(cluster, num_replicas=num_replicas)
        if qps is not None:
            wl["qps"] = qps
            wl.pop("qps_max", None)  # a scenario's load is fixed
            load = None
        check_every_request(cluster, wl)  # a trace scenario: the whole file, before its load is measured
        if load is not None and wl.get("kind") == "zoo":
            wl.update(load_min=float(load), load_max=float(load))  # every episode at this rho of its family's
        elif load is not None:
            wl.pop("qps_max", None)  # rho fixes the rate (the run's own qps/qps_max are replaced)
            wl.pop("qps", None)
            load, wl["qps"] = qps_at_load(cluster, wl, load)
        if num_requests is not None and wl.get("kind") != "trace":  # synthetic, zoo and the prefix families
            wl["num_requests"] = num_requests
        elif num_requests is not None and not wl.get("max_requests"):  # a trace: seeds pick windows of this size
            wl["max_requests"] = num_requests
        if wl.get("kind") == "zoo":  # every family re-measured on the scenario cluster
            wl = zoo.resolve(wl, lambda member: saturation_rps(cluster, member))
        safety = dataclasses.replace(self.safety, terminate=False) if serve_all else self.safety
        lengths = self.length_predictor if length_predictor is None else LengthPredictorConfig.of(length_predictor)
        # a workload of its own comes with its own SLOs; the run's hold for the run's workload and its variants
        slos = {} if variant else {k: None for k in SLO_KEYS}
        return dataclasses.replace(self, cluster=cluster, workload=wl, safety=safety, length_predictor=lengths,
                                   load=load, **slos)

    def mix(self, replicas: Sequence[Mapping[str, Any]]) -> ClusterSpec:
        """This spec's cluster as a mix of replica groups (see ClusterSpec.replicas): the keys a group
        does not set are this cluster's."""
        groups = [dict(g) for g in replicas]
        cluster = dataclasses.replace(self.cluster, replicas=groups, num_replicas=sum(int(g["count"]) for g in groups))
        cluster.validate()
        return cluster

    def for_suite_scenario(self, scenario: Mapping[str, Any], num_requests: int) -> "EnvSpec":
        """A suite scenario (`eval.scenarios` entry, see eval/suite.py) of this run; its `load` (rho of
        the scenario cluster's capacity for the scenario's lengths) wins over `qps_per_replica`; a
        `family` (conf/workload/<name>) replaces the run's workload, `workload` keys then override the
        family's. Which rate a scenario without one runs at: `scenario`."""
        from vidur_ppo.workloads.families import family_spec

        mix = scenario.get("replicas")
        r = (sum(int(g["count"]) for g in mix) if mix else None) or scenario.get("num_replicas")  # None: the run's own
        workload = scenario.get("workload")
        if scenario.get("family"):
            workload = {**family_spec(scenario["family"]), **(workload or {})}
        kind = (workload or {}).get("kind", self.workload.get("kind"))
        check(not (kind == "trace" and scenario.get("qps_per_replica")), f"eval.scenarios[{scenario.get('name')}]"
              ".qps_per_replica", "would rescale the trace's own arrival times; set workload.qps on the scenario "
              "to rescale it on purpose", scenario.get("qps_per_replica"))
        qps = scenario["qps_per_replica"] * (r or self.cluster.num_replicas) if scenario.get("qps_per_replica") else None
        if scenario.get("load") is not None:
            workload, qps = {**(workload or {}), "load": scenario["load"]}, None
        return self.scenario(num_replicas=r, qps=qps, num_requests=scenario.get("num_requests") or num_requests,
                             workload=workload, length_predictor=scenario.get("length_predictor"),
                             replace_workload=bool(scenario.get("family")), replicas=mix)


def _plain(section: Any) -> Any:
    if OmegaConf.is_config(section):
        return OmegaConf.to_container(section, resolve=True)
    return section


def _length_predictor(get) -> LengthPredictorConfig:
    """The run's length predictor; a run dir saved before it existed told routers the true lengths,
    or lognormal-noisy ones (its `length_noise`)."""
    if get("length_predictor") is not None:
        return LengthPredictorConfig.of(_plain(get("length_predictor")))
    sigma = float(get("length_noise", 0.0) or 0.0)
    return LengthPredictorConfig(kind="lognormal", sigma=sigma) if sigma > 0 else LengthPredictorConfig(kind="oracle")


def check_every_request(cluster: ClusterSpec, workload: Mapping[str, Any]) -> None:
    """A trace replayed with `overlong: error` is checked as a whole file against the cluster's
    limits, whatever window a seed would pick: one TraceError with the count and the first row."""
    from vidur_ppo.sim.cluster import ScenarioError
    from vidur_ppo.sim.trace import TraceError
    from vidur_ppo.workloads import make_workload

    if workload.get("kind") != "trace" or workload.get("overlong", "error") != "error":
        return
    path = workload["path"]
    every = make_workload({k: v for k, v in workload.items() if k != "load"}).every_request()
    try:
        cluster.check_trace(every, name=lambda i: f"row {i + 1} of {path}")
    except ScenarioError as exc:
        raise TraceError(str(exc)) from None


def _getter(cfg: Union[DictConfig, Any]) -> Callable[..., Any]:
    """`get(key, default)` on a validated `TrainConfig` or a run dir's saved config.yaml alike."""
    return (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, DictConfig) else (lambda k, d=None: getattr(cfg, k, d))


def env_spec(cfg: Union[DictConfig, Any]) -> EnvSpec:
    """The training env of a run config: a validated `TrainConfig`, or a run dir's saved config.yaml."""
    get = _getter(cfg)
    cluster = _plain(get("env"))
    cluster = ClusterSpec.from_mapping({f.name: getattr(cluster, f.name) for f in dataclasses.fields(ClusterSpec)}
                                       if dataclasses.is_dataclass(cluster) else cluster)
    eval_cfg = get("eval")
    workload = workload_spec(_plain(get("workload")))
    check_every_request(cluster, workload)
    load = workload.pop("load", None)
    if load is not None:  # rho of this cluster's capacity for these lengths -> qps
        load, workload["qps"] = qps_at_load(cluster, workload, load)
    if workload.get("kind") == "zoo":  # each family's capacity on this cluster
        workload = zoo.resolve(workload, lambda member: saturation_rps(cluster, member))
    return EnvSpec(cluster=cluster, workload=workload, load=load,
                   reward=reward_config(_plain(get("reward"))), features=features_config(_plain(get("features"))),
                   safety=SafetyConfig.of(_plain(get("safety"))), slo_e2e=float(get("slo_e2e", DEFAULT_SLO_E2E)),
                   **{k: None if get(k) is None else float(get(k)) for k in SLO_KEYS},
                   seed_limit=int(eval_cfg.seed_base if eval_cfg is not None else EVAL_SEED_BASE),
                   length_predictor=_length_predictor(get))


def slot_specs(cfg: Union[DictConfig, Any], spec: EnvSpec) -> List[EnvSpec]:
    """Multi-cluster training: one env spec per `slots` entry (env k of a rollout runs slot k % len(slots)),
    each the run's `spec` on the slot's cluster with the slot's workload keys (`EnvSpec.scenario`), the
    training safety monitor kept; `[spec]` when the run has no slots. Every slot has the run's replica
    count, because rollouts and demonstrations stack observations [T, N, R, F]. A bad slot is one
    ConfigError naming its key (`slots[1].replicas`)."""
    slots = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s)
             for s in _plain(_getter(cfg)("slots")) or []]
    if not slots:
        return [spec]
    specs = [_slot_spec(spec, slot, f"slots[{i}]") for i, slot in enumerate(slots)]
    counts = {slot["name"]: s.cluster.num_replicas for slot, s in zip(slots, specs)}
    check(set(counts.values()) == {spec.cluster.num_replicas}, "slots", "must each have the run's replica count "
          f"env.num_replicas={spec.cluster.num_replicas} (rollouts stack every slot's observations), replica "
          "counts per slot", counts)
    return specs


def _slot_spec(spec: EnvSpec, slot: Mapping[str, Any], key: str) -> EnvSpec:
    """One slot's spec; an error names the slot key it comes from."""
    from vidur_ppo.sim.trace_csv import TraceError

    workload = dict(slot.get("workload") or {})
    kind = workload.get("kind", spec.workload.get("kind"))
    try:
        if workload and kind == spec.workload.get("kind"):  # keys over the run's: together a workload of its kind
            from_mapping(WORKLOADS[kind], {k: v for k, v in {**spec.workload, **workload}.items() if k != "load"},
                         "workload")
        return spec.scenario(replicas=slot.get("replicas"), num_replicas=slot.get("num_replicas"),
                             workload=workload or None, serve_all=False)
    except TraceError:
        raise
    except ConfigError as exc:  # the workload's checks
        raise ConfigError(f"{key}.workload: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:  # the cluster's (ClusterSpec.validate: ScenarioError, the groups)
        raise ConfigError(f"{key}.{'replicas' if slot.get('replicas') else 'num_replicas'}: {exc}") from None


def same_replicas(a: ClusterSpec, b: ClusterSpec) -> bool:
    """The same replicas, whatever their order or grouping: a mix listed in another group order is the
    same cluster (the suite's held-out mixes are compared with a run's training clusters this way)."""
    def key(cluster: ClusterSpec) -> List[str]:
        return sorted(repr(dataclasses.replace(r, num_replicas=1)) for r in cluster.replica_specs())

    return key(a) == key(b)


def eval_env_spec(cfg: Any, spec: EnvSpec) -> EnvSpec:
    """The run's own scenario as evaluated at the end of training: every request served, and
    `eval.num_requests` requests per synthetic episode."""
    return spec.scenario(num_requests=int(cfg.eval.num_requests))


def make_sampler(spec: Union[EnvSpec, Sequence[EnvSpec]], ppo: Any, model: Any, model_cfg: Any, num_features: int,
                 seed: int, executor: Optional[ExecutorConfig] = None):
    """The rollout source `ppo.vector_mode` names (ppo/samplers.py), over the run's spec or one spec per
    slot (`slot_specs`: env k runs slot k % len(slots)); policy workers are Ray actors with `executor=ray`."""
    import gymnasium as gym

    from vidur_ppo.ppo.config import VectorMode
    from vidur_ppo.ppo.samplers import PolicyWorkerSampler, RayPolicyWorkerSampler, VectorEnvSampler
    from vidur_ppo.ppo.vector import make_vector_env

    specs = [spec] if isinstance(spec, EnvSpec) else list(spec)
    slots = [s.kwargs() for s in specs]
    if ppo.vector_mode == VectorMode.policy_workers:  # the policy runs next to the envs, no lock-step
        args = (slots, ppo.num_envs, ppo.num_workers, model_cfg, specs[0].cluster.num_replicas, num_features)
        if executor is not None and executor.kind == ExecutorKind.ray:
            return RayPolicyWorkerSampler(*args, seed=seed, executor=executor)
        return PolicyWorkerSampler(*args, seed=seed)
    envs = make_vector_env(ppo.num_envs, mode=str(ppo.vector_mode), num_workers=ppo.num_workers,
                           autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, slots=slots)
    return VectorEnvSampler(envs, model)
