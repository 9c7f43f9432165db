"""The seven heuristics (six classic ones and SITA-E) on the default scenario at light and heavy load (paired, held-out seeds).

    python experiments/bench_heuristics.py [--seeds 5] [--requests 1000] [--replicas 4]

Every scheduler serves the same traces (one per seed); figures are the mean over seeds with the
95% CI half-width, and the paired difference of E2E P99 against round-robin. Writes
experiments/results/heuristics.{json,md}. Seeds start at 100000, a range training never uses.
"""

from __future__ import annotations

import json
import time
from multiprocessing import get_context
from pathlib import Path

from common import arg_parser  # experiments/common.py, next to this script
from vidur_ppo.eval.paired import evaluate_heuristics
from vidur_ppo.eval.stats import mean_ci, paired_diff_ci
from vidur_ppo.routing.env import EVAL_SEED_BASE, VidurRoutingEnv
from vidur_ppo.routing.heuristics import HEURISTICS
from vidur_ppo.workloads import DEFAULT_WORKLOAD, LIGHT_QPS

ROOT = Path(__file__).resolve().parents[1]
ORDER = list(HEURISTICS)
COLUMNS = [("ttft_p50", "TTFT P50"), ("ttft_p99", "TTFT P99"), ("tbt_p99", "TBT P99"),
           ("e2e_p50", "E2E P50"), ("e2e_p99", "E2E P99"), ("throughput_rps", "req/s")]


def _job(args):
    load, qps, seed, requests, replicas = args
    wl = {**DEFAULT_WORKLOAD, "qps": qps, "num_requests": requests}
    env = VidurRoutingEnv(cluster={"num_replicas": replicas}, workload=wl)  # the default E2E SLO (DEFAULT_SLO_E2E)
    rows = evaluate_heuristics(ORDER, env, [seed])
    return [{"load": load, "qps": qps, **r} for r in rows]


def table(rows, load) -> list[str]:
    by = {n: [r for r in rows if r["load"] == load and r["scheduler"] == n] for n in ORDER}
    rr = by["round_robin"]
    qps = rr[0]["qps"]
    out = [f"### {load} load ({qps:g} QPS, {len(rr)} seeds)", "",
           "| scheduler | " + " | ".join(c[1] for c in COLUMNS) + " | E2E P99 vs RR |",
           "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for n in ORDER:
        cells = []
        for key, _ in COLUMNS:
            m, h = mean_ci([r[key] for r in by[n]])
            cells.append(f"{m:.3g} ± {h:.2g}")
        d, h = paired_diff_ci([r["e2e_p99"] for r in by[n]], [r["e2e_p99"] for r in rr])
        cells.append("—" if n == "round_robin" else f"{100 * d:+.1f}% ± {100 * h:.1f}")
        label = n + (" (vidur's: waiting only)" if n == "lor" else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out + [""]


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()
    loads = {"light": LIGHT_QPS, "heavy": DEFAULT_WORKLOAD["qps"]}
    jobs = [(load, qps * args.replicas / 4, EVAL_SEED_BASE + s, args.requests, args.replicas)
            for load, qps in loads.items() for s in range(args.seeds)]
    t0 = time.time()
    with get_context("spawn").Pool(args.workers) as pool:
        rows = [r for part in pool.imap(_job, jobs) for r in part]
    wall = time.time() - t0
    md = ["# Heuristic baselines on the default scenario", "",
          f"{args.replicas} x Llama-2-7B / A100 (TP1, vLLM replica scheduler, roofline predictor), chat workload "
          f"(lognormal prompts median 512, outputs median 128), {args.requests} requests per episode. "
          "Mean over held-out seeds ± 95% CI half-width; times in seconds. "
          f"Command: `python experiments/bench_heuristics.py --seeds {args.seeds} --requests {args.requests}` "
          f"({wall:.0f} s on 2 cores).", ""]
    for load in loads:
        md += table(rows, load)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heuristics.json").write_text(json.dumps(rows, indent=1))
    (args.out / "heuristics.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
