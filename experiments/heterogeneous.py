"""Routing on mixed clusters (issue 16): a policy trained on one mix, judged on mixes it never saw.

    python experiments/heterogeneous.py [eval.seeds=5] ...

Trains `experiment=hetero` (2 x A100 + 2 x H100, capability features, BC from least-work-left in
seconds) once into multirun/heterogeneous/seed0, then runs `eval=heterogeneous`
(conf/eval/heterogeneous.yaml: the training mix and three held-out mixes at rho 0.5/0.8/0.95, every
capacity-blind and capacity-aware heuristic on the same traces, predicted output lengths, capacity at
SLO per mix) and draws which replica gets which requests on a held-out mix. Writes
experiments/results/heterogeneous.md, heterogeneous.png and heterogeneous/ (the full suite report).
Extra arguments are Hydra overrides of the eval config.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import arg_parser, eval_config, suite_section, write_results
from vidur_ppo.build import env_spec
from vidur_ppo.checkpoint import load_policy
from vidur_ppo.eval.plotting import pyplot
from vidur_ppo.routing.env import run_episode
from vidur_ppo.routing.heuristics import make_heuristic

ROOT = Path(__file__).resolve().parents[1]
PICTURE_SCENARIO = "mix_a40x4_a100tp2x2_rho0.8"  # held out: two generations, two TP degrees
PICTURE_ROUTERS = ["ppo_hetero", "round_robin", "least_work_left", "least_work_left_time"]


def ensure_run(run_dir: Path) -> float:
    """Train experiment=hetero into run_dir once; returns the training wall time (s)."""
    wall = run_dir / "wall_s.txt"
    if not (run_dir / "checkpoint.pt").exists():
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "vidur_ppo.train", "experiment=hetero", f"hydra.run.dir={run_dir}",
                        "logger.progress=false"], check=True, cwd=ROOT)
        wall.write_text(f"{time.time() - t0:.1f}")
    return float(wall.read_text()) if wall.exists() else float("nan")


def routing_picture(run_dir: Path, ev, path: Path) -> Path:
    """Per replica of one held-out mix: the share of requests and their mean output length, per router."""
    policy, cfg = load_policy(run_dir)
    scenario = next(sc for sc in ev.all_scenarios() if sc["name"] == PICTURE_SCENARIO)
    env = env_spec(cfg).for_suite_scenario(scenario, ev.num_requests).make()
    seed = ev.seed_list()[0]
    trace = env.workload.generate(seed)
    labels = [f"{s.device}-TP{s.tensor_parallel_size}" for s in env.cluster.replica_specs()]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.8 / len(PICTURE_ROUTERS)
    for i, name in enumerate(PICTURE_ROUTERS):
        router = policy if name == "ppo_hetero" else make_heuristic(name)
        run_episode(env, router, seed=seed, trace=trace)
        a = env.driver.assignment
        x = np.arange(len(labels)) + (i - (len(PICTURE_ROUTERS) - 1) / 2) * width
        share = np.bincount(a, minlength=len(labels)) / len(a)
        mean_len = [np.asarray(trace.num_decode_tokens)[a == r].mean() if (a == r).any() else 0 for r in range(len(labels))]
        axes[0].bar(x, share, width, label=name)
        axes[1].bar(x, mean_len, width, label=name)
    for ax, title in zip(axes, ["share of requests", "mean output length of its requests (tokens)"]):
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([f"{j}: {lab}" for j, lab in enumerate(labels)], fontsize=8)
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Who serves what: {PICTURE_SCENARIO} (held out), test seed {seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--run", type=Path, default=ROOT / "multirun" / "heterogeneous" / "seed0")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("overrides", nargs="*", help="eval overrides, e.g. eval.seeds=5")
    args = ap.parse_args()
    t0 = time.time()
    ev = eval_config("heterogeneous", args.overrides)
    train_wall = ensure_run(args.run)
    section, failed = suite_section({"ppo_hetero": str(args.run)}, ev, args.out, "heterogeneous")
    section = section.replace("## Generalisation (leave-family-out)", "## Held-out mixes")
    picture = routing_picture(args.run, ev, args.out / "heterogeneous.png")
    wall = time.time() - t0
    cmd = " ".join(["python experiments/heterogeneous.py", *args.overrides])
    header = ["# Routing on mixed clusters", "",
              f"`{cmd}`: {wall / 60:.0f} min on this 2-core machine (training {train_wall / 60:.1f} min, recorded when "
              "the run was trained; the suite; the capacity bisections). `ppo_hetero` = `experiment=hetero`, seed 0: "
              "trained on 2 x A100 + 2 x H100 only (capability features, BC from least-work-left in seconds, PPO "
              f"anchored to it). {ev.seeds} test seeds per scenario, {ev.num_requests} chat requests per episode at rho "
              "of each mix's measured capacity (the sum of its groups'), predicted output lengths for every router. "
              "Capacity-blind: round-robin, JSQ, least-work-left, power-of-two, SITA-E; capacity-aware: weighted "
              "round-robin, least-work-left in seconds, power-of-two on expected completion time. Per-scenario tables: "
              "[heterogeneous/report.md](heterogeneous/report.md).", "", f"![who serves what]({picture.name})", ""]
    write_results(args.out / "heterogeneous.md", header, section, failed, wall)

if __name__ == "__main__":
    main()
