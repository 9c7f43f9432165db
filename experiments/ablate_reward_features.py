"""Ablation of PLAN.md sections 1-2: legacy vs soft_logistic reward, legacy vs full features.

    python experiments/ablate_reward_features.py [--seeds 0 1 2] [--updates 30] [--extra key=value ...]

Trains each configuration with every seed on the default scenario (`python -m vidur_ppo.train`,
one run after the other: each uses both cores), then aggregates the held-out evaluations
(same traces for every scheduler) into experiments/results/ablate_reward_features.md.
Finished runs are kept and not retrained, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import train_all  # experiments/common.py, next to this script
from vidur_ppo.eval.aggregate import aggregate, to_markdown

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "legacy (legacy_hybrid reward, legacy features)": ["experiment=legacy"],
    "soft_logistic reward (+ reward normalisation), legacy features": ["experiment=legacy", "reward=soft_logistic",
                                                                       "ppo.normalize_reward=true"],
    "legacy reward, full features": ["experiment=legacy", "features=full"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--root", type=Path, default=ROOT / "multirun" / "ablate_reward_features")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "ablate_reward_features.md")
    args = ap.parse_args()
    t0 = time.time()
    train_all(CONFIGS, args.seeds, args.root, args.updates, extra=args.extra, t0=t0)
    groups = []
    for i, name in enumerate(CONFIGS):
        df, failed = aggregate([args.root / f"cfg{i}"])
        df["group"] = name
        groups.append((df, failed))
    import pandas as pd

    df = pd.concat([g[0] for g in groups], ignore_index=True)
    failed = [f for g in groups for f in g[1]]
    md = ["# Ablation: reward and features (PLAN.md sections 1-2)", "",
          f"Default scenario (4 x Llama-2-7B/A100, vLLM, chat workload at 24 QPS), BC warm start from JSQ, "
          f"{args.updates} PPO updates of 4 envs x 128 decisions, training seeds {args.seeds}; each run is evaluated "
          "on the same 3 held-out traces (seeds 100000-100002, 1000 requests) as round-robin and LOR. "
          "Columns: mean over training seeds ± 95% CI; \"vs\" columns are the paired relative difference "
          "(negative = PPO better). Command: `python experiments/ablate_reward_features.py` "
          f"({(time.time() - t0) / 60:.0f} min on 2 cores).", "", to_markdown(df, failed)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(md) + "\n")
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    print("\n".join(md))


if __name__ == "__main__":
    main()
