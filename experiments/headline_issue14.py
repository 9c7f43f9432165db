"""The issue-14 headline (superseded by experiments/headline.py, issue 17): the size-split policy
against every heuristic, target by target, with true output lengths.

    python experiments/headline_issue14.py [--seeds 3] [--eval-seeds 10] [--requests 1000]

Trains `experiment=headline` (conf/experiment/headline.yaml) once per training seed with
`python -m vidur_ppo.train`, timing each run, then evaluates every trained policy and every
heuristic of conf/eval/headline.yaml on the same held-out traces (seeds 100000 + i, never drawn
in training) in that file's scenarios: the heavy training scenario, light load, 2 and 8 replicas,
and a second workload shape, plus heavy load with noisy output lengths (what the size split is
worth without an oracle); --eval-seeds and --requests override its `seeds` and `num_requests`.
The learned scheduler's metric on a trace is the mean over the trained policies, so each
comparison is paired by trace, and CIs are Student-t over the traces (95%). Writes
experiments/results/headline_issue14.{md,json,csv} and a bar plot; finished training runs are reused,
so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from vidur_ppo.eval.stats import mean_ci, paired_diff_ci
from vidur_ppo.eval.suite import EvalConfig, run_jobs, suite_jobs

ROOT = Path(__file__).resolve().parents[1]
HEADLINE_EVAL = ROOT / "conf" / "eval" / "headline.yaml"  # the scenarios, heuristics, seeds and requests
ISSUE_HEURISTICS = ["lor", "jsq", "least_work_left", "power_of_two"]  # the issue's "best heuristic" bar
# The scenarios the targets below are measured on (names of conf/eval/headline.yaml's scenarios),
# with the headings of their report sections.
LABELS = {
    "heavy_r4": "heavy load (training scenario)",
    "light_r4": "light load",
    "heavy_r2": "2 replicas (unseen)",
    "heavy_r8": "8 replicas (unseen)",
    "prefill_heavy_r4": "second workload shape: long prompts, bursty (unseen)",
    "heavy_r4_noisy_lengths": "heavy load, routers told each output length x exp(N(0, 0.5^2)), as from a length predictor",
}
METRICS = [("e2e_p99", "E2E P99"), ("e2e_p50", "E2E P50"), ("ttft_p90", "TTFT P90"), ("ttft_p99", "TTFT P99"),
           ("tbt_p99", "TBT P99"), ("throughput_rps", "req/s")]


def train(seeds, root: Path, overrides) -> dict:
    """Train one run per seed (skipping finished ones); returns wall seconds per seed."""
    walls = {}
    for seed in seeds:
        run_dir = root / f"seed{seed}"
        wall_file = run_dir / "wall_s.txt"
        if (run_dir / "checkpoint.pt").exists() and wall_file.exists():
            walls[seed] = float(wall_file.read_text())
            continue
        print(f"training seed {seed} -> {run_dir}", flush=True)
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "vidur_ppo.train", "experiment=headline", f"seed={seed}",
                              "logger.progress=false", f"hydra.run.dir={run_dir}", *overrides],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"training seed {seed} failed:\n{out.stderr[-3000:]}")
        walls[seed] = time.time() - t0
        wall_file.write_text(f"{walls[seed]:.1f}")
    return walls


def load_eval(seeds=None, num_requests=None, workers=None) -> EvalConfig:
    """conf/eval/headline.yaml as a validated EvalConfig, with the command line's overrides."""
    raw = OmegaConf.load(HEADLINE_EVAL)
    raw.pop("defaults", None)  # `schema` is EvalConfig, merged here as Hydra would
    cli = {k: v for k, v in {"seeds": seeds, "num_requests": num_requests, "workers": workers}.items() if v is not None}
    ev = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), raw, cli))
    missing = sorted(set(LABELS) - {sc["name"] for sc in ev.scenarios})
    if missing:
        sys.exit(f"{HEADLINE_EVAL} lacks the scenarios the targets are measured on: {', '.join(missing)}")
    return ev


def heuristics_of(ev: EvalConfig) -> list:
    """The heuristics the suite runs on every trace (as `suite_jobs` picks them)."""
    return list(suite_jobs(".", ev)[0][3])


