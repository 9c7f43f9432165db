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

    python experiments/headroom.py --objective slo [--load capacity | --load RHO] [--budget 150] [overrides ...]

The SLO headroom: the search maximises SLO attainment instead (eval/headroom.py `SloObjective`, moves
targeting the requests that miss their SLO), from the best heuristic's assignment by attainment; no
routers run (the headline reads the headroom from headroom_slo.json: a router's share of it =
(router - best heuristic) / (search - best heuristic), attainment per seed). `--load capacity` runs each
scenario at its best heuristic's capacity at SLO (the largest rho at which it meets the SLO for
eval.capacity.target of the requests), read from the capacity CSVs of the generalisation and
heterogeneous suites; `--load RHO` at a fixed rho. Writes experiments/results/headroom_slo.md and .json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import arg_parser, eval_config, write_results
from vidur_ppo.checks import ConfigError, check
from vidur_ppo.input_checks import reject

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CAPACITY_CSVS = [RESULTS / "generalisation" / "capacity.csv", RESULTS / "heterogeneous" / "capacity.csv"]
DEFAULTS = ["eval.grid.loads=[0.95]", "eval.grid.replicas=[4]", "eval.grid.overload_loads=[]",
            "eval.grid.mix_families=[chat]", "eval.seeds=2", "eval.num_requests=500", "eval.capacity.replicas=[]",
            "eval.capacity.mixes=false", "eval.planners=[lookahead_one_step,lookahead]"]


def search_jobs(cfg, scenarios, ev, budget: int, objective: str):
    """One `headroom_job` per scenario x seed, in the env of run config `cfg`, with the suite's heuristics."""
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.suite import heuristics_for

    names = [h for h in ev.routers() if isinstance(h, str)]
    jobs = []
    for sc in scenarios:
        spec = env_spec(cfg).for_suite_scenario(sc, ev.num_requests)
        heuristics = heuristics_for(bool(spec.cluster.replicas), names)
        jobs += [(spec, sc["name"], seed, heuristics, budget, objective) for seed in ev.seed_list()]
    return jobs


def base_config(run_dir: Path):
    """The run config scenarios are built on: the headline run's (as the router suite's heuristics), else
    conf/config.yaml's defaults (the heuristics need no policy)."""
    from hydra import compose, initialize_config_dir

    from vidur_ppo.config import register_configs, validate
    from vidur_ppo.eval.suite import cached_policy

    if (run_dir / "checkpoint.pt").exists():
        return cached_policy(str(run_dir))[1]
    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return validate(compose(config_name="config"))


def best_capacities(paths) -> pd.DataFrame:
    """Per (family, replicas) of the capacity CSVs (eval/slo_capacity.py; a mixed cluster's family is its
    label): the heuristic with the largest capacity at SLO over all the files, its capacity (rho) and
    censoring. The heterogeneous suite's mixes, mix_<mix> (chat
    requests, conf/eval/heterogeneous.yaml), are the grid's hetero_<mix>_chat."""
    from vidur_ppo.routing.heuristics import HEURISTICS

    frames = [pd.read_csv(p, dtype={"censored": str}).fillna({"censored": ""}) for p in paths if Path(p).exists()]
    check(bool(frames), "--load", "capacity needs a capacity CSV (run the generalisation or heterogeneous suite)",
          [str(p) for p in paths])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["scheduler"].isin(list(HEURISTICS))]
    rows = rows.assign(family=rows["family"].str.replace(r"^mix_(.*)$", r"hetero_\1_chat", regex=True))
    best = rows.loc[rows.groupby(["family", "replicas"], sort=False)["capacity"].idxmax()]
    return best.set_index(["family", "replicas"])[["scheduler", "capacity", "censored"]]


def at_capacity(scenarios, capacities: pd.DataFrame):
    """Each scenario at its cluster's best heuristic's capacity at SLO (`best_capacities`), renamed to it."""
    out = []
    for sc in scenarios:
        label = sc["name"].split("_rho")[0]
        mix = sc.get("replicas")
        key = (label, sum(int(g["count"]) for g in mix)) if mix else (sc.get("family"), sc.get("num_replicas"))
        check(key in capacities.index, "--load", f"capacity: no capacity at SLO of {key} in the capacity CSVs",
              sc["name"])
        cap = capacities.loc[key]
        out.append({**sc, "name": f"{label}_rho{cap['capacity']:.3g}", "load": float(cap["capacity"]),
                    "capacity_of": f"{cap['scheduler']}{cap['censored']}"})
    return out


