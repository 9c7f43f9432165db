"""Calibration constants of the offline roofline execution-time model, with their sources.

One place per constant: every efficiency, overhead and exponent the model uses is a field of
`RooflinePredictorConfig` (so vidur's CLI and `env.predictor_options` can override it), and
its comment says where the default comes from. "Fitted" values are the output of
`python experiments/bench_predictor.py --fit` (`vidur_ppo.sim.calibration`), which refits them
against vidur's published Llama-2-7B profiles in `../shared/reference`.
"""

# No `from __future__ import annotations`: vidur's CLI flattener needs real field types.
from dataclasses import dataclass, field

from vidur.config import BaseExecutionTimePredictorConfig
from vidur.types import BaseIntEnum

__all__ = ["PredictorType", "RooflinePredictorConfig"]


class PredictorType(BaseIntEnum):
    """Registry key; 101 stays clear of vidur's ExecutionTimePredictorType (1..3)."""

    ROOFLINE = 101


def _const(default: float, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class RooflinePredictorConfig(BaseExecutionTimePredictorConfig):
    """Calibration constants of the roofline model (defaults = fitted / measured values)."""

    # --- GEMMs (QKV / output projection, MLP up / down) ---
    # Fitted on mlp.csv of A100, H100 and A40 (TP 1/2/4/8, 1..4096 tokens), every octave of
    # batch size weighted alike so the decode range (1-128 tokens) counts as much as prefill.
    gemm_compute_efficiency: float = _const(
        0.7837, "Fraction of peak tensor FLOP/s a large GEMM reaches (fitted)."
    )
    gemm_memory_efficiency: float = _const(
        0.8308, "Fraction of HBM bandwidth a weight-read-bound GEMM reaches (fitted)."
    )
    gemm_overlap_exponent: float = _const(
        1.242,
        "p of the soft roofline t = (t_compute^p + t_memory^p)^(1/p): large p is the hard "
        "max, p = 1 no overlap; small p makes the 64-256-token knee gradual (fitted).",
    )
    gemm_overhead_ms: float = _const(0.003963, "Fixed per-GEMM kernel overhead in ms (fitted).")
    # --- elementwise kernels: fitted with the GEMMs ---
    norm_memory_efficiency: float = _const(0.4413, "HBM efficiency of RMSNorm / LayerNorm.")
    act_memory_efficiency: float = _const(0.5887, "HBM efficiency of the (gated) activation.")
    rope_memory_efficiency: float = _const(0.6102, "HBM efficiency of the rotary embedding.")
    add_memory_efficiency: float = _const(1.0, "HBM efficiency of the residual add.")
    elementwise_overhead_ms: float = _const(0.002637, "Fixed per-elementwise-kernel overhead (ms).")
    # --- decode attention: fitted to ../shared/reference/decode_targets.md (Vidur's profiled
    # --- paged-attention kernel, Llama-2-7B/A100: ~0.6 of HBM at batch <= 8, 0.80-0.98 at >= 64)
    attn_decode_memory_efficiency: float = _const(
        1.0,
        "HBM efficiency decode attention approaches at large batch (fitted; at its bound: "
        "the profiled kernel reaches 0.98 at batch 128 x 2048).",
    )
    attn_decode_half_work: float = _const(
        137.4,
        "(sequence, query-head) pairs at which decode attention reaches half that "
        "efficiency: the kernel runs one block per pair, too few leave SMs idle (fitted).",
    )
    attn_decode_min_memory_efficiency: float = _const(
        0.6508,
        "Floor of the decode-attention HBM efficiency at small batch (fitted; the kernel "
        "splits long sequences across SMs when there are few of them).",
    )
    attn_overhead_ms: float = _const(
        0.02152, "Fixed per-attention-kernel overhead in ms (fitted on the decode targets)."
    )
    # --- prefill attention: uncalibrated (no profile), FlashAttention-2 benchmarks (A100 ~0.55,
    # --- H100 ~0.35 of peak); checked end to end against TensorRT-LLM's first-token latency ---
    attn_prefill_compute_efficiency: float = _const(
        0.45, "Fraction of peak FLOP/s of prefill (flash) attention."
    )
    attn_prefill_small_q_tokens: float = _const(
        128.0, "Chunk length at which prefill attention efficiency is halved."
    )
    attn_prefill_memory_efficiency: float = _const(
        0.6, "HBM efficiency of the KV reads of prefill (chunked) attention."
    )
    kv_cache_save_memory_efficiency: float = _const(
        0.5, "HBM efficiency of writing new K/V into the paged cache (vidur omits it from totals)."
    )
    # --- tensor-parallel all-reduce: fitted on the in-node NCCL all-reduce profiles
    # --- (network/{a100_dgx,h100_dgx}/all_reduce.csv, 2/4/8 GPUs, 2 KB..64 MB), GPU time only:
    # --- vidur's `nccl_cpu_launch_overhead_ms` is added on top, as vidur does with the profiles
    allreduce_bandwidth_efficiency: float = _const(
        0.5911, "Fraction of NVLink bandwidth a ring all-reduce reaches (fitted)."
    )
    allreduce_latency_ms: float = _const(0.031, "Fixed GPU latency of a TP all-reduce (fitted).")
    allreduce_hop_latency_ms: float = _const(
        5.844e-05, "Extra latency per ring step, 2*(n-1) steps (fitted)."
    )
    # --- pipeline send/recv: NCCL p2p benchmarks; send_recv.csv agrees (A100 pair: 0.008 ms at
    # --- 2 KB, 0.76 of NVLink at 64 MB) ---
    comm_bandwidth_efficiency: float = _const(
        0.75, "Fraction of link bandwidth an NCCL send/recv reaches."
    )
    pp_send_latency_ms: float = _const(0.015, "Fixed latency of a pipeline-stage send/recv (ms).")
    pcie_gbps: float = _const(
        25.0, "GB/s between GPUs without NVLink (pairwise nodes) or across nodes."
    )

    @staticmethod
    def get_type():
        return PredictorType.ROOFLINE
