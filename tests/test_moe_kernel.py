"""The fused MoE kernels and their alignment against the float64 reference (the baselines and
the router are the moe op's: tests/test_baselines.py).

Without CUDA the kernels run in Triton's CPU interpreter with BLOCK_M = 16 and one 32×32 tile
config, so the CPU shapes (all < 100) straddle block and tile edges, give experts several blocks
and stay fast. GPU-only tests (bfloat16, Mixtral- and Qwen-MoE-sized layers) are marked ``gpu``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from bench.measure.ops.moe import route
from kernels import HOPPER_SMEM, fp8_unsupported, interpreted, moe
from kernels.autotune import TUNINGS
from kernels.moe import (
    GPU_CONFIGS,
    _moe_gemm_kernel,
    _select,
    _smem_bytes,
    choose_block_m,
    fused_moe,
    moe_align,
    moe_gemm,
)
from kernels.reference import fused_moe_ref

# Relative Frobenius error bounds for the Triton path. x and the weights are the reference's
# inputs, so only the kernel's roundings count: h = SiLU(gate)·up rounded to the dtype, each
# (token, slot) output rounded, their sum rounded: three roundings of at most 2^-11 (fp16) or
# 2^-8 (bf16) relative each, ~4e-4 and ~3e-3 measured. fp32 dots are exact in the interpreter
# (only fp32 accumulation, ~1e-7) and tf32 on a GPU (10-bit mantissa inputs, twice over).
# Any real bug (wrong expert, slot, routing weight, gate/up swap, lost K tail) is O(0.1) or more.
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def tol(dtype: torch.dtype) -> float:
    if dtype == torch.float32:
        return 1e-5 if interpreted() else 5e-3
    return HALF_TOL[dtype]


CPU_DTYPES = [torch.float16, torch.float32]

# (T, H, I, E, top_k): one token; T, H and I off the 16-row block and 32-wide tiles with two
# blocks per expert; top_k = E; top_k = 1 with E = 3; more experts than pairs fill (some empty).
SHAPES = [
    (1, 40, 24, 4, 2),
    (37, 72, 48, 4, 2),
    (20, 32, 64, 4, 4),
    (13, 24, 40, 3, 1),
    (6, 16, 16, 8, 2),
]


def _randn(shape: tuple[int, ...], gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * scale


def _layer(
    tokens: int,
    hidden: int,
    inter: int,
    experts: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (T, H) and weights scaled by 1/sqrt(fan-in), so every stage is O(1)."""
    gen = torch.Generator().manual_seed(seed)
    x = _randn((tokens, hidden), gen)
    w_gate_up = _randn((experts, 2 * inter, hidden), gen, hidden**-0.5)
    w_down = _randn((experts, hidden, inter), gen, inter**-0.5)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, w_gate_up, w_down))


def _routing(
    tokens: int, experts: int, top_k: int, device: torch.device, skew: float = 0.0, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    weights, ids = route(tokens, experts, top_k, skew, torch.Generator().manual_seed(seed))
    return weights.to(device), ids.to(device)


def _check(x, w_gate_up, w_down, weights, ids, bound: float, w_scales=None) -> torch.Tensor:
    out = fused_moe(x, w_gate_up, w_down, weights, ids, w_scales=w_scales)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    assert out.device == x.device
    err = rel_err(out, fused_moe_ref(x, w_gate_up, w_down, weights, ids, w_scales))
    assert err < bound, f"relative error {err:.3g} >= {bound:g}"
    return out


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape: tuple[int, ...], dtype: torch.dtype, device) -> None:
    tokens, hidden, inter, experts, top_k = shape
    x, w_gate_up, w_down = _layer(tokens, hidden, inter, experts, dtype, device)
    _check(x, w_gate_up, w_down, *_routing(tokens, experts, top_k, device), tol(dtype))


# Hand-made routings, E = 4: expert 2 never chosen, token 4 sends both slots to expert 3; and
# every token to expert 3 alone (three blocks of one expert, three empty experts).
EMPTY_EXPERT_IDS = {
    "expert-2-empty": [[0, 1], [1, 3], [3, 0], [0, 1], [3, 3], [1, 0], [0, 3], [3, 1], [1, 0]],
    "one-expert": [[3]] * 40,
}


