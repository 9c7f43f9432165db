"""Rollout throughput of the policy workers as processes (PolicyWorkerSampler) and as Ray actors
(RayPolicyWorkerSampler), at 1 and 2 workers, in one run.

    python experiments/bench_ray_sampler.py [--envs 8] [--steps 128] [--rollouts 4] [--workers 1 2]

The scenario is the default training config (conf/: 4 x Llama-2-7B, chat_heavy, features=full, model=attn_gru at
its default dims), `--envs` envs, `--steps` steps per env per rollout, the samplers built by `build.make_sampler`
as a run builds them (`executor=ray`: a fresh local Ray of as many CPUs as workers, its start timed apart). Per
configuration: start-up (workers up, envs reset), one warm-up rollout, then `--rollouts` timed rollouts of the same
untrained policy. Writes experiments/results/bench_ray_sampler.md and .json: env steps/s per configuration, the
ratios to one process worker and Ray's to processes at the same worker count, and whether the two transports
collected identical rollouts (they must: same seeds, same weights).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
from hydra import compose, initialize_config_dir

from common import arg_parser  # experiments/common.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench_ray_sampler"


def machine() -> Dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def bench(transport: str, workers: int, args) -> Dict[str, Any]:
    """One sampler: start-up, a warm-up rollout, then the timed ones; their actions (to compare transports)."""
    from vidur_ppo.build import env_spec, make_sampler
    from vidur_ppo.config import register_configs, validate
    from vidur_ppo.executor import ExecutorConfig, connect
    from vidur_ppo.models import make_model

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"ppo.num_envs={args.envs}", f"ppo.rollout_steps={args.steps}", "ppo.vector_mode=policy_workers",
            f"ppo.num_workers={workers}", f"executor={transport}"])
    tc = validate(cfg)
    spec = env_spec(tc)
    feats = spec.make().observation_space["features"].shape
    torch.manual_seed(0)
    model = make_model(tc.model, feats[0], feats[1])
    ray_start = 0.0
    if transport == "ray":
        t0 = time.perf_counter()
        connect(ExecutorConfig(kind="ray", num_cpus=workers), workers)
        ray_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    sampler = make_sampler(spec, tc.ppo, model, tc.model, feats[1], seed=0, executor=tc.executor)
    sampler.reset(list(range(args.envs)))
    startup = time.perf_counter() - t0
    try:
        sampler.collect(model, args.steps)  # warm-up
        actions, times = [], []
        for _ in range(args.rollouts):
            t0 = time.perf_counter()
            actions.append(sampler.collect(model, args.steps).actions)
            times.append(time.perf_counter() - t0)
    finally:
        sampler.close()
        if transport == "ray":
            import ray

            ray.shutdown()
    steps = args.rollouts * args.steps * args.envs
    return {"transport": transport, "workers": workers, "sampler": type(sampler).__name__, "steps": steps,
            "wall_s": sum(times), "steps_per_s": steps / sum(times), "rollout_s": times, "startup_s": startup,
            "ray_start_s": ray_start, "actions": torch.stack(actions)}


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    before, t_start = machine(), time.time()
    runs: List[Dict[str, Any]] = []
    for w in args.workers:
        for transport in ("local", "ray"):
            runs.append(bench(transport, w, args))
            r = runs[-1]
            print(f"{r['sampler']} x{w}: {r['steps_per_s']:.0f} env steps/s (start-up {r['startup_s']:.1f} s)",
                  file=sys.stderr, flush=True)
    after, wall = machine(), time.time() - t_start
    base = next(r for r in runs if r["transport"] == "local" and r["workers"] == min(args.workers))
    table = []
    for r in runs:
        procs = next(x for x in runs if x["transport"] == "local" and x["workers"] == r["workers"])
        table.append({k: v for k, v in r.items() if k != "actions"} | {
            "vs_1_process": r["steps_per_s"] / base["steps_per_s"],
            "vs_processes_same_workers": r["steps_per_s"] / procs["steps_per_s"],
            "identical_to_processes": bool(torch.equal(r["actions"], procs["actions"]))})
    same = all(t["identical_to_processes"] for t in table)
    cmd = (f"python experiments/bench_ray_sampler.py --envs {args.envs} --steps {args.steps} --rollouts "
           f"{args.rollouts} --workers {' '.join(map(str, args.workers))}")
    md = ["# Policy workers as processes vs Ray actors: rollout throughput", "",
          f"`{cmd}` ({wall / 60:.1f} min). Default training scenario (4 x Llama-2-7B on A100, chat_heavy, "
          f"features=full, model=attn_gru at its default dims, untrained), {args.envs} envs, {args.steps} steps per env "
          f"per rollout; one warm-up rollout, then {args.rollouts} timed rollouts ({base['steps']} env steps) per row. "
          "`local`: PolicyWorkerSampler (spawned processes, pipes); `ray`: RayPolicyWorkerSampler (one Ray actor of "
          "one CPU per worker, on a fresh local Ray of as many CPUs; weights sent once per rollout with `ray.put`).", "",
          f"- machine: {before['platform']}, Python {before['python']}, {before['cpus']} vCPUs",
          f"- other processes may have run beside it: load average {before['loadavg_1_5_15']} before, "
          f"{after['loadavg_1_5_15']} after (above {before['cpus']}: others shared these cores, the numbers are only "
          "indicative)",
          f"- rollouts identical between processes and Ray actors at the same worker count: {'yes' if same else 'NO'}",
          "", "| transport | workers | env steps/s | vs 1 process | Ray / processes (same workers) | rollout s (each) "
          "| start-up s | Ray start s |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    md += [f"| {t['transport']} | {t['workers']} | {t['steps_per_s']:.0f} | {t['vs_1_process']:.2f} | "
           f"{t['vs_processes_same_workers']:.2f} | {', '.join(f'{s:.2f}' for s in t['rollout_s'])} | "
           f"{t['startup_s']:.1f} | {t['ray_start_s']:.1f} |" for t in table]
    md += ["", "Env steps/s: the timed rollouts' env steps over their wall time, as the learner sees it (sending the "
           "weights, the workers' simulation and policy forwards, gathering the batches). Start-up: building the "
           "sampler and resetting its envs (workers import torch and the simulator); Ray start: `ray.init`, once per "
           "process (a long-lived cluster pays it once).", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.md").write_text("\n".join(md))
    (args.out / f"{NAME}.json").write_text(json.dumps(
        {"command": cmd, "machine_before": before, "machine_after": after, "identical_rollouts": same,
         "runs": table}, indent=1))
    print("\n".join(md))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
