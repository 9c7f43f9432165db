"""Roofline formulas: what one operator of a transformer layer costs on one GPU.

Every operator costs about max(FLOPs / compute rate, bytes / HBM rate) + a launch overhead,
with rates = datasheet peak x an efficiency from `RooflinePredictorConfig`. Two refinements
follow the profiles: GEMMs use a soft maximum (compute and weight reads overlap only partly
near the knee), and decode attention's bandwidth efficiency grows with the work it can spread
over the GPU. At small batch a decode step costs at least one read of every weight, because the
GEMM's memory term includes the whole weight matrix.

Functions accept numbers or numpy arrays (the calibration evaluates whole profiles at once).
"""

import math
from typing import Any, Dict, NamedTuple

import numpy as np
from vidur.config import ReplicaConfig

from vidur_ppo.sim.roofline_config import RooflinePredictorConfig

__all__ = [
    "BF16_BYTES",
    "DEVICE_SPECS",
    "DeviceSpec",
    "ModelDims",
    "allreduce_ms",
    "decode_attention_efficiency",
    "get_device_spec",
    "linear_op_times_ms",
]

BF16_BYTES = 2
FLOP_PER_MS_PER_TFLOPS = 1e9  # TFLOP/s -> FLOP/ms
BYTE_PER_MS_PER_GBPS = 1e6  # GB/s -> B/ms


class DeviceSpec(NamedTuple):
    """Datasheet numbers: dense bf16 tensor TFLOP/s, HBM GB/s, GPU-GPU link GB/s per direction."""

    peak_tflops: float
    hbm_gbps: float
    link_gbps: float


# Keys are vidur's `ReplicaConfig.device` strings (DeviceSKUType names, lower case).
DEVICE_SPECS: Dict[str, DeviceSpec] = {
    "a100": DeviceSpec(312.0, 2039.0, 300.0),  # SXM4 80GB, NVLink3 600 GB/s bidirectional
    "h100": DeviceSpec(989.0, 3350.0, 450.0),  # SXM5, NVLink4 900 GB/s bidirectional
    "a40": DeviceSpec(149.7, 696.0, 56.0),  # NVLink bridge 112.5 GB/s bidirectional
    "l40": DeviceSpec(181.0, 864.0, 25.0),  # no NVLink: PCIe Gen4 x16 (effective)
}


def get_device_spec(device: str) -> DeviceSpec:
    """Look up a device; an unknown name fails loudly instead of silently using A100 numbers."""
    key = str(device).lower()
    if key not in DEVICE_SPECS:
        raise ValueError(
            f"Roofline predictor has no specs for device {device!r}; "
            f"supported devices: {', '.join(sorted(DEVICE_SPECS))}"
        )
    return DEVICE_SPECS[key]


class ModelDims(NamedTuple):
    """Per-tensor-parallel-worker model shapes the roofline formulas need."""

    hidden: int  # embedding dim (full: norms, adds and projections' hidden side)
    head_dim: int
    q_heads: int  # per worker
    kv_heads: int  # per worker (ceil, as vidur: KV heads are replicated when tp > kv heads)
    mlp_hidden: int  # per worker
    gated: bool
    post_attn_norm: bool
    tp: int

    @classmethod
    def from_model(
        cls,
        *,
        num_q_heads: int,
        num_kv_heads: int,
        embedding_dim: int,
        mlp_hidden_dim: int,
        use_gated_mlp: bool,
        tensor_parallel_size: int = 1,
        post_attn_norm: bool = True,
    ) -> "ModelDims":
        tp = tensor_parallel_size
        return cls(
            hidden=embedding_dim,
            head_dim=embedding_dim // num_q_heads,
            q_heads=num_q_heads // tp,
            kv_heads=math.ceil(num_kv_heads / tp),
            mlp_hidden=mlp_hidden_dim // tp,
            gated=bool(use_gated_mlp),
            post_attn_norm=bool(post_attn_norm),
            tp=tp,
        )

    @classmethod
    def from_replica_config(cls, replica_config: ReplicaConfig) -> "ModelDims":
        m = replica_config.model_config
        return cls.from_model(
            num_q_heads=m.num_q_heads,
            num_kv_heads=m.num_kv_heads,
            embedding_dim=m.embedding_dim,
            mlp_hidden_dim=m.mlp_hidden_dim,
            use_gated_mlp=m.use_gated_mlp,
            tensor_parallel_size=replica_config.tensor_parallel_size,
            post_attn_norm=getattr(m, "post_attn_norm", True),
        )


