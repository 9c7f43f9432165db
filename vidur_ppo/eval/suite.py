"""Evaluation suites: a trained run's policy and the heuristics on a list of scenarios (cluster
size, load, workload shape, length noise), each (scenario, seed) a job in a worker process, every
scheduler on the same trace; writes metrics.csv, report.md and figures. A job that raises (a bad
workload spec, a missing trace file) fails alone: the rest is still evaluated and written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from omegaconf import OmegaConf

from vidur_ppo.checks import ConfigError, StrEnum, check, choice, positive
from vidur_ppo.eval.slo_capacity import CapacityConfig, capacity_at_slo
from vidur_ppo.executor import JOURNAL_DIR, Executor, ExecutorConfig, JobJournal, make_executor
from vidur_ppo.routing.env import EVAL_SEED_BASE
from vidur_ppo.routing.guard import GuardConfig, Guarded, training_stats
from vidur_ppo.routing.heuristics import CAPACITY_AWARE, HEURISTICS
from vidur_ppo.routing.length_predictor import LengthPredictorConfig
from vidur_ppo.routing.lookahead import make_planner
from vidur_ppo.sim.cluster import ClusterSpec

SCENARIO_KEYS = ("name", "num_replicas", "replicas", "qps_per_replica", "workload", "family", "num_requests",
                 "length_predictor", "load", "split", "cluster")
CSV_FLOAT_FORMAT = "%.6g"  # suite rows keep 6 significant digits (a grid suite's metrics.csv stays ~1 MB)
VALIDATION_SEED_BASE = 200_000  # eval.split=validation: seeds from here up; test seeds are [seed_base, this)


def cluster_keys(key: str, keys: Any) -> Dict[str, Any]:
    """A scenario's (or the grid's) `cluster`: ClusterSpec keys set over the run's cluster (e.g.
    {prefix_caching: true}), checked on the default cluster; its size and groups are scenario keys."""
    check(isinstance(keys, Mapping), key, "must be a mapping of cluster keys (env.*)", keys)
    keys = dict(keys)
    check(not set(keys) & {"num_replicas", "replicas"}, key, "may not set num_replicas or replicas (set them on "
          "the scenario, or eval.grid.replicas / eval.grid.mixes)", keys)
    try:
        ClusterSpec.from_mapping(keys).validate()
    except (ValueError, TypeError, KeyError) as exc:
        check(False, key, f"must be keys of a cluster ({exc})", keys)
    return keys


class Split(StrEnum):
    test = "test"  # the held-out seeds every reported number uses
    validation = "validation"  # other held-out seeds, for choosing configurations (never choose on test)


@dataclass
class GridConfig:
    """eval=generalisation: every family x load x replica count as a scenario, leave-family-out."""

    families: List[str] = field(default_factory=list)  # conf/workload/<name>.yaml; [] = no grid
    train_families: List[str] = field(default_factory=list)  # a policy may train on these; the rest are held out
    loads: List[float] = field(default_factory=lambda: [0.5, 0.8, 0.95])  # rho, of each cluster's saturation
    replicas: List[int] = field(default_factory=lambda: [2, 4, 8])
    overload_loads: List[float] = field(default_factory=list)  # rho > 1: transient, marked, never in the summary
    overload_replicas: List[int] = field(default_factory=lambda: [4])  # the cluster sizes overload runs on
    # mixed clusters (ClusterSpec.replicas groups by name): hetero_<mix>_<family>_rho<load> scenarios, split
    # mixed_train (a train family on a train mix) or mixed_held_out, reported apart from the homogeneous grid
    mixes: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    train_mixes: List[str] = field(default_factory=list)  # a policy may train on these mixes
    mix_families: List[str] = field(default_factory=list)  # the families run on every mix ([]: all `families`)
    # cluster keys (env.*) over the run's cluster in every grid scenario and capacity bisection, e.g.
    # {prefix_caching: true}; a listed scenario sets its own `cluster`
    cluster: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from vidur_ppo.workloads.families import family_names

        known = family_names()
        bad = [f for f in [*self.families, *self.train_families] if f not in known]
        check(not bad, "eval.grid.families", f"must name files of conf/workload ({', '.join(known)})", bad)
        check(set(self.train_families) <= set(self.families), "eval.grid.train_families",
              "must be a subset of eval.grid.families", self.train_families)
        check(all(0 < x <= 1 for x in self.loads), "eval.grid.loads", "must be in (0, 1] (overload: overload_loads)",
              self.loads)
        check(all(x > 1 for x in self.overload_loads), "eval.grid.overload_loads", "must be > 1", self.overload_loads)
        check(all(r > 0 for r in self.replicas), "eval.grid.replicas", "must be > 0", self.replicas)
        check(set(self.train_mixes) <= set(self.mixes), "eval.grid.train_mixes", "must name eval.grid.mixes",
              self.train_mixes)
        check(set(self.mix_families) <= set(self.families), "eval.grid.mix_families",
              "must be a subset of eval.grid.families", self.mix_families)
        self.cluster = cluster_keys("eval.grid.cluster", self.cluster)
        for name, groups in self.mixes.items():
            groups = [dict(g) for g in groups]
            try:
                ClusterSpec(num_replicas=sum(int(g.get("count", 0)) for g in groups), replicas=groups).validate()
            except (ValueError, TypeError, KeyError) as exc:
                check(False, f"eval.grid.mixes.{name}", f"must be replica groups of a cluster ({exc})", groups)

    def split_of(self, family: str) -> str:
        return "train" if family in self.train_families else "held_out"

    def scenarios(self) -> List[Dict[str, Any]]:
        """The grid as suite scenarios, tagged with their split (train, held_out, overload)."""
        return [{**sc, "cluster": dict(self.cluster)} if self.cluster else sc for sc in self._scenarios()]

    def _scenarios(self) -> List[Dict[str, Any]]:
        out = []
        for fam in self.families:
            for r in dict.fromkeys([*self.replicas, *self.overload_replicas]):
                loads = (self.loads if r in self.replicas else []) + (self.overload_loads if r in self.overload_replicas else [])
                for load in loads:
                    split = "overload" if load > 1 else self.split_of(fam)
                    out.append({"name": f"{fam}_r{r}_rho{load:g}", "family": fam, "num_replicas": r, "load": load,
                                "split": split})
        for mix, groups in self.mixes.items():
            for fam in self.mix_families or self.families:
                split = "mixed_train" if fam in self.train_families and mix in self.train_mixes else "mixed_held_out"
                out += [{"name": f"hetero_{mix}_{fam}_rho{load:g}", "family": fam, "replicas": [dict(g) for g in groups],
                         "load": load, "split": split} for load in self.loads]
        return out


@dataclass
class EvalConfig:
    name: str = "default"
    seeds: int = 3
    seed_base: int = EVAL_SEED_BASE  # test seeds from here up; training draws episode seeds below this
    split: Split = Split.test
    num_requests: int = 1000
    baselines: List[str] = field(default_factory=lambda: ["round_robin", "lor", "jsq"])
    deterministic: bool = True
    # suites (python -m vidur_ppo.evaluate): an empty list evaluates the run's own scenario
    scenarios: List[Dict[str, Any]] = field(default_factory=list)
    all_heuristics: bool = False  # every heuristic, not only `baselines`
    sampled: bool = False  # also the sampled (stochastic) policy
    workers: int = 2
    # what every router is told of output lengths in this suite (routing/length_predictor.py), unless a
    # scenario sets its own; None: each run's own `length_predictor`. Typed Any, as `guard` below: a whole
    # mapping set on a null Optional[Dict] is an error inside OmegaConf's override merge
    length_predictor: Any = None
    grid: GridConfig = field(default_factory=GridConfig)
    # lookahead planners (routing/lookahead.py PLANNERS) on the same traces: reported next to the routers,
    # never part of the best-heuristic bar, not in capacity bisections (seconds per decision)
    planners: List[str] = field(default_factory=list)
    lookahead: Dict[str, Any] = field(default_factory=dict)  # LookaheadConfig overrides for every planner
    capacity: CapacityConfig = field(default_factory=lambda: CapacityConfig(replicas=[]))
    # GuardConfig keys (routing/guard.py): every learned policy also runs guarded, as `<name>_guarded`, with its
    # fallback rate; None: off. Typed Any so that an override on the null default (eval.guard.margin=1) works
    guard: Any = None

    def __post_init__(self) -> None:
        positive(self, "eval", "seeds", "seed_base", "num_requests", "workers")
        choice(self, "eval", "split", Split)
        check(self.seed_base + self.seeds <= VALIDATION_SEED_BASE, "eval.seeds",
              f"must keep test seeds below the validation range ({VALIDATION_SEED_BASE})", self.seeds)
        bad = [b for b in self.baselines if b not in HEURISTICS]
        check(not bad, "eval.baselines", f"must be heuristics from {sorted(HEURISTICS)}", bad)
        for i, sc in enumerate(self.scenarios):
            unknown = set(sc) - set(SCENARIO_KEYS)
            check("name" in sc and not unknown, f"eval.scenarios[{i}]",
                  f"needs a name and may set {', '.join(SCENARIO_KEYS[1:])}", dict(sc))
            if sc.get("cluster") is not None:
                cluster_keys(f"eval.scenarios[{i}].cluster", sc["cluster"])
        if self.length_predictor is not None:  # a kind name or a mapping of length_predictor keys: checked once, here
            lp = self.length_predictor
            check(isinstance(lp, (str, Mapping)), "eval.length_predictor", "must be a kind or a mapping", lp)
            self.length_predictor = {"kind": lp} if isinstance(lp, str) else dict(lp)
            try:
                LengthPredictorConfig.of(self.length_predictor)
            except ConfigError as exc:
                raise ConfigError(f"eval.{exc}") from None
        for name in self.planners:
            make_planner(name, dict(self.lookahead))  # checked once, here
        if self.guard is not None:
            GuardConfig.of(self.guard)  # checked once, here

    def routers(self) -> List[Any]:
        """What every suite job runs besides the policies: heuristic names, then (planner, overrides)."""
        heuristics = [h for h in HEURISTICS if self.all_heuristics or h in self.baselines]
        return heuristics + [(p, dict(self.lookahead)) for p in self.planners]

    def seed_list(self) -> List[int]:
        """The held-out evaluation seeds: `seeds` of them from the split's base up."""
        base = self.seed_base if self.split == Split.test else VALIDATION_SEED_BASE
        return [base + i for i in range(self.seeds)]

    def all_scenarios(self) -> List[Dict[str, Any]]:
        """The listed scenarios, then the grid's; each with the suite's length predictor unless it sets one."""
        plain = [OmegaConf.to_container(s, resolve=True) if not isinstance(s, dict) else dict(s) for s in self.scenarios]
        out = plain + self.grid.scenarios()
        if self.length_predictor is not None:
            lp = dict(self.length_predictor)
            out = [sc if sc.get("length_predictor") else {**sc, "length_predictor": lp} for sc in out]
        return out


