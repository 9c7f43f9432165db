"""Benchmark trace replay on a large file: wall time and peak RSS per process, before vs after.

    python experiments/bench_trace.py [--rows 10500000] [--episodes 3] [--requests 60] [--skip-before]

Writes a ~200 MB trace (10.5M rows of arrived_at,num_prefill_tokens,num_decode_tokens) to a temp
dir, then runs each case in a fresh subprocess and reports its wall time (start to exit, imports
included) and peak RSS (getrusage of the child). Cases, for the code before (the trace reader at
--before-rev, loaded from `git show`) and after (this worktree):
  * generate: `TraceWorkload(path, max_requests=60).generate(seed)` for --episodes seeds
    (one env reset each);
  * env: a `VidurRoutingEnv` on that workload (4 replicas, vidur loaded) running --episodes
    round-robin episodes of 60 requests: the "60-request smoke run" of issue 13, per process.
After only, a whole-file option (subsample, then a seeded window) shows the cached-slice cost.
Target (issue 13): under 20 s and 600 MB peak per process. Writes experiments/results/bench_trace.{json,md}.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import arg_parser  # experiments/common.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
BEFORE_REV = "920a0fb"  # the branch's base: trace parsed as strings at every generate()

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
if args["code"] == "before":  # the reader file from `git show`, loaded as a module of its own
    import importlib.util
    spec = importlib.util.spec_from_file_location("workload_before", args["before_dir"] + "/workload_before.py")
    wl = sys.modules["workload_before"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wl)
else:
    import vidur_ppo.sim.workload as wl
workload = wl.TraceWorkload(**args["spec"])
times, requests = [], 0
if args["case"] == "generate":
    for seed in range(args["episodes"]):
        t = time.perf_counter()
        requests += len(workload.generate(seed))
        times.append(time.perf_counter() - t)
else:
    from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
    env = VidurRoutingEnv(cluster={"num_replicas": 4})  # each episode replays the trace of the reader under test
    rr = iter(range(10**9))
    for seed in range(args["episodes"]):
        t = time.perf_counter()
        trace = workload.generate(seed)
        requests += int(run_episode(env, lambda obs: next(rr) % 4, seed=seed, trace=trace)["num_requests"])
        times.append(time.perf_counter() - t)
print(json.dumps({"requests": requests, "first_s": times[0], "later_s": sum(times[1:]),
                  "inner_s": time.perf_counter() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_trace(path: Path, rows: int, seed: int = 0) -> None:
    """Poisson arrivals at 20 QPS; lengths that fit the default cluster (prefill+decode <= 4000)."""
    rng = np.random.default_rng(seed)
    t_end = 0.0
    with open(path, "w") as f:
        f.write("arrived_at,num_prefill_tokens,num_decode_tokens\n")
        for start in range(0, rows, 1_000_000):
            m = min(1_000_000, rows - start)
            t = t_end + np.cumsum(rng.exponential(0.05, m))
            t_end = float(t[-1])
            p, d = rng.integers(1, 3001, m), rng.integers(1, 1001, m)
            f.write("\n".join(f"{a:.3f},{b},{c}" for a, b, c in zip(t.tolist(), p.tolist(), d.tolist())) + "\n")


def run_case(code: str, case: str, spec: dict, episodes: int, before_dir: str) -> dict:
    args = {"code": code, "case": case, "spec": spec, "episodes": episodes, "before_dir": before_dir}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{code}/{case} failed: {out.stderr.strip().splitlines()[-1]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    row = {"code": code, "case": case, "options": {k: v for k, v in spec.items() if k != "path"},
           "episodes": episodes, "wall_s": round(wall, 2), **{k: round(v, 2) for k, v in res.items()}}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--rows", type=int, default=10_500_000)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--skip-before", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        t = time.perf_counter()
        write_trace(path, a.rows)
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {a.rows} rows, {size_mb:.0f} MB in {time.perf_counter() - t:.0f}s", flush=True)
        old = subprocess.run(["git", "-C", str(ROOT), "show", f"{a.before_rev}:vidur_ppo/sim/workload.py"],
                             capture_output=True, text=True, check=True).stdout
        (Path(tmp) / "workload_before.py").write_text(old)
        spec = {"path": str(path), "max_requests": a.requests}
        rows = []
        for code in ("before", "after"):
            if code == "before" and a.skip_before:
                continue
            for case in ("generate", "env"):
                rows.append(run_case(code, case, spec, a.episodes, tmp))
        rows.append(run_case("after", "generate", {**spec, "subsample": 0.001}, a.episodes, tmp))
    result = {"machine": f"{platform.machine()}, {platform.python_version()}, {_cores()} cores",
              "command": " ".join(["python experiments/bench_trace.py", *sys.argv[1:]]),
              "rows": a.rows, "file_mb": round(size_mb, 1), "requests": a.requests, "before_rev": a.before_rev,
              "target": {"wall_s": 20, "peak_mb": 600}, "cases": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_trace.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bench_trace.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'bench_trace.md'}")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def markdown(r: dict) -> str:
    lines = [
        "# Trace replay: a large trace used by a small run",
        "",
        f"A {r['file_mb']:.0f} MB trace ({r['rows']:,} rows) replayed with `max_requests={r['requests']}`; "
        "each row is one fresh process (wall time from start to exit, imports included; peak RSS of that "
        f"process). `before` = the reader at `{r['before_rev']}` (every column parsed as strings at every "
        "`generate()`); `after` = numeric columns only, chunked into compact arrays, parsed once per "
        "process and sliced per reset. `generate`: one `generate(seed)` per episode; `env`: a 4-replica "
        "`VidurRoutingEnv` running round-robin episodes (vidur loaded). `after` replays a window picked by "
        "each seed (the new default); `before` the first 60 rows. "
        f"Target: under {r['target']['wall_s']} s and {r['target']['peak_mb']} MB per process.",
        "",
        "| code | case | options | episodes | wall s | first episode s | later episodes s | peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in r["cases"]:
        opts = ", ".join(f"{k}={v}" for k, v in c["options"].items())
        lines.append(f"| {c['code']} | {c['case']} | {opts} | {c['episodes']} | {c['wall_s']:.1f} | "
                     f"{c['first_s']:.2f} | {c['later_s']:.2f} | {c['peak_mb']:.0f} |")
    lines += ["", f"Machine: {r['machine']}. Command: `{r['command']}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
