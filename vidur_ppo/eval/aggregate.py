"""Aggregate finished runs into one table: the trained policy vs the baselines, across seeds.

Each run dir holds `eval.csv` (every scheduler on the same held-out traces) and `config.yaml`.
For each run, the policy's metric is paired with each baseline's on the same evaluation seeds;
across runs (training seeds) the table gives mean ± 95% CI of the policy's metric and of the
relative difference to each baseline. Runs without `eval.csv` are listed as failed, not skipped.

    python -m vidur_ppo.eval.aggregate RUN_DIR_OR_SWEEP_DIR [...] [--by key.path] [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from omegaconf import OmegaConf

from vidur_ppo.eval.stats import mean_ci

METRICS = [("e2e_p99", "E2E P99"), ("ttft_p90", "TTFT P90"), ("tbt_p99", "TBT P99"), ("throughput_rps", "req/s")]


def find_runs(paths: Sequence[Path]) -> List[Path]:
    """Run dirs under the given paths: folders holding our `config.yaml` (not Hydra's .hydra/)."""
    runs = [c.parent for p in map(Path, paths) for c in sorted(Path(p).rglob("config.yaml"))
            if c.parent.name != ".hydra"]
    return list(dict.fromkeys(runs))


def run_summary(run: Path, baselines: Sequence[str]) -> Dict[str, float]:
    ev = pd.read_csv(run / "eval.csv")
    pol = ev[ev.scheduler == "ppo"].set_index("seed").sort_index()
    out = {f"ppo_{k}": float(pol[k].mean()) for k, _ in METRICS}
    for b in baselines:
        base = ev[ev.scheduler == b].set_index("seed").sort_index()
        if base.empty:  # this run did not evaluate that baseline
            continue
        for k, _ in METRICS:
            out[f"{b}_{k}"] = float(base[k].mean())
            out[f"vs_{b}_{k}"] = float(((pol[k] - base[k]) / base[k]).mean())
    return out


def label_of(run: Path, by: Optional[str]) -> str:
    cfg = OmegaConf.load(run / "config.yaml")
    if by:
        return ",".join(f"{k}={OmegaConf.select(cfg, k)}" for k in by.split("+"))
    return run.parent.name


def aggregate(paths: Sequence[Path], by: Optional[str] = None, baselines: Sequence[str] = ("round_robin", "lor"),
              ) -> Tuple[pd.DataFrame, List[Tuple[Path, str]]]:
    rows, failed = [], []
    for run in find_runs(paths):
        if not (run / "eval.csv").exists():
            failed.append((run, "no eval.csv (crashed or still running)"))
            continue
        try:
            rows.append({"group": label_of(run, by), "run": str(run), **run_summary(run, baselines)})
        except Exception as exc:  # noqa: BLE001 - listed, not hidden
            failed.append((run, f"unreadable: {exc}"))
    return pd.DataFrame(rows), failed


def to_markdown(df: pd.DataFrame, failed: List[Tuple[Path, str]], baselines: Sequence[str] = ("round_robin", "lor")) -> str:
    head = ["configuration", "runs"] + [f"PPO {label}" for _, label in METRICS[:2]]
    head += [f"{label} vs {b}" for b in baselines for k, label in METRICS[:2]]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for group, g in (df.groupby("group", sort=False) if len(df) else []):
        cells = [group, str(len(g))]
        for k, _ in METRICS[:2]:
            m, h = mean_ci(g[f"ppo_{k}"])
            cells.append(f"{m:.3g} ± {h:.2g}")
        for b in baselines:
            for k, _ in METRICS[:2]:
                col = g.get(f"vs_{b}_{k}")
                if col is None or col.isna().all():
                    cells.append("n/a")
                    continue
                m, h = mean_ci(col.dropna())
                cells.append(f"{100 * m:+.1f}% ± {100 * h:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if len(df):
        ref = []
        for b in baselines:
            if f"{b}_e2e_p99" not in df:
                continue
            vals = ", ".join(f"{label} {df[f'{b}_{k}'].mean():.3g}" for k, label in METRICS[:2])
            ref.append(f"{b}: {vals}")
        lines += ["", "Baselines on the same held-out traces: " + "; ".join(ref) + "."]
    if failed:
        lines += ["", "Failed or unfinished runs:"] + [f"- `{p}`: {why}" for p, why in failed]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Aggregate vidur-ppo runs into one table (mean ± 95% CI).")
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--by", default=None, help="config keys that name a configuration, joined by + "
                                                "(default: the run dir's parent folder)")
    ap.add_argument("--baselines", default="round_robin,lor")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    baselines = args.baselines.split(",")
    df, failed = aggregate(args.paths, args.by, baselines)
    md = to_markdown(df, failed, baselines)
    print(md)
    if args.out:
        args.out.write_text(md + "\n")
        df.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
