"""How the default scenario's load levels were chosen: latency vs offered load (paired seeds).

    python experiments/sweep_load.py [--seeds 3] [--requests 1000] [--qps 4 8 12 16 20 24 28 32 40]

For each QPS, round-robin, JSQ and least-work-left serve the same traces; writes
experiments/results/sweep_load.{json,md,png} (E2E P50/P99 and TTFT P90 vs QPS).
"""

from __future__ import annotations

import json
from multiprocessing import get_context
from pathlib import Path

from common import arg_parser  # experiments/common.py, next to this script
from vidur_ppo.eval.paired import evaluate_heuristics
from vidur_ppo.eval.stats import mean_ci
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.workloads import DEFAULT_WORKLOAD

ROOT = Path(__file__).resolve().parents[1]

SCHEDULERS = ["round_robin", "jsq", "least_work_left"]


def _job(args):
    qps, seed, requests = args
    env = VidurRoutingEnv(workload={**DEFAULT_WORKLOAD, "qps": qps, "num_requests": requests})  # default E2E SLO
    rows = evaluate_heuristics(SCHEDULERS, env, [seed])
    return [{"qps": qps, **r} for r in rows]


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--qps", type=float, nargs="+", default=[4, 8, 12, 16, 20, 24, 28, 32, 40])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()
    jobs = [(q, 200_000 + s, args.requests) for q in args.qps for s in range(args.seeds)]
    with get_context("spawn").Pool(2) as pool:
        rows = [r for part in pool.imap(_job, jobs) for r in part]
    md = ["# Latency vs offered load on the default cluster (4 x Llama-2-7B / A100, vLLM, chat workload)", "",
          f"Mean over {args.seeds} seeds ± 95% CI. Command: `python experiments/sweep_load.py --seeds {args.seeds}`.", "",
          "| QPS | scheduler | E2E P50 | E2E P99 | P99/P50 | TTFT P90 | req/s |", "|---:|---|---:|---:|---:|---:|---:|"]
    agg = {}
    for q in args.qps:
        for s in SCHEDULERS:
            sel = [r for r in rows if r["qps"] == q and r["scheduler"] == s]
            m = {k: mean_ci([r[k] for r in sel]) for k in ("e2e_p50", "e2e_p99", "ttft_p90", "throughput_rps")}
            agg[(q, s)] = m
            md.append(f"| {q:g} | {s} | {m['e2e_p50'][0]:.2f} ± {m['e2e_p50'][1]:.2f} | {m['e2e_p99'][0]:.1f} ± "
                      f"{m['e2e_p99'][1]:.1f} | {m['e2e_p99'][0] / m['e2e_p50'][0]:.1f} | {m['ttft_p90'][0]:.3f} | "
                      f"{m['throughput_rps'][0]:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_load.json").write_text(json.dumps(rows, indent=1))
    (args.out / "sweep_load.md").write_text("\n".join(md) + "\n\n![latency vs load](sweep_load.png)\n")
    from vidur_ppo.eval.plotting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for s in SCHEDULERS:
        for ax, key, title in zip(axes, ("e2e_p50", "e2e_p99", "ttft_p90"), ("E2E P50 (s)", "E2E P99 (s)", "TTFT P90 (s)")):
            ys = [agg[(q, s)][key][0] for q in args.qps]
            es = [agg[(q, s)][key][1] for q in args.qps]
            ax.errorbar(args.qps, ys, yerr=es, marker="o", ms=3, capsize=2, label=s)
            ax.set_title(title)
            ax.set_xlabel("offered load (QPS)")
    for ax in axes:
        ax.axvline(8, color="grey", ls=":", lw=1)
        ax.axvline(24, color="grey", ls="--", lw=1)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle("Default cluster: latency vs load (dotted: light 8 QPS, dashed: heavy 24 QPS)")
    fig.tight_layout()
    fig.savefig(args.out / "sweep_load.png", dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