@pytest.mark.parametrize("ids", EMPTY_EXPERT_IDS.values(), ids=EMPTY_EXPERT_IDS.keys())
def test_experts_without_tokens(ids: list[list[int]], device) -> None:
    topk_ids = torch.tensor(ids, device=device)
    tokens, top_k = topk_ids.shape
    x, w_gate_up, w_down = _layer(tokens, 40, 24, 4, torch.float16, device)
    unused = sorted(set(range(4)) - set(topk_ids.flatten().tolist()))
    # NaN weights for the experts nobody chose: any block given to them would poison the output.
    w_gate_up[unused] = float("nan")
    w_down[unused] = float("nan")
    gen = torch.Generator().manual_seed(2)
    weights = torch.softmax(_randn((tokens, top_k), gen), dim=-1).to(device)
    out = _check(x, w_gate_up, w_down, weights, topk_ids, tol(torch.float16))
    assert torch.isfinite(out).all()
    _, expert_ids, _ = moe_align(topk_ids, 4, choose_block_m(tokens * top_k, 4))
    assert not set(unused) & set(expert_ids.tolist())


def test_no_tokens(device) -> None:
    x, w_gate_up, w_down = _layer(0, 24, 16, 4, torch.float16, device)
    weights, ids = _routing(0, 4, 2, device)
    out = fused_moe(x, w_gate_up, w_down, weights, ids)
    assert out.shape == (0, 24) and out.dtype == torch.float16
    out = moe_gemm(x, w_gate_up, ids, gated=True)
    assert out.shape == (0, 2, 16)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_strided_inputs(dtype: torch.dtype, device) -> None:
    """x a transposed view, w_gate_up transposed, w_down a column slice, the routing slices
    of wider tensors: strides go to the kernel, nothing is copied."""
    tokens, hidden, inter, experts, top_k = 21, 40, 24, 4, 2
    x, w_gate_up, w_down = _layer(tokens, hidden, inter, experts, dtype, device)
    x = x.t().contiguous().t()
    w_gate_up = w_gate_up.transpose(1, 2).contiguous().transpose(1, 2)
    wide = torch.zeros((experts, hidden, 2 * inter), dtype=dtype, device=device)
    wide[:, :, ::2] = w_down
    w_down = wide[:, :, ::2]
    weights, ids = _routing(tokens, experts, 2 * top_k, device)
    weights, ids = weights[:, ::2], ids[:, ::2]
    assert not any(t.is_contiguous() for t in (x, w_gate_up, w_down, weights, ids))
    _check(x, w_gate_up, w_down, weights, ids, tol(dtype))


def test_skewed_routing(device) -> None:
    tokens, experts = 48, 8
    weights, ids = _routing(tokens, experts, 2, device, skew=2.0)
    counts = torch.bincount(ids.flatten().cpu(), minlength=experts)
    assert counts[0] > 3 * counts[-1]  # the hot expert spans several blocks, the cold ones one
    x, w_gate_up, w_down = _layer(tokens, 32, 32, experts, torch.float16, device)
    _check(x, w_gate_up, w_down, weights, ids, tol(torch.float16))


def test_routing_weights_are_per_slot(device) -> None:
    """Swapping a token's two slots (ids and weights together) changes nothing; swapping only
    the weights does: the kernel reads each pair's own weight."""
    x, w_gate_up, w_down = _layer(17, 32, 32, 4, torch.float32, device)
    weights, ids = _routing(17, 4, 2, device)
    out = fused_moe(x, w_gate_up, w_down, weights, ids)
    swapped = fused_moe(x, w_gate_up, w_down, weights.flip(1), ids.flip(1))
    assert torch.allclose(out, swapped, rtol=1e-5, atol=1e-5)
    wrong = fused_moe(x, w_gate_up, w_down, weights.flip(1), ids)
    assert rel_err(wrong, fused_moe_ref(x, w_gate_up, w_down, weights, ids)) > 0.05


