"""Benchmark (and calibrate) the offline roofline execution-time predictor.

    python experiments/bench_predictor.py [--reference DIR] [--fit]

Compares `vidur_ppo.sim.predictor` with vidur's published Llama-2-7B MLP-layer profiles
(A100, H100; TP 1/2/4/8; medians per batch size), reports median / P90 relative error per op
and for the per-layer total, and measures predictor calls/s on a realistic prefill/decode mix.
`--fit` re-runs the least-squares calibration whose result is hard-coded as the defaults of
`RooflinePredictorConfig`, and prints the constants (it does not edit the source).

Writes experiments/results/bench_predictor.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidur.config import CacheConfig, ReplicaConfig  # noqa: E402
from vidur.entities import Batch, Request  # noqa: E402
from vidur.execution_time_predictor import BaseExecutionTimePredictor  # noqa: E402

from vidur_ppo.sim.predictor import (  # noqa: E402
    ModelDims,
    RooflineExecutionTimePredictor,
    RooflinePredictorConfig,
    get_device_spec,
    linear_op_times_ms,
)

RESULTS = REPO / "experiments" / "results"
DEVICES = ("a100", "h100")
MODEL = "meta-llama/Llama-2-7b-hf"
# ops the roofline maps (the profile's `emb` is not part of a vidur layer)
OPS = [
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
]
FIT_PARAMS = [
    "gemm_compute_efficiency",
    "gemm_small_m_tokens",
    "gemm_memory_efficiency",
    "gemm_overhead_ms",
    "norm_memory_efficiency",
    "act_memory_efficiency",
    "rope_memory_efficiency",
    "add_memory_efficiency",
    "elementwise_overhead_ms",
]
# (lower, upper) bounds: efficiencies are physical fractions (<= 1)
FIT_BOUNDS = {
    "gemm_compute_efficiency": (0.05, 1.0),
    "gemm_small_m_tokens": (0.0, 2000.0),
    "gemm_memory_efficiency": (0.05, 1.0),
    "gemm_overhead_ms": (0.0, 0.05),
    "norm_memory_efficiency": (0.05, 1.0),
    "act_memory_efficiency": (0.05, 1.0),
    "rope_memory_efficiency": (0.05, 1.0),
    "add_memory_efficiency": (0.05, 1.0),
    "elementwise_overhead_ms": (0.0, 0.05),
}


# ----------------------------------------------------------------------------- data
def load_profiles(reference: Path) -> pd.DataFrame:
    """One row per (device, tp, num_tokens) with the median time of every mapped op (ms)."""
    frames = []
    for dev in DEVICES:
        path = reference / "vidur-profiling" / "compute" / dev / MODEL / "mlp.csv"
        if not path.exists():
            raise FileNotFoundError(path)
        raw = pd.read_csv(path)
        df = pd.DataFrame(
            {
                "device": dev,
                "tp": raw["num_tensor_parallel_workers"].astype(int),
                "num_tokens": raw["num_tokens"].astype(int),
                "n_head": raw["n_head"],
                "n_kv_head": raw["n_kv_head"],
                "n_embd": raw["n_embd"],
                "n_expanded_embd": raw["n_expanded_embd"],
                "use_gated_mlp": raw["use_gated_mlp"].astype(bool),
            }
        )
        for op in OPS:
            df[op] = raw[f"time_stats.{op}.median"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def predict_profiles(df: pd.DataFrame, cfg: RooflinePredictorConfig) -> pd.DataFrame:
    """Roofline predictions for every profile row (vectorised per device / model / TP group)."""
    out = pd.DataFrame(index=df.index, columns=OPS, dtype=float)
    keys = ["device", "tp", "n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp"]
    for (dev, tp, nh, nkv, emb, mlp, gated), g in df.groupby(keys):
        dims = ModelDims.from_model(
            num_q_heads=int(nh),
            num_kv_heads=int(nkv),
            embedding_dim=int(emb),
            mlp_hidden_dim=int(mlp),
            use_gated_mlp=bool(gated),
            tensor_parallel_size=int(tp),
        )
        t = linear_op_times_ms(g["num_tokens"].to_numpy(float), dims, get_device_spec(dev), cfg)
        for op in OPS:
            out.loc[g.index, op] = np.broadcast_to(t[op], len(g))
    return out


# ----------------------------------------------------------------------------- calibration
def fit(df: pd.DataFrame, base: RooflinePredictorConfig) -> Dict[str, float]:
    """Least squares on log(pred/measured) over all ops, devices and TP degrees.

    Log residuals weight every op and batch size by relative error, which is what the
    simulator needs (small decode batches matter as much as 4k-token prefills).
    """
    from scipy.optimize import least_squares

    meas = df[OPS].to_numpy(float)

    def residuals(x: np.ndarray) -> np.ndarray:
        cfg = dataclasses.replace(base, **dict(zip(FIT_PARAMS, map(float, x))))
        pred = predict_profiles(df, cfg)[OPS].to_numpy(float)
        return np.log(pred / meas).ravel()

    x0 = np.array([getattr(base, p) for p in FIT_PARAMS], dtype=float)
    lo = np.array([FIT_BOUNDS[p][0] for p in FIT_PARAMS])
    hi = np.array([FIT_BOUNDS[p][1] for p in FIT_PARAMS])
    sol = least_squares(residuals, np.clip(x0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi))
    return {p: float(f"{v:.4g}") for p, v in zip(FIT_PARAMS, sol.x)}


# ----------------------------------------------------------------------------- errors
def _stats(rel: np.ndarray) -> Dict[str, float]:
    return {
        "median": float(np.median(rel)),
        "p90": float(np.quantile(rel, 0.9)),
        "n": int(rel.size),
    }


def error_table(df: pd.DataFrame, pred: pd.DataFrame) -> Dict[str, Dict[str, Dict]]:
    """{device: {tp|"all": {op|"total": {median, p90, n}}}} of |pred - meas| / meas."""
    total_meas = df[OPS].sum(axis=1)
    total_pred = pred[OPS].sum(axis=1)
    table: Dict[str, Dict[str, Dict]] = {}
    for dev in DEVICES:
        table[dev] = {}
        for tp in ["all"] + sorted(df["tp"].unique().tolist()):
            sel = df["device"] == dev
            if tp != "all":
                sel &= df["tp"] == tp
            row = {}
            for op in OPS:
                meas = df.loc[sel, op].to_numpy()
                row[op] = _stats(np.abs(pred.loc[sel, op].to_numpy() - meas) / meas)
            row["total"] = _stats(
                ((total_pred[sel] - total_meas[sel]).abs() / total_meas[sel]).to_numpy()
            )
            # signed bias of the total (median pred/meas - 1): tells over- vs under-prediction
            row["total"]["median_bias"] = float(np.median(total_pred[sel] / total_meas[sel]) - 1)
            table[dev][str(tp)] = row
    return table


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


def measure_speed(n_batches: int = 2000, repeats: int = 5) -> Dict[str, float]:
    """calls/s of the optimised path vs the base class's 14-method path, Llama-2-7B/A100."""
    replica = ReplicaConfig(
        model_name=MODEL,
        device="a100",
        network_device="a100_dgx",
        tensor_parallel_size=2,
        num_pipeline_stages=1,
    )
    pred = RooflineExecutionTimePredictor(RooflinePredictorConfig(), replica, CacheConfig())
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
    # cold: fresh predictor each round (cache misses included)
    t0 = time.perf_counter()
    cold = RooflineExecutionTimePredictor(RooflinePredictorConfig(), replica, CacheConfig())
    for b in batches:
        cold.get_execution_time(b, 0)
    cold_rate = len(batches) / (time.perf_counter() - t0)
    n_prefill = sum(1 for b in batches if b.num_prefill_tokens)
    return {
        "calls_per_s": fast,
        "calls_per_s_cold_cache": cold_rate,
        "calls_per_s_base_class_path": base,
        "speedup_vs_base_class_path": fast / base,
        "n_batches": n_batches,
        "frac_batches_with_prefill": n_prefill / n_batches,
        "mean_requests_per_batch": float(np.mean([len(b.requests) for b in batches])),
    }


