"""Offline roofline execution-time predictor for vidur.

vidur's own predictors (random forest / linear regression) download profiling data and
trained models from Hugging Face, which the training machines cannot reach. This module
replaces them with an analytic roofline model: every operator costs

    max(FLOPs / (peak * compute_eff), bytes / (HBM bandwidth * memory_eff)) + launch overhead

with efficiencies fitted once against vidur's published Llama-2-7B profiles for A100 and H100
(see ``experiments/bench_predictor.py --fit``; the fitted values are the config defaults).
Attention and communication constants have no profile to fit against and are set from public
kernel/NCCL benchmark numbers; they are marked "uncalibrated" below.

Times are milliseconds per transformer layer, as vidur expects (``ExecutionTime`` multiplies
by the layers of a pipeline stage); the pipeline-parallel send time is per stage.

Importing the module registers the predictor with vidur's ``ExecutionTimePredictorRegistry``,
so ``SimulationConfig(execution_time_predictor_config=RooflinePredictorConfig())`` just works.
"""

# No `from __future__ import annotations`: vidur's CLI flattener needs real field types.
import math
from dataclasses import dataclass, field
from typing import Any, Dict, NamedTuple, Union

import numpy as np
from vidur._native.entities import ExecutionTime as ExecutionTimeC
from vidur.config import BaseExecutionTimePredictorConfig, CacheConfig, ReplicaConfig
from vidur.entities import Batch, KVParallelBatch
from vidur.execution_time_predictor import (
    BaseExecutionTimePredictor,
    ExecutionTimePredictorRegistry,
)
from vidur.types import BaseIntEnum

__all__ = [
    "DEVICE_SPECS",
    "DeviceSpec",
    "ModelDims",
    "PredictorType",
    "RooflineExecutionTimePredictor",
    "RooflinePredictorConfig",
    "get_device_spec",
    "linear_op_times_ms",
    "register_predictor",
]


class PredictorType(BaseIntEnum):
    """Registry key; 101 stays clear of vidur's ExecutionTimePredictorType (1..3)."""

    ROOFLINE = 101


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