def _gemm_ref(a, w, ids, weights=None, gated=False) -> torch.Tensor:
    """Float64 (T, top_k, N): each (token, slot) row times its expert's weight, gathered."""
    rows = a.double() if a.dim() == 3 else a.double()[:, None, :].expand(-1, ids.shape[1], -1)
    out = torch.einsum("tsk,tsnk->tsn", rows, w.double()[ids])
    if gated:
        gate, up = out.chunk(2, dim=-1)
        out = torch.nn.functional.silu(gate) * up
    return out if weights is None else out * weights.double()[..., None]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_moe_gemm_per_token_rows_routed(dtype: torch.dtype, device) -> None:
    gen = torch.Generator().manual_seed(3)
    a = _randn((19, 45), gen).to(device=device, dtype=dtype)
    w = _randn((4, 37, 45), gen, 45**-0.5).to(device=device, dtype=dtype)
    weights, ids = _routing(19, 4, 3, device)
    out = moe_gemm(a, w, ids, topk_weights=weights)
    assert out.shape == (19, 3, 37) and out.dtype == dtype
    assert rel_err(out, _gemm_ref(a, w, ids, weights)) < tol(dtype)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_moe_gemm_per_pair_rows_gated(dtype: torch.dtype, device) -> None:
    gen = torch.Generator().manual_seed(4)
    a = _randn((11, 2, 40), gen).to(device=device, dtype=dtype)
    w = _randn((3, 2 * 33, 40), gen, 40**-0.5).to(device=device, dtype=dtype)
    ids = _routing(11, 3, 2, device)[1]
    out = moe_gemm(a, w, ids, gated=True)
    assert out.shape == (11, 2, 33)
    assert rel_err(out, _gemm_ref(a, w, ids, gated=True)) < tol(dtype)


def _fp8_layer(tokens: int, hidden: int, inter: int, experts: int, dtype, device, per_expert: bool):
    """fp8 weights quantised per expert (amax / 448) or per tensor, and their fp32 scales."""
    x, w_gate_up, w_down = _layer(tokens, hidden, inter, experts, torch.float32, device)

    def quantise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amax = w.abs().amax(dim=(1, 2)) if per_expert else w.abs().amax().reshape(1)
        scale = (amax / 448.0).float()
        return (w / scale.reshape(-1, 1, 1)).to(torch.float8_e4m3fn), scale

    (w1, s1), (w2, s2) = quantise(w_gate_up), quantise(w_down)
    return x.to(dtype), w1, w2, (s1, s2)


@pytest.mark.skipif(not interpreted(), reason="CPU interpreter path; the GPU has its own tests")
@pytest.mark.parametrize("per_expert", [True, False], ids=["per-expert", "per-tensor"])
def test_fp8_weights_under_interpreter(per_expert: bool) -> None:
    cpu = torch.device("cpu")
    x, w1, w2, scales = _fp8_layer(37, 72, 48, 4, torch.float16, cpu, per_expert)
    if per_expert:
        assert not torch.allclose(scales[0], scales[0][0])  # a swapped expert would show
    weights, ids = _routing(37, 4, 2, cpu)
    out = fused_moe(x, w1, w2, weights, ids, w_scales=scales)
    # Dequantising e4m3 into fp16 is exact: the fp16 bound holds.
    err = rel_err(out, fused_moe_ref(x, w1, w2, weights, ids, scales))
    assert err < tol(torch.float16), err


@pytest.mark.skipif(not interpreted(), reason="only the CPU interpreter mishandles bf16")
def test_bf16_refused_under_interpreter(device) -> None:
    x, w_gate_up, w_down = _layer(4, 16, 16, 4, torch.bfloat16, device)
    weights, ids = _routing(4, 4, 2, device)
    with pytest.raises(ValueError, match=r"^moe: bfloat16 .* interpreter"):
        fused_moe(x, w_gate_up, w_down, weights, ids)


@pytest.mark.gpu
def test_fp8_refused_where_unsupported(device) -> None:
    capability = torch.cuda.get_device_capability(device)
    if fp8_unsupported("cuda", capability, rocm=torch.version.hip is not None) is None:
        pytest.skip("this device supports fp8")
    x, w1, w2, scales = _fp8_layer(4, 32, 16, 4, torch.float16, device, True)
    weights, ids = _routing(4, 4, 2, device)
    with pytest.raises(ValueError, match=r"^moe: fp8 weights: fp8 needs"):
        fused_moe(x, w1, w2, weights, ids, w_scales=scales)


