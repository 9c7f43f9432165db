"""BC labelling in the training process vs in parallel on an executor (`bc.label_workers`, issue 26).

    python experiments/bench_labelling.py [--episodes 4] [--requests 100] [--teacher lookahead_one_step] [--no-ray]

The teacher (by default the one-step planner, which forks the simulation at every decision: the slow labelling
that dominates `experiment=slo_router`'s training) labels `--episodes` chat episodes of `--requests` requests on
4 A100s at rho 0.8, once in process (`collect_demos` as training runs it with bc.label_workers=1) and once with
2 local worker processes (bc.label_workers=2, executor=local: spawned, so each pays its imports inside the timing)
and as Ray tasks on a local Ray of 2 CPUs (executor=ray; the Ray is started before the timing, and its start is
reported apart). The demonstrations must be identical. Writes experiments/results/bench_labelling.md / .json: wall time per way, the speed-up, the machine's
load before and after.
"""

from __future__ import annotations

import json
import sys
import os
import platform
import time
from pathlib import Path

from common import arg_parser

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench_labelling"


def main() -> None:
    p = arg_parser(__doc__)
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--teacher", default="lookahead_one_step")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray tasks")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = p.parse_args()

    import torch

    from vidur_ppo.build import EnvSpec
    from vidur_ppo.executor import ExecutorConfig
    from vidur_ppo.ppo.bc import EpisodeLabeller, collect_demos
    from vidur_ppo.routing.features import features_config
    from vidur_ppo.routing.rewards import reward_config
    from vidur_ppo.routing.safety import SafetyConfig
    from vidur_ppo.sim.cluster import ClusterSpec
    from vidur_ppo.workloads.families import family_spec

    workload = {**family_spec("chat"), "load": 0.8, "num_requests": args.requests}
    spec = EnvSpec(ClusterSpec(num_replicas=4), workload, reward_config(None), features_config("full"), SafetyConfig())
    spec = spec.for_suite_scenario({"name": "bench", "family": "chat", "load": 0.8}, args.requests)
    seeds = list(range(1, args.episodes + 1))
    load_before = os.getloadavg()
    ways = [("in process (bc.label_workers=1)", None),
            ("2 local workers (bc.label_workers=2)", EpisodeLabeller([spec], None, 2))]
    ray_start = None
    if args.ray:
        from vidur_ppo.executor import connect

        t0 = time.perf_counter()
        connect(ExecutorConfig(kind="ray", num_cpus=2), 2)
        ray_start = time.perf_counter() - t0
        ways.append(("2 Ray tasks (bc.label_workers=2 executor=ray)",
                     EpisodeLabeller([spec], ExecutorConfig(kind="ray", num_cpus=2), 2)))
    env, rows, reference = spec.make(), [], None
    for name, labeller in ways:
        t0 = time.perf_counter()
        demos = collect_demos(env, args.teacher, seeds, labeller=labeller)
        wall = time.perf_counter() - t0
        if reference is None:
            reference = demos
        same = all(torch.equal(a.feats, b.feats) and torch.equal(a.actions, b.actions) for a, b in zip(reference, demos))
        rows.append({"way": name, "wall_s": wall, "identical": same})
        print(f"{name}: {wall:.1f} s, identical demonstrations: {same}")
    for r in rows:
        r["speed_up"] = rows[0]["wall_s"] / r["wall_s"]
    meta = {"argv": " ".join(sys.argv[1:]), "machine": f"{platform.node()}, {os.cpu_count()} cores",
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "teacher": args.teacher, "episodes": args.episodes, "requests": args.requests, "ray_start_s": ray_start}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = "\n".join(f"| {r['way']} | {r['wall_s']:.1f} | {r['speed_up']:.2f}x | {'yes' if r['identical'] else 'NO'} |"
                      for r in rows)
    (args.out / f"{NAME}.md").write_text(f"""# BC labelling: in process vs on an executor

`python experiments/bench_labelling.py {meta['argv']}`. Machine: {meta['machine']}; load average before /
after: {meta['loadavg_before']} / {meta['loadavg_after']}. Teacher `{args.teacher}` labels {args.episodes} chat
episodes of {args.requests} requests on 4 A100s at rho 0.8 (each episode made from the slot's spec in its worker).

| way | wall s | speed-up | identical demonstrations |
|---|---:|---:|---|
{table}

The worker count is `bc.label_workers`; the workers come from the run's `executor` (docs/ray.md). Ray's start
({'%.1f s' % ray_start if ray_start is not None else 'not run'}) is not in its row: a run pays it once.
""")
    print((args.out / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