@dataclass
class RooflinePredictorConfig(BaseExecutionTimePredictorConfig):
    """Calibration constants of the roofline model (defaults = fitted / chosen values).

    GEMM and elementwise constants were fitted jointly on A100 and H100 Llama-2-7B profiles
    (TP 1/2/4/8, 1..4096 tokens) by `experiments/bench_predictor.py --fit`.
    """

    # --- GEMMs (QKV / output projection, MLP up / down): fitted ---
    gemm_compute_efficiency: float = field(
        default=0.7499, metadata={"help": "Fraction of peak tensor FLOP/s a large GEMM reaches."}
    )
    gemm_small_m_tokens: float = field(
        default=105.5,
        metadata={
            "help": "Tokens at which GEMM compute efficiency is halved "
            "(eff(M) = eff * M / (M + this)); models tile/wave under-utilisation."
        },
    )
    gemm_memory_efficiency: float = field(
        default=0.9234, metadata={"help": "Fraction of HBM bandwidth a weight-bound GEMM reaches."}
    )
    gemm_overhead_ms: float = field(
        default=0.006775, metadata={"help": "Fixed per-GEMM kernel overhead (ms)."}
    )
    # --- elementwise kernels: fitted ---
    norm_memory_efficiency: float = field(
        default=0.3895, metadata={"help": "HBM efficiency of RMSNorm / LayerNorm."}
    )
    act_memory_efficiency: float = field(
        default=0.5159, metadata={"help": "HBM efficiency of the (gated) activation."}
    )
    rope_memory_efficiency: float = field(
        default=0.5011, metadata={"help": "HBM efficiency of the rotary embedding kernel."}
    )
    add_memory_efficiency: float = field(
        default=1.0, metadata={"help": "HBM efficiency of the residual add."}
    )
    elementwise_overhead_ms: float = field(
        default=0.001876, metadata={"help": "Fixed per-elementwise-kernel overhead (ms)."}
    )
    # --- attention kernels: uncalibrated (no profile), from FlashAttention-2 / paged-attention
    # --- benchmarks (A100 ~ 0.55, H100 ~ 0.35 of peak for FA2 prefill; decode ~ 60% of HBM) ---
    attn_prefill_compute_efficiency: float = field(
        default=0.45, metadata={"help": "Fraction of peak FLOP/s of prefill (flash) attention."}
    )
    attn_prefill_small_q_tokens: float = field(
        default=128.0,
        metadata={"help": "Chunk length at which prefill attention efficiency is halved."},
    )
    attn_memory_efficiency: float = field(
        default=0.6, metadata={"help": "HBM efficiency of KV-cache reads in attention."}
    )
    attn_overhead_ms: float = field(
        default=0.008, metadata={"help": "Fixed per-attention-kernel overhead (ms)."}
    )
    kv_cache_save_memory_efficiency: float = field(
        default=0.5, metadata={"help": "HBM efficiency of writing new K/V into the paged cache."}
    )
    # --- communication: uncalibrated, from NCCL all-reduce / p2p benchmarks ---
    comm_bandwidth_efficiency: float = field(
        default=0.75, metadata={"help": "Fraction of link bandwidth NCCL reaches."}
    )
    allreduce_latency_ms: float = field(
        default=0.008, metadata={"help": "Fixed GPU latency of a TP all-reduce (ms)."}
    )
    allreduce_hop_latency_ms: float = field(
        default=0.0015, metadata={"help": "Extra latency per ring step, 2*(n-1) steps (ms)."}
    )
    pp_send_latency_ms: float = field(
        default=0.015, metadata={"help": "Fixed latency of a pipeline-stage send/recv (ms)."}
    )
    pcie_gbps: float = field(
        default=25.0,
        metadata={"help": "GB/s between GPUs without NVLink (pairwise nodes) or across nodes."},
    )

    @staticmethod
    def get_type():
        return PredictorType.ROOFLINE


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


_BF16 = 2  # bytes per element


def _gemm_ms(m, k, n, dev: DeviceSpec, cfg: RooflinePredictorConfig):
    """[m,k] x [k,n] bf16 GEMM. Small m is weight-read bound; compute efficiency ramps with m."""
    flops = 2.0 * m * k * n
    nbytes = _BF16 * (m * k + k * n + m * n)
    eff_c = cfg.gemm_compute_efficiency * m / (m + cfg.gemm_small_m_tokens)
    t_c = flops / (dev.peak_tflops * 1e9 * eff_c)  # TFLOP/s * 1e9 = FLOP/ms
    t_m = nbytes / (dev.hbm_gbps * 1e6 * cfg.gemm_memory_efficiency)  # GB/s * 1e6 = B/ms
    return np.maximum(t_c, t_m) + cfg.gemm_overhead_ms


def _stream_ms(nbytes, eff: float, dev: DeviceSpec, cfg: RooflinePredictorConfig):
    """Memory-bound elementwise kernel."""
    return nbytes / (dev.hbm_gbps * 1e6 * eff) + cfg.elementwise_overhead_ms


