"""The headline (issue 17): one learned router, chosen on validation seeds, against every heuristic and
the lookahead planner on the generalisation suite's held-out families and mixes, target by target.

    python experiments/headline.py --choose   # step 2 only: the candidates on validation seeds
    python experiments/headline.py            # the rest, with the chosen candidate

1. Trains every candidate (CANDIDATES: conf/experiment files) per training seed with
   `python -m vidur_ppo.train`, timed, into multirun/headline/<candidate>/seed<s>/. Each run keeps
   its warm start (BC + DAgger from the planner) as seed<s>/distilled/: PPO's own teacher.
2. Choice (`--choose`): each candidate's PPO policy and every heuristic on validation seeds (200000+)
   of the test grid below. The candidate with the least mean E2E P99 relative to each scenario's best
   heuristic over the held-out families and held-out mixes is written to results/headline_choice.json.
   Test seeds are never looked at here.
3. Test grid: every suite family on 4 identical replicas and every suite mix on chat, code completion
   and summarisation, all at rho 0.95 of the cluster's measured capacity, predicted output lengths for
   every router, test seeds (100000+); the chosen policy (PPO, and its distilled warm start) and every
   heuristic on the same traces -> results/headline/metrics.csv.
4. Share of the headroom, on experiments/headroom.py's traces (2 seeds, 500 requests; its offline
   search bound and the planner rows): the chosen policies run there -> results/headline/headroom_traces/.
5. Capacity at SLO on the mixed clusters (chat): the chosen policies' bisections beside the heuristics'
   of results/heterogeneous/capacity.csv (same seeds, requests, SLO and tolerance; measured here when
   that file is missing) -> results/headline/capacity.csv.
Writes experiments/results/headline.{md,json} and headline.png. Finished parts are reused, so an
interrupted run continues; --fresh re-runs steps 3-5.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import arg_parser, eval_config
from headroom import DEFAULTS as HEADROOM_DEFAULTS, headroom_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
# the experiment files (conf/experiment/<name>.yaml) the choice is made among
CANDIDATES = ("expert_iteration", "expert_iteration_hetero", "expert_iteration_hetero_zoo")
TEST_GRID = ["eval.grid.loads=[0.95]", "eval.grid.replicas=[4]", "eval.grid.overload_loads=[]",
             "eval.capacity.replicas=[]", "eval.capacity.mixes=false", "eval.planners=[]"]
HELD_OUT = ("held_out", "mixed_held_out")
LEARNED, DISTILLED = "learned", "distilled"


def train(candidate: str, seed: int, runs: Path) -> tuple:
    """One training run (skipped when finished); (run dir, wall seconds)."""
    run_dir = runs / candidate / f"seed{seed}"
    wall_file = run_dir / "wall_s.txt"
    if not ((run_dir / "checkpoint.pt").exists() and wall_file.exists()):
        print(f"training {candidate} seed {seed} -> {run_dir}", flush=True)
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "vidur_ppo.train", f"experiment={candidate}",
                              f"seed={seed}", "logger.progress=false", f"hydra.run.dir={run_dir}"],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"training {candidate} seed {seed} failed:\n{out.stderr[-3000:]}")
        wall_file.write_text(f"{time.time() - t0:.1f}")
    return run_dir, float(wall_file.read_text())


def decision_ms(run_dir: str, spec, seed: int) -> float:
    """Mean wall time of one policy decision (model forward and argmax) over one episode."""
    from vidur_ppo.eval.paired import TorchPolicy
    from vidur_ppo.eval.suite import cached_policy
    from vidur_ppo.routing.env import run_episode

    policy = TorchPolicy(cached_policy(run_dir)[0].model)
    seconds = []

    def timed(obs):
        t0 = time.perf_counter()
        a = policy(obs)
        seconds.append(time.perf_counter() - t0)
        return a

    run_episode(spec.make(), timed, seed=seed)
    return 1000 * sum(seconds) / len(seconds)


def suite_rows(policies: dict, ev, out_dir: Path, fresh: bool) -> pd.DataFrame:
    """metrics.csv of a suite run of `policies` (kept from an earlier run unless `fresh`)."""
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import run_suite, suite_size

    if fresh or not (out_dir / "metrics.csv").exists():
        bar = tqdm(total=suite_size(policies, ev), desc=out_dir.name)
        _, failed = run_suite(policies, ev, out_dir, progress=lambda: bar.update(1))
        bar.close()
        if failed:
            sys.exit(f"failed scenarios in {out_dir}: {failed}")
    return pd.read_csv(out_dir / "metrics.csv")


def choose(runs: Path, seed: int, out: Path) -> str:
    """Step 2: the candidate whose PPO policy is best vs the best heuristic on validation seeds."""
    from vidur_ppo.eval.matrix import paired_vs

    policies = {name: str(train(name, seed, runs)[0]) for name in CANDIDATES}
    ev = eval_config("generalisation", [*TEST_GRID, "eval.split=validation", "eval.seeds=3"])
    rows = suite_rows(policies, ev, out / "headline_validation", fresh=False)
    held = rows[rows["split"].isin(HELD_OUT)]
    score = {name: float(paired_vs(held, name, "best")["diff"].mean()) for name in policies}
    chosen = min(score, key=score.get)
    lines = ["# Headline: the choice on validation seeds", "",
             f"`python experiments/headline.py --choose`: {ev.seeds} validation seeds from {ev.seed_list()[0]}, "
             f"{ev.num_requests} requests, the test grid's scenarios (rho 0.95; 4 identical replicas per family, "
             "every mix on chat, code completion and summarisation). Each candidate's PPO policy (training seed "
             f"{seed}), mean E2E P99 vs each held-out scenario's best heuristic (paired by trace):", "",
             "| candidate | held-out families | held-out mixes | all held-out |", "|---|---:|---:|---:|"]
    for name in policies:
        by = paired_vs(held, name, "best").join(held.groupby("scenario")["split"].first())
        fam, mix = (by[by["split"] == s]["diff"].mean() for s in HELD_OUT)
        lines.append(f"| {name} | {100 * fam:+.1f}% | {100 * mix:+.1f}% | {100 * score[name]:+.1f}% |")
    lines += ["", f"Chosen: **{chosen}** (conf/experiment/{chosen}.yaml). Per-scenario tables: "
              "[headline_validation/report.md](headline_validation/report.md).", ""]
    (out / "headline_validation.md").write_text("\n".join(lines))
    (out / "headline_choice.json").write_text(json.dumps({"chosen": chosen, "validation_score": score}, indent=1))
    print("\n".join(lines))
    return chosen


def mean_over_seeds(rows: pd.DataFrame, names: dict) -> pd.DataFrame:
    """Adds `learned` / `distilled` rows: per trace, the mean over the training seeds' policies."""
    out = [rows]
    for label, members in names.items():
        sub = rows[rows["scheduler"].isin(members)]
        if len(sub):
            keys = ["scenario", "seed"]
            agg = sub.groupby(keys, as_index=False).mean(numeric_only=True)
            agg = agg.merge(sub.groupby(keys, as_index=False)[["split"]].first(), on=keys)
            agg["scheduler"] = label
            out.append(agg)
    return pd.concat(out, ignore_index=True)