_POLICY_CACHE: Dict[str, Any] = {}

# one run dir (its policy is "ppo"), or router name -> run dir; {}: the heuristics alone (`base_spec`)
Policies = Union[str, Dict[str, str]]


def policy_dirs(policies: Policies) -> Dict[str, str]:
    return {"ppo": str(policies)} if isinstance(policies, (str, bytes)) or hasattr(policies, "is_dir") \
        else {k: str(v) for k, v in policies.items()}


def cached_policy(run_dir: str):
    """A run dir's policy and config, loaded once per worker process."""
    import torch

    from vidur_ppo.checkpoint import load_policy

    torch.set_num_threads(1)
    if run_dir not in _POLICY_CACHE:
        _POLICY_CACHE[run_dir] = load_policy(run_dir)
    return _POLICY_CACHE[run_dir]


def base_spec(policies: Policies):
    """The env spec the heuristics' scenarios vary: the first policy's run's; with no policies (heuristics
    only) the defaults: ClusterSpec(), the default workload, reward, features and safety."""
    from vidur_ppo.build import EnvSpec, env_spec
    from vidur_ppo.routing.features import features_config
    from vidur_ppo.routing.rewards import reward_config
    from vidur_ppo.routing.safety import SafetyConfig
    from vidur_ppo.workloads import workload_spec

    dirs = policy_dirs(policies)
    if dirs:
        return env_spec(cached_policy(next(iter(dirs.values())))[1])
    return EnvSpec(cluster=ClusterSpec(), workload=workload_spec(None), reward=reward_config(None),
                   features=features_config(None), safety=SafetyConfig())


