"""Tests of the roofline formulas (vidur_ppo.sim.roofline) and their constants."""

import dataclasses

import numpy as np
import pytest
from vidur.config import BaseExecutionTimePredictorConfig

from vidur_ppo.sim.predictor import RooflinePredictorConfig as ReexportedConfig
from vidur_ppo.sim.roofline import (
    ModelDims,
    allreduce_ms,
    decode_attention_efficiency,
    get_device_spec,
    linear_op_times_ms,
)
from vidur_ppo.sim.roofline_config import RooflinePredictorConfig

CFG = RooflinePredictorConfig()
LLAMA2_TP1 = ModelDims.from_model(
    num_q_heads=32, num_kv_heads=32, embedding_dim=4096, mlp_hidden_dim=11008,
    use_gated_mlp=True,
)


def test_config_reexported_and_every_constant_documented():
    assert ReexportedConfig is RooflinePredictorConfig
    inherited = {f.name for f in dataclasses.fields(BaseExecutionTimePredictorConfig)}
    own = [f for f in dataclasses.fields(RooflinePredictorConfig) if f.name not in inherited]
    assert len(own) >= 20
    for f in own:
        assert isinstance(f.default, float) and len(f.metadata.get("help", "")) > 20, f.name


def test_decode_efficiency_has_floor_and_physical_ceiling():
    work = np.array([1, 32, 256, 1024, 4096, 10**6], dtype=float)
    eff = np.array([decode_attention_efficiency(w, CFG) for w in work])
    assert np.all(np.diff(eff) >= 0)
    assert eff[0] == CFG.attn_decode_min_memory_efficiency
    assert eff[-1] <= CFG.attn_decode_memory_efficiency <= 1.0
    # the profiled kernel: ~0.6 of HBM at batch <= 8, 0.8-0.98 at batch >= 64 (32 heads)
    assert 0.55 <= decode_attention_efficiency(8 * 32, CFG) <= 0.7
    assert 0.8 <= decode_attention_efficiency(64 * 32, CFG) <= 1.0


@pytest.mark.parametrize("device", ["a100", "h100", "a40", "l40"])
def test_gemm_is_a_soft_roofline(device):
    """Never faster than either the compute or the memory bound, near the max far from the knee."""
    dev = get_device_spec(device)
    tokens = np.array([1.0, 8, 64, 128, 256, 1024, 4096])
    up = linear_op_times_ms(tokens, LLAMA2_TP1, dev, CFG)["mlp_up_proj"] - CFG.gemm_overhead_ms
    k, n = 4096, 2 * 11008
    t_c = 2 * tokens * k * n / (dev.peak_tflops * 1e9 * CFG.gemm_compute_efficiency)
    t_m = 2 * (tokens * k + k * n + tokens * n) / (dev.hbm_gbps * 1e6 * CFG.gemm_memory_efficiency)
    assert np.all(up >= np.maximum(t_c, t_m) - 1e-12)
    assert up[0] == pytest.approx(t_m[0], rel=0.02)  # 1 token: one read of the weights
    assert up[-1] == pytest.approx(t_c[-1], rel=0.3)  # 4k tokens: compute bound


def test_allreduce_grows_with_size_and_workers():
    t = [allreduce_ms(s, 2, 300.0, CFG) for s in (8192, 2**20, 2**24)]
    assert allreduce_ms(2**20, 1, 300.0, CFG) == 0.0
    assert t[0] >= CFG.allreduce_latency_ms and np.all(np.diff(t) > 0)
    assert allreduce_ms(2**24, 8, 300.0, CFG) > t[-1]
