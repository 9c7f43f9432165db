"""Prefix-cache-aware routing (issue 25): which router should run a cluster whose replicas cache prompt prefixes?

    python experiments/prefix_cache.py [--seeds 5] [--requests 1000] [--policy NAME=RUN_DIR ...] [eval overrides ...]

Runs `eval=prefix` (conf/eval/prefix.yaml): the prefix-sharing families system_prompt, rag and multi_turn
(conf/workload/; their defaults put the prefix cache under pressure: the prefixes in play exceed one replica's KV
cache) on 4 A100 replicas (Llama-2-7B) with vLLM's automatic prefix caching (env.prefix_caching,
sim/prefix_cache.py), at rho 0.8 and 0.95 of each family's saturation measured with the cache on; every heuristic on
the same traces with predicted output lengths: the deployed cache-aware routers (routing/heuristics.py CACHE_AWARE:
SGLang's cache_aware, llm-d's scorer, Dynamo's KV router, consistent hashing, Preble's E2) and the cache-blind load
balancers; capacity at SLO by bisection per family. Writes, under experiments/results/:

  prefix_cache.md / .json   per family and load, each router's cache hit rate, TTFT P50/P99, E2E P99, SLO attainment
                            and goodput; paired 95% CIs of the best cache-aware vs the best cache-blind heuristic;
                            capacity at SLO per router per family and the cache-aware heuristic an operator would
                            pick in advance (best mean capacity); where sessions' turns and templates' requests went;
                            the simulator's fidelity check (a hit's prefill time vs the predictor's estimate)
  prefix_cache.png          hit rate, TTFT P50/P99 and SLO attainment per router, family and load
  prefix_cache_capacity.png capacity at SLO per router and family
  prefix_cache_affinity.png sessions x turns (multi_turn) and templates x requests (system_prompt), colour = replica,
                            for jsq, cache_aware and consistent_hash (and any --policy) on the first test seed
  prefix_cache/             the suite's own report.md, metrics.csv, capacity.csv and suite.json

Finished suite results are cached: prefix_cache/suite.json records the configuration (eval config, policies, family
specs) they came from, and a re-run with the same configuration only re-renders (--rerun runs the suite again).
--policy NAME=RUN_DIR (repeatable) adds a trained router to the suite; a policy trained on one of these families
must list it: eval.grid.train_families=[...]. Extra arguments are Hydra overrides of the eval config, e.g.
eval.capacity.num_requests=200 eval.capacity.tol=0.2 eval.workers=2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd

from common import arg_parser, eval_config

ROOT = Path(__file__).resolve().parents[1]
NAME = "prefix_cache"
METRICS = [("cache_hit_rate", "hit rate"), ("ttft_p50", "TTFT P50"), ("ttft_p99", "TTFT P99"), ("e2e_p99", "E2E P99"),
           ("slo_attainment", "SLO att."), ("goodput_rps", "goodput req/s")]
PAIRED = [("ttft_p50", "TTFT P50"), ("ttft_p99", "TTFT P99"), ("e2e_p99", "E2E P99"), ("slo_attainment", "SLO att."),
          ("goodput_rps", "goodput")]
PICTURE_ROUTERS = ["jsq", "cache_aware", "consistent_hash"]
PICTURE_ROWS = 40  # sessions / templates drawn


# --- running (or reusing) the suite -------------------------------------------------------------------------------


def fingerprint(ev, policies: Dict[str, str]) -> Dict[str, Any]:
    """What the suite's results depend on: the eval config, the policies and the families' specs."""
    import dataclasses

    from vidur_ppo.workloads.families import family_spec

    def plain(x):
        if dataclasses.is_dataclass(x):
            return {k: plain(v) for k, v in dataclasses.asdict(x).items()}
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x if isinstance(x, (int, float, str, bool, type(None))) else str(x)

    cfg = {k: v for k, v in plain(ev).items() if k != "workers"}  # workers change no result
    return {"eval": cfg, "policies": dict(policies), "families": {f: plain(family_spec(f)) for f in ev.grid.families}}


def run_or_reuse(policies: Dict[str, str], ev, out_dir: Path, rerun: bool) -> tuple:
    """The suite's metrics and capacity rows (run here unless out_dir holds them for this very configuration);
    (rows, capacity or None, failed scenarios, suite wall seconds, reused?)."""
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import run_suite, suite_size

    stamp = out_dir / "suite.json"
    want = fingerprint(ev, policies)
    have = json.loads(stamp.read_text()) if stamp.exists() else {}
    reused = (not rerun and have.get("config") == json.loads(json.dumps(want)) and (out_dir / "metrics.csv").exists()
              and (not ev.capacity.replicas or (out_dir / "capacity.csv").exists()))
    failed: Dict[str, List[str]] = have.get("failed", {}) if reused else {}
    if not reused:
        if stamp.exists():
            stamp.unlink()  # a half-rewritten dir is never taken for a finished one
        t0 = time.time()
        bar = tqdm(total=suite_size(policies, ev), desc=NAME)
        _, failed = run_suite(policies, ev, out_dir, progress=lambda: bar.update(1))
        bar.close()
        have = {"config": want, "wall_s": round(time.time() - t0, 1), "failed": failed}
        stamp.write_text(json.dumps(have, indent=1))
    rows = pd.read_csv(out_dir / "metrics.csv")
    cap = pd.read_csv(out_dir / "capacity.csv").fillna({"censored": ""}) if (out_dir / "capacity.csv").exists() else None
    return rows, cap, failed, float(have.get("wall_s", float("nan"))), reused


# --- tables ------------------------------------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def md_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])


def router_kind(name: str) -> str:
    from vidur_ppo.routing.heuristics import CACHE_AWARE, HEURISTICS

    return "cache-aware" if name in CACHE_AWARE else "cache-blind" if name in HEURISTICS else "learned"


def routers_in(rows: pd.DataFrame) -> List[str]:
    """Learned routers first, then the heuristics in HEURISTICS order."""
    from vidur_ppo.routing.heuristics import HEURISTICS

    names = list(dict.fromkeys(rows["scheduler"]))
    return [n for n in names if n not in HEURISTICS] + [h for h in HEURISTICS if h in names]


def mean_ci(x) -> tuple:
    from vidur_ppo.eval.stats import mean_ci as ci

    return ci(np.asarray(x, dtype=float))


def best_of(sub: pd.DataFrame, names: Sequence[str]) -> str | None:
    """Of `names`, the router with the highest mean SLO attainment (to 0.001), then the lowest mean TTFT P99."""
    means = sub[sub["scheduler"].isin(list(names))].groupby("scheduler")[["slo_attainment", "ttft_p99"]].mean()
    if means.empty:
        return None
    means["att"] = means["slo_attainment"].round(3)
    return str(means.sort_values(["att", "ttft_p99"], ascending=[False, True]).index[0])


def scenario_tables(rows: pd.DataFrame, ev) -> tuple:
    """Per scenario: the markdown table of every router, and the paired comparison of the best cache-aware vs
    the best cache-blind heuristic; (markdown, json)."""
    from vidur_ppo.eval.matrix import paired_vs
    from vidur_ppo.routing.heuristics import CACHE_AWARE, HEURISTICS

    md, out = [], {}
    for fam in ev.grid.families:
        for load in ev.grid.loads:
            sub = rows[(rows["family"] == fam) & np.isclose(rows["load"], load)]
            if sub.empty:
                continue
            sc = str(sub["scenario"].iloc[0])
            names = routers_in(sub)
            body, js = [], {}
            for n in names:
                mine = sub[sub["scheduler"] == n]
                cells, js[n] = [], {}
                for key, _ in METRICS:
                    m, h = mean_ci(mine[key]) if key in mine else (float("nan"), float("nan"))
                    js[n][key] = [m, h]
                    cells.append(f"{m:.3g} ± {h:.2g}" if np.isfinite(m) else "—")
                body.append([n, router_kind(n), *cells])
            aware = best_of(sub, [n for n in names if n in CACHE_AWARE])
            blind = best_of(sub, [n for n in names if n in HEURISTICS and n not in CACHE_AWARE])
            slos = f"TTFT ≤ {sub['slo_ttft'].iloc[0]:g} s, TPOT ≤ {sub['slo_tpot'].iloc[0]:g} s" if "slo_ttft" in sub else ""
            md += [f"### {fam}, rho {load:g} ({sub['qps'].iloc[0]:.1f} req/s on {int(sub['replicas'].iloc[0])} replicas; "
                   f"{plural(sub['seed'].nunique(), 'seed')}; SLOs {slos})", "",
                   md_table(["router", "kind", *[label for _, label in METRICS]], body), ""]
            paired = {}
            if aware and blind:
                cells = []
                for key, label in PAIRED:
                    vs = paired_vs(sub, aware, blind, key)
                    if vs.empty:
                        continue
                    r = vs.iloc[0]
                    paired[key] = {"diff": float(r["diff"]), "half": float(r["half"]), "n": int(r["n"]),
                                   "outcome": str(r["outcome"])}
                    cells.append(f"{label} {100 * r['diff']:+.1f}% ± {100 * r['half']:.1f} ({r['outcome']})")
                hit = [js[aware]["cache_hit_rate"][0], js[blind]["cache_hit_rate"][0]]
                md += [f"Best cache-aware **{aware}** vs best cache-blind **{blind}** (best: highest mean SLO attainment, "
                       f"then lowest TTFT P99; hit rate {hit[0]:.2f} vs {hit[1]:.2f}), paired relative difference, 95% CI "
                       f"over {plural(paired.get('ttft_p99', {}).get('n', 0), 'seed')} (win/tie/loss for {aware}): "
                       + "; ".join(cells) + ".", ""]
            out[sc] = {"family": fam, "load": float(load), "qps": float(sub["qps"].iloc[0]), "routers": js,
                       "best_cache_aware": aware, "best_cache_blind": blind, "paired_aware_vs_blind": paired}
    return "\n".join(md), out


def capacity_section(cap: pd.DataFrame | None, families: Sequence[str]) -> tuple:
    """Capacity at SLO per router per family, each router's mean, and the a-priori picks; (markdown, json)."""
    from vidur_ppo.routing.heuristics import CACHE_AWARE, HEURISTICS

    if cap is None or cap.empty:
        return "", {}
    names = routers_in(cap)
    table = cap.pivot_table(index="scheduler", columns="family", values="capacity", aggfunc="first")
    marks = cap.pivot_table(index="scheduler", columns="family", values="censored", aggfunc="first").fillna("")
    fams = [f for f in families if f in table.columns]
    means = table[fams].mean(axis=1)
    body = []
    for n in names:
        cells = []
        for f in fams:
            v = table.loc[n, f]
            best = table[f].max()
            cells.append(f"{marks.loc[n, f]}{v:.2f}" + (" **best**" if np.isclose(v, best) else ""))
        body.append([n, router_kind(n), *cells, f"{means[n]:.2f}"])
    aware = [n for n in names if n in CACHE_AWARE]
    blind = [n for n in names if n in HEURISTICS and n not in CACHE_AWARE]
    pick = {k: (str(means[v].idxmax()) if v else None) for k, v in (("cache_aware", aware), ("cache_blind", blind))}
    md = ["## Capacity at SLO", "",
          "Largest rho (of each family's saturation with the cache on, jsq-routed burst: routing/capacity.py) at which "
          ">= 90% of requests meet the family's TTFT and TPOT SLOs, by bisection (`<`: even the lowest rho tried "
          "misses; `>=`: even the highest meets it).", "",
          md_table(["router", "kind", *fams, "mean"], body), ""]
    regret = {}
    if pick["cache_aware"]:
        p = pick["cache_aware"]
        for f in fams:
            regret[f] = {"best": str(table[f].idxmax()), "best_capacity": float(table[f].max()),
                         "pick_capacity": float(table.loc[p, f]),
                         "pick_rank_cache_aware": int((table.loc[aware, f] > table.loc[p, f]).sum()) + 1}
        worst = min(regret.values(), key=lambda r: r["pick_capacity"] / r["best_capacity"])
        md += [f"**The cache-aware heuristic an operator would pick in advance** (best mean capacity over the families): "
               f"**{p}** (mean {means[p]:.2f}; best cache-blind in advance: {pick['cache_blind']}, mean "
               f"{means.get(pick['cache_blind'], float('nan')):.2f}). Per family, its capacity vs the best router's in hindsight: "
               + "; ".join(f"{f}: {r['pick_capacity']:.2f} vs {r['best_capacity']:.2f} ({r['best']}), rank "
                           f"{r['pick_rank_cache_aware']} of {len(aware)} cache-aware" for f, r in regret.items())
               + f". Its worst family leaves {100 * (1 - worst['pick_capacity'] / worst['best_capacity']):.0f}% of "
               "the hindsight-best capacity on the table.", ""]
    js = {"capacity": {n: {f: [float(table.loc[n, f]), str(marks.loc[n, f])] for f in fams} for n in names},
          "mean": {n: float(means[n]) for n in names}, "pick_in_advance": pick, "pick_vs_hindsight": regret}
    return "\n".join(md), js