def scenario_spec(spec, scenario: Mapping[str, Any], num_requests: int):
    """A suite scenario of a run's env spec (`EnvSpec.for_suite_scenario`), the scenario's `cluster` keys
    set on the run's cluster first (so its load is resolved on that cluster)."""
    if scenario.get("cluster"):
        spec = dataclasses.replace(spec, cluster=dataclasses.replace(spec.cluster, **scenario["cluster"]))
    return spec.for_suite_scenario(scenario, num_requests)


def suite_job(args) -> Dict[str, Any]:
    """One (scenario, seed) of a suite, in a worker process: every scheduler on the same trace. Each
    policy runs in its own run's env (its features); the heuristics in the first run's. The trace and
    the length predictions depend on the scenario and seed only, so every scheduler sees the same."""
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.paired import TorchPolicy, evaluate

    policies, scenario, seed, heuristics, sampled, num_requests, *rest = args
    learned_too = rest[0] if rest else True  # False: only the heuristics (added to a finished suite)
    guard, stats = rest[1] if len(rest) > 1 else (None, {})  # (GuardConfig, run dir -> FeatureStats), see suite_jobs
    out: Dict[str, Any] = {"rows": [], "errors": [], "details": None}
    details: Dict[str, Any] = {}
    tag: Dict[str, Any] = {}
    first_env = None
    for name, run_dir in policy_dirs(policies).items():
        policy, cfg = cached_policy(run_dir)
        env = scenario_spec(env_spec(cfg), scenario, num_requests).make()
        if first_env is None:
            first_env, tag = env, scenario_tags(scenario, env)
        if not learned_too:
            break
        learned = {name: policy}
        if sampled:
            learned[f"{name}_sampled"] = TorchPolicy(policy.model, deterministic=False, seed=seed)
        if guard is not None:
            learned[f"{name}_guarded"] = Guarded(policy, guard, stats.get(run_dir))
        for label, pol in learned.items():
            try:
                out["rows"] += [{**tag, **x} for x in evaluate(env, {label: pol}, [seed], details=details)]
            except ValueError as exc:  # e.g. the legacy GRU on another replica count
                out["errors"].append(f"{scenario['name']}: {label} cannot run here: {exc}")
    if first_env is None:  # no policies: the heuristics alone
        first_env = scenario_spec(base_spec(policies), scenario, num_requests).make()
        tag = scenario_tags(scenario, first_env)
    routers = {h if isinstance(h, str) else h[0]: h for h in heuristics}  # names, or (planner, overrides)
    keep = set(heuristics_for(bool(first_env.cluster.replicas), [n for n, h in routers.items() if isinstance(h, str)]))
    routers = {n: h for n, h in routers.items() if n in keep or not isinstance(h, str)}
    out["rows"] += [{**tag, **x} for x in evaluate(first_env, routers, [seed], details=details)]
    out["details"] = details
    return out


