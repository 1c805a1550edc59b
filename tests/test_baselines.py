"""The PyTorch baselines the ops time their kernels against, and the moe op's router, against the
float64 references: bounds tighter than the correctness gate's (tests/test_ops.py), from the
roundings each baseline makes."""

from __future__ import annotations

import pytest
import torch
from kernelcheck import rel_err
from test_activation_kernel import _gate_up
from test_kvcache_kernel import FP8_TOL, _case, _check_exact, _written
from test_moe_kernel import EMPTY_EXPERT_IDS, _layer, _routing
from test_rotary_kernel import _inputs as _rotary_inputs

from bench.measure.ops import get_op
from bench.measure.ops.base import Unsupported
from bench.measure.ops.kv_write import write_kv_torch
from bench.measure.ops.moe import grouped_mm_unsupported, moe_grouped_mm, moe_loop, route
from bench.measure.ops.rotary import rotary_torch
from bench.measure.ops.silu_mul import silu_mul_torch
from kernels.checks import FP8_DTYPE
from kernels.reference import fused_moe_ref, rotary_ref, silu_mul_ref, write_kv_ref

DTYPES = [torch.float16, torch.bfloat16, torch.float32]

# The MoE baselines round gate_up, h, the down product and (the loop) each index_add_: about
# five roundings, ~5e-4 (fp16) and ~5e-3 (bf16) measured; fp32 matmuls run in IEEE fp32.
MOE_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2, torch.float32: 1e-5}
# silu_mul rounds silu(gate) to the dtype, then the product: two roundings (PyTorch rounds bf16
# to nearest). fp32: a CPU's or GPU's exp and division are a few ulp (2^-24) each.
SILU_TOL = {torch.float16: 2.2 * 2**-11, torch.bfloat16: 2.2 * 2**-8, torch.float32: 2**-19}
# rotary rounds cos/sin to the dtype, each product and the sum: four roundings, each bounded by u
# times a term no larger than |x1| + |x2|.
ROTARY_TOL = {torch.float16: 5 * 2**-11, torch.bfloat16: 5 * 2**-8, torch.float32: 2**-20}


# ------------------------------------------------------------------------------------- moe


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_moe_loop_matches_reference(dtype: torch.dtype, device) -> None:
    x, w_gate_up, w_down = _layer(37, 72, 48, 4, dtype, device)
    weights, ids = _routing(37, 4, 2, device)
    out = moe_loop(x, w_gate_up, w_down, weights, ids)
    assert out.shape == x.shape and out.dtype == dtype
    assert rel_err(out, fused_moe_ref(x, w_gate_up, w_down, weights, ids)) < MOE_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_moe_grouped_mm_matches_reference(dtype: torch.dtype, device) -> None:
    if reason := grouped_mm_unsupported(device, dtype):
        pytest.skip(reason)
    x, w_gate_up, w_down = _layer(37, 72, 48, 4, dtype, device)
    ids = torch.tensor(EMPTY_EXPERT_IDS["expert-2-empty"] * 4 + [[0, 1]], device=device)
    weights = _routing(37, 4, 2, device)[0]
    out = moe_grouped_mm(x, w_gate_up, w_down, weights, ids)
    assert out.shape == x.shape and out.dtype == dtype
    assert rel_err(out, fused_moe_ref(x, w_gate_up, w_down, weights, ids)) < MOE_TOL[dtype]


def test_grouped_mm_unsupported_reasons(monkeypatch) -> None:
    assert "dtype torch.int8" in grouped_mm_unsupported("cpu", torch.int8)
    assert "CUDA or CPU" in grouped_mm_unsupported("meta")
    monkeypatch.delattr(torch, "_grouped_mm", raising=False)
    assert grouped_mm_unsupported("cpu") == "torch has no _grouped_mm (it needs torch 2.8 or later)"


def test_grouped_mm_declines_misaligned_rows(device) -> None:
    if grouped_mm_unsupported(device, torch.float32) is not None:
        pytest.skip("no torch._grouped_mm here")
    x, w_gate_up, w_down = _layer(5, 6, 8, 4, torch.float32, device)  # 6·4 bytes: misaligned
    weights, ids = _routing(5, 4, 2, device)
    inputs = {"x": x, "w_gate_up": w_gate_up, "w_down": w_down, "topk_weights": weights,
              "topk_ids": ids}  # fmt: skip
    with pytest.raises(Unsupported, match="16 bytes"):
        get_op("moe").impl("grouped_mm").prepare(inputs)