@VIEWS
@given(
    data=st.data(),
    shape=st.tuples(st.integers(0, 20), st.integers(1, 40), st.integers(1, 40)),
    experts=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    fp8=st.sampled_from([None, "per-expert", "per-tensor"]),
)
def test_any_views_of_every_argument(data, shape: tuple, experts: tuple, fp8: str | None) -> None:
    """x, both weights, the routing and the fp8 scales all random views whose neighbours are
    poisoned (NaN weights, ids out of range), against float64."""
    tokens, hidden, inter = shape
    top_k, num_experts = min(experts), max(experts)
    cpu = torch.device("cpu")
    if fp8 is None:
        layer, scales = _layer(tokens, hidden, inter, num_experts, torch.float32, cpu), None
    else:
        *layer, scales = _fp8_layer(
            tokens, hidden, inter, num_experts, torch.float16, cpu, fp8 == "per-expert"
        )
        scales = tuple(data.draw(views(s)) for s in scales)
    weights, ids = _routing(tokens, num_experts, top_k, cpu, seed=hidden)
    x, w_gate_up, w_down, weights, ids = (data.draw(views(t)) for t in (*layer, weights, ids))
    bound = tol(x.dtype)
    _check(x, w_gate_up, w_down, weights, ids, bound, w_scales=scales)


def test_strided_fp8_scale() -> None:
    """Issue 25: a per-expert w_scale view was read as if contiguous (expert 1 read 1000, the
    neighbour, and the output went to -inf)."""
    x, w1, w2, (s1, s2) = _fp8_layer(5, 32, 32, 2, torch.float16, torch.device("cpu"), True)
    strided = torch.stack([s1, s1 * 0 + 1000], 1)[:, 0]
    ids = torch.tensor([[0, 1]] * 5)
    _check(x, w1, w2, torch.full((5, 2), 0.5), ids, tol(torch.float16), w_scales=(strided, s2))


# ------------------------------------------------------------------------------- alignment

# (tokens, top_k, experts, block_m)
ALIGN_CASES = [(0, 2, 4, 16), (1, 1, 1, 1), (1, 2, 8, 16), (37, 2, 4, 16), (50, 3, 5, 4),
               (20, 4, 4, 16), (9, 2, 6, 8)]  # fmt: skip


