"""Reporting for the leave-family-out generalisation suite: does a learned router, evaluated on
workload families it never trained on, stay at least as good as the best heuristic (paired by
seed, 95% CI), and how much load can it carry at the SLO compared with round-robin? Pure
functions over the suite's per-seed rows and per-(family, size) capacity table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from vidur_ppo.eval.plotting import pyplot
from vidur_ppo.eval.stats import paired_diff_ci
from vidur_ppo.routing.heuristics import HEURISTICS

HIGHER_IS_BETTER = frozenset({"slo_attainment", "goodput_rps"})
METRIC_LABELS = {"e2e_p99": "E2E P99", "ttft_p99": "TTFT P99", "ttft_p90": "TTFT P90",
                 "slo_attainment": "SLO attainment", "goodput_rps": "goodput"}
SPLIT_LABELS = {"held_out": "held-out", "train": "training-family", "mixed_held_out": "held-out mixed-cluster",
                "mixed_train": "training mixed-cluster"}


def _scheduler_order(names: Sequence[str]) -> List[str]:
    """Learned routers first (in order of appearance), then heuristics in HEURISTICS order."""
    names = list(dict.fromkeys(names))
    return [n for n in names if n not in HEURISTICS] + [h for h in HEURISTICS if h in names]


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table (tabulate is not a dependency)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])


def best_heuristics(rows: pd.DataFrame, key: str = "e2e_p99") -> pd.Series:
    """Per scenario (in order of appearance), the heuristic with the best mean `key` over seeds."""
    h = rows[rows["scheduler"].isin(list(HEURISTICS))]
    means = h.pivot_table(index="scenario", columns="scheduler", values=key, aggfunc="mean").dropna(how="all")
    best = means.idxmax(axis=1) if key in HIGHER_IS_BETTER else means.idxmin(axis=1)
    return best.reindex([s for s in pd.unique(h["scenario"]) if s in best.index]).rename("best")


def _outcome(diff: float, half: float, key: str) -> str:
    """"win" when the whole CI is on the better side of 0, "loss" when on the worse, else "tie"."""
    gain = diff if key in HIGHER_IS_BETTER else -diff
    if gain - half > 0:
        return "win"
    if gain + half < 0:
        return "loss"
    return "tie"


def paired_vs(rows: pd.DataFrame, router: str, reference: str, key: str = "e2e_p99") -> pd.DataFrame:
    """Per scenario where both ran: mean relative paired difference (router - ref) / ref over the
    seeds both ran, its 95% CI half-width, the seed count and the outcome. `reference` "best" is
    the scenario's best heuristic."""
    best = best_heuristics(rows, key) if reference == "best" else None
    out = []
    for sc, g in rows.groupby("scenario", sort=False):
        ref = reference if best is None else best.get(sc)
        by_seed = g.pivot(index="seed", columns="scheduler", values=key).sort_index()
        if router not in by_seed or ref not in by_seed:
            continue
        pair = by_seed[[router, ref]].dropna() if router != ref else by_seed[[router]].dropna()
        diff, half = (0.0, 0.0) if router == ref else paired_diff_ci(pair[router], pair[ref])
        out.append({"scenario": sc, "reference": ref, "diff": diff, "half": half, "n": len(pair),
                    "outcome": _outcome(diff, half, key)})
    cols = ["scenario", "reference", "diff", "half", "n", "outcome"]
    return pd.DataFrame(out, columns=cols).set_index("scenario")


def win_tie_loss(rows: pd.DataFrame, routers: Sequence[str], key: str = "e2e_p99",
                 split: str = "held_out") -> pd.DataFrame:
    """"W/T/L" counts over the `split` scenarios of each router (rows) against each heuristic
    present and the per-scenario best heuristic (columns); "—" against itself."""
    sub = rows[rows["split"] == split]
    refs = [h for h in HEURISTICS if h in set(sub["scheduler"])] + ["best"]
    table = {}
    for r in routers:
        cells = {}
        for ref in refs:
            if ref == r:
                cells[ref] = "—"
                continue
            n = paired_vs(sub, r, ref, key)["outcome"].value_counts()
            cells[ref] = f"{n.get('win', 0)}/{n.get('tie', 0)}/{n.get('loss', 0)}"
        table[r] = cells
    return pd.DataFrame.from_dict(table, orient="index", columns=refs)


def relative_to_best(rows: pd.DataFrame, key: str = "e2e_p99") -> pd.DataFrame:
    """Scenario x scheduler table of 100 x mean paired relative difference vs the scenario's best
    heuristic (scenarios in order of appearance, learned routers first)."""
    cols = {s: 100 * paired_vs(rows, s, "best", key)["diff"] for s in _scheduler_order(rows["scheduler"])}
    return pd.DataFrame(cols).reindex(pd.unique(rows["scenario"]))