def scenario_tags(scenario: Dict[str, Any], env) -> Dict[str, Any]:
    """The columns a scenario's rows carry: name, workload shape and family, replicas, load, split."""
    qps = getattr(env.workload, "qps", None)
    return {"scenario": scenario["name"],
            "shape": "custom" if scenario.get("workload") or scenario.get("family") else "trained",
            "family": scenario.get("family", ""), "split": scenario.get("split", ""),
            "load": float(scenario["load"]) if scenario.get("load") is not None else float("nan"),
            "replicas": env.cluster.num_replicas, "qps": float(qps) if qps else float("nan"),
            "length_predictor": str(env.length_predictor.cfg.kind)}


def safe_suite_job(args) -> Dict[str, Any]:
    """`suite_job`, but an exception fails only this job: its one-line message becomes the result's
    `failed` (and its `errors`, so callers that stop on errors still stop). Unexpected exception
    types (bugs rather than bad input) also print their traceback to stderr."""
    try:
        return suite_job(args)
    except Exception as exc:  # noqa: BLE001 - reported per scenario, the suite goes on
        if not isinstance(exc, (ValueError, OSError)):
            import traceback

            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        msg = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return {"rows": [], "errors": [f"{args[1]['name']}: failed: {msg}"], "details": None, "failed": msg}


