"""Evaluation suites: a trained run's policy and the heuristics on a list of scenarios (cluster
size, load, workload shape, length noise), each (scenario, seed) a job in a worker process, every
scheduler on the same trace; writes metrics.csv, report.md and figures. A job that raises (a bad
workload spec, a missing trace file) fails alone: the rest is still evaluated and written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from vidur_ppo.checks import check, positive
from vidur_ppo.routing.env import EVAL_SEED_BASE
from vidur_ppo.routing.heuristics import HEURISTICS

SCENARIO_KEYS = ("name", "num_replicas", "qps_per_replica", "workload", "num_requests", "length_noise", "load")


@dataclass
class EvalConfig:
    name: str = "default"
    seeds: int = 3
    seed_base: int = EVAL_SEED_BASE  # training draws episode seeds below this
    num_requests: int = 1000
    baselines: List[str] = field(default_factory=lambda: ["round_robin", "lor", "jsq"])
    deterministic: bool = True
    # suites (python -m vidur_ppo.evaluate): an empty list evaluates the run's own scenario
    scenarios: List[Dict[str, Any]] = field(default_factory=list)
    all_heuristics: bool = False  # every heuristic, not only `baselines`
    sampled: bool = False  # also the sampled (stochastic) policy
    workers: int = 2

    def __post_init__(self) -> None:
        positive(self, "eval", "seeds", "seed_base", "num_requests", "workers")
        bad = [b for b in self.baselines if b not in HEURISTICS]
        check(not bad, "eval.baselines", f"must be heuristics from {sorted(HEURISTICS)}", bad)
        for i, sc in enumerate(self.scenarios):
            unknown = set(sc) - set(SCENARIO_KEYS)
            check("name" in sc and not unknown, f"eval.scenarios[{i}]",
                  f"needs a name and may set {', '.join(SCENARIO_KEYS[1:])}", dict(sc))

    def seed_list(self) -> List[int]:
        """The held-out evaluation seeds: `seeds` of them from `seed_base` up."""
        return [self.seed_base + i for i in range(self.seeds)]


_POLICY_CACHE: Dict[str, Any] = {}


def suite_job(args) -> Dict[str, Any]:
    """One (scenario, seed) of a suite, in a worker process: every scheduler on the same trace."""
    import torch

    from vidur_ppo.build import env_spec
    from vidur_ppo.checkpoint import load_policy
    from vidur_ppo.eval.paired import TorchPolicy, evaluate

    run_dir, scenario, seed, heuristics, sampled, num_requests = args
    torch.set_num_threads(1)
    if run_dir not in _POLICY_CACHE:
        _POLICY_CACHE[run_dir] = load_policy(run_dir)
    policy, cfg = _POLICY_CACHE[run_dir]
    env = env_spec(cfg).for_suite_scenario(scenario, num_requests).make()
    qps = getattr(env.workload, "qps", None)
    tag = {"scenario": scenario["name"], "shape": "custom" if scenario.get("workload") else "trained",
           "replicas": env.cluster.num_replicas, "qps": float(qps) if qps else float("nan")}
    details: Dict[str, Any] = {}
    out: Dict[str, Any] = {"rows": [], "errors": [], "details": None}
    learned = {"ppo": policy}
    if sampled:
        learned["ppo_sampled"] = TorchPolicy(policy.model, deterministic=False, seed=seed)
    for name, pol in learned.items():
        try:
            out["rows"] += [{**tag, **x} for x in evaluate(env, {name: pol}, [seed], details=details)]
        except ValueError as exc:  # e.g. the legacy GRU on another replica count
            out["errors"].append(f"{scenario['name']}: {name} cannot run here: {exc}")
    out["rows"] += [{**tag, **x} for x in evaluate(env, {h: h for h in heuristics}, [seed], details=details)]
    out["details"] = details
    return out


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


def suite_jobs(run_dir, eval_cfg: EvalConfig) -> List[tuple]:
    """The (scenario, seed) jobs of a suite; an empty scenario list means the run's own scenario."""
    from omegaconf import OmegaConf

    scenarios = [OmegaConf.to_container(s, resolve=True) if not isinstance(s, dict) else s
                 for s in (list(eval_cfg.scenarios) or [{"name": "trained"}])]
    heuristics = [h for h in HEURISTICS if eval_cfg.all_heuristics or h in eval_cfg.baselines]
    return [(str(run_dir), sc, s, heuristics, bool(eval_cfg.sampled), int(eval_cfg.num_requests))
            for sc in scenarios for s in eval_cfg.seed_list()]


def run_jobs(jobs: List[tuple], workers: int, progress=None) -> List[Dict[str, Any]]:
    """Suite jobs in `workers` spawned processes, results in job order; a failing job gives a
    result with `failed` set (see `safe_suite_job`) instead of stopping the others."""
    from multiprocessing import get_context

    results = []
    with get_context("spawn").Pool(max(1, int(workers))) as pool:
        for res in pool.imap(safe_suite_job, jobs):
            results.append(res)
            if progress:
                progress()
    return results


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


def run_suite(run_dir, eval_cfg: EvalConfig, out_dir, progress=None) -> Tuple[str, Dict[str, List[str]]]:
    """Evaluate a run dir's policy on every scenario of a suite; write metrics.csv, report.md and
    plots of every scenario that ran. Returns the report text and the failed scenarios."""
    from pathlib import Path

    import pandas as pd

    from vidur_ppo.eval.report import suite_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = suite_jobs(run_dir, eval_cfg)
    results = run_jobs(jobs, eval_cfg.workers, progress)
    rows = [r for res in results for r in res["rows"]]
    pd.DataFrame(rows).to_csv(out_dir / "metrics.csv", index=False)
    failed = failed_scenarios(jobs, results)
    text = suite_report(run_dir, eval_cfg, jobs, results, out_dir, failed)
    (out_dir / "report.md").write_text(text)
    return text, failed