def _check_alignment(topk_ids: torch.Tensor, experts: int, block_m: int) -> None:
    sorted_ids, expert_ids, padded = moe_align(topk_ids, experts, block_m)
    flat = topk_ids.flatten().tolist()
    pairs = len(flat)
    assert sorted_ids.dtype == expert_ids.dtype == padded.dtype == torch.int32
    assert sorted_ids.numel() == expert_ids.numel() * block_m
    n = int(padded)
    counts = [flat.count(e) for e in range(experts)]
    assert n == sum(-(-c // block_m) * block_m for c in counts) and n % block_m == 0
    ids = sorted_ids.tolist()
    assert sorted(i for i in ids if i != pairs) == list(range(pairs))  # each pair exactly once
    assert ids[n:] == [pairs] * (len(ids) - n)  # the unused tail is sentinel
    blocks = expert_ids.tolist()
    assert blocks[n // block_m :] == [-1] * (len(blocks) - n // block_m)
    assert blocks[: n // block_m] == sorted(blocks[: n // block_m])  # experts in order
    for e in range(experts):
        assert blocks.count(e) == -(-counts[e] // block_m)  # none for an empty expert
    for b, e in enumerate(blocks[: n // block_m]):
        block = ids[b * block_m : (b + 1) * block_m]
        real = [i for i in block if i != pairs]
        assert real and all(flat[i] == e for i in real)  # one expert a block, none empty
        assert block == real + [pairs] * (block_m - len(real))  # padding after the pairs
        assert real == sorted(real)  # stable: pairs keep their order


@pytest.mark.parametrize("case", ALIGN_CASES, ids=str)
def test_moe_align_properties(case: tuple[int, int, int, int], device) -> None:
    tokens, top_k, experts, block_m = case
    _, ids = _routing(tokens, experts, top_k, device, skew=1.0)
    _check_alignment(ids, experts, block_m)


@pytest.mark.parametrize("ids", EMPTY_EXPERT_IDS.values(), ids=EMPTY_EXPERT_IDS.keys())
@pytest.mark.parametrize("block_m", [1, 4, 16])
def test_moe_align_empty_experts(ids: list[list[int]], block_m: int, device) -> None:
    _check_alignment(torch.tensor(ids, dtype=torch.int32, device=device), 4, block_m)


def test_choose_block_m(monkeypatch) -> None:
    if interpreted():
        assert choose_block_m(1000, 8) == 16
    monkeypatch.setattr(moe, "interpreted", lambda: False)
    assert [choose_block_m(p, 8) for p in (0, 2, 128, 200, 300, 100000)] == [16, 16, 16, 32, 64, 64]


def test_config_pruning_fits_problem_and_memory() -> None:
    def prune(n, k, block_m, a_bytes, w_bytes, gated, smem=HOPPER_SMEM):
        return _select(GPU_CONFIGS, n, k, block_m, a_bytes, w_bytes, gated, smem)

    assert prune(14336, 4096, 16, 2, 2, False, None) == GPU_CONFIGS
    gated = prune(14336, 4096, 64, 2, 2, True, 160 * 1024)
    assert all(_smem_bytes(c, 64, 2, 2, True) <= 160 * 1024 for c in gated)
    # Two weight tiles a step (gated) need more memory; 1-byte fp8 weight tiles need less.
    assert len(gated) < len(prune(14336, 4096, 64, 2, 2, False, 160 * 1024))
    assert len(gated) < len(prune(14336, 4096, 64, 2, 1, True, 160 * 1024))
    tiny = prune(16, 16, 16, 2, 2, True)
    assert {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in tiny} == {(32, 64)}
    assert prune(4096, 4096, 64, 4, 4, True, 1)  # never empty
    # The autotuner's hook reads these launch arguments by name.
    names = {"a_ptr", "w_ptr", "N", "K", "BLOCK_M", "GATED"}
    assert names <= set(_moe_gemm_kernel.arg_names)
    a, w = torch.empty(1, dtype=torch.float16), torch.empty(1, dtype=torch.float8_e4m3fn)
    hook = _moe_gemm_kernel.early_config_prune(
        GPU_CONFIGS, {"a_ptr": a, "w_ptr": w, "N": 14336, "K": 4096}, BLOCK_M=64, GATED=True
    )
    # On the CPU there is no shared-memory limit: nothing is compiled.
    assert hook == prune(14336, 4096, 64, 2, 1, True, None)
    assert TUNINGS[_moe_gemm_kernel].gpu == GPU_CONFIGS


# ------------------------------------------------------------------------------ bad inputs


def _base(device) -> dict:
    x, w_gate_up, w_down = _layer(4, 16, 8, 4, torch.float32, device)
    weights, ids = _routing(4, 4, 2, device)
    return {"x": x, "w_gate_up": w_gate_up, "w_down": w_down, "topk_weights": weights,
            "topk_ids": ids}  # fmt: skip


def _fp8(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float8_e4m3fn)


BAD_MOE_INPUTS = {
    "x-1d": (lambda b: {"x": b["x"][0]}, r"x must be \(tokens, hidden\), 2-D"),
    "x-list": (lambda b: {"x": b["x"].tolist()}, "x must be a torch.Tensor"),
    "odd-gate-up": (lambda b: {"w_gate_up": b["w_gate_up"][:, :-1]}, "w_gate_up must be"),
    "gate-up-hidden": (lambda b: {"w_gate_up": b["w_gate_up"][:, :, :-1]}, "w_gate_up must be"),
    "down-shape": (lambda b: {"w_down": b["w_down"][:, :, :-1]}, "w_down must be"),
    "routing-shapes": (lambda b: {"topk_weights": b["topk_weights"][:, :1]}, "of one shape"),
    "ids-rows": (
        lambda b: {"topk_ids": b["topk_ids"][:3], "topk_weights": b["topk_weights"][:3]},
        "3 rows for 4 tokens",
    ),
    "top-k-over-e": (
        lambda b: {
            "topk_ids": b["topk_ids"].repeat(1, 3),
            "topk_weights": b["topk_weights"].repeat(1, 3),
        },
        "top_k 6 unsupported with 4 experts",
    ),
    "float-ids": (lambda b: {"topk_ids": b["topk_ids"].float()}, "topk_ids must be int32"),
    "int-weights": (lambda b: {"topk_weights": b["topk_ids"]}, "topk_weights dtype torch.int64"),
    "int-x": (
        lambda b: {k: b[k].int() for k in ("x", "w_gate_up", "w_down")},
        "x dtype torch.int32 unsupported; allowed: float16, bfloat16, float32",
    ),
    "float64": (
        lambda b: {k: b[k].double() for k in ("x", "w_gate_up", "w_down")},
        "x dtype torch.float64 unsupported",
    ),
    "mixed-dtypes": (lambda b: {"w_down": b["w_down"].half()}, "w_down dtype torch.float16"),
    "id-too-big": (lambda b: {"topk_ids": b["topk_ids"] + 1}, "allowed: 0 to 3"),
    "id-negative": (lambda b: {"topk_ids": b["topk_ids"] - 4}, "topk_ids hold -4"),
}


def _fp8_weights(b: dict, down_fp8: bool = True, **extra: object) -> dict:
    """fp16 x and fp8 weights (w_down fp16 unless down_fp8), plus extra arguments."""
    w_down = _fp8(b["w_down"]) if down_fp8 else b["w_down"].half()
    return {"x": b["x"].half(), "w_gate_up": _fp8(b["w_gate_up"]), "w_down": w_down, **extra}


# The Triton path only: the baselines take no scales (and refuse fp8, see below).
BAD_FUSED_INPUTS = {
    "scales-not-fp8": (
        lambda b: {"w_scales": (torch.ones(4), torch.ones(4))},
        "w_scales is only for float8_e4m3fn",
    ),
    "fp8-fp32-x": (
        lambda b: {"w_gate_up": _fp8(b["w_gate_up"]), "w_down": _fp8(b["w_down"])},
        "fp8 weights need float16 or bfloat16 x",
    ),
    "fp8-mixed": (lambda b: _fp8_weights(b, down_fp8=False), "must both be fp8 or neither"),
    "fp8-no-scales": (lambda b: _fp8_weights(b), "fp8 weights need w_scales"),
    "fp8-scale-shape": (
        lambda b: _fp8_weights(b, w_scales=(torch.ones(3), torch.ones(1))),
        r"w_scales\[0\] must be a float32 tensor of shape \(\), \(1,\) or \(4,\), got .*\(3,\)",
    ),
    "fp8-scale-dtype": (
        lambda b: _fp8_weights(b, w_scales=(torch.ones(4), torch.ones(1).double())),
        r"w_scales\[1\] must be a float32 tensor .* got torch.float64",
    ),
    "fp8-scale-zero": (
        lambda b: _fp8_weights(b, w_scales=(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.ones(1))),
        r"w_scales\[0\] must be finite and > 0 \(a dequantisation scale\), got 0.0$",
    ),
    "fp8-scale-nan": (
        lambda b: _fp8_weights(b, w_scales=(torch.ones(4), torch.tensor(float("nan")))),
        r"w_scales\[1\] must be finite and > 0 .*, got nan$",
    ),
}

_BAD_CASES = {**BAD_MOE_INPUTS, **BAD_FUSED_INPUTS}


@pytest.mark.parametrize("case", _BAD_CASES.values(), ids=_BAD_CASES.keys())
def test_bad_moe_input_raises(case: tuple, device) -> None:
    change, message = case
    args = _base(device)
    args.update(change(args))
    if "w_scales" in args:
        args["w_scales"] = tuple(s.to(device) for s in args["w_scales"])
    with pytest.raises(ValueError, match=f"^moe: .*{message}") as info:
        fused_moe(**args)
    assert "\n" not in str(info.value)


BAD_OTHER = {
    "align-block-0": (lambda b: moe_align(b["topk_ids"], 4, 0), "block_m must be an int >= 1"),
    "align-experts-0": (lambda b: moe_align(b["topk_ids"], 0, 16), "num_experts must be"),
    "align-1d": (lambda b: moe_align(b["topk_ids"][0], 4, 16), "topk_ids must be 2-D"),
    "align-range": (lambda b: moe_align(b["topk_ids"], 2, 16), "allowed: 0 to 1"),
    "gemm-k": (lambda b: moe_gemm(b["x"], b["w_down"], b["topk_ids"]), r"w must be \(experts"),
    "gemm-top-k": (
        lambda b: moe_gemm(torch.stack([b["x"]] * 3, 1), b["w_gate_up"], b["topk_ids"]),
        "a has 3 rows per token for top_k 2",
    ),
    "gemm-gated-odd": (
        lambda b: moe_gemm(b["x"], b["w_gate_up"][:, :-1], b["topk_ids"], gated=True),
        r"w must be \(experts, 2N, 16\)",
    ),
    "gemm-scale": (
        lambda b: moe_gemm(b["x"], b["w_gate_up"], b["topk_ids"], w_scale=torch.ones(4)),
        "w_scale must be given for float8_e4m3fn weights, and only for them",
    ),
    "gemm-a-dtype": (
        lambda b: moe_gemm(b["x"].double(), b["w_gate_up"], b["topk_ids"]),
        "a dtype torch.float64 unsupported",
    ),
}


@pytest.mark.parametrize("case", BAD_OTHER.values(), ids=BAD_OTHER.keys())
def test_bad_other_input_raises(case: tuple, device) -> None:
    call, message = case
    with pytest.raises(ValueError, match=f"^moe: .*{message}") as info:
        call(_base(device))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- GPU only

# (T, H, I, E, top_k): decode and prefill at a small H; Qwen1.5-MoE-A2.7B's layer (60 experts,
# top-4); top_k = E = 16.
GPU_SHAPES = [
    (1, 1024, 704, 8, 2),
    (64, 1024, 704, 8, 2),
    (517, 1024, 704, 8, 2),
    (300, 2048, 1408, 60, 4),
    (129, 512, 320, 16, 16),
]
MIXTRAL = (64, 4096, 14336, 8, 2)  # Mixtral-8x7B: H 4096, I 14336, 8 experts, top-2


def _fp8_skip(device) -> None:
    capability = torch.cuda.get_device_capability(device)
    reason = fp8_unsupported("cuda", capability, rocm=torch.version.hip is not None)
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("skew", [0.0, 1.2])
def test_gpu_matches_reference(shape: tuple, dtype: torch.dtype, skew: float, device) -> None:
    tokens, hidden, inter, experts, top_k = shape
    x, w_gate_up, w_down = _layer(tokens, hidden, inter, experts, dtype, device)
    _check(x, w_gate_up, w_down, *_routing(tokens, experts, top_k, device, skew), tol(dtype))


@pytest.mark.gpu
def test_gpu_mixtral_bf16(device) -> None:
    tokens, hidden, inter, experts, top_k = MIXTRAL
    x, w_gate_up, w_down = _layer(tokens, hidden, inter, experts, torch.bfloat16, device)
    weights, ids = _routing(tokens, experts, top_k, device)
    ref = fused_moe_ref(x, w_gate_up, w_down, weights, ids)
    out = fused_moe(x, w_gate_up, w_down, weights, ids)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    assert rel_err(out, ref) < tol(torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_expert", [True, False], ids=["per-expert", "per-tensor"])
@pytest.mark.parametrize("shape", [(1, 1024, 704, 8, 2), (300, 2048, 1408, 60, 4), MIXTRAL],
                         ids=str)  # fmt: skip
def test_gpu_fp8_weights(shape: tuple, per_expert: bool, dtype: torch.dtype, device) -> None:
    _fp8_skip(device)
    tokens, hidden, inter, experts, top_k = shape
    x, w1, w2, scales = _fp8_layer(tokens, hidden, inter, experts, dtype, device, per_expert)
    # Weight-only fp8 dequantises exactly, so the 16-bit activation bounds hold.
    _check(x, w1, w2, *_routing(tokens, experts, top_k, device), tol(dtype), w_scales=scales)


@pytest.mark.gpu
def test_gpu_moe_gemm_fp8(device) -> None:
    _fp8_skip(device)
    x, w1, _, (s1, _) = _fp8_layer(77, 1024, 704, 8, torch.bfloat16, device, True)
    weights, ids = _routing(77, 8, 2, device)
    out = moe_gemm(x, w1, ids, topk_weights=weights, w_scale=s1, gated=True)
    ref = _gemm_ref(x, w1.double() * s1.double()[:, None, None], ids, weights, gated=True)
    assert rel_err(out, ref) < tol(torch.bfloat16)