def evaluate_all(run_dirs, ev: EvalConfig) -> pd.DataFrame:
    """Every (scenario, trace): each trained policy, then every heuristic, on that one trace."""
    per_run = [suite_jobs(rd, ev) for rd in run_dirs]  # each: (scenario, seed) jobs of one run
    jobs = []
    for same_trace in zip(*per_run):  # the heuristics run once per trace, with the first policy
        jobs += [(i, (*job[:3], list(job[3]) if i == 0 else [], *job[4:])) for i, job in enumerate(same_trace)]
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc="evaluate")
    except ImportError:  # pragma: no cover
        bar = None
    results = run_jobs([j for _, j in jobs], ev.workers, progress=bar.update if bar else None)
    if bar:
        bar.close()
    rows = []
    for (i, _), res in zip(jobs, results):
        if res["errors"]:
            sys.exit("\n".join(res["errors"]))
        for r in res["rows"]:
            if r["scheduler"] == "ppo":
                r["scheduler"], r["train_seed"] = f"ppo_{i}", i
            rows.append(r)
    df = pd.DataFrame(rows)
    # The learned scheduler on a trace: the mean over the trained policies.
    ppo = df[df.scheduler.str.startswith("ppo_")].groupby(["scenario", "seed"], as_index=False).mean(numeric_only=True)
    ppo["scheduler"] = "ppo"
    return pd.concat([df, ppo], ignore_index=True)


def series(df, scenario, scheduler, key):
    sub = df[(df.scenario == scenario) & (df.scheduler == scheduler)].sort_values("seed")
    return sub[key].to_numpy()


def best_of(df, scenario, names, key="e2e_p99"):
    return min(names, key=lambda n: series(df, scenario, n, key).mean())


def rel(df, scenario, a, b, key):
    d, h = paired_diff_ci(series(df, scenario, a, key), series(df, scenario, b, key))
    return 100 * d, 100 * h


def targets(df, walls, heavy_beats_rr) -> list:
    """One row per target of the issue: measured paired difference, CI, and whether it holds."""
    out = []

    def add(target, scenario, key, ref, goal, test):
        d, h = rel(df, scenario, "ppo", ref, key)
        out.append({"target": target, "scenario": scenario, "metric": key, "reference": ref,
                    "diff_pct": d, "ci_pct": h, "goal": goal, "met": bool(test(d, h))})

    h = "heavy_r4"
    add("E2E P99 >= 30% below round-robin", h, "e2e_p99", "round_robin", "<= -30%", lambda d, c: d <= -30)
    add("E2E P99 >= 10% below the best of LOR/JSQ/LWL/P2C", h, "e2e_p99", best_of(df, h, ISSUE_HEURISTICS),
        "<= -10%", lambda d, c: d <= -10)
    add("TTFT P99 >= 10% below the best heuristic", h, "ttft_p99", best_of(df, h, ISSUE_HEURISTICS, "ttft_p99"),
        "<= -10%", lambda d, c: d <= -10)
    add("TTFT P90 no worse than round-robin", h, "ttft_p90", "round_robin", "CI reaches <= 0", lambda d, c: d - c <= 0)
    add("TTFT P90 no worse than the best heuristic", h, "ttft_p90", best_of(df, h, ISSUE_HEURISTICS, "ttft_p90"),
        "CI reaches <= 0", lambda d, c: d - c <= 0)
    add("throughput within 1% of round-robin", h, "throughput_rps", "round_robin", ">= -1%", lambda d, c: d >= -1)
    for sc in ("light_r4", "heavy_r2", "heavy_r8", "prefill_heavy_r4"):
        add("E2E P99 no worse than the best of LOR/JSQ/LWL/P2C", sc, "e2e_p99", best_of(df, sc, ISSUE_HEURISTICS),
            "CI reaches <= 0", lambda d, c: d - c <= 0)
        add("E2E P99 no worse than SITA-E (our stronger heuristic)", sc, "e2e_p99", "sita_e",
            "CI reaches <= 0", lambda d, c: d - c <= 0)
    add("E2E P99 vs SITA-E (our stronger heuristic)", h, "e2e_p99", "sita_e", "CI reaches <= 0",
        lambda d, c: d - c <= 0)
    noisy = "heavy_r4_noisy_lengths"  # not an issue target: how much of the gain needs exact lengths
    add("robustness: E2E P99 with noisy output lengths vs the best of LOR/JSQ/LWL/P2C", noisy, "e2e_p99",
        best_of(df, noisy, ISSUE_HEURISTICS), "CI reaches <= 0", lambda d, c: d - c <= 0)
    worst = max(walls.values())
    out.append({"target": "beats round-robin on the heavy scenario within 15 min of training (2 cores)",
                "scenario": h, "metric": "wall_s", "reference": "round_robin", "diff_pct": float("nan"),
                "ci_pct": float("nan"), "goal": "<= 900 s", "measured": f"{worst:.0f} s (slowest seed)",
                "met": bool(worst <= 900 and heavy_beats_rr)})
    bench = ROOT / "experiments" / "results" / "bench_env.json"
    if bench.exists():
        v = json.loads(bench.read_text())["vector"]
        ratio = v.get("free_running_2_over_single", float("nan"))
        out.append({"target": "env decisions/s with 2 workers >= 1.7x one worker (policy in the worker)",
                    "scenario": "bench_env", "metric": "decisions/s", "reference": "1 worker",
                    "diff_pct": float("nan"), "ci_pct": float("nan"), "goal": ">= 1.7x",
                    "measured": f"{ratio:.2f}x (experiments/results/bench_env.json)", "met": bool(ratio >= 1.7)})
    return out