# --- the workload under the cache, per family ------------------------------------------------------------------


def pressure_table(ev, seed: int) -> tuple:
    """Per family, on the first test seed: distinct prompt-prefix tokens in the episode, those reused (blocks that
    appear in two or more prompts), the share of prompt tokens an earlier prompt already holds (the hit rate of
    one infinite cache), against one replica's KV cache; (markdown, json)."""
    from vidur_ppo.eval.suite import base_spec, scenario_spec
    from vidur_ppo.workloads import make_workload

    kv, body, js = None, [], {}
    for fam in ev.grid.families:
        sc = next(s for s in ev.all_scenarios() if s.get("family") == fam)
        spec = scenario_spec(base_spec({}), sc, ev.num_requests)
        kv = kv or int(spec.cluster.kv_capacity_tokens())
        trace = make_workload(spec.workload).generate(seed)
        g = trace.prefix_block_tokens
        counts: Dict[int, int] = {}
        repeat = 0
        for h in trace.prefix_hashes:
            for x in np.asarray(h).tolist():
                repeat += g if x in counts else 0
                counts[x] = counts.get(x, 0) + 1
        distinct, reused = g * len(counts), g * sum(1 for c in counts.values() if c > 1)
        share = repeat / float(np.sum(trace.num_prefill_tokens))
        keys = len({int(h[0]) for h in trace.prefix_hashes if len(h)})
        js[fam] = {"distinct_prefix_tokens": distinct, "reused_prefix_tokens": reused, "repeat_share": share,
                   "prompt_mean": float(np.mean(trace.num_prefill_tokens)), "kv_tokens_per_replica": kv,
                   "first_block_keys": keys}
        body.append([fam, f"{np.mean(trace.num_prefill_tokens):.0f}", f"{distinct / 1e3:.0f}k ({distinct / kv:.1f}x)",
                     f"{reused / 1e3:.0f}k ({reused / kv:.1f}x)", f"{share:.2f}", keys])
    md = ["## The cache under pressure", "",
          f"Per family, one episode ({ev.num_requests} requests, test seed {seed}); x = multiples of one replica's KV "
          f"cache ({kv:,} tokens: vidur's blocks for Llama-2-7B on an A100, shared by running requests and cached "
          "prefixes). Repeat share: the share of prompt tokens an earlier prompt of the episode already holds, the hit "
          "rate of one unbounded cache serving everything (an upper bound for every router). First-block keys: the "
          "distinct leading blocks, the keys consistent_hash spreads over the ring (one key sends every request to one "
          "replica).", "",
          md_table(["family", "mean prompt", "distinct prefix tokens", "reused prefix tokens", "repeat share",
                    "first-block keys"], body), ""]
    return "\n".join(md), js