def slo_headroom_table(search: pd.DataFrame, scenarios) -> pd.DataFrame:
    """Per scenario: the best heuristic by mean attainment over seeds, its attainment, the search's, and
    the headroom = search - best heuristic (attainment, mean over seeds; the search starts from each
    seed's best heuristic, so it is >= 0)."""
    from vidur_ppo.eval.matrix import best_heuristics

    heuristics = [c for c in search.columns if c not in ("scenario", "seed", "key", "best_heuristic", "search_start",
                                                          "search_best", "evaluations")]
    rows = search.melt(id_vars=["scenario", "seed"], value_vars=heuristics, var_name="scheduler",
                       value_name="slo_attainment").dropna()
    best = best_heuristics(rows, "slo_attainment")
    out = []
    for sc in scenarios:
        s = search[search["scenario"] == sc["name"]]
        bar = s[best[sc["name"]]]
        out.append({"scenario": sc["name"], "split": sc.get("split", ""), "rho": float(sc["load"]),
                    "capacity_of": sc.get("capacity_of", ""), "best": best[sc["name"]],
                    "best_attainment": float(bar.mean()), "search_attainment": float(s["search_best"].mean()),
                    "headroom": float((s["search_best"] - bar).mean()), "evaluations": float(s["evaluations"].mean()),
                    "per_seed": [{"seed": int(r.seed), "best_attainment": float(r[best[sc["name"]]]),
                                  "search_attainment": float(r.search_best)} for _, r in s.iterrows()]})
    return pd.DataFrame(out)


def slo_main(args, t0: float) -> None:
    """--objective slo: heuristics and the attainment search only; headroom_slo.md and .json."""
    import json

    from tqdm.auto import tqdm

    from vidur_ppo.eval.headroom import EXCESS_CAP, headroom_job
    from vidur_ppo.eval.suite import run_jobs

    ev = eval_config("generalisation", [*DEFAULTS, *load_overrides(args.load), *args.overrides])
    scenarios = ev.all_scenarios()
    if args.scenarios:
        known = [sc["name"] for sc in scenarios]
        check(set(args.scenarios) <= set(known), "--scenarios", f"must name the suite's scenarios ({', '.join(known)})",
              args.scenarios)
        scenarios = [sc for sc in scenarios if sc["name"] in args.scenarios]
    if args.load == "capacity":
        scenarios = at_capacity(scenarios, best_capacities(args.capacity_csv))
    jobs = search_jobs(base_config(args.headline), scenarios, ev, args.budget, "slo")
    bar = tqdm(total=len(jobs), desc="offline search (SLO)")
    search = pd.DataFrame(run_jobs(jobs, ev.workers, bar.update, fn=headroom_job))
    bar.close()
    table = slo_headroom_table(search, scenarios)
    wall = time.time() - t0
    cmd = " ".join(["python experiments/headroom.py --objective slo", f"--budget {args.budget}",
                    *([f"--load {args.load}"] if args.load else []),
                    *([f"--scenarios {','.join(args.scenarios)}"] if args.scenarios else []), *args.overrides])
    at = ("each scenario at its best heuristic's capacity at SLO (rho, from " + ", ".join(
        f"{Path(p).parent.name}/{Path(p).name}" for p in args.capacity_csv if Path(p).exists()) + "; `<`: censored below; the suites bisect it on "
        "1000-request episodes, where the best heuristic meets the SLO for 90% of requests: shorter episodes queue "
        "less)"
          if args.load == "capacity" else f"rho {ev.grid.loads[0]:g}")
    md = ["# SLO headroom: the best heuristic and an offline search for SLO attainment", "",
          f"`{cmd}`: {wall / 60:.1f} min on this 2-core machine. {ev.seeds} {ev.split} seeds from "
          f"{ev.seed_list()[0]}, {ev.num_requests} requests per episode, {at}; heuristics see predicted output "
          "lengths (lognormal sigma 0.5), the search alone knows the trace. SLOs: the env's (TTFT 0.25 s, TPOT "
          "0.1 s by default); attainment = share of requests meeting both.", "",
          "The search (eval/headroom.py `SloObjective`) starts from each seed's best heuristic and minimises "
          f"-attainment + mean(min(excess, {EXCESS_CAP:g})) over the violators / {EXCESS_CAP:g} / (n + 1), excess = "
          "relative overshoot of TTFT plus TPOT beyond their SLOs: attainment first, the tie-break below one "
          "request's worth; moves target the violators and the requests ahead of them on their replica.", "",
          "**Headroom** = search - best heuristic (attainment, percentage points, mean over seeds): a lower bound "
          "on what a router could gain. A router's **share** of it = (router - best heuristic) / (search - best "
          "heuristic); the last column is the attainment a router needs for a share of 0.5 / 1.", "",
          "| scenario | rho | best heuristic | its attainment | search | headroom | share 0.5 / 1 needs |",
          "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        md.append(f"| {r['scenario']} | {r['rho']:.3g}{' (' + r['capacity_of'] + ')' if r['capacity_of'] else ''} | "
                  f"{r['best']} | {100 * r['best_attainment']:.1f}% | {100 * r['search_attainment']:.1f}% | "
                  f"{100 * r['headroom']:+.1f} pp | {100 * (r['best_attainment'] + r['headroom'] / 2):.1f}% / "
                  f"{100 * r['search_attainment']:.1f}% |")
    md.append(f"| **mean** | | | {100 * table['best_attainment'].mean():.1f}% | "
              f"{100 * table['search_attainment'].mean():.1f}% | {100 * table['headroom'].mean():+.1f} pp | |")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "headroom_slo"
    out.with_suffix(".json").write_text(json.dumps(
        {"command": cmd, "wall_s": round(wall, 1), "seeds": ev.seed_list(), "num_requests": ev.num_requests,
         "budget": args.budget, "scenarios": table.to_dict("records")}, indent=1) + "\n")
    write_results(out.with_suffix(".md"), md[:1] + ["", ""], "\n".join(md[2:]), {}, wall)


