"""Headroom (issue 17, steps 0-1): how much better than the best heuristic a router could be, and how
much of that the lookahead planners and today's policies capture.

    python experiments/headroom.py [--budget 150] [eval overrides ...]

On the generalisation suite's scenarios at rho 0.95 (every family on 4 replicas, and the mixed clusters
on chat), 2 test seeds, 500 requests: every heuristic, the planners (`lookahead_one_step`, Block's
baseline; `lookahead`, the rollout algorithm) and the policies of experiments/generalisation.py run the
same traces (eval/suite.py); then an offline search (eval/headroom.py), which knows the whole trace,
hill-climbs from the best heuristic's assignment of each trace for `--budget` full simulations. Its
result is an achievable E2E P99, so `best heuristic - search` is a lower bound on the headroom. Each
router's share of the headroom captured = (best heuristic - router) / (best heuristic - search).
Writes experiments/results/headroom.md, headroom.png and headroom/ (metrics.csv, search.csv, report.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import arg_parser, eval_config, write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ["eval.grid.loads=[0.95]", "eval.grid.replicas=[4]", "eval.grid.overload_loads=[]",
            "eval.grid.mix_families=[chat]", "eval.seeds=2", "eval.num_requests=500", "eval.capacity.replicas=[]",
            "eval.capacity.mixes=false", "eval.planners=[lookahead_one_step,lookahead]"]


def search_jobs(policies, ev, budget: int):
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.suite import cached_policy, heuristics_for, policy_dirs, suite_jobs

    cfg = cached_policy(next(iter(policy_dirs(policies).values())))[1]
    jobs = []
    for job in suite_jobs(policies, ev):
        spec = env_spec(cfg).for_suite_scenario(job[1], ev.num_requests)
        heuristics = heuristics_for(bool(spec.cluster.replicas), [h for h in job[3] if isinstance(h, str)])
        jobs.append((spec, job[1]["name"], job[2], heuristics, budget, "e2e_p99"))
    return jobs


def headroom_table(rows: pd.DataFrame, search: pd.DataFrame, routers) -> pd.DataFrame:
    """Per scenario: the best heuristic (by mean over seeds), the headroom the search found, and each
    router's E2E P99 vs the best heuristic and share of the headroom captured (sums over seeds)."""
    from vidur_ppo.eval.matrix import best_heuristics

    best = best_heuristics(rows)
    wide = rows.pivot_table(index=["scenario", "seed"], columns="scheduler", values="e2e_p99")
    out = []
    for sc, bar_name in best.items():
        w = wide.loc[sc]
        s = search[search["scenario"] == sc].set_index("seed")["search_best"].reindex(w.index)
        bar = w[bar_name]
        bound = np.minimum(s, bar)
        rec = {"scenario": sc, "split": rows[rows["scenario"] == sc]["split"].iloc[0], "best": bar_name,
               "best_p99": bar.mean(), "headroom": float(((bar - bound) / bar).mean())}
        for r in routers:
            if r in w:
                rec[f"{r}_vs_best"] = float(((w[r] - bar) / bar).mean())
                rec[f"{r}_share"] = float((bar - w[r]).sum() / max((bar - bound).sum(), 1e-9))
        out.append(rec)
    return pd.DataFrame(out)


