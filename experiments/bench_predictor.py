"""Benchmark (and calibrate) the offline roofline execution-time predictor.

    python experiments/bench_predictor.py [--reference DIR] [--fit]

Checks `vidur_ppo.sim.predictor` against published measurements (`vidur_ppo.sim.calibration`):
whole A100 decode steps vs Vidur's profiled kernels (`decode_targets.md`) and two serving
engines, prefill vs TensorRT-LLM's first-token latency, per-op MLP-layer times vs vidur's
Llama-2-7B profiles (A100, H100, A40; TP 1/2/4/8), in-node all-reduce vs the NCCL profiles;
and measures predictor calls/s on a realistic prefill/decode mix. `--fit` re-runs the
least-squares calibrations whose results are the defaults of `RooflinePredictorConfig` and
prints the constants (it does not edit the source).

Writes experiments/results/bench_predictor.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from vidur.entities import Batch, Request
from vidur.execution_time_predictor import BaseExecutionTimePredictor

from common import arg_parser  # experiments/common.py, next to this script
from vidur_ppo.sim import calibration as cal
from vidur_ppo.sim.predictor import (
    RooflineExecutionTimePredictor,
    RooflinePredictorConfig,
)

RESULTS = REPO / "experiments" / "results"


# ----------------------------------------------------------------------------- speed
def realistic_batches(n: int, seed: int = 0) -> List[Batch]:
    """vLLM-like batches: mostly pure decode (1-128 requests, kv 64..4096), ~20% with prefills."""
    rng = random.Random(seed)
    batches = []
    for _ in range(n):
        reqs, q, kv = [], [], []
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 4)):
                p = rng.randint(16, 2048)
                r = Request(arrived_at=0.0, num_prefill_tokens=p, num_decode_tokens=8)
                reqs.append(r)
                q.append(p)
                kv.append(p)
        for _ in range(rng.randint(0 if reqs else 1, 128)):
            p = rng.randint(16, 2048)
            r = Request(arrived_at=0.0, num_prefill_tokens=p, num_decode_tokens=2048)
            r._is_prefill_complete = True
            done = rng.randint(p + 1, p + 2047)
            reqs.append(r)
            q.append(1)
            kv.append(done + 1)
        batches.append(Batch(0, reqs, q, kv))
    return batches


def measure_speed(cfg: RooflinePredictorConfig, n_batches=2000, repeats=5) -> Dict[str, float]:
    """calls/s of the optimised path vs the base class's 14-method path, Llama-2-7B/A100 TP2."""
    pred = cal.step_predictor(cfg, tp=2)
    batches = realistic_batches(n_batches)
    for b in batches:  # warm the per-size cache (as in a long simulation)
        pred.get_execution_time(b, 0)

    def rate(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches:
                fn(b, 0)
            best = min(best, time.perf_counter() - t0)
        return len(batches) / best

    fast = rate(pred.get_execution_time)
    base = rate(lambda b, s: BaseExecutionTimePredictor.get_execution_time(pred, b, s))
    t0 = time.perf_counter()  # cold: a fresh predictor (cache misses included)
    cold: RooflineExecutionTimePredictor = cal.step_predictor(cfg, tp=2)
    for b in batches:
        cold.get_execution_time(b, 0)
    cold_rate = len(batches) / (time.perf_counter() - t0)
    return {
        "calls_per_s": fast,
        "calls_per_s_cold_cache": cold_rate,
        "calls_per_s_base_class_path": base,
        "speedup_vs_base_class_path": fast / base,
        "n_batches": n_batches,
        "frac_batches_with_prefill": sum(1 for b in batches if b.num_prefill_tokens) / n_batches,
        "mean_requests_per_batch": float(np.mean([len(b.requests) for b in batches])),
    }


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{x:.1%}"


def md_acceptance(checks: List[Dict]) -> List[str]:
    lines = ["## Acceptance (issue 14)", "", "| check | worst case | value | bound | holds |"]
    lines.append("|---|---|---|---|---|")
    for c in checks:
        ok = "yes" if c["ok"] else "**NO**"
        lines.append(
            f"| {c['check']} | {c['worst']} | {_pct(c['value'])} | {_pct(c['bound'])} | {ok} |"
        )
    return lines + [""]


def md_steps(steps: Dict[str, List[Dict]]) -> List[str]:
    """Decode grid (batch x context) plus the serving-engine and prefill rows."""
    decode = {(r["batch"], r["tokens"]): r for r in steps["decode"]}
    contexts = sorted({c for _, c in decode})
    lines = [
        "## Decode step, Llama-2-7B, A100, TP1: predicted / profiled kernel sum (ms)",
        "",
        "Target: Vidur's profiled kernels summed per step (`decode_targets.md`), kernels only.",
        "",
        "| batch | " + " | ".join(f"ctx {c}: pred / target (ratio)" for c in contexts) + " |",
        "|---|" + "---|" * len(contexts),
    ]
    for b in sorted({b for b, _ in decode}):
        cells = [decode[(b, c)] for c in contexts]
        text = [f"{r['pred_ms']:.2f} / {r['target_ms']:.2f} ({r['ratio']:.3f})" for r in cells]
        lines.append(f"| {b} | " + " | ".join(text) + " |")
    lines += [
        "",
        "## Published step times, Llama-2-7B, A100, TP1",
        "",
        "| kind | source | batch | context / prompt | published ms | predicted ms | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("serving", "prefill"):
        for r in steps[kind]:
            lines.append(
                f"| {'decode' if kind == 'serving' else 'prefill'} | {r['source']} | {r['batch']} "
                f"| {r['tokens']} | {r['target_ms']:.1f} | {r['pred_ms']:.2f} | {r['ratio']:.3f} |"
            )
    return lines + [""]


def md_mlp(table: Dict) -> List[str]:
    devices = list(table)
    lines = [
        "## MLP-layer ops vs vidur's Llama-2-7B profiles",
        "",
        "Relative error |pred - measured| / measured of per-layer op times (profile medians);",
        "`total` = sum of the 9 mapped ops (norms, QKV/out proj, rope, MLP up/act/down, add).",
        "",
        "| device | TP | n | median | P90 | median bias |",
        "|---|---|---|---|---|---|",
    ]
    for dev, rows in table.items():
        for tp, row in rows.items():
            t = row["total"]
            lines.append(
                f"| {dev} | {tp} | {t['n']} | {_pct(t['median'])} | {_pct(t['p90'])} | "
                f"{t['median_bias']:+.1%} |"
            )
    lines += ["", "### Per op (all TP degrees), median / P90", ""]
    lines.append("| op | " + " | ".join(devices) + " |")
    lines.append("|---|" + "---|" * len(devices))
    for op in cal.OPS + ["total"]:
        cells = [f"{_pct(table[d]['all'][op]['median'])} / {_pct(table[d]['all'][op]['p90'])}"
                 for d in devices]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines + [""]


def md_tp_layers(tp_layers: Dict) -> List[str]:
    lines = ["## A TP2 layer, communication included (heterogeneous clusters mix TP degrees)", "",
             "Profiled ops + two NCCL all-reduces of the layer's activations (interpolated in message size) vs the",
             "roofline ops + its all-reduce model, Llama-2-7B, 1-4,096 tokens; devices with an all-reduce profile",
             "(A40 has none: its TP2 link is the datasheet's).", "",
             "| device | n | median | P90 | median bias | all-reduce share of the layer (measured) |", "|---|---|---|---|---|---|"]
    for dev, t in tp_layers.items():
        lines.append(f"| {dev} | {t['n']} | {_pct(t['median'])} | {_pct(t['p90'])} | {t['median_bias']:+.1%} | "
                     f"{_pct(t['comm_share'])} |")
    return lines + [""]


def md_allreduce(errors: Dict) -> List[str]:
    lines = [
        "## All-reduce vs NCCL profiles (all GPUs in one node; GPU time, messages >= 8 KB)",
        "",
        "Median measured / predicted ms and median |error| per message-size band; TP2 first.",
        "",
        "| node | GPUs | band | measured ms | predicted ms | median error | median ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for node, by_n in errors.items():
        for n, bands in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            for band, r in bands.items():
                lines.append(
                    f"| {node} | {n} | {band} | {r['measured_ms']:.4f} | {r['pred_ms']:.4f} | "
                    f"{_pct(r['median'])} | {r['median_ratio']:.3f} |"
                )
    return lines + [""]


def md_speed_and_constants(speed: Dict, cfg: RooflinePredictorConfig, fitted) -> List[str]:
    lines = [
        "## Speed (Llama-2-7B, A100, TP2; realistic prefill/decode mix)",
        "",
        f"- get_execution_time: **{speed['calls_per_s']:,.0f} calls/s** (warm per-size cache); "
        f"{speed['calls_per_s_cold_cache']:,.0f} calls/s from a cold cache",
        f"- base-class 14-method path on the same predictor: "
        f"{speed['calls_per_s_base_class_path']:,.0f} calls/s "
        f"(override is {speed['speedup_vs_base_class_path']:.1f}x faster)",
        f"- {speed['n_batches']} batches, {speed['frac_batches_with_prefill']:.0%} with a prefill, "
        f"{speed['mean_requests_per_batch']:.1f} requests/batch on average",
        "",
        "## Constants in use (fitted ones)",
        "",
    ]
    names = {**cal.LINEAR_FIT_BOUNDS, **cal.DECODE_FIT_BOUNDS, **cal.ALLREDUCE_FIT_BOUNDS}
    lines += [f"- `{k}` = {getattr(cfg, k)}" for k in names]
    if fitted is not None:
        lines += ["", "## Fresh fit (--fit)", ""]
        lines += [f"- `{k}` = {v}" for k, v in fitted.items()]
    return lines


def fit_all(reference: Path, cfg: RooflinePredictorConfig) -> Dict[str, float]:
    """The three calibrations in dependency order: linear ops, then decode steps, all-reduce."""
    fitted = cal.fit_linear(cal.load_profiles(reference), cfg)
    cfg = dataclasses.replace(cfg, **fitted)
    fitted.update(cal.fit_decode(cal.load_decode_targets(reference), cfg))
    fitted.update(cal.fit_allreduce(cal.load_allreduce(reference), cfg))
    return fitted


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument(
        "--reference",
        type=Path,
        default=REPO.parent / "shared" / "reference",
        help="reference data dir (default: ../shared/reference relative to the repo root)",
    )
    ap.add_argument("--fit", action="store_true", help="re-run the calibration, print constants")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results")
    args = ap.parse_args()
    if not (args.reference / "vidur-profiling").exists():
        print(f"error: no reference data under {args.reference} (pass --reference DIR)",
              file=sys.stderr)
        return 2

    cfg = RooflinePredictorConfig()
    fitted = None
    if args.fit:
        t0 = time.perf_counter()
        fitted = fit_all(args.reference, cfg)
        print(f"fitted constants ({time.perf_counter() - t0:.1f}s):")
        for k, v in fitted.items():
            print(f"  {k}: float = {v}   (current default {getattr(cfg, k)})")
        cfg = dataclasses.replace(cfg, **fitted)

    df = cal.load_profiles(args.reference)
    table = cal.error_table(df, cal.predict_profiles(df, cfg))
    steps = cal.step_time_rows(cfg, cal.load_decode_targets(args.reference))
    allreduce_df = cal.load_allreduce(args.reference)
    allreduce = cal.allreduce_errors(allreduce_df, cfg)
    tp_layers = cal.tp_layer_errors(df, allreduce_df, cfg)
    checks = cal.acceptance_checks(table, steps, tp_layers)
    speed = measure_speed(cfg)
    lines = ["# Roofline predictor vs published measurements", ""]
    lines += md_acceptance(checks) + md_steps(steps) + md_mlp(table) + md_tp_layers(tp_layers) + md_allreduce(allreduce)
    md = "\n".join(lines + md_speed_and_constants(speed, cfg, fitted)) + "\n"
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_predictor.md").write_text(md)
        payload = {
            "reference": str(args.reference),
            "model": cal.MODEL,
            "acceptance": checks,
            "steps": steps,
            "errors": table,
            "allreduce": allreduce,
            "tp2_layers": tp_layers,
            "speed": speed,
            "constants": dataclasses.asdict(cfg),
            "fitted": fitted,
        }
        (RESULTS / "bench_predictor.json").write_text(json.dumps(payload, indent=2))
        print(f"wrote {RESULTS / 'bench_predictor.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