def heatmap(rel: pd.DataFrame, path: Path, title: str = "") -> Path:
    """PNG heat map of `relative_to_best`: diverging colours centred at 0, clipped at +-50%,
    cells annotated when there are at most 40 scenarios."""
    plt = pyplot()
    n_rows, n_cols = rel.shape
    fig, ax = plt.subplots(figsize=(3.5 + 0.9 * n_cols, 1.5 + 0.32 * n_rows))
    values = np.ma.masked_invalid(rel.to_numpy(dtype=float))
    im = ax.imshow(values, cmap="RdBu_r", vmin=-50, vmax=50, aspect="auto")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(rel.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(rel.index, fontsize=7)
    if n_rows <= 40:
        for (i, j), v in np.ndenumerate(rel.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.0f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 30 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="% vs best heuristic (paired)")
    ax.set_title(title or "relative to the best heuristic per scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def capacity_gain(capacity: pd.DataFrame, reference: str = "round_robin") -> pd.DataFrame:
    """Each scheduler's capacity per (family, replicas) with its gain over the reference's
    (capacity / ref - 1, NaN where either is missing) and both censoring marks."""
    ref = (capacity[capacity["scheduler"] == reference][["family", "replicas", "capacity", "censored"]]
           .rename(columns={"capacity": "ref_capacity", "censored": "ref_censored"}))
    out = capacity.merge(ref, on=["family", "replicas"], how="left")
    out["gain"] = out["capacity"] / out["ref_capacity"] - 1
    return out


def _capacity_cell(row: pd.Series, reference: str) -> str:
    """e.g. "0.93 (+12%)", ">=2.00 (+50%)", "<0.10"; "n/a" when not measured."""
    if not np.isfinite(row["capacity"]):
        return "n/a"
    mark = row["censored"] if isinstance(row["censored"], str) else ""
    cell = f"{mark}{row['capacity']:.2f}"
    if row["scheduler"] != reference and np.isfinite(row["gain"]):
        cell += f" ({100 * row['gain']:+.0f}%)"
    return cell


def capacity_table_md(capacity: pd.DataFrame, reference: str = "round_robin") -> str:
    """Markdown table of capacity at the SLO: one row per (family, replicas, split), one column per
    scheduler (learned routers first), gains relative to `reference`, censoring marks kept."""
    gain = capacity_gain(capacity, reference)
    scheds = _scheduler_order(gain["scheduler"])
    body = []
    for (fam, rep, split), g in gain.groupby(["family", "replicas", "split"], sort=False):
        cells = {r["scheduler"]: _capacity_cell(r, reference) for _, r in g.iterrows()}
        body.append([fam, rep, split] + [cells.get(s, "") for s in scheds])
    return _md_table(["family", "replicas", "split"] + scheds, body)


def summary_line(rows: pd.DataFrame, capacity: Optional[pd.DataFrame], router: str, key: str = "e2e_p99",
                 split: str = "held_out", reference: str = "round_robin") -> str:
    """One sentence: scenarios where `router` is never worse than the best heuristic, and its mean
    capacity gain over `reference` on the (family, replicas) pairs of `split`."""
    vs = paired_vs(rows[rows["split"] == split], router, "best", key)
    never_worse = int((vs["outcome"] != "loss").sum())
    g = pd.Series(dtype=float)
    if capacity is not None and not capacity.empty:  # a suite may skip capacity (eval.capacity.replicas: [])
        gain = capacity_gain(capacity, reference)
        g = gain[(gain["split"] == split) & (gain["scheduler"] == router)]["gain"]
        g = g[np.isfinite(g)]
    label = SPLIT_LABELS.get(split, split.replace("_", "-"))
    avg = f"{100 * g.mean():+.1f}%" if len(g) else "n/a"
    return (f"{router}: never worse than the best heuristic in {never_worse} of {len(vs)} {label} scenarios "
            f"({METRIC_LABELS.get(key, key)}, paired 95% CI); capacity at SLO {avg} vs "
            f"{reference.replace('_', '-')} on average ({len(g)} {label} family/size pairs)")


def matrix_md(wtl: pd.DataFrame) -> str:
    """The `win_tie_loss` table as markdown (cells are W/T/L scenario counts)."""
    return _md_table(["router"] + list(wtl.columns), [[r] + list(v) for r, v in zip(wtl.index, wtl.to_numpy())])


def router_table(rows: pd.DataFrame, capacity: Optional[pd.DataFrame], names: Sequence[str],
                 split: str = "held_out", reference: str = "round_robin") -> str:
    """One row per router on the `split` scenarios: capacity at SLO vs `reference` first (what an
    operator buys GPUs by), then never-worse count, W/T/L vs the best heuristic, mean and worst %."""
    sub = rows[rows["split"] == split]
    gain = capacity_gain(capacity, reference) if capacity is not None and not capacity.empty else None
    body = []
    for n in names:
        vs = paired_vs(sub, n, "best")
        counts = vs["outcome"].value_counts()
        cap = "n/a"
        if gain is not None:
            g = gain[(gain["split"] == split) & (gain["scheduler"] == n)]["gain"]
            g = g[np.isfinite(g)]
            cap = f"{100 * g.mean():+.1f}%" if len(g) else "n/a"
        body.append([n, cap, f"{int((vs['outcome'] != 'loss').sum())} of {len(vs)}",
                     f"{counts.get('win', 0)}/{counts.get('tie', 0)}/{counts.get('loss', 0)}",
                     f"{100 * vs['diff'].mean():+.1f}%", f"{100 * vs['diff'].max():+.1f}%"])
    return _md_table(["router", f"capacity at SLO vs {reference}", "never worse than best", "W/T/L vs best",
                      "E2E P99 vs best, mean", "worst scenario"], body)


def generalisation_report(rows: pd.DataFrame, capacity: pd.DataFrame, out_dir: Path) -> str:
    """The generalisation section of a suite report: summary lines (learned routers, then every
    heuristic; the best single heuristic named), after capacity at SLO, win/tie/loss matrices on held-out
    and training families, and the heat map (written to out_dir)."""
    grid = rows[rows["split"].isin(["held_out", "train", "overload", "mixed_held_out", "mixed_train"])]
    if grid.empty:
        return ""
    names = _scheduler_order(grid["scheduler"])
    learned = [n for n in names if n not in HEURISTICS]
    held = grid[grid["split"] == "held_out"]
    md = ["## Generalisation (leave-family-out)", "",
          "Every router on the same traces per scenario (family x load rho x replicas); a scenario is a win, "
          "tie or loss by the paired 95% CI of E2E P99 (tie: the CI covers 0). Held-out families were never "
          "trained on. Overload scenarios (rho > 1) are transient and in no count.", ""]
    if capacity is not None and not capacity.empty:  # first: the number operators buy GPUs by
        md += ["### Capacity at SLO (largest rho with >= 90% of requests meeting TTFT and TPOT SLOs; vs round-robin)",
               "", capacity_table_md(capacity), ""]
    if not held.empty:
        md += ["### Routers on held-out families", "", router_table(grid, capacity, names), ""]
        lines = [summary_line(grid, capacity, n) for n in names]
        never = {n: int((paired_vs(held, n, "best")["outcome"] != "loss").sum()) for n in names if n in HEURISTICS}
        best = max(never, key=never.get) if never else None
        md += [f"- {line}" for line in lines]
        if best:
            md += ["", f"Best single heuristic (most held-out scenarios never worse than the per-scenario best): "
                       f"**{best}**."]
        md += ["", "### Win/tie/loss, held-out families (E2E P99)", "", matrix_md(win_tie_loss(grid, names)), ""]
    if (grid["split"] == "train").any():
        md += ["### Win/tie/loss, training families (E2E P99)", "",
               matrix_md(win_tie_loss(grid, names, split="train")), ""]
    if learned and (grid["split"] == "held_out").any():
        md += ["### Win/tie/loss, held-out families (TTFT P99)", "",
               matrix_md(win_tie_loss(grid, names, key="ttft_p99")), ""]
    if (grid["split"] == "mixed_held_out").any():
        mixed = [n for n in names if n in set(grid[grid["split"] == "mixed_held_out"]["scheduler"])]
        md += ["### Routers on held-out mixed clusters (the best heuristic includes the capacity-aware ones)", "",
               router_table(grid, capacity, mixed, split="mixed_held_out"), ""]
        md += [f"- {summary_line(grid, capacity, n, split='mixed_held_out')}" for n in mixed]
        md += ["", "### Win/tie/loss, held-out mixed clusters (E2E P99)", "",
               matrix_md(win_tie_loss(grid, mixed, split="mixed_held_out")), ""]
    rel = relative_to_best(grid)
    path = heatmap(rel, Path(out_dir) / "generalisation_heatmap.png", "E2E P99, % vs the best heuristic per scenario")
    md += ["### E2E P99 vs the best heuristic per scenario", "", f"![heat map]({path.name})", ""]
    return "\n".join(md)