def capacity(policies: dict, path: Path, fresh: bool) -> pd.DataFrame:
    """Step 5: capacity at SLO on the heterogeneous suite's mixes, the policies beside the heuristics."""
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, capacity_job, capacity_jobs, run_jobs

    if path.exists() and not fresh:
        return pd.read_csv(path)
    ev = eval_config("heterogeneous")
    known = RESULTS / "heterogeneous" / "capacity.csv"
    heuristics = [] if known.exists() else [h for h in ev.routers() if isinstance(h, str)]
    jobs = capacity_jobs(policies, ev, heuristics)
    bar = tqdm(total=len(jobs), desc="capacity at SLO")
    rows = pd.DataFrame(run_jobs(jobs, ev.workers, bar.update, fn=capacity_job))
    bar.close()
    if known.exists():
        theirs = pd.read_csv(known)
        rows = pd.concat([rows, theirs[~theirs["scheduler"].str.startswith("ppo")]], ignore_index=True)
    rows.to_csv(path, index=False, float_format=CSV_FLOAT_FORMAT)
    return rows


def capacity_vs_best(cap: pd.DataFrame, router: str) -> pd.DataFrame:
    """Per mix: the router's capacity at SLO and the best heuristic's (a policy row is not a heuristic)."""
    from vidur_ppo.routing.heuristics import HEURISTICS

    out = []
    for fam, g in cap.groupby("family", sort=False):
        h = g[g["scheduler"].isin(list(HEURISTICS))].set_index("scheduler")["capacity"]
        mine = g[g["scheduler"] == router]["capacity"]
        if len(mine) and len(h):
            out.append({"mix": fam, "split": g["split"].iloc[0], "best": h.idxmax(), "best_capacity": h.max(),
                        "capacity": float(mine.mean()), "gain": float(mine.mean() / h.max() - 1)})
    return pd.DataFrame(out)