def suite_jobs(policies: Policies, eval_cfg: EvalConfig) -> List[tuple]:
    """The (scenario, seed) jobs of a suite; no scenarios at all means the run's own scenario. With
    `eval.guard`, the guard and each run's training feature statistics (read here, once) ride along."""
    scenarios = eval_cfg.all_scenarios() or [{"name": "trained"}]
    routers = eval_cfg.routers()
    guard = ()
    if eval_cfg.guard is not None:
        cfg = GuardConfig.of(eval_cfg.guard)
        dirs = policy_dirs(policies).values() if cfg.novelty_z is not None else ()
        guard = (True, (cfg, {d: training_stats(d) for d in dirs}))
    return [(policies, sc, s, routers, bool(eval_cfg.sampled), int(eval_cfg.num_requests), *guard)
            for sc in scenarios for s in eval_cfg.seed_list()]


def run_jobs(jobs: List[tuple], executor: Union[int, ExecutorConfig, Executor], progress=None, fn=None,
             journal: Optional[JobJournal] = None) -> List[Dict[str, Any]]:
    """Jobs (`fn`, default suite jobs) on an executor (vidur_ppo/executor.py; a worker count: that many local
    processes), results in job order; a failing suite job gives a result with `failed` set (see
    `safe_suite_job`) instead of stopping the others. With a `journal`, jobs it holds are not run again."""
    return make_executor(executor).map(fn or safe_suite_job, jobs, progress, journal)


def failed_scenarios(jobs: List[tuple], results: List[Dict[str, Any]]) -> Dict[str, List[str]]:
    """Scenario name -> its failed jobs' one-line errors (seeds named where only some failed)."""
    out: Dict[str, List[str]] = {}
    for sc in dict.fromkeys(job[1]["name"] for job in jobs):
        mine = [(job[2], res.get("failed")) for job, res in zip(jobs, results) if job[1]["name"] == sc]
        bad = [(seed, msg) for seed, msg in mine if msg]
        if bad:
            whole = len(bad) == len(mine)
            out[sc] = list(dict.fromkeys(msg if whole else f"seed {seed}: {msg}" for seed, msg in bad))
    return out


def saturation_job(args) -> float:
    """A family's saturation throughput on a cluster size (measured once, then cached on disk); with
    cluster keys (eval.grid.cluster), on that cluster."""
    policies, family, replicas, *cluster = args
    scenario = {"name": "warm", "family": family, "num_replicas": replicas, "load": 1.0}
    scenario["cluster"] = cluster[0] if cluster else None
    return scenario_spec(base_spec(policies), scenario, 1).workload["qps"]