def plot(table: pd.DataFrame, routers, path: Path) -> Path:
    from vidur_ppo.eval.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    x = np.arange(len(table))
    width = 0.8 / (len(routers) + 1)
    ax.bar(x, -100 * table["headroom"], width, label="offline search (achievable)", color="black")
    for i, r in enumerate(routers):
        ax.bar(x + (i + 1) * width, 100 * table[f"{r}_vs_best"].clip(-50, 50), width, label=r)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x + 0.4, [s.replace("_rho0.95", "") for s in table["scenario"]], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("E2E P99 vs the best heuristic (%)")
    ax.set_title("Below 0: better than the best heuristic of the scenario (rho 0.95)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    from tqdm.auto import tqdm

    from vidur_ppo.eval.headroom import headroom_job
    from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, run_jobs, run_suite, suite_size

    ap = arg_parser(__doc__)
    ap.add_argument("--headline", type=Path, default=ROOT / "multirun" / "headline_issue14" / "seed0",
                    help="the issue-14 headline run dir (python -m vidur_ppo.train experiment=headline seed=0 "
                         "hydra.run.dir=DIR trains it)")
    ap.add_argument("--default", type=Path, default=ROOT / "multirun" / "generalisation" / "default")
    ap.add_argument("--budget", type=int, default=150, help="full simulations per trace for the offline search")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--reuse-routers", action="store_true", help="keep headroom/metrics.csv of an earlier run of "
                                                                  "the same settings and only run the search")
    ap.add_argument("overrides", nargs="*", help="eval overrides (after this script's defaults)")
    args = ap.parse_args()
    t0 = time.time()
    ev = eval_config("generalisation", [*DEFAULTS, *args.overrides])
    policies = {"ppo_headline": str(args.headline), "ppo_default": str(args.default)}
    out = args.out / "headroom"
    failed = {}
    if not (args.reuse_routers and (out / "metrics.csv").exists()):
        bar = tqdm(total=suite_size(policies, ev), desc="routers")
        _, failed = run_suite(policies, ev, out, progress=lambda: bar.update(1))
        bar.close()
    t_suite = time.time() - t0
    jobs = search_jobs(policies, ev, args.budget)
    bar = tqdm(total=len(jobs), desc="offline search")
    search = pd.DataFrame(run_jobs(jobs, ev.workers, bar.update, fn=headroom_job))
    bar.close()
    search.to_csv(out / "search.csv", index=False, float_format=CSV_FLOAT_FORMAT)
    rows = pd.read_csv(out / "metrics.csv")
    routers = [*policies, *ev.planners]
    table = headroom_table(rows, search, routers)
    fig = plot(table, routers, args.out / "headroom.png")
    ms = rows[rows["scheduler"].isin(ev.planners)].groupby("scheduler")["decision_ms"].mean()
    wall = time.time() - t0
    cmd = " ".join(["python experiments/headroom.py", f"--budget {args.budget}",
                    *(["--reuse-routers"] if args.reuse_routers else []), *args.overrides])
    md = ["# Headroom: the best heuristic, the lookahead planners, and an offline search", "",
          f"`{cmd}`: {wall / 60:.0f} min on this 2-core machine ({t_suite / 60:.0f} min the routers, the rest the "
          f"search{'; the routers of an earlier run kept' if args.reuse_routers else ''}). {ev.seeds} test seeds from {ev.seed_list()[0]}, {ev.num_requests} requests per episode, rho 0.95, "
          "predicted output lengths (lognormal sigma 0.5) for every router and planner; the search alone knows the "
          "trace (arrivals and true lengths). Planner settings were chosen on validation seeds (200000+); see "
          "perf_attempts.md.", "",
          "**Headroom** = (best heuristic - search) / best heuristic, E2E P99, mean over seeds: what at least is "
          "possible. **Share** = (best heuristic - router) / (best heuristic - search), summed over seeds "
          "(negative: worse than the best heuristic; above 1: beyond what the search found).", "",
          "Planner cost, mean ms per decision: " + ", ".join(f"`{k}` {v:.0f} ms" for k, v in ms.items()), "",
          f"![headroom]({fig.name})", ""]
    for split, label in (("held_out", "Homogeneous (4 replicas), held-out families"),
                         ("train", "Homogeneous (4 replicas), training family"),
                         ("mixed_held_out", "Mixed clusters (chat), held-out mixes"),
                         ("mixed_train", "Mixed clusters (chat), training mix")):
        sub = table[table["split"] == split]
        if sub.empty:
            continue
        head = ["scenario", "best heuristic", "its E2E P99 (s)", "headroom"] + [f"{r} vs best / share" for r in routers]
        body = [[r["scenario"], r["best"], f"{r['best_p99']:.2f}", f"{100 * r['headroom']:.1f}%"]
                + [f"{100 * r[f'{x}_vs_best']:+.1f}% / {r[f'{x}_share']:+.2f}" for x in routers] for _, r in sub.iterrows()]
        mean = ["**mean**", "", "", f"{100 * sub['headroom'].mean():.1f}%"] + [
            f"{100 * sub[f'{x}_vs_best'].mean():+.1f}% / {sub[f'{x}_share'].mean():+.2f}" for x in routers]
        md += [f"## {label}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(map(str, b)) + " |" for b in [*body, mean]] + [""]
    table.to_csv(out / "headroom_table.csv", index=False, float_format=CSV_FLOAT_FORMAT)
    write_results(args.out / "headroom.md", md[:1] + ["", ""], "\n".join(md[2:]), failed, wall)


if __name__ == "__main__":
    main()