def load_overrides(load):
    """--load RHO as the grid's one load (None or "capacity": the defaults' rho 0.95, renamed later)."""
    if load in (None, "capacity"):
        return []
    try:
        rho = float(load)
    except ValueError:
        rho = float("nan")
    check(0 < rho <= 1, "--load", "must be 'capacity' or a rho in (0, 1]", load)
    return [f"eval.grid.loads=[{rho:g}]"]


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
    from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, cached_policy, run_jobs, run_suite, suite_size

    ap = arg_parser(__doc__)
    ap.add_argument("--headline", type=Path, default=ROOT / "multirun" / "headline_issue14" / "seed0",
                    help="the issue-14 headline run dir (python -m vidur_ppo.train experiment=headline seed=0 "
                         "hydra.run.dir=DIR trains it)")
    ap.add_argument("--default", type=Path, default=ROOT / "multirun" / "generalisation" / "default")
    ap.add_argument("--budget", type=int, default=150, help="full simulations per trace for the offline search")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--reuse-routers", action="store_true", help="keep headroom/metrics.csv of an earlier run of "
                                                                  "the same settings and only run the search")
    ap.add_argument("--objective", default="e2e_p99", help="what the search optimises: e2e_p99 (with the routers) "
                                                            "or slo (attainment; heuristics only, headroom_slo.md)")
    ap.add_argument("--load", default=None, help="rho of every scenario (default 0.95), or 'capacity' (--objective "
                                                 "slo): each scenario's best heuristic's capacity at SLO")
    ap.add_argument("--capacity-csv", type=Path, nargs="+", default=CAPACITY_CSVS,
                    help="capacity CSVs read by --load capacity")
    ap.add_argument("--scenarios", type=lambda v: v.split(","), help="--objective slo: only these of the suite's "
                    "scenarios, comma-separated names at the suite's rho (e.g. chat_r4_rho0.95,burstgpt_r4_rho0.95)")
    ap.add_argument("overrides", nargs="*", help="eval overrides (after this script's defaults)")
    args = ap.parse_args()
    t0 = time.time()
    try:
        check(args.objective in ("e2e_p99", "slo"), "--objective", "must be e2e_p99 or slo", args.objective)
        check(args.load != "capacity" or args.objective == "slo", "--load", "capacity needs --objective slo",
              args.load)
        check(not args.scenarios or args.objective == "slo", "--scenarios", "needs --objective slo", args.scenarios)
        if args.objective == "slo":
            return slo_main(args, t0)
        load = load_overrides(args.load)
    except ConfigError as exc:
        reject(exc)
    ev = eval_config("generalisation", [*DEFAULTS, *load, *args.overrides])
    policies = {"ppo_headline": str(args.headline), "ppo_default": str(args.default)}
    out = args.out / "headroom"
    failed = {}
    if not (args.reuse_routers and (out / "metrics.csv").exists()):
        bar = tqdm(total=suite_size(policies, ev), desc="routers")
        _, failed = run_suite(policies, ev, out, progress=lambda: bar.update(1))
        bar.close()
    t_suite = time.time() - t0
    jobs = search_jobs(cached_policy(str(args.headline))[1], ev.all_scenarios(), ev, args.budget, "e2e_p99")
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
                    *([f"--load {args.load}"] if args.load else []), *(["--reuse-routers"] if args.reuse_routers else []), *args.overrides])
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