def test_route_shapes_and_weights() -> None:
    weights, ids = route(500, 8, 3, 0.5, torch.Generator().manual_seed(5))
    assert weights.shape == ids.shape == (500, 3)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int64
    assert ((ids >= 0) & (ids < 8)).all()
    assert all(len(set(row)) == 3 for row in ids.tolist())  # distinct experts per token
    assert (weights > 0).all() and torch.allclose(weights.sum(-1), torch.ones(500))
    assert (weights[:, :-1] >= weights[:, 1:]).all()  # sorted, slot 0 the heaviest
    again = route(500, 8, 3, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(again[0], weights) and torch.equal(again[1], ids)
    empty = route(0, 8, 3, 0.5, torch.Generator())
    assert empty[0].shape == empty[1].shape == (0, 3)


def test_route_uniform_and_zipf_frequencies() -> None:
    gen = torch.Generator().manual_seed(6)
    uniform = torch.bincount(route(6000, 8, 2, 0.0, gen)[1].flatten(), minlength=8)
    assert (uniform - 1500).abs().max() < 150  # 12000 draws over 8 experts, sd ~ 36
    # With top_k = 1 expert e is drawn with probability exactly (e + 1)^-s / Σ (j + 1)^-s.
    for skew in (1.0, 2.5):
        ids = route(20000, 8, 1, skew, gen)[1]
        freq = torch.bincount(ids.flatten(), minlength=8) / 20000
        expected = (torch.arange(8) + 1.0) ** -skew
        assert (freq - expected / expected.sum()).abs().max() < 0.012, skew  # sd < 0.0036
    every = route(50, 4, 4, 3.0, gen)[1]  # top_k = E: every token gets every expert
    assert (every.sort(dim=1).values == torch.arange(4)).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 4, 5, 0.0), "top_k 5 unsupported with 4 experts"),
        ((4, 4, 0, 0.0), "top_k 0 unsupported"),
        ((4, 4, 2, -1.0), "skew must be a finite number >= 0"),
        ((4, 4, 2, float("inf")), "skew must be a finite"),
        ((-1, 4, 2, 0.0), "num_tokens must be an int >= 0"),
    ],
)
def test_route_refuses_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=f"^route: {message}"):
        route(*args)


# ----------------------------------------------------------------------------- row baselines


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_silu_mul_torch_matches_reference(dtype: torch.dtype, device) -> None:
    gate_up = _gate_up(5, 1000, dtype, device)
    out = silu_mul_torch(gate_up)
    assert out.dtype == dtype and out.shape == (5, 1000)
    assert rel_err(out, silu_mul_ref(gate_up)) < SILU_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rotary_torch_matches_reference(dtype: torch.dtype, device) -> None:
    q, k, positions, cache = _rotary_inputs(7, 4, 2, 80, dtype, device)
    q_out, k_out = rotary_torch(q, k, positions, cache)
    q_ref, k_ref = rotary_ref(q, k, positions, cache)
    assert q_out.dtype == q.dtype
    assert rel_err(q_out, q_ref) < ROTARY_TOL[dtype]
    assert rel_err(k_out, k_ref) < ROTARY_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_write_kv_torch_matches_reference(dtype: torch.dtype, device) -> None:
    _check_exact(*_case(20, 3, 96, 8, 16, dtype, dtype, device), write=write_kv_torch)


def test_write_kv_torch_fp8_matches_reference(device) -> None:
    k, v, k_cache, v_cache, slots = _case(7, 2, 80, 4, 5, torch.bfloat16, FP8_DTYPE, device)
    scale = torch.tensor([0.02], device=device)
    refs = write_kv_ref(k, v, k_cache, v_cache, slots, k_scale=scale, v_scale=scale)
    write_kv_torch(k, v, k_cache, v_cache, slots, k_scale=scale, v_scale=scale)
    rows = _written(k_cache, slots)
    for cache, ref in zip((k_cache, v_cache), refs, strict=True):
        assert rel_err(cache[rows], ref[rows]) < FP8_TOL


# ---------------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_gpu_moe_baselines_bf16(device) -> None:
    """Qwen1.5-MoE-A2.7B's layer (60 experts, top-4), Zipf-skewed."""
    x, w_gate_up, w_down = _layer(300, 2048, 1408, 60, torch.bfloat16, device)
    weights, ids = _routing(300, 60, 4, device, skew=1.2)
    ref = fused_moe_ref(x, w_gate_up, w_down, weights, ids)
    assert rel_err(moe_loop(x, w_gate_up, w_down, weights, ids), ref) < MOE_TOL[torch.bfloat16]
    if reason := grouped_mm_unsupported(device, torch.bfloat16):
        pytest.skip(reason)
    out = moe_grouped_mm(x, w_gate_up, w_down, weights, ids)
    assert rel_err(out, ref) < MOE_TOL[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_row_baselines_at_llm_sizes(dtype: torch.dtype, device) -> None:
    gate_up = _gate_up(4096, 14336, dtype, device)
    assert rel_err(silu_mul_torch(gate_up), silu_mul_ref(gate_up)) < SILU_TOL[dtype]
    q, k, positions, cache = _rotary_inputs(4096, 32, 8, 128, dtype, device)
    outs, refs = rotary_torch(q, k, positions, cache), rotary_ref(q, k, positions, cache)
    for out, ref in zip(outs, refs, strict=True):
        assert rel_err(out, ref) < ROTARY_TOL[dtype]
    _check_exact(*_case(4096, 8, 128, 512, 16, dtype, dtype, device), write=write_kv_torch)