def scenario_table(df, sc, heuristics) -> list:
    names = ["ppo"] + [n for n in df[df.scenario == sc].scheduler.unique() if n.startswith("ppo_")] + list(heuristics)
    best = best_of(df, sc, ISSUE_HEURISTICS)
    lines = ["| scheduler | " + " | ".join(lab for _, lab in METRICS) +
             f" | E2E P99 vs round_robin | E2E P99 vs {best} (best of 4) | E2E P99 vs sita_e |",
             "|---|" + "---:|" * (len(METRICS) + 3)]
    for n in names:
        cells = []
        for key, _ in METRICS:
            m, h = mean_ci(series(df, sc, n, key))
            cells.append(f"{m:.3g} ± {h:.2g}")
        for ref in ("round_robin", best, "sita_e"):
            d, h = rel(df, sc, n, ref, "e2e_p99")
            cells.append("—" if n == ref else f"{d:+.1f}% ± {h:.1f}")
        label = {"ppo": "**ppo (mean of trained policies)**", "lor": "lor (vidur's: waiting only)"}.get(n, n)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def plot(df, scenarios, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["ppo", "round_robin", "jsq", "least_work_left", "power_of_two", "sita_e"]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(3.4 * len(scenarios), 3.6))
    for ax, sc in zip(axes, scenarios):
        vals = [mean_ci(series(df, sc["name"], n, "e2e_p99")) for n in names]
        ax.bar(range(len(names)), [v[0] for v in vals], yerr=[v[1] for v in vals], capsize=3,
               color=["tab:red"] + ["tab:gray"] * 4 + ["tab:blue"])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(sc["name"], fontsize=9)
        ax.set_ylabel("E2E P99 (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="training seeds")
    ap.add_argument("--eval-seeds", type=int, default=None,
                    help="held-out traces per scenario (default: `seeds` of conf/eval/headline.yaml, 10)")
    ap.add_argument("--requests", type=int, default=None,
                    help="requests per trace (default: `num_requests` of conf/eval/headline.yaml, 1000)")
    ap.add_argument("--workers", type=int, default=None, help="evaluation processes (default: `workers`, 2)")
    ap.add_argument("--runs", type=Path, default=ROOT / "multirun" / "headline_issue14")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--report-only", action="store_true", help="re-render the report from headline_issue14.csv")
    ap.add_argument("overrides", nargs="*", help="extra train overrides (key=value)")
    args = ap.parse_args()
    t0 = time.time()
    ev = load_eval(args.eval_seeds, args.requests, args.workers)
    args.eval_seeds, args.requests = ev.seeds, ev.num_requests
    heuristics = heuristics_of(ev)
    seeds = list(range(args.seeds))
    if args.report_only:  # re-render from the saved evaluation (and the runs' recorded walls)
        walls = {s: float((args.runs / f"seed{s}" / "wall_s.txt").read_text()) for s in seeds}
        df = pd.read_csv(args.out / "headline_issue14.csv")
        trained_now = False
    else:
        trained_now = not all((args.runs / f"seed{s}" / "wall_s.txt").exists() for s in seeds)
        walls = train(seeds, args.runs, args.overrides)
        run_dirs = [args.runs / f"seed{s}" for s in seeds]
        df = evaluate_all(run_dirs, ev)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        df.to_csv(args.out / "headline_issue14.csv", index=False)
    per_seed_beats = [series(df, "heavy_r4", f"ppo_{i}", "e2e_p99").mean() < series(df, "heavy_r4", "round_robin", "e2e_p99").mean()
                      for i in range(len(seeds))]
    tg = targets(df, walls, all(per_seed_beats))
    plot(df, ev.scenarios, args.out / "headline_issue14.png")
    cfg = (ROOT / "conf" / "experiment" / "headline.yaml").read_text()
    cmd = "python experiments/headline_issue14.py " + " ".join(
        [f"--seeds {args.seeds}", f"--eval-seeds {args.eval_seeds}"] + list(args.overrides))
    timing = (f"training {sum(walls.values()) / 60:.0f} min on 2 cores"
              + ("" if trained_now else " (recorded when the runs were trained; finished runs are reused)")
              + ("" if args.report_only else f", {(time.time() - t0) / 60:.0f} min in all, training included"))
    md = ["# Headline: the learned scheduler against every heuristic", "",
          f"Command: `{cmd}` ({timing}). "
          f"{len(seeds)} training seeds (wall per run: " + ", ".join(f"{w:.0f} s" for w in walls.values()) + "); "
          f"{args.eval_seeds} held-out traces per scenario (seeds {ev.seed_base}..{ev.seed_list()[-1]}), "
          f"{args.requests} requests each, the same traces for every scheduler. \"ppo\" is the mean of the trained "
          "policies on each trace; differences are paired by trace, mean ± 95% CI half-width (negative = better). "
          "The issue's \"best heuristic\" is the best of LOR / JSQ / least-work-left / power-of-two per scenario; "
          "SITA-E (size-interval assignment with equalised load, `heuristics.SITAE`) is the stronger heuristic this "
          "project adds, and the PPO policy's behaviour-cloning teacher.", "",
          "## Targets", "", "| target | scenario | reference | measured | goal | met |", "|---|---|---|---:|---|---|"]
    for t in tg:
        measured = t.get("measured") or f"{t['diff_pct']:+.1f}% ± {t['ci_pct']:.1f}"
        md.append(f"| {t['target']} | {t['scenario']} | {t['reference']} | {measured} | {t['goal']} | "
                  f"{'yes' if t['met'] else '**no**'} |")
    md += ["", "![E2E P99 per scenario](headline_issue14.png)", "", "## Winning configuration", "",
           "`python -m vidur_ppo.train experiment=headline` (conf/experiment/headline.yaml):", "", "```yaml",
           cfg.strip(), "```", ""]
    for sc in ev.scenarios:
        sub = df[df.scenario == sc["name"]]
        md += [f"## {sc['name']}: {LABELS.get(sc['name'], sc['name'])} ({int(sub.replicas.iloc[0])} replicas, "
               f"{sub.qps.iloc[0]:g} QPS)", ""]
        md += scenario_table(df, sc["name"], heuristics) + [""]
    (args.out / "headline_issue14.md").write_text("\n".join(md))
    (args.out / "headline_issue14.json").write_text(json.dumps({"targets": tg, "walls_s": walls, "command": cmd}, indent=1))
    print("\n".join(md[:len(tg) + 8]))


if __name__ == "__main__":
    main()
