"""Suite throughput of the executors (issue 26): the same small suite's jobs on the local executor (spawned
processes) and on the Ray executor (a local Ray of as many CPUs), at 1 and 2 workers.

    python experiments/ray_scaling.py [--seeds 4] [--requests 150] [--workers 1 2]

The suite: heuristics only (round_robin, jsq, lor) on chat at 2 and 4 replicas, `--seeds` test seeds each, so
2 x seeds (scenario, seed) jobs; every job is timed inside its worker. Writes, under experiments/results/:

  ray_scaling.md / .json   per executor and worker count: wall time of the jobs (process or Ray worker start-up
                           included, Ray's own start not: it is reported apart), jobs/s, speed-up over one local
                           worker, and the Ray executor's overhead per job: (Ray wall - local wall) x workers / jobs,
                           as a share of a job's mean compute time; the machine and its load while it ran
  ray_scaling.png          jobs/s per executor and worker count

Both executors return identical results (checked here: every run's rows must equal the first's).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from common import arg_parser

ROOT = Path(__file__).resolve().parents[1]
NAME = "ray_scaling"


def timed_job(job) -> Dict[str, Any]:
    """A suite job and the seconds it computed, measured in its worker."""
    from vidur_ppo.eval.suite import safe_suite_job

    t0 = time.perf_counter()
    res = safe_suite_job(job)
    return {**res, "seconds": time.perf_counter() - t0}


def warm_worker(_: int) -> None:
    """A worker's one-off start (the simulator's imports), paid before the timed jobs: held a moment, so that each
    worker of the pool takes one."""
    import vidur_ppo.eval.suite  # noqa: F401

    time.sleep(0.5)


def machine() -> Dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in load]}


def run(kind: str, workers: int, jobs: List[tuple]) -> Dict[str, Any]:
    """One executor at one worker count over the jobs (a fresh local Ray for each Ray run)."""
    from vidur_ppo.eval.suite import run_jobs
    from vidur_ppo.executor import ExecutorConfig, connect, make_executor

    start = 0.0
    if kind == "ray":
        import ray

        t0 = time.perf_counter()
        connect(ExecutorConfig(kind="ray", num_cpus=workers), workers)
        start = time.perf_counter() - t0
    executor = make_executor(ExecutorConfig(kind=kind), workers)
    t0 = time.perf_counter()
    executor.map(warm_worker, list(range(workers)))  # local: the fork server's start; Ray: its workers' imports
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = run_jobs(jobs, executor, fn=timed_job)
    wall = time.perf_counter() - t0
    if kind == "ray":
        ray.shutdown()
    rows = [{k: v for k, v in r.items()} for res in results for r in res["rows"]]
    return {"executor": kind, "workers": workers, "jobs": len(jobs), "wall_s": wall, "ray_start_s": start, "warm_s": warm,
            "jobs_per_s": len(jobs) / wall, "job_s": [res["seconds"] for res in results], "rows": rows}


def figure(runs: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({r["workers"] for r in runs})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    width = 0.38
    for k, kind in enumerate(("local", "ray")):
        vals = [next(r["jobs_per_s"] for r in runs if r["executor"] == kind and r["workers"] == w) for w in workers]
        ax.bar([i + (k - 0.5) * width for i in range(len(workers))], vals, width, label=kind)
    ax.set_xticks(range(len(workers)), [f"{w} worker{'s' * (w > 1)}" for w in workers])
    ax.set_ylabel("suite jobs / s")
    ax.set_title("executor throughput (same suite, same results)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    import numpy as np
    import pandas as pd

    from vidur_ppo.eval.suite import EvalConfig, suite_jobs

    ap = arg_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()
    ev = EvalConfig(scenarios=[{"name": "chat_r2", "num_replicas": 2, "qps_per_replica": 4.0},
                               {"name": "chat_r4", "num_replicas": 4, "qps_per_replica": 4.0}],
                    seeds=args.seeds, num_requests=args.requests, baselines=["round_robin", "jsq", "lor"])
    jobs = suite_jobs({}, ev)
    before, t0 = machine(), time.time()
    runs = []
    for w in args.workers:
        for kind in ("local", "ray"):
            runs.append(run(kind, w, jobs))
            print(f"{kind} x{w}: {runs[-1]['wall_s']:.1f} s, {runs[-1]['jobs_per_s']:.2f} jobs/s", file=sys.stderr)
    after = machine()
    same = all(pd.DataFrame(r["rows"]).equals(pd.DataFrame(runs[0]["rows"])) for r in runs)
    base = next(r for r in runs if r["executor"] == "local" and r["workers"] == min(args.workers))
    job_s = float(np.mean([s for r in runs for s in r["job_s"]]))
    table = []
    for r in runs:
        local = next(x for x in runs if x["executor"] == "local" and x["workers"] == r["workers"])
        over = (r["wall_s"] - local["wall_s"]) * r["workers"] / r["jobs"]
        over_start = (r["wall_s"] + r["ray_start_s"] + r["warm_s"] - local["wall_s"] - local["warm_s"]) * r["workers"] / r["jobs"]
        table.append({"executor": r["executor"], "workers": r["workers"], "jobs": r["jobs"], "wall_s": r["wall_s"],
                      "jobs_per_s": r["jobs_per_s"], "speedup": base["wall_s"] / r["wall_s"],
                      "mean_job_s": float(np.mean(r["job_s"])), "ray_start_s": r["ray_start_s"], "warm_s": r["warm_s"],
                      "overhead_per_job_s": over if r["executor"] == "ray" else 0.0,
                      "overhead_pct": 100 * over / job_s if r["executor"] == "ray" else 0.0,
                      "overhead_with_start_pct": 100 * over_start / job_s if r["executor"] == "ray" else 0.0})
    args.out.mkdir(parents=True, exist_ok=True)
    figure(runs, args.out / f"{NAME}.png")
    wall = time.time() - t0
    load = f"load average {before['loadavg_1_5_15']} before, {after['loadavg_1_5_15']} after, on {before['cpus']} cores"
    md = ["# Ray executor scaling", "",
          f"`python experiments/ray_scaling.py --seeds {args.seeds} --requests {args.requests} --workers "
          f"{' '.join(map(str, args.workers))}` ({wall / 60:.1f} min): {len(jobs)} suite jobs (heuristics round_robin, "
          f"jsq, lor on chat at 2 and 4 replicas, {args.seeds} seeds, {args.requests} requests per episode).", "",
          f"- machine: {before['platform']}, Python {before['python']}, {before['cpus']} cores",
          f"- other jobs running: {load} (a load above the core count means other work shared these cores: "
          "the numbers below are then only indicative; re-run on a quiet machine for final ones)",
          f"- results identical across executors and worker counts: {'yes' if same else 'NO'}", "",
          "| executor | workers | wall s | jobs/s | speed-up vs 1 local | mean job s | Ray start s | workers' start s | overhead/job s | overhead % of a job | with the starts |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {t['executor']} | {t['workers']} | {t['wall_s']:.1f} | {t['jobs_per_s']:.2f} | {t['speedup']:.2f} | "
           f"{t['mean_job_s']:.2f} | {t['ray_start_s']:.1f} | {t['warm_s']:.1f} | {t['overhead_per_job_s']:+.2f} | {t['overhead_pct']:+.0f}% | {t['overhead_with_start_pct']:+.0f}% |"
           for t in table]
    md += ["", "Wall: from submitting the jobs to the last result, the workers already started. Their one-off start is "
           "apart: `Ray start` is `ray.init` (once per process), `workers' start` one untimed round of a task per worker "
           "that imports the simulator and waits 0.5 s (local: the fork server's start, whose preloaded imports every "
           "pool's workers then fork from; Ray: its workers' imports, kept by the workers for later jobs). Overhead per "
           "job: (Ray wall - local wall) x workers / jobs, at the same worker count; as a share of the mean job's "
           f"compute time ({job_s:.2f} s, measured inside the workers). The last column adds both starts to both "
           "executors' walls: a suite that pays them alone (a long-lived cluster pays them once).", "",
           f"![jobs/s]({NAME}.png)", ""]
    (args.out / f"{NAME}.md").write_text("\n".join(md))
    (args.out / f"{NAME}.json").write_text(json.dumps(
        {"command": sys.argv, "machine_before": before, "machine_after": after, "identical_results": same,
         "mean_job_s": job_s, "runs": table}, indent=1))
    print("\n".join(md))
    print(f"\nwritten: {args.out / NAME}.md, .json, .png ({wall / 60:.1f} min)", file=sys.stderr)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