# --- where requests went -------------------------------------------------------------------------------------------


def routed(ev, policies: Dict[str, str], family: str, seed: int, routers: Sequence[str]) -> tuple:
    """(labels of the episode's requests, its trace, the scenario, {router: (replica per request, cache hit rate)})
    for `family` at the grid's first load on `seed`."""
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.suite import base_spec, cached_policy, scenario_spec
    from vidur_ppo.routing.env import run_episode
    from vidur_ppo.routing.heuristics import make_heuristic
    from vidur_ppo.workloads import make_workload

    sc = next(s for s in ev.all_scenarios() if s.get("family") == family)
    spec = scenario_spec(base_spec({}), sc, ev.num_requests)
    req = make_workload(spec.workload).requests(seed)
    out = {}
    for name in [*routers, *policies]:
        if name in policies:
            policy, cfg = cached_policy(policies[name])
            env = scenario_spec(env_spec(cfg), sc, ev.num_requests).make()
        else:
            policy, env = make_heuristic(name), spec.make()
        m = run_episode(env, policy, seed=seed, trace=req.trace)
        out[name] = (env.driver.assignment.copy(), float(m.get("cache_hit_rate", float("nan"))))
    return req.labels, req.trace, sc, out


def stickiness(groups: np.ndarray, assignment: np.ndarray) -> float:
    """The share of requests (after their group's first in the episode) routed to a replica that already served an
    earlier request of their group: where a prefix cache can hold their shared prefix."""
    seen: Dict[int, set] = {}
    hits = total = 0
    for g, r in zip(groups.tolist(), assignment.tolist()):
        if g in seen:
            total += 1
            hits += r in seen[g]
            seen[g].add(r)
        else:
            seen[g] = {r}
    return hits / total if total else float("nan")