def linear_op_times_ms(
    num_tokens: Any, dims: ModelDims, dev: DeviceSpec, cfg: RooflinePredictorConfig
) -> Dict[str, Any]:
    """Per-layer times (ms) of every token-count-only op, keyed by vidur's profiling op names.

    `num_tokens` may be a number or a numpy array (the bench fits on arrays).
    """
    m = np.asarray(num_tokens, dtype=np.float64)
    h, hd = dims.hidden, dims.head_dim
    qkv_out = (dims.q_heads + 2 * dims.kv_heads) * hd
    up_out = (2 if dims.gated else 1) * dims.mlp_hidden
    norm = _stream_ms(2 * _BF16 * m * h + _BF16 * h, cfg.norm_memory_efficiency, dev, cfg)
    act_elems = (3 if dims.gated else 2) * m * dims.mlp_hidden  # read gate+up, write out
    return {
        "input_layernorm": norm,
        "attn_pre_proj": _gemm_ms(m, h, qkv_out, dev, cfg),
        # in-place rotation of q and k: read + write
        "attn_rope": _stream_ms(
            2 * _BF16 * m * (dims.q_heads + dims.kv_heads) * hd,
            cfg.rope_memory_efficiency,
            dev,
            cfg,
        ),
        "attn_post_proj": _gemm_ms(m, dims.q_heads * hd, h, dev, cfg),
        "post_attention_layernorm": norm if dims.post_attn_norm else np.zeros_like(m),
        "mlp_up_proj": _gemm_ms(m, h, up_out, dev, cfg),
        "mlp_act": _stream_ms(_BF16 * act_elems, cfg.act_memory_efficiency, dev, cfg),
        "mlp_down_proj": _gemm_ms(m, dims.mlp_hidden, h, dev, cfg),
        "add": _stream_ms(3 * _BF16 * m * h, cfg.add_memory_efficiency, dev, cfg),
    }


def allreduce_ms(nbytes: float, n: int, link_gbps: float, cfg: RooflinePredictorConfig) -> float:
    """Ring all-reduce among n GPUs: latency + 2(n-1)/n * bytes / bus bandwidth."""
    if n <= 1:
        return 0.0
    steps = 2 * (n - 1)
    return (
        cfg.allreduce_latency_ms
        + cfg.allreduce_hop_latency_ms * steps
        + (steps / n) * nbytes / (link_gbps * 1e6 * cfg.comm_bandwidth_efficiency)
    )


