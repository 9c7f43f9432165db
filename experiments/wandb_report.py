"""Build a comparison table from runs logged to Weights & Biases (needs W&B online and an API key).

    python experiments/wandb_report.py --project vidur-ppo [--entity ME] [--group 2026-11-25/07-40-00]
                                       [--by reward.name,features.name] [--out experiments/results/wandb_report.md]

Fetches the runs of a project (optionally one sweep group), reads each run's held-out evaluation
(the `eval/summary` table logged at the end of training, and its config), and writes the same
table as `python -m vidur_ppo.eval.aggregate` does for local run dirs: mean ± 95% CI over runs of the
trained policy's E2E P99 / TTFT P90 and of the paired difference to round-robin and LOR.
Offline runs can be synced first with `wandb sync <run dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common import arg_parser  # experiments/common.py, next to this script
from vidur_ppo.eval.aggregate import METRICS, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def fetch(project: str, entity: str | None, group: str | None, by: list[str], baselines: list[str]) -> pd.DataFrame:
    import wandb

    api = wandb.Api()
    filters = {"group": group} if group else {}
    rows = []
    for run in api.runs(f"{entity}/{project}" if entity else project, filters=filters):
        table = next((f for f in run.logged_artifacts() if "evalsummary" in f.name.replace("/", "")), None)
        if table is None:
            continue
        ev = table.get("eval/summary")
        df = pd.DataFrame(ev.data, columns=ev.columns)
        pol = df[df.scheduler == "ppo"].set_index("seed").sort_index()
        row = {"group": ",".join(f"{k}={_get(run.config, k)}" for k in by) or run.group, "run": run.name}
        for k, _ in METRICS:
            row[f"ppo_{k}"] = pol[k].mean()
        for b in baselines:
            base = df[df.scheduler == b].set_index("seed").sort_index()
            for k, _ in METRICS:
                if not base.empty:
                    row[f"{b}_{k}"] = base[k].mean()
                    row[f"vs_{b}_{k}"] = ((pol[k] - base[k]) / base[k]).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--project", default="vidur-ppo")
    ap.add_argument("--entity", default=None)
    ap.add_argument("--group", default=None)
    ap.add_argument("--by", default="reward.name,features.name,model.name,ppo.name")
    ap.add_argument("--baselines", default="round_robin,lor")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "wandb_report.md")
    args = ap.parse_args()
    baselines = args.baselines.split(",")
    df = fetch(args.project, args.entity, args.group, args.by.split(","), baselines)
    md = to_markdown(df, [], baselines) if len(df) else "no runs with an eval/summary table found"
    args.out.write_text(f"# W&B comparison: {args.project} {args.group or ''}\n\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