def fmt(diff: float, half: float) -> str:
    return f"{100 * diff:+.1f}% ± {100 * half:.1f}"


def plot(vs: dict, cap: pd.DataFrame, path: Path) -> Path:
    from vidur_ppo.eval.plotting import pyplot

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    names = list(vs)
    scen = list(vs[names[0]].index)
    x = np.arange(len(scen))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        t = vs[n].reindex(scen)
        ax.bar(x + i * width, (100 * t["diff"]).clip(-60, 60), width, yerr=(100 * t["half"]).clip(upper=60),
               capsize=2, label=n)
    ax.set_ylim(-70, 70)  # bars and CIs clipped at +-60%: the tables have the numbers
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x + 0.4 - width / 2, [s.replace("_rho0.95", "").replace("hetero_", "") for s in scen], rotation=60,
                  ha="right", fontsize=7)
    ax.set_ylabel("E2E P99 vs the best heuristic (%)")
    ax.set_title("Held-out scenarios, rho 0.95 (below 0: better than the best heuristic; 95% CI, clipped at 60%)")
    ax.legend(fontsize=8)
    held = cap[cap["split"] != "train"]
    y = np.arange(len(held))
    bx.barh(y - 0.2, held["best_capacity"], 0.4, label="best heuristic", color="grey")
    bx.barh(y + 0.2, held["capacity"], 0.4, label=LEARNED)
    bx.set_yticks(y, [m.replace("mix_", "") for m in held["mix"]], fontsize=7)
    bx.set_xlabel("capacity at SLO (x measured capacity)")
    bx.set_title("Held-out mixes (chat)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.matrix import paired_vs
    from vidur_ppo.eval.suite import cached_policy

    ap = arg_parser(__doc__)
    ap.add_argument("--choose", action="store_true", help="step 2 only: train the candidates, pick one on validation")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0],
                    help="training seeds of the chosen candidate (the choice uses the first)")
    ap.add_argument("--seeds", type=int, default=5, help="test seeds per scenario")
    ap.add_argument("--requests", type=int, default=1000, help="requests per test episode")
    ap.add_argument("--runs", type=Path, default=ROOT / "multirun" / "headline",
                    help="training runs: <runs>/<candidate>/seed<s>/ (finished ones are reused)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the results go (inputs: experiments/results)")
    ap.add_argument("--fresh", action="store_true", help="re-run the evaluations (steps 3-5) even if their files exist")
    args = ap.parse_args()
    t0 = time.time()
    out = args.out
    choice = out / "headline_choice.json"
    if args.choose or not choice.exists():
        choose(args.runs, args.train_seeds[0], out)
        if args.choose:
            return
    chosen = json.loads(choice.read_text())["chosen"]
    trained = {s: train(chosen, s, args.runs) for s in args.train_seeds}
    ppo = {f"ppo_s{s}": str(d) for s, (d, _) in trained.items()}
    distilled = {f"distilled_s{s}": str(d / "distilled") for s, (d, _) in trained.items()}
    policies = {**ppo, **distilled}
    groups = {LEARNED: list(ppo), DISTILLED: list(distilled)}

    # 3. the test grid
    ev = eval_config("generalisation", [*TEST_GRID, f"eval.seeds={args.seeds}", f"eval.num_requests={args.requests}"])
    rows = mean_over_seeds(suite_rows(policies, ev, out / "headline", args.fresh), groups)
    held = rows[rows["split"].isin(HELD_OUT)]
    split_of = held.groupby("scenario")["split"].first()
    vs = {n: paired_vs(held, n, "best") for n in (LEARNED, DISTILLED)}
    ttft = paired_vs(held, LEARNED, "best", key="ttft_p99")
    beyond = paired_vs(held, LEARNED, DISTILLED)

    # 4. the headroom traces
    hr_ev = eval_config("generalisation", [*[o for o in HEADROOM_DEFAULTS if not o.startswith("eval.planners")],
                                           "eval.planners=[]", "eval.baselines=[round_robin]"])  # its report needs a heuristic
    mine = mean_over_seeds(suite_rows(policies, hr_ev, out / "headline" / "headroom_traces", args.fresh), groups)
    theirs = pd.read_csv(RESULTS / "headroom" / "metrics.csv")
    hr_rows = pd.concat([theirs, mine[mine["scheduler"].isin([LEARNED, DISTILLED])]], ignore_index=True)
    hr_routers = [LEARNED, DISTILLED, "lookahead_one_step", "lookahead"]
    table = headroom_table(hr_rows, pd.read_csv(RESULTS / "headroom" / "search.csv"), hr_routers)
    hr_held = table[table["split"].isin(HELD_OUT)]
    vs_planner = paired_vs(hr_rows[hr_rows["split"].isin(HELD_OUT)], DISTILLED, "lookahead_one_step")
    planner_ms = float(theirs[theirs["scheduler"] == "lookahead_one_step"]["decision_ms"].mean())

    # 5. capacity at SLO on the mixes
    cap = capacity(ppo, out / "headline" / "capacity.csv", args.fresh)
    cap = pd.concat([cap, cap[cap["scheduler"].isin(list(ppo))].groupby(["family", "replicas", "split"], as_index=False)
                     ["capacity"].mean().assign(scheduler=LEARNED)], ignore_index=True)
    cap_vs = capacity_vs_best(cap, LEARNED)
    cap_held = cap_vs[cap_vs["split"] != "train"]

    # costs
    first = next(iter(ppo.values()))
    ms = decision_ms(first, env_spec(cached_policy(first)[1]).scenario(num_requests=args.requests), ev.seed_list()[0])
    train_min = max(w for _, w in trained.values()) / 60

    # targets, one by one
    fam = [s for s in vs[LEARNED].index if split_of[s] == "held_out"]
    mixes = [s for s in vs[LEARNED].index if split_of[s] == "mixed_held_out"]
    losses = [s for s in vs[LEARNED].index if vs[LEARNED].loc[s, "outcome"] == "loss"]
    big = [s for s in fam if vs[LEARNED].loc[s, "diff"] <= -0.10 or ttft.loc[s, "diff"] <= -0.10]
    share_h = hr_held[hr_held["split"] == "held_out"][f"{LEARNED}_share"].mean()
    share_m = hr_held[hr_held["split"] == "mixed_held_out"][f"{LEARNED}_share"].mean()
    wins_b = [s for s in beyond.index if beyond.loc[s, "outcome"] == "win"]
    loss_b = [s for s in beyond.index if beyond.loc[s, "outcome"] == "loss"]
    dist_gap = float(vs_planner["diff"].mean())
    targets = [
        ("never worse than the best heuristic on any held-out scenario (E2E P99, CI covers 0 or better)",
         f"losses in {len(losses)} of {len(vs[LEARNED])}" + (f": {', '.join(losses)}" if losses else ""), not losses),
        ("half of the headroom captured, homogeneous (mean share, held-out families)", f"{share_h:+.2f}", share_h >= 0.5),
        ("half of the headroom captured, heterogeneous (mean share, held-out mixes)", f"{share_m:+.2f}", share_m >= 0.5),
        ("capacity at SLO >= 15% above the best heuristic on held-out mixes (mean)",
         f"{100 * cap_held['gain'].mean():+.1f}% (" + ", ".join(f"{100 * g:+.0f}%" for g in cap_held["gain"]) + ")",
         cap_held["gain"].mean() >= 0.15),
        ("rho 0.95, identical replicas: E2E or TTFT P99 >= 10% below the best heuristic on half the held-out families",
         f"{len(big)} of {len(fam)}", len(big) >= len(fam) / 2),
        ("PPO beyond its teacher (the distilled policy) on >= 3 held-out scenarios, never worse beyond the CI",
         f"wins {len(wins_b)}, losses {len(loss_b)} of {len(beyond)}", len(wins_b) >= 3 and not loss_b),
        ("distilled policy within 3% of the planner (E2E P99, headroom traces) at >= 20x lower cost",
         f"{100 * dist_gap:+.1f}%, {planner_ms / ms:.0f}x cheaper", dist_gap <= 0.03 and planner_ms / ms >= 20),
        ("training <= 60 min on this 2-core machine", f"{train_min:.0f} min", train_min <= 60),
        ("decision cost <= 1 ms", f"{ms:.2f} ms", ms <= 1.0),
    ]
    fig = plot({LEARNED: vs[LEARNED], DISTILLED: vs[DISTILLED]}, cap_vs, out / "headline.png")
    wall = time.time() - t0
    cmd = "python experiments/headline.py" + (f" --train-seeds {' '.join(map(str, args.train_seeds))}"
                                             if args.train_seeds != [0] else "") + \
        (f" --seeds {args.seeds}" if args.seeds != 5 else "") + (f" --requests {args.requests}" if args.requests != 1000 else "")
    md = ["# Headline: a learned router on the generalisation suite's held-out families and mixes", "",
          f"`{cmd}`: {wall / 60:.0f} min for this rendering on this 2-core machine (finished steps reused). The "
          f"router: `experiment={chosen}`, chosen on validation seeds ([headline_validation.md]"
          f"(headline_validation.md)); training seeds {args.train_seeds} ({', '.join(f'{w / 60:.1f}' for _, w in trained.values())} "
          f"min each). `{LEARNED}` = its PPO policy, `{DISTILLED}` = its warm start (DAgger from the one-step "
          "lookahead planner), each the mean over training seeds on a trace. Every router sees predicted output "
          "lengths (lognormal sigma 0.5); the best heuristic is the best of all ten per scenario (by mean over the "
          f"same seeds). Test grid: {args.seeds} test seeds from {ev.seed_list()[0]}, {args.requests} requests, rho 0.95; "
          "every family on 4 identical replicas, every mix on chat, code completion and summarisation. Paired "
          "differences, mean ± 95% CI half-width (negative: better).", "",
          "## Targets", "", "For each target not met: by how much (below), what was tried (perf_attempts.md, sessions "
          "5-6) and what the measurements suggest next (docs/history.md, \"The current headline, discussed\").", "",
          "| target | measured | met |", "|---|---|---|"]
    md += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    md += ["", f"![headline]({fig.name})", "", "## Held-out scenarios (test grid)", "",
           "| scenario | best heuristic | learned vs best (E2E P99) | distilled vs best | learned vs distilled "
           "| learned vs best (TTFT P99) |", "|---|---|---:|---:|---:|---:|"]
    for s in vs[LEARNED].index:
        md.append(f"| {s} | {vs[LEARNED].loc[s, 'reference']} | {fmt(*vs[LEARNED].loc[s, ['diff', 'half']])} | "
                  f"{fmt(*vs[DISTILLED].loc[s, ['diff', 'half']])} | {fmt(*beyond.loc[s, ['diff', 'half']])} | "
                  f"{fmt(*ttft.loc[s, ['diff', 'half']])} |")
    for label, group in (("held-out families", fam), ("held-out mixes", mixes)):
        md.append(f"| **mean, {label}** | | {100 * vs[LEARNED].loc[group, 'diff'].mean():+.1f}% | "
                  f"{100 * vs[DISTILLED].loc[group, 'diff'].mean():+.1f}% | {100 * beyond.loc[group, 'diff'].mean():+.1f}% | "
                  f"{100 * ttft.loc[group, 'diff'].mean():+.1f}% |")
    md += ["", "## Share of the headroom (experiments/headroom.py's traces: 2 test seeds, 500 requests)", "",
           "Headroom = (best heuristic - offline search) / best heuristic, a lower bound (the search is "
           "achievable). Share = (best heuristic - router) / (best heuristic - search).", "",
           "| scenario | headroom | " + " | ".join(f"{r} vs best / share" for r in hr_routers) + " |",
           "|---|---:|" + "---|" * len(hr_routers)]
    for _, r in hr_held.iterrows():
        md.append(f"| {r['scenario']} | {100 * r['headroom']:.1f}% | " + " | ".join(
            f"{100 * r[f'{x}_vs_best']:+.1f}% / {r[f'{x}_share']:+.2f}" for x in hr_routers) + " |")
    md += ["", f"Distilled vs the one-step planner on these traces: {100 * dist_gap:+.1f}% E2E P99 (mean over "
           f"{len(vs_planner)} held-out scenarios) at {ms:.2f} ms vs {planner_ms:.0f} ms per decision.", "",
           "## Capacity at SLO on the mixed clusters (chat; 2 test seeds, 1000 requests, bisection to 5%)", "",
           "| mix | split | best heuristic | its capacity | learned | vs best |", "|---|---|---|---:|---:|---:|"]
    md += [f"| {r['mix']} | {r['split']} | {r['best']} | {r['best_capacity']:.3f} | {r['capacity']:.3f} | "
           f"{100 * r['gain']:+.1f}% |" for _, r in cap_vs.iterrows()]
    md.append("")
    (out / "headline.md").write_text("\n".join(md))
    (out / "headline.json").write_text(json.dumps({
        "command": cmd, "chosen": chosen, "train_walls_s": {s: w for s, (_, w) in trained.items()},
        "decision_ms": ms, "planner_decision_ms": planner_ms,
        "targets": [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in targets]}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