def raster(groups: np.ndarray, assignment: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """[len(order), max requests] replica of the k-th request of each group in `order` (NaN: none)."""
    per = {g: assignment[groups == g] for g in order}
    width = max(len(v) for v in per.values())
    grid = np.full((len(order), width), np.nan)
    for i, g in enumerate(order):
        grid[i, : len(per[g])] = per[g]
    return grid


def affinity_picture(ev, policies: Dict[str, str], seed: int, path: Path) -> tuple:
    """Sessions x turns (multi_turn) and templates x requests (system_prompt), colour = replica, per router; and
    each router's stickiness; (markdown, json, figure path)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    from vidur_ppo.eval.plotting import pyplot

    panels = [("multi_turn", "session", "turn of the session in the episode", "sessions (most turns)"),
              ("system_prompt", "template", "request of the template in the episode", "templates (most requests)")]
    panels = [p for p in panels if p[0] in ev.grid.families]
    if not panels:
        return "", {}, None
    routers = PICTURE_ROUTERS
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), len(routers) + len(policies), squeeze=False,
                             figsize=(4.2 * (len(routers) + len(policies)), 4.2 * len(panels)))
    js, body = {}, []
    for row, (fam, key, xlabel, ylabel) in enumerate(panels):
        labels, trace, sc, out = routed(ev, policies, fam, seed, routers)
        groups = np.asarray(labels[key])
        ids, counts = np.unique(groups, return_counts=True)
        first = {g: i for i, g in reversed(list(enumerate(groups.tolist())))}
        many = ids[counts > 1] if (counts > 1).any() else ids  # a short episode may hold no session's second turn
        keep = sorted(many.tolist(), key=lambda g: (-counts[ids == g][0], first[g]))[:PICTURE_ROWS]
        keep = sorted(keep, key=lambda g: first[g])
        n_rep = int(sc.get("num_replicas") or max(int(a.max()) + 1 for a, _ in out.values()))
        cmap = ListedColormap(plt.get_cmap("tab10").colors[:n_rep])
        js[fam] = {}
        for col, (name, (a, hit)) in enumerate(out.items()):
            stick = stickiness(groups, a)
            js[fam][name] = {"stickiness": stick, "cache_hit_rate": hit,
                             "replicas_per_group": float(np.mean([len(set(a[groups == g].tolist())) for g in keep]))}
            ax = axes[row][col]
            ax.imshow(np.ma.masked_invalid(raster(groups, a, keep)), cmap=cmap, vmin=-0.5, vmax=n_rep - 0.5,
                      aspect="auto", interpolation="nearest")
            pct = f"{100 * stick:.0f}%" if np.isfinite(stick) else "—"
            ax.set_title(f"{fam}: {name}\nsame replica as before {pct}, hit rate {hit:.2f}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel if col == 0 else "", fontsize=8)
            ax.set_yticks([])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            body.append([fam, name, pct, f"{js[fam][name]['replicas_per_group']:.2f}", f"{hit:.3f}"])
        js[fam]["scenario"] = sc["name"]
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(n_rep)]
    fig.legend(handles, [f"replica {i}" for i in range(n_rep)], loc="lower center", ncol=n_rep, fontsize=8)
    fig.suptitle(f"Where each session's turns and each template's requests went (rho {ev.grid.loads[0]:g}, test seed "
                 f"{seed}; colour = replica, white = no request)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    md = ["## Where each session's turns went", "",
          f"![where requests went]({path.name})", "",
          f"On one episode per family (rho {ev.grid.loads[0]:g}, test seed {seed}): rows are the {PICTURE_ROWS} "
          "sessions (multi_turn) or templates (system_prompt) with the most requests, by first arrival; colour is the "
          "replica each request went to. *Same replica as before*: the share of requests (after their session's or "
          "template's first) sent to a replica that already served their session or template in the episode, the "
          "only place their shared prefix can be cached; *replicas per group*: how many replicas each drawn session "
          "or template was spread over.", "",
          md_table(["family", "router", "same replica as before", "replicas per group", "hit rate"], body), ""]
    return "\n".join(md), js, path


# --- the simulator's fidelity ------------------------------------------------------------------------------------


def fidelity() -> tuple:
    """A hit's simulated prefill time vs the execution-time predictor's estimate for the uncached remainder (new
    tokens attending over the whole prompt), and vs the same request without a cache; one A100, nothing else
    running. The construction of tests/test_prefix_cache.py's check, reused from it, over more sizes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_prefix_cache import G, chain, drive, prefill_seconds
    from vidur.entities import Batch, Request

    from vidur_ppo.sim.cluster import ClusterSpec
    from vidur_ppo.sim.trace import Trace

    body, js = [], []
    for prompt in (1024, 2048, 3072):
        for share in (0.25, 0.5, 0.9):
            blocks, shared = prompt // G, int(share * prompt) // G
            second = np.concatenate([chain(1000, blocks)[:shared], chain(50_000, blocks - shared)])
            trace = Trace([0.0, 10.0], [prompt, prompt], [10, 10], prefix_hashes=(chain(1000, blocks), second),
                          prefix_block_tokens=G)
            on = drive(ClusterSpec(num_replicas=1, prefix_caching=True), trace)
            off = drive(ClusterSpec(num_replicas=1), trace)
            hit = int(on.per_request()["prefix_hit_tokens"][1])
            predictor = on._replica_schedulers[0]._execution_time_predictor
            estimate = predictor.get_execution_time(Batch(0, [Request(0.0, prompt, 10)], [prompt - hit], [prompt]),
                                                    0).total_time
            sim, full = prefill_seconds(on.requests[1]), prefill_seconds(off.requests[1])
            js.append({"prompt": prompt, "hit_tokens": hit, "simulated_s": sim, "estimate_s": estimate,
                       "uncached_s": full})
            body.append([prompt, hit, f"{1e3 * sim:.1f}", f"{1e3 * estimate:.1f}", f"{sim / estimate:.3f}",
                         f"{1e3 * full:.1f}", f"{full / sim:.2f}x"])
    md = ["## Fidelity: a hit's prefill time", "",
          "One A100 replica, a request whose leading blocks an earlier request cached (that request long finished): "
          "its simulated prefill (scheduling to prefill done) vs the execution-time predictor's estimate for a batch of "
          "its uncached remainder attending over the whole prompt, and vs the same request on a replica without a "
          "cache (the check of tests/test_prefix_cache.py, reused, over more sizes).", "",
          md_table(["prompt tokens", "hit tokens", "simulated prefill ms", "predictor estimate ms", "simulated / estimate",
                    "uncached prefill ms", "speed-up"], body), ""]
    return "\n".join(md), js


# --- figures -------------------------------------------------------------------------------------------------------


def metrics_figure(rows: pd.DataFrame, ev, path: Path) -> Path:
    """Rows = families, columns = hit rate, TTFT P50, TTFT P99, SLO attainment; one bar per router and load."""
    from vidur_ppo.eval.plotting import pyplot

    plt = pyplot()
    panels = [("cache_hit_rate", "cache hit rate"), ("ttft_p50", "TTFT P50 (s)"), ("ttft_p99", "TTFT P99 (s)"),
              ("slo_attainment", "SLO attainment")]
    fams = [f for f in ev.grid.families if (rows["family"] == f).any()]
    names = routers_in(rows)
    colours = {"cache-aware": "tab:orange", "cache-blind": "tab:blue", "learned": "tab:green"}
    loads = list(ev.grid.loads)
    width = 0.8 / max(1, len(loads))
    fig, axes = plt.subplots(len(fams), len(panels), figsize=(4.6 * len(panels), 3.0 * len(fams)), squeeze=False)
    for i, fam in enumerate(fams):
        for j, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for k, load in enumerate(loads):
                sub = rows[(rows["family"] == fam) & np.isclose(rows["load"], load)]
                stats = [mean_ci(sub[sub["scheduler"] == n][key]) for n in names]
                x = np.arange(len(names)) + (k - (len(loads) - 1) / 2) * width
                ax.bar(x, [m for m, _ in stats], width, yerr=[h for _, h in stats],
                       color=[colours[router_kind(n)] for n in names], alpha=0.45 + 0.55 * k / max(1, len(loads) - 1),
                       error_kw={"lw": 0.6})
            if key.startswith("ttft"):
                ax.set_yscale("log")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names if i == len(fams) - 1 else [], rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{fam}: {label}", fontsize=9)
    kinds = [k for k in colours if any(router_kind(n) == k for n in names)]
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in kinds], kinds, loc="upper right", fontsize=8)
    fig.suptitle("Per family, each router at rho " + " (light) and ".join(f"{x:g}" for x in loads)
                 + " (dark); mean and 95% CI over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def capacity_figure(cap: pd.DataFrame, ev, path: Path) -> Path:
    from vidur_ppo.eval.plotting import pyplot

    plt = pyplot()
    fams = [f for f in ev.grid.families if (cap["family"] == f).any()]
    names = routers_in(cap)
    width = 0.8 / len(fams)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 3.6))
    for k, fam in enumerate(fams):
        sub = cap[cap["family"] == fam].set_index("scheduler")["capacity"]
        ax.bar(np.arange(len(names)) + (k - (len(fams) - 1) / 2) * width, [sub.get(n, np.nan) for n in names], width,
               label=fam)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{n}{'*' if router_kind(n) == 'cache-aware' else ''}" for n in names], rotation=45,
                       ha="right", fontsize=8)
    ax.set_ylabel("capacity at SLO (rho)")
    ax.set_title("Capacity at SLO per router and family (* cache-aware)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- main ----------------------------------------------------------------------------------------------------------


def parse_policies(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        name, sep, run_dir = item.partition("=")
        if not sep or not name or not run_dir:
            raise SystemExit(f"--policy must be NAME=RUN_DIR, got {item!r}")
        out[name] = str(Path(run_dir).resolve())
    return out


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=None, help="test seeds per scenario (default: the suite's, 5)")
    ap.add_argument("--requests", type=int, default=None, help="requests per episode (default: the suite's, 1000)")
    ap.add_argument("--capacity-requests", type=int, default=None,
                    help="requests per capacity-bisection episode (default: the suite's, 1000)")
    ap.add_argument("--policy", action="append", default=[], metavar="NAME=RUN_DIR",
                    help="a trained router to add to the suite (repeatable)")
    ap.add_argument("--rerun", action="store_true", help="run the suite even if its results for this config exist")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("overrides", nargs="*", help="eval overrides, e.g. eval.capacity.tol=0.1")
    args = ap.parse_args()
    t0 = time.time()
    over = list(args.overrides)
    over += [f"eval.seeds={args.seeds}"] if args.seeds else []
    over += [f"eval.num_requests={args.requests}"] if args.requests else []
    over += [f"eval.capacity.num_requests={args.capacity_requests}"] if args.capacity_requests else []
    ev = eval_config("prefix", over)
    policies = parse_policies(args.policy)
    out_dir = args.out / NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, cap, failed, suite_wall, reused = run_or_reuse(policies, ev, out_dir, args.rerun)
    seed = ev.seed_list()[0]

    t1 = time.time()
    pressure_md, pressure_js = pressure_table(ev, seed)
    scen_md, scen_js = scenario_tables(rows, ev)
    cap_md, cap_js = capacity_section(cap, ev.grid.families)
    aff_md, aff_js, _ = affinity_picture(ev, policies, seed, args.out / f"{NAME}_affinity.png")
    fid_md, fid_js = fidelity()
    fig = metrics_figure(rows, ev, args.out / f"{NAME}.png")
    cap_fig = capacity_figure(cap, ev, args.out / f"{NAME}_capacity.png") if cap is not None and not cap.empty else None
    render_wall = time.time() - t1

    cmd = " ".join(["python experiments/prefix_cache.py", *(f"--policy {p}" for p in args.policy),
                    *([f"--seeds {args.seeds}"] if args.seeds else []),
                    *([f"--requests {args.requests}"] if args.requests else []),
                    *([f"--capacity-requests {args.capacity_requests}"] if args.capacity_requests else []),
                    *args.overrides])
    cap_cfg = ev.capacity
    small = ev.seeds < 5 or ev.num_requests < 1000 or cap_cfg.num_requests < 1000
    md = ["# Prefix-cache-aware routing", ""]
    if small:
        md += [f"**Reduced scale** ({plural(ev.seeds, 'seed')}, {ev.num_requests} requests per episode, capacity bisections on "
               f"{cap_cfg.num_requests}-request episodes): a check that the experiment runs, not the reported numbers "
               "(`python experiments/prefix_cache.py` runs the full scale).", ""]
    md += [f"`{cmd}`: suite {suite_wall / 60:.1f} min on this 2-core machine ({'reused from an earlier run' if reused else 'run now'}; "
           f"saturation measurements, {plural(ev.seeds, 'seed')} x {len(ev.all_scenarios())} scenarios, capacity bisections), "
           f"rendering {render_wall / 60:.1f} min. Every router serves the same traces: {ev.num_requests} requests per "
           f"episode, test seeds from {seed}, output lengths told by `{ev.length_predictor}`; 4 A100 replicas of "
           "Llama-2-7B, vLLM's scheduler with automatic prefix caching (sim/prefix_cache.py: block-granular, LRU over "
           "unreferenced blocks, a prefix is a hit once its prefill is done). Families: conf/workload/{system_prompt,"
           "rag,multi_turn}.yaml (each file says why its parameters put the cache under pressure). Cache-aware routers "
           "(routing/heuristics.py): cache_aware (SGLang's router), llmd_scorer (llm-d), dynamo_kv (NVIDIA Dynamo), "
           "consistent_hash (ring hash on the prompt's first block), preble_e2 (Preble); the rest are cache-blind "
           f"(weighted_round_robin, least_work_left_time and power_of_two_ect are their blind twins on identical replicas "
           f"and not run). Capacity: {plural(cap_cfg.seeds, 'seed')}, rho in [{cap_cfg.low:g}, {cap_cfg.high:g}], tolerance "
           f"{cap_cfg.tol:g}. Full suite report: [{NAME}/report.md]({NAME}/report.md).", ""]
    if policies:
        md += ["Learned routers: " + ", ".join(f"`{k}` = {v}" for k, v in policies.items()), ""]
    if failed:
        md += ["Failed scenarios: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    md += [pressure_md, "## Per family and load", "", f"![per router]({fig.name})", "", scen_md, cap_md]
    if cap_fig:
        md += [f"![capacity]({cap_fig.name})", ""]
    md += [aff_md, fid_md]
    (args.out / f"{NAME}.md").write_text("\n".join(md) + "\n")
    result = {"command": cmd, "suite_wall_s": suite_wall, "reused": reused, "render_wall_s": render_wall,
              "seeds": ev.seed_list(), "num_requests": ev.num_requests, "failed": failed, "pressure": pressure_js,
              "scenarios": scen_js, "capacity": cap_js, "affinity": aff_js, "fidelity": fid_js,
              "policies": policies}
    (args.out / f"{NAME}.json").write_text(json.dumps(result, indent=1, default=float))
    print("\n".join(md))
    print(f"\nwritten: {args.out / (NAME + '.md')} ({(time.time() - t0) / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main()