def check_held_out(policies: Policies, grid: GridConfig) -> None:
    """Leave-family-out: a policy trained on a family or a mix this suite holds out cannot be judged on
    it (every slot of a multi-cluster run counts: build.slot_specs)."""
    from vidur_ppo.build import env_spec, same_replicas, slot_specs
    from vidur_ppo.workloads.families import family_of

    if not grid.families:
        return
    for name, run_dir in policy_dirs(policies).items():
        cfg = cached_policy(run_dir)[1]
        for spec in slot_specs(cfg, env_spec(cfg)):
            workload = spec.workload
            fams = workload["families"] if workload.get("kind") == "zoo" else [family_of(workload, grid.families)]
            for fam in fams:
                check(fam is None or fam not in grid.families or fam in grid.train_families, "eval.grid.train_families",
                      f"must include the family {name} ({run_dir}) was trained on, {fam!r}: it would be judged on its "
                      "training family as if held out", grid.train_families)
            for mix, groups in grid.mixes.items():
                check(mix in grid.train_mixes or not same_replicas(spec.cluster, spec.mix(groups)),
                      "eval.grid.train_mixes", f"must include the mix {name} ({run_dir}) was trained on, {mix!r}: it "
                      "would be judged on its training cluster as if held out", grid.train_mixes)


def capacity_targets(eval_cfg: EvalConfig) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(scenario, tags) of every cluster whose capacity at SLO a suite measures: each grid family on
    each `eval.capacity.replicas` size, and with `eval.capacity.mixes` each listed mixed-cluster
    scenario's cluster (its name without the `_rho...` suffix)."""
    cap, grid = eval_cfg.capacity, eval_cfg.grid
    cluster = {"cluster": dict(grid.cluster)} if grid.cluster else {}
    out = [({"name": f"{fam}_r{r}", "family": fam, "num_replicas": r, **cluster},
            {"family": fam, "replicas": r, "split": grid.split_of(fam)})
           for fam in grid.families for r in cap.replicas]
    if cap.mixes:
        mixes = {}
        for sc in eval_cfg.all_scenarios():
            if sc.get("replicas"):
                label = sc["name"].split("_rho")[0]
                mixes.setdefault(label, ({k: sc[k] for k in ("family", "replicas", "workload", "cluster") if k in sc}
                                         | {"name": label},
                                         {"family": label, "replicas": sum(int(g["count"]) for g in sc["replicas"]),
                                          "split": sc.get("split", "")}))
        out += list(mixes.values())
    return out


def heuristics_for(mixed: bool, heuristics: List[str]) -> List[str]:
    """Identical replicas make the capacity-aware heuristics the blind ones (`BLIND_TWIN`): run once."""
    return heuristics if mixed else [h for h in heuristics if h not in CAPACITY_AWARE]


def capacity_job(args) -> Dict[str, Any]:
    """One (cluster, router) capacity at SLO in a worker process (picklable args, as `capacity_jobs`
    makes them): (spec, router_name, policy_run_dir or None, cfg, seeds, tags)."""
    spec, router_name, policy_run_dir, cfg, seeds, tags, *guard = args  # guard: a GuardConfig for `<name>_guarded`
    router: Any = router_name if policy_run_dir is None else cached_policy(policy_run_dir)[0]
    if guard:
        router = Guarded(router, guard[0], training_stats(policy_run_dir))
    res = capacity_at_slo(spec, router, cfg, seeds)
    return {**tags, "scheduler": router_name, "capacity": res.capacity, "censored": res.censored,
            "evaluations": list(res.evaluations)}