class RooflineExecutionTimePredictor(BaseExecutionTimePredictor):
    """vidur execution-time predictor backed by the roofline model (no downloads, no training).

    Token-count-only ops are cached per rounded batch size; attention is a short loop over the
    batch's requests (skipped entirely for pure-decode batches).
    """

    def __init__(
        self,
        predictor_config: RooflinePredictorConfig,
        replica_config: ReplicaConfig,
        cache_config: CacheConfig,
    ) -> None:
        super().__init__(predictor_config, replica_config, cache_config)
        cfg = predictor_config
        self._dev = dev = get_device_spec(replica_config.device)
        self._dims = dims = ModelDims.from_replica_config(replica_config)
        self._tp = tp = replica_config.tensor_parallel_size
        self._num_stages = replica_config.num_pipeline_stages

        # Link bandwidths: pairwise-NVLink nodes only link GPU pairs; wider TP uses PCIe.
        node = str(getattr(replica_config, "network_device", "")).lower()
        per_node = getattr(getattr(replica_config, "node_config", None), "num_devices_per_node", 8)
        self._tp_link_gbps = (
            cfg.pcie_gbps if ("pairwise" in node and tp > 2) or tp > per_node else dev.link_gbps
        )
        self._pp_link_gbps = (
            cfg.pcie_gbps if replica_config.world_size > per_node else dev.link_gbps
        )

        hd = dims.head_dim
        flop_per_ms = dev.peak_tflops * 1e9
        byte_per_ms = dev.hbm_gbps * 1e6
        # Precomputed per-unit costs so the per-batch attention loop is a few multiply-adds.
        # Prefill: 4*hd*q_heads FLOPs per (query, key) pair (QK^T and PV).
        self._prefill_ms_per_pair = 4.0 * hd * dims.q_heads / (
            flop_per_ms * cfg.attn_prefill_compute_efficiency
        )
        self._prefill_q_half = cfg.attn_prefill_small_q_tokens
        # Bytes: K and V per kv token; Q read + O write per query token.
        self._attn_ms_per_kv = 2 * _BF16 * dims.kv_heads * hd / (
            byte_per_ms * cfg.attn_memory_efficiency
        )
        self._attn_ms_per_q = 2 * _BF16 * dims.q_heads * hd / (
            byte_per_ms * cfg.attn_memory_efficiency
        )
        # Decode: compute side (GQA raises intensity) = 4*hd*q_heads per kv token.
        self._decode_flop_ms_per_kv = 4.0 * hd * dims.q_heads / (
            flop_per_ms * cfg.attn_prefill_compute_efficiency
        )
        self._attn_overhead = cfg.attn_overhead_ms
        # KV-cache save: read new K,V and write them to the paged cache.
        self._kv_save_ms_per_token = 2 * 2 * _BF16 * dims.kv_heads * hd / (
            byte_per_ms * cfg.kv_cache_save_memory_efficiency
        )
        self._kv_save_overhead = cfg.elementwise_overhead_ms
        self._token_bytes = _BF16 * dims.hidden  # activation bytes per token (comm)
        self._linear_cache: Dict[int, tuple] = {}

    # ------------------------------------------------------------------ cached linear ops
    def _linear(self, num_tokens_rounded: int) -> tuple:
        """(rope, pre, post, up, down, act, attn_norm, mlp_norm, add, tp_comm, pp_comm)."""
        row = self._linear_cache.get(num_tokens_rounded)
        if row is None:
            t = linear_op_times_ms(num_tokens_rounded, self._dims, self._dev, self._config)
            nbytes = num_tokens_rounded * self._token_bytes
            cfg = self._config
            tp_comm = 0.0
            if self._tp > 1:
                tp_comm = (
                    allreduce_ms(nbytes, self._tp, self._tp_link_gbps, cfg)
                    + cfg.nccl_cpu_launch_overhead_ms
                    + cfg.nccl_cpu_skew_overhead_per_device_ms * self._tp**1.25
                )
            pp_comm = cfg.pp_send_latency_ms + nbytes / (
                self._pp_link_gbps * 1e6 * cfg.comm_bandwidth_efficiency
            )
            row = tuple(
                float(x)
                for x in (
                    t["attn_rope"],
                    t["attn_pre_proj"],
                    t["attn_post_proj"],
                    t["mlp_up_proj"],
                    t["mlp_down_proj"],
                    t["mlp_act"],
                    t["input_layernorm"],
                    t["post_attention_layernorm"],
                    t["add"],
                    tp_comm,
                    pp_comm,
                )
            )
            self._linear_cache[num_tokens_rounded] = row
        return row

    # ------------------------------------------------------------------ attention
    def _attention(self, batch: Batch) -> tuple:
        """(prefill_ms, decode_ms) for one batch; q == 1 rows use the decode kernel."""
        if not batch._num_prefill_tokens:
            # Pure decode (the common case): vidur already summed the kv tokens.
            n = len(batch._num_q_tokens)
            if n == 0:
                return 0.0, 0.0
            return 0.0, self._decode_ms(batch._total_num_kv_tokens, n)

        dec_kv = dec_n = 0
        pre_ms = pre_bytes_ms = 0.0
        q_half = self._prefill_q_half
        per_kv, per_q = self._attn_ms_per_kv, self._attn_ms_per_q
        for q, kv in zip(batch._num_q_tokens, batch._num_kv_tokens):
            if q == 1:
                dec_kv += kv
                dec_n += 1
            elif q > 1:
                # causal chunk after a prefix of (kv - q) tokens
                pairs = q * (kv - q) + 0.5 * q * (q + 1)
                pre_ms += pairs * (q + q_half) / q
                pre_bytes_ms += kv * per_kv + q * per_q
        prefill = 0.0
        if pre_ms:
            prefill = max(pre_ms * self._prefill_ms_per_pair, pre_bytes_ms) + self._attn_overhead
        return prefill, (self._decode_ms(dec_kv, dec_n) if dec_n else 0.0)

    def _decode_ms(self, total_kv: int, n: int) -> float:
        mem = total_kv * self._attn_ms_per_kv + n * self._attn_ms_per_q
        comp = total_kv * self._decode_flop_ms_per_kv
        return (mem if mem > comp else comp) + self._attn_overhead

    # ------------------------------------------------------------------ hot path
    def get_execution_time(
        self, batch: Union[Batch, KVParallelBatch], pipeline_stage: int
    ) -> ExecutionTimeC:
        """Same contract as the base class (native ExecutionTime), ~10x fewer Python calls."""
        if isinstance(batch, KVParallelBatch):
            return max(
                (self.get_execution_time(b, pipeline_stage) for b in batch.batch_mapping.values()),
                key=lambda x: x.total_time,
            )
        lin = self._linear_cache.get(batch._total_num_q_tokens_rounded)
        if lin is None:
            lin = self._linear(batch._total_num_q_tokens_rounded)
        prefill, decode = self._attention(batch)
        return ExecutionTimeC(
            self._num_layers_per_pipeline_stage,
            lin[0],
            batch._total_num_q_tokens * self._kv_save_ms_per_token + self._kv_save_overhead,
            decode,
            prefill,
            lin[1],
            lin[2],
            lin[3],
            lin[4],
            lin[5],
            lin[6],
            lin[7],
            lin[8],
            lin[9],
            0.0 if pipeline_stage == self._num_stages - 1 else lin[10],
        )

    # ------------------------------------------------------------------ abstract API
    def _get_attention_rope_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[0]

    def _get_attention_layer_pre_proj_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[1]

    def _get_attention_layer_post_proj_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[2]

    def _get_mlp_layer_up_proj_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[3]

    def _get_mlp_layer_down_proj_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[4]

    def _get_mlp_layer_act_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[5]

    def _get_attn_norm_layer_act_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[6]

    def _get_mlp_norm_layer_act_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[7]

    def _get_add_layer_act_execution_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[8]

    def _get_tensor_parallel_communication_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[9]

    def _get_pipeline_parallel_communication_time(self, batch: Batch) -> float:
        return self._linear(batch.total_num_q_tokens_rounded)[10]

    def _get_attention_kv_cache_save_execution_time(self, batch: Batch) -> float:
        return batch.total_num_q_tokens * self._kv_save_ms_per_token + self._kv_save_overhead

    def _get_attention_decode_execution_time(self, batch: Batch) -> float:
        return self._attention(batch)[1]

    def _get_attention_prefill_execution_time(self, batch: Batch) -> float:
        return self._attention(batch)[0]

    def _get_kv_parallel_communication_time(self, batch: Batch) -> float:
        """All-reduce of partial attention outputs across the KV-parallel groups of a request."""
        groups = batch.num_active_kvp_groups
        if self._config.disable_kvp_communication or not groups:
            return 0.0
        total = 0.0
        for q, n in zip(batch.num_q_tokens, groups):
            if q and n > 1:
                total += allreduce_ms(
                    (q + 7) // 8 * 8 * self._token_bytes, n, self._pp_link_gbps, self._config
                ) + self._config.nccl_cpu_launch_overhead_ms
        return total

    def to_dict(self) -> Dict[str, Any]:
        """Identity of this predictor (some vidur schedulers hash it for their caches)."""
        return {
            "model_provider": str(self._config.get_type()),
            "model_name": self._replica_config.model_name,
            "device": str(self._replica_config.device),
            "tensor_parallel_size": self._tp,
            "num_pipeline_stages": self._num_stages,
            "block_size": self._block_size,
        }


def register_predictor() -> None:
    """Register (or re-register after a module reload) the roofline predictor with vidur."""
    registry = ExecutionTimePredictorRegistry._registry
    if registry.get(PredictorType.ROOFLINE) is not RooflineExecutionTimePredictor:
        registry.pop(PredictorType.ROOFLINE, None)
        ExecutionTimePredictorRegistry.register(
            PredictorType.ROOFLINE, RooflineExecutionTimePredictor
        )


register_predictor()