# ----------------------------------------------------------------------------- report
def to_markdown(table: Dict, speed: Dict, cfg_vals: Dict, fitted: Dict | None) -> str:
    lines = ["# Roofline predictor vs vidur Llama-2-7B profiles", ""]
    lines += [
        "Relative error |pred - measured| / measured of per-layer op times (profile medians).",
        "`total` = sum of the 9 mapped ops (norms, QKV/out proj, rope, MLP up/act/down, add).",
        "",
        "## Per-layer total",
        "",
        "| device | TP | n | median | P90 | median bias |",
        "|---|---|---|---|---|---|",
    ]
    for dev, rows in table.items():
        for tp, row in rows.items():
            t = row["total"]
            lines.append(
                f"| {dev} | {tp} | {t['n']} | {t['median']:.1%} | {t['p90']:.1%} | "
                f"{t['median_bias']:+.1%} |"
            )
    lines += ["", "## Per op (all TP degrees), median / P90", ""]
    lines.append("| op | " + " | ".join(DEVICES) + " |")
    lines.append("|---|" + "---|" * len(DEVICES))
    for op in OPS + ["total"]:
        cells = [
            f"{table[d]['all'][op]['median']:.1%} / {table[d]['all'][op]['p90']:.1%}"
            for d in DEVICES
        ]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "## Per op and TP degree, median / P90", ""]
    tps = [k for k in table[DEVICES[0]] if k != "all"]
    for dev in DEVICES:
        lines.append(f"### {dev}")
        lines.append("")
        lines.append("| op | " + " | ".join(f"TP{t}" for t in tps) + " |")
        lines.append("|---|" + "---|" * len(tps))
        for op in OPS + ["total"]:
            cells = [
                f"{table[dev][t][op]['median']:.1%} / {table[dev][t][op]['p90']:.1%}" for t in tps
            ]
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
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
        "## Constants in use",
        "",
    ]
    lines += [f"- `{k}` = {v}" for k, v in cfg_vals.items()]
    if fitted is not None:
        lines += ["", "## Fresh fit (--fit)", ""]
        lines += [f"- `{k}` = {v}" for k, v in fitted.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--reference",
        type=Path,
        default=REPO.parent / "shared" / "reference",
        help="reference data dir (default: ../shared/reference relative to the repo root)",
    )
    ap.add_argument("--fit", action="store_true", help="re-run the calibration, print constants")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results")
    args = ap.parse_args()

    try:
        df = load_profiles(args.reference)
    except FileNotFoundError as e:
        print(
            f"error: reference profiles not found ({e}).\n"
            "Pass --reference DIR pointing at a directory containing "
            f"vidur-profiling/compute/{{a100,h100}}/{MODEL}/mlp.csv.",
            file=sys.stderr,
        )
        return 2

    cfg = RooflinePredictorConfig()
    fitted = None
    if args.fit:
        t0 = time.perf_counter()
        fitted = fit(df, cfg)
        print(f"fitted constants ({time.perf_counter() - t0:.1f}s):")
        for k, v in fitted.items():
            print(f"  {k}: float = {v}   (current default {getattr(cfg, k)})")
        cfg = dataclasses.replace(cfg, **fitted)

    table = error_table(df, predict_profiles(df, cfg))
    speed = measure_speed()
    cfg_vals = {p: getattr(cfg, p) for p in FIT_PARAMS}
    md = to_markdown(table, speed, cfg_vals, fitted)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_predictor.md").write_text(md)
        payload = {
            "reference": str(args.reference),
            "model": MODEL,
            "errors": table,
            "speed": speed,
            "constants": dataclasses.asdict(cfg),
            "fitted": fitted,
        }
        (RESULTS / "bench_predictor.json").write_text(json.dumps(payload, indent=2))
        print(f"wrote {RESULTS / 'bench_predictor.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