def capacity_jobs(policies: Policies, eval_cfg: EvalConfig, heuristics: List[str]) -> List[tuple]:
    """One bisection (eval/slo_capacity.py, run by `capacity_job`) per `capacity_targets` cluster x router;
    with `eval.guard`, each policy guarded too (`<name>_guarded`), as in the suite's rows."""
    from vidur_ppo.build import env_spec

    cap = eval_cfg.capacity
    seeds = eval_cfg.seed_list()[: cap.seeds]
    dirs = policy_dirs(policies)
    jobs = []
    for scenario, tags in capacity_targets(eval_cfg):
        if eval_cfg.length_predictor is not None:
            scenario = {**scenario, "length_predictor": dict(eval_cfg.length_predictor)}
        specs = {n: scenario_spec(env_spec(cached_policy(d)[1]), scenario, cap.num_requests) for n, d in dirs.items()}
        jobs += [(specs[n], n, d, cap, seeds, tags) for n, d in dirs.items()]
        if eval_cfg.guard is not None:
            jobs += [(specs[n], f"{n}_guarded", d, cap, seeds, tags, GuardConfig.of(eval_cfg.guard)) for n, d in dirs.items()]
        first = next(iter(specs.values()), None) or scenario_spec(base_spec(policies), scenario, cap.num_requests)
        jobs += [(first, h, None, cap, seeds, tags) for h in heuristics_for(bool(first.cluster.replicas), heuristics)]
    return jobs


def suite_size(policies: Policies, eval_cfg: EvalConfig) -> int:
    """How many jobs `run_suite` runs (for a progress bar)."""
    heuristics = [h for h in eval_cfg.routers() if isinstance(h, str)]
    n_cap = sum(len(policy_dirs(policies)) * (1 + (eval_cfg.guard is not None)) + len(heuristics_for(bool(sc.get("replicas")), heuristics))
                for sc, _ in capacity_targets(eval_cfg))
    return len(suite_jobs(policies, eval_cfg)) + n_cap


def run_suite(policies: Policies, eval_cfg: EvalConfig, out_dir, progress=None,
              executor: Optional[ExecutorConfig] = None) -> Tuple[str, Dict[str, List[str]]]:
    """Evaluate trained policies (one run dir, or name -> run dir; {}: the heuristics alone) on every scenario of
    a suite; write metrics.csv (and capacity.csv for a grid with `eval.capacity.replicas`), report.md and figures.
    Jobs run on `executor` (default: eval.workers local processes); with its journal (the default) finished
    jobs are kept in out_dir/.jobs/ until the report is written, so a re-run of an interrupted suite into the
    same dir runs only the rest. Returns the report text and the failed scenarios."""
    from pathlib import Path

    import pandas as pd

    from vidur_ppo.eval.report import suite_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_held_out(policies, eval_cfg.grid)
    executor = executor or ExecutorConfig()
    journal = JobJournal(out_dir / JOURNAL_DIR) if executor.journal else None
    run = make_executor(executor, eval_cfg.workers)
    grid = eval_cfg.grid
    # each family's saturation on each cluster size, measured in parallel before the jobs read it
    sizes = dict.fromkeys([*grid.replicas, *grid.overload_replicas, *eval_cfg.capacity.replicas])
    warm = [(policies, f, r, dict(grid.cluster)) for f in grid.families for r in sizes]
    if warm:
        run_jobs(warm, run, fn=saturation_job, journal=journal)
    jobs = suite_jobs(policies, eval_cfg)
    results = run_jobs(jobs, run, progress, journal=journal)
    rows = [r for res in results for r in res["rows"]]
    pd.DataFrame(rows).to_csv(out_dir / "metrics.csv", index=False, float_format=CSV_FLOAT_FORMAT)
    capacity = None
    cjobs = capacity_jobs(policies, eval_cfg, [h for h in jobs[0][3] if isinstance(h, str)]) if jobs else []
    if cjobs:
        capacity = pd.DataFrame(run_jobs(cjobs, run, progress, fn=capacity_job, journal=journal))
        capacity.to_csv(out_dir / "capacity.csv", index=False, float_format=CSV_FLOAT_FORMAT)
    failed = failed_scenarios(jobs, results)
    text = suite_report(policies, eval_cfg, jobs, results, out_dir, failed, capacity)
    (out_dir / "report.md").write_text(text)
    if journal is not None:
        journal.clear()
    return text, failed