def _gemm_ms(m, k, n, dev: DeviceSpec, cfg: RooflinePredictorConfig):
    """[m,k] x [k,n] bf16 GEMM: soft maximum of the compute and the memory time.

    A hard max under-predicts near the knee (64-256 tokens), where cuBLAS's skinny-M kernels
    neither saturate the tensor cores nor stream weights at full rate.
    """
    flops = 2.0 * m * k * n
    nbytes = BF16_BYTES * (m * k + k * n + m * n)
    t_c = flops / (dev.peak_tflops * FLOP_PER_MS_PER_TFLOPS * cfg.gemm_compute_efficiency)
    t_m = nbytes / (dev.hbm_gbps * BYTE_PER_MS_PER_GBPS * cfg.gemm_memory_efficiency)
    p = cfg.gemm_overlap_exponent
    return (t_c**p + t_m**p) ** (1.0 / p) + cfg.gemm_overhead_ms


def _stream_ms(nbytes, eff: float, dev: DeviceSpec, cfg: RooflinePredictorConfig):
    """Memory-bound elementwise kernel."""
    return nbytes / (dev.hbm_gbps * BYTE_PER_MS_PER_GBPS * eff) + cfg.elementwise_overhead_ms


def linear_op_times_ms(
    num_tokens: Any, dims: ModelDims, dev: DeviceSpec, cfg: RooflinePredictorConfig
) -> Dict[str, Any]:
    """Per-layer times (ms) of every token-count-only op, keyed by vidur's profiling op names.

    `num_tokens` may be a number or a numpy array (the calibration fits on arrays).
    """
    m = np.asarray(num_tokens, dtype=np.float64)
    h, hd = dims.hidden, dims.head_dim
    qkv_out = (dims.q_heads + 2 * dims.kv_heads) * hd
    up_out = (2 if dims.gated else 1) * dims.mlp_hidden
    norm = _stream_ms(
        2 * BF16_BYTES * m * h + BF16_BYTES * h, cfg.norm_memory_efficiency, dev, cfg
    )
    act_elems = (3 if dims.gated else 2) * m * dims.mlp_hidden  # read gate+up, write out
    return {
        "input_layernorm": norm,
        "attn_pre_proj": _gemm_ms(m, h, qkv_out, dev, cfg),
        # in-place rotation of q and k: read + write
        "attn_rope": _stream_ms(
            2 * BF16_BYTES * m * (dims.q_heads + dims.kv_heads) * hd,
            cfg.rope_memory_efficiency,
            dev,
            cfg,
        ),
        "attn_post_proj": _gemm_ms(m, dims.q_heads * hd, h, dev, cfg),
        "post_attention_layernorm": norm if dims.post_attn_norm else np.zeros_like(m),
        "mlp_up_proj": _gemm_ms(m, h, up_out, dev, cfg),
        "mlp_act": _stream_ms(BF16_BYTES * act_elems, cfg.act_memory_efficiency, dev, cfg),
        "mlp_down_proj": _gemm_ms(m, dims.mlp_hidden, h, dev, cfg),
        "add": _stream_ms(3 * BF16_BYTES * m * h, cfg.add_memory_efficiency, dev, cfg),
    }


def decode_attention_efficiency(work_items: float, cfg: RooflinePredictorConfig) -> float:
    """HBM efficiency of decode attention over `work_items` (sequence, query-head) pairs.

    The paged-attention kernel runs one thread block per pair: a few pairs leave SMs idle
    (efficiency rises as work / (work + half)), but below a floor the kernel splits each
    sequence across blocks instead, so small batches still stream at the floor rate.
    """
    ramp = cfg.attn_decode_memory_efficiency * work_items / (work_items + cfg.attn_decode_half_work)
    return max(ramp, cfg.attn_decode_min_memory_efficiency)


def allreduce_ms(nbytes: float, n: int, link_gbps: float, cfg: RooflinePredictorConfig) -> float:
    """Ring all-reduce among n GPUs: latency + 2(n-1)/n * bytes / bus bandwidth."""
    if n <= 1:
        return 0.0
    steps = 2 * (n - 1)
    return (
        cfg.allreduce_latency_ms
        + cfg.allreduce_hop_latency_ms * steps
        + (steps / n)
        * nbytes
        / (link_gbps * BYTE_PER_MS_PER_GBPS * cfg.allreduce_bandwidth_efficiency)
    )
