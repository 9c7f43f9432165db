"""Figures for run and evaluation reports (PNG, matplotlib without a display): latency CDFs per
scheduler, P99 vs load, learning curves from metrics.csv, attention heat maps."""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from vidur_ppo.eval.plotting import pyplot


def latency_cdfs(e2e: Mapping[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Empirical CDF of per-request E2E latency, one line per scheduler (log x, tail visible)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, x in e2e.items():
        x = np.sort(np.asarray(x))
        if x.size:
            ax.plot(x, np.arange(1, x.size + 1) / x.size, label=name, lw=2 if name.startswith("ppo") else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("E2E latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.axhline(0.99, color="grey", ls=":", lw=1)
    ax.set_title(title or "E2E latency CDF (same trace for every scheduler)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def p99_vs_load(rows: Sequence[Mapping], path: Path, group: str = "replicas", key: str = "e2e_p99") -> Optional[Path]:
    """Mean `key` vs offered QPS for each scheduler, one panel per `group` value; None if the
    suite has a single load level."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty or df["qps"].nunique() < 2:
        return None
    plt = pyplot()
    groups = sorted(df[group].unique())
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        sub = df[df[group] == g]
        for name, s in sub.groupby("scheduler"):
            m = s.groupby("qps")[key].mean()
            ax.plot(m.index, m.values, marker="o", label=name, lw=2 if name.startswith("ppo") else 1.2)
        ax.set_title(f"{group}={g}")
        ax.set_xlabel("QPS")
        ax.set_ylabel(key)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(metrics_csv: Path, path: Path) -> Optional[Path]:
    """Episode return, episode E2E P99, entropy and approximate KL per update."""
    import pandas as pd

    if not Path(metrics_csv).exists():
        return None
    df = pd.read_csv(metrics_csv)
    if df.empty:
        return None
    plt = pyplot()
    panels = [("episode_return", "episode return"), ("episode/e2e_p99", "episode E2E P99 (s)"),
              ("entropy", "policy entropy"), ("approx_kl", "approx. KL")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (col, label) in zip(axes, panels):
        if col in df:
            s = df[["update", col]].dropna()
            ax.plot(s["update"], s[col], marker=".", lw=1)
        ax.set_title(label)
        ax.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attention_heatmap(weights: np.ndarray, path: Path, title: str = "") -> Path:
    """Replica-to-replica attention averaged over an evaluation episode."""
    plt = pyplot()
    r = weights.shape[0]
    fig, ax = plt.subplots(figsize=(3.2 + 0.3 * r, 2.8 + 0.3 * r))
    im = ax.imshow(weights, cmap="viridis", vmin=0)
    ax.set_xlabel("attends to replica")
    ax.set_ylabel("replica")
    ax.set_xticks(range(r))
    ax.set_yticks(range(r))
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "mean attention")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_links(paths: List[Path], base: Path) -> str:
    return "\n\n".join(f"![{p.stem}]({p.relative_to(base)})" for p in paths if p is not None)


def _figures(details: Mapping, out_dir: Path, label: str, title: str) -> List[Path]:
    """The CDF and attention figures of one evaluated trace's `details` (eval/paired.evaluate)."""
    figs = []
    if details.get("e2e"):
        figs.append(latency_cdfs(details["e2e"], out_dir / f"cdf_{label}.png", f"E2E CDF, {title}"))
    for name, w in details.get("attention", {}).items():
        figs.append(attention_heatmap(w, out_dir / f"attention_{label}_{name}.png", f"{name}, {title}"))
    return figs


def suite_report(policies, eval_cfg, jobs: Sequence[tuple], results: Sequence[Mapping], out_dir: Path,
                 failed: Optional[Mapping[str, Sequence[str]]] = None, capacity=None) -> str:
    """report.md of an evaluation suite: the generalisation summary of a grid suite (eval/matrix.py),
    then one paired table per scenario (figures for listed scenarios, not grid ones), P99 vs load;
    the scenarios that failed (`failed`: name -> one-line errors) are listed first, so a partial
    report is never mistaken for a whole one."""
    import pandas as pd

    from vidur_ppo.eval.matrix import generalisation_report
    from vidur_ppo.eval.paired import summary_table

    rows = [r for res in results for r in res["rows"]]
    errors = sorted(set(e for res in results if not res.get("failed") for e in res["errors"]))
    seeds = eval_cfg.seed_list()
    who = policies if isinstance(policies, (str, Path)) else ", ".join(f"{k}: {v}" for k, v in policies.items())
    who = who or "the heuristics"  # no policies
    md = [f"# Evaluation of `{who}`", "",
          f"{eval_cfg.seeds} held-out {eval_cfg.split} seeds from {seeds[0]}, {eval_cfg.num_requests} requests per "
          "episode; every scheduler serves the same trace per seed. Mean ± 95% CI; \"vs\" columns are paired relative "
          "differences (negative = better than the reference). Times in seconds.", ""]
    if failed:
        md += ["## Failed scenarios", ""] + [f"- `{sc}`: {e}" for sc, errs in failed.items() for e in errs] + [""]
    if errors:
        md += ["Not evaluated:", ""] + [f"- {e}" for e in errors] + [""]
    if rows and any(r.get("split") for r in rows):
        md += [generalisation_report(pd.DataFrame(rows), capacity, out_dir), ""]
    for sc in dict.fromkeys(job[1]["name"] for job in jobs):
        sub = [r for r in rows if r["scenario"] == sc]
        if not sub:
            continue
        rate = f"{sub[0]['qps']:g} QPS" if np.isfinite(sub[0]["qps"]) else "the trace's arrivals"
        load = f", rho {sub[0]['load']:g}" if np.isfinite(sub[0].get("load", float("nan"))) else ""
        md += [f"## {sc} ({sub[0]['replicas']} replicas, {rate}{load})", "", summary_table(sub), ""]
        if sub[0].get("split"):
            continue  # grid scenarios: the heat map, not a figure each
        det = next((res["details"] for res, job in zip(results, jobs) if job[1]["name"] == sc and res["details"]), None)
        figs = _figures(det or {}, out_dir, sc, sc)
        md += [f for p in figs for f in (figure_links([p], out_dir), "")]
    p = p99_vs_load([r for r in rows if r.get("shape", "trained") == "trained"], out_dir / "p99_vs_load.png")
    if p:
        md += ["## E2E P99 vs load", "", figure_links([p], out_dir), ""]
    return "\n".join(md)


def run_report(run_dir: Path, rows: Sequence[Mapping], details: Mapping, seeds: Sequence[int], eval_cfg) -> List[Path]:
    """A training run's report.md, eval.csv and figures (learning curves, held-out CDF, attention)."""
    import pandas as pd

    from vidur_ppo.eval.paired import summary_table

    pd.DataFrame(list(rows)).to_csv(run_dir / "eval.csv", index=False)
    figs = [learning_curves(run_dir / "metrics.csv", run_dir / "learning_curves.png"),
            latency_cdfs(details.get("e2e", {}), run_dir / "latency_cdf.png", f"E2E latency CDF, held-out seed {seeds[0]}")]
    for name, w in details.get("attention", {}).items():
        figs.append(attention_heatmap(w, run_dir / f"attention_{name}.png", f"{name}: mean attention, seed {seeds[0]}"))
    figs = [f for f in figs if f]
    (run_dir / "report.md").write_text(
        f"# vidur-ppo run report\n\nRun dir: `{run_dir}`\n\n## Held-out evaluation "
        f"({len(seeds)} seeds from {eval_cfg.seed_base}, {eval_cfg.num_requests} requests, same traces for "
        f"every scheduler; mean ± 95% CI; \"vs\" = paired relative difference, negative = better)\n\n"
        f"{summary_table(list(rows))}\n\n## Figures\n\n{figure_links(figs, run_dir)}\n")
    return figs
