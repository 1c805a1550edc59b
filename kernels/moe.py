"""Fused mixture-of-experts (MoE) MLP in Triton, as vLLM's fused_moe runs a Mixtral or Qwen-MoE
layer.

A MoE layer sends token t to the top_k experts ``topk_ids[t]`` with weights ``topk_weights[t]``
and sums what they return::

    out[t] = Σ_s topk_weights[t, s] · W2[e]·(SiLU(gate) ⊙ up),  e = topk_ids[t, s]
    (gate, up) = W1[e]·x[t],  W1 = w_gate_up (E, 2I, H): gate rows [0, I), up rows [I, 2I)
                              W2 = w_down    (E, H, I)

Weights are K-major like ``nn.Linear`` weights (``y = x @ W[e].T``), gate stacked over up as
vLLM's ``w13`` is; any strides work, nothing is copied.

Design (:func:`fused_moe`):

1. :func:`moe_align` sorts the T·top_k (token, slot) pairs by expert and pads each expert's group
   to a multiple of BLOCK_M with a sentinel pair id (T·top_k), so every block of BLOCK_M sorted
   pairs belongs to one expert; ``expert_ids`` names it. Experts that get no token get no block.
   Plain torch, no host synchronisation but the one that checks the expert ids are in range: the
   buffers are sized for the worst case and the unused tail is marked (expert -1, sentinel ids).
2. Grouped GEMM 1, one program per (block of sorted pairs, BLOCK_N columns of I): gathers the
   block's token rows of x, multiplies them by the gate *and* the up rows of its expert's W1 with
   two fp32 accumulators, and writes ``h = SiLU(gate)·up`` once, rounded to x's dtype, to the
   row of each (token, slot) pair: SiLU-and-mul is fused into the epilogue, so the (T·top_k, 2I)
   gate/up tensor is never written.
3. Grouped GEMM 2, the same kernel on h (one row per pair) and W2: the fp32 tile is multiplied by
   each pair's routing weight before it is rounded and written to that pair's output row.
4. The top_k rows of each token are summed by torch (fp32 accumulation, one rounding); a fused
   atomic reduction would be faster but not deterministic.

Programs of a block past the padded length (expert -1) return at once; sentinel rows are masked
on load and store. Programs run in the grouped (GROUP_M) tile order of :mod:`kernels.matmul`,
so consecutive programs share their expert's weight tiles while they are in L2. Pair, row and
expert offsets are int64 in the kernel: weights of 256 experts pass 2^31 elements.

BLOCK_M is not autotuned, because the alignment depends on it: :func:`choose_block_m` takes the
mean number of pairs per expert rounded up to a power of two, 16 to 64 (16 for decode, where the
kernel is bound by reading the weights). BLOCK_N, BLOCK_K, GROUP_M, warps and stages are
autotuned per (N, K, BLOCK_M, pair-count bucket, dtypes) on a GPU; under the Triton CPU
interpreter (``kernels.interpreted()``) one small config is used and BLOCK_M is 16.

Dtypes: x and the weights float16, bfloat16 (GPU only: the interpreter's bfloat16 dot is wrong)
or float32 (TF32 dots on a GPU, exact ones in the interpreter), all one dtype; fp32
accumulation; outputs in x's dtype. fp8 weights (float8_e4m3fn: compute capability >= 8.9, or
the interpreter) are *weight-only* (W8A16): x stays float16/bfloat16, each weight tile is
converted to x's dtype after it is loaded (exact: every e4m3 value is a float16 and a bfloat16)
and the fp32 tile is multiplied by the expert's fp32 scale (finite and > 0) after the K loop
(exact-equivalent, the scale being constant over the tile). This halves the weight bytes, which
dominate decode, and needs no activation quantisation pass; W8A8 fp8 tensor-core dots would be
faster for large T.

Every tensor may have any strides: weights, activations, routing and scales are read through
them, nothing is copied (but a 3-D ``moe_gemm`` input that cannot be viewed as 2-D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, interpreted, on_device, strides
from kernels.autotune import autotune, bucket, config, fitting, meta
from kernels.checks import FLOAT_DTYPES, FP8_DTYPE, Checks
from kernels.matmul import _tile_coords

# Activations that fp8 weights are converted to inside the kernel.
FP8_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)
ID_DTYPES = (torch.int32, torch.int64)
# The BLOCK_M choices of choose_block_m; tl.dot needs tiles of at least 16 rows on NVIDIA GPUs.
MIN_BLOCK_M = 16
MAX_BLOCK_M = 64
_INT32_MAX = 2**31 - 1

# Narrow-N, long-K tiles stream the weights for decode-like blocks (BLOCK_M=16); wide ones reuse
# the gathered activations for prefill. GROUP_M=1 runs the N tiles of one block back to back.
GPU_CONFIGS = [
    config(4, 4, BLOCK_N=32, BLOCK_K=64, GROUP_M=1),
    config(4, 4, BLOCK_N=64, BLOCK_K=64, GROUP_M=1),
    config(4, 3, BLOCK_N=64, BLOCK_K=128, GROUP_M=1),
    config(4, 3, BLOCK_N=32, BLOCK_K=256, GROUP_M=1),
    config(4, 4, BLOCK_N=128, BLOCK_K=64, GROUP_M=1),
    config(4, 4, BLOCK_N=64, BLOCK_K=64, GROUP_M=8),
    config(8, 3, BLOCK_N=128, BLOCK_K=64, GROUP_M=8),
    config(8, 3, BLOCK_N=128, BLOCK_K=128, GROUP_M=8),
    config(8, 3, BLOCK_N=256, BLOCK_K=64, GROUP_M=8),
]
# GROUP_M=2 so that the small test problems span several bands, partial ones included.
INTERPRETER_CONFIG = config(1, 1, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)


def _smem_bytes(
    config: triton.Config, block_m: int, a_bytes: int, w_bytes: int, gated: bool
) -> int:
    """Shared memory of the pipelined activation and weight tiles (one buffer per stage); a
    gated GEMM loads a gate and an up tile per step. fp8 weight tiles are staged as fp8."""
    bn, bk = meta(config, "BLOCK_N"), meta(config, "BLOCK_K")
    return config.num_stages * (block_m * bk * a_bytes + (2 if gated else 1) * bk * bn * w_bytes)


def _select(
    configs: list[triton.Config],
    n: int,
    k: int,
    block_m: int,
    a_bytes: int,
    w_bytes: int,
    gated: bool,
    max_smem: int | None,
) -> list[triton.Config]:
    """Drop configs whose BLOCK_N/BLOCK_K overshoot N/K rounded up to a power of two (the
    smallest on offer always passes) or whose tiles overflow ``max_smem``."""

    def limit(size: int, name: str) -> int:
        return bucket(size, min(meta(c, name) for c in configs))

    ln, lk = limit(n, "BLOCK_N"), limit(k, "BLOCK_K")
    return fitting(
        configs,
        lambda c: _smem_bytes(c, block_m, a_bytes, w_bytes, gated),
        max_smem,
        lambda c: meta(c, "BLOCK_N") <= ln and meta(c, "BLOCK_K") <= lk,
    )


def select(configs: list[triton.Config], args: dict, max_smem: int | None) -> list[triton.Config]:
    """The autotuner's pruning: read the problem off the launch arguments."""
    n, k, block_m = int(args["N"]), int(args["K"]), int(args["BLOCK_M"])
    elems = args["a_ptr"].element_size(), args["w_ptr"].element_size()
    return _select(configs, n, k, block_m, *elems, bool(args["GATED"]), max_smem)


# The autotuner adds the tensors' dtypes to the key, so routed and scaled launches (None or not)
# tune apart from the others.
@autotune(
    GPU_CONFIGS,
    INTERPRETER_CONFIG,
    key=["N", "K", "TOKEN_BUCKET", "BLOCK_M", "GATED"],
    select=select,
)
@triton.jit
def _moe_gemm_kernel(
    a_ptr,
    w_ptr,
    c_ptr,
    sorted_ids_ptr,
    expert_ids_ptr,
    route_w_ptr,
    scale_ptr,
    N,
    K,
    EM,
    num_pairs,
    a_div,
    top_k,
    TOKEN_BUCKET,
    stride_am,
    stride_ak,
    stride_we,
    stride_wn,
    stride_wk,
    stride_cm,
    stride_cn,
    stride_route_t,
    stride_route_s,
    stride_scale,
    GATED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """
    One BLOCK_M × BLOCK_N tile of C[pair] = A[pair // a_div] · W[expert]ᵀ for a block of
    sorted (token, slot) pairs that all go to one expert; fp32 accumulation.

    Args:
        a_ptr: Activations A, (rows, K), float16/bfloat16/float32, any strides.
        w_ptr: Expert weights W, (E, N, K), or (E, 2N, K) when GATED (gate rows, then up
            rows); A's dtype, or float8_e4m3fn (converted to A's dtype after loading).
        c_ptr: Output C, (num_pairs, N), one row per (token, slot) pair, written in its dtype.
        sorted_ids_ptr: int32 pair ids grouped by expert, EM of them; num_pairs marks padding.
        expert_ids_ptr: int32 expert of each block of BLOCK_M sorted ids; -1 past the padded
            length (the program returns at once).
        route_w_ptr: Routing weights, (tokens, top_k): each output row is multiplied by its
            pair's; None for none.
        scale_ptr: fp32 dequantisation scale (fp8 weights) per expert, or one for all (then
            stride_scale is 0), multiplied in before the activation; None for none.
        N: Output columns.
        K: Inner dimension.
        EM: Length of the sorted ids, a multiple of BLOCK_M.
        num_pairs: T·top_k, the number of real pairs (and the padding sentinel).
        a_div: Pairs per row of A: top_k when A has one row per token, 1 for one per pair.
        top_k: Pairs per token: pair p is slot p % top_k of token p // top_k.
        TOKEN_BUCKET: num_pairs rounded up to a power of two; only an autotuning key.
        stride_am: Elements between rows of A.
        stride_ak: Elements between columns of A.
        stride_we: Elements between experts of W.
        stride_wn: Elements between output rows of W.
        stride_wk: Elements between inner columns of W.
        stride_cm: Elements between rows of C.
        stride_cn: Elements between columns of C.
        stride_route_t: Elements between the routing weights of consecutive tokens.
        stride_route_s: Elements between the routing weights of consecutive slots.
        stride_scale: Elements between the scales of consecutive experts; 0 for one scale.
        GATED: Write SiLU(A·gateᵀ)·(A·upᵀ) instead of A·Wᵀ.
        BLOCK_M: Sorted pairs per block; the alignment's block size (not autotuned).
        BLOCK_N: Output columns per tile (autotuned).
        BLOCK_K: Inner-dimension step (autotuned).
        GROUP_M: Blocks per L2-friendly band (autotuned).
    """
    pid_m, pid_n = _tile_coords(EM, N, BLOCK_M, BLOCK_N, GROUP_M)
    expert = tl.load(expert_ids_ptr + pid_m)
    if expert < 0:
        return
    pair = tl.load(sorted_ids_ptr + pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = pair < num_pairs
    pair = pair.to(tl.int64)
    a_rows = pair // a_div
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + ks[None, :] * stride_ak
    w_base = w_ptr + expert.to(tl.int64) * stride_we + ks[:, None] * stride_wk
    w_ptrs = w_base + cols[None, :] * stride_wn
    up_ptrs = w_base + (cols + N)[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - step * BLOCK_K
        # Zero-filled K padding adds nothing; padding rows and columns are dropped at the store.
        a = tl.load(a_ptrs, mask=valid[:, None] & (ks[None, :] < k_left), other=0.0)
        w_mask = (ks[:, None] < k_left) & col_ok[None, :]
        w = tl.load(w_ptrs, mask=w_mask, other=0.0)
        acc = tl.dot(a, w.to(a_ptr.dtype.element_ty), acc)
        if GATED:
            up = tl.load(up_ptrs, mask=w_mask, other=0.0)
            acc_up = tl.dot(a, up.to(a_ptr.dtype.element_ty), acc_up)
            up_ptrs += BLOCK_K * stride_wk
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk
    if scale_ptr is not None:
        scale = tl.load(scale_ptr + expert.to(tl.int64) * stride_scale)
        acc = acc * scale
        acc_up = acc_up * scale
    if GATED:
        # SiLU(g) = g·sigmoid(g); exp(-g) = inf for very negative g gives 0, not nan.
        acc = acc / (1.0 + tl.exp(-acc)) * acc_up
    if route_w_ptr is not None:
        route = (pair // top_k) * stride_route_t + (pair % top_k) * stride_route_s
        weight = tl.load(route_w_ptr + route, mask=valid, other=0.0)
        acc = acc * weight.to(tl.float32)[:, None]
    c_ptrs = c_ptr + pair[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])


_CHECK = Checks("moe")


def _check_routing(
    topk_weights: torch.Tensor | None, topk_ids: torch.Tensor, tokens: int, experts: int
) -> int:
    """Shapes and dtypes of the routing (weights optional); returns top_k."""
    if topk_ids.dim() != 2 or (topk_weights is not None and topk_weights.shape != topk_ids.shape):
        got = "None" if topk_weights is None else str(tuple(topk_weights.shape))
        _CHECK.fail(
            "topk_weights and topk_ids must be (tokens, top_k) of one shape, got "
            f"{got} and {tuple(topk_ids.shape)}"
        )
    if topk_ids.shape[0] != tokens:
        _CHECK.fail(
            f"topk_ids has {topk_ids.shape[0]} rows for {tokens} tokens; need one per token"
        )
    top_k = topk_ids.shape[1]
    if not 1 <= top_k <= experts:
        _CHECK.fail(f"top_k {top_k} unsupported with {experts} experts; allowed: 1 to {experts}")
    if topk_ids.dtype not in ID_DTYPES:
        _CHECK.fail(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    if topk_weights is not None:
        _CHECK.dtype("topk_weights", topk_weights, FLOAT_DTYPES)
    if tokens * top_k > _INT32_MAX:
        _CHECK.fail(f"{tokens}×{top_k} (token, slot) pairs overflow the int32 pair ids")
    return top_k


def _check_id_range(topk_ids: torch.Tensor, experts: int) -> None:
    """Every expert id in [0, experts): one host synchronisation (none for no ids)."""
    if topk_ids.numel():
        low, high = torch.stack(torch.aminmax(topk_ids.reshape(-1))).tolist()
        if low < 0 or high >= experts:
            _CHECK.fail(f"topk_ids hold {low} to {high}; allowed: 0 to {experts - 1}")


def _check_weight_dtype(x: torch.Tensor, w: torch.Tensor, name: str, x_name: str) -> bool:
    """True for fp8 weights; raises unless w has x's dtype or is float8_e4m3fn."""
    if w.dtype == FP8_DTYPE:
        if x.dtype not in FP8_ACTIVATION_DTYPES:
            _CHECK.fail(
                f"fp8 weights need float16 or bfloat16 {x_name} (weight-only fp8), got {x.dtype}"
            )
        return True
    if w.dtype != x.dtype:
        _CHECK.fail(f"{name} dtype {w.dtype} must match {x_name} ({x.dtype}) or {FP8_DTYPE}")
    return False


def _scale_shapes(experts: int) -> tuple[tuple[int, ...], ...]:
    """A weight scale: one for the tensor, or one per expert."""
    return (), (1,), (experts,)


def _validate_moe(
    x: object,
    w_gate_up: object,
    w_down: object,
    topk_weights: object,
    topk_ids: object,
    w_scales: object,
) -> None:
    """Raise a one-line ValueError on the first problem; reads no device data."""
    _CHECK.tensors(
        x=x, w_gate_up=w_gate_up, w_down=w_down, topk_weights=topk_weights, topk_ids=topk_ids
    )
    _CHECK.rank("x", x, "(tokens, hidden)")
    tokens, hidden = x.shape
    if w_gate_up.dim() != 3 or w_gate_up.shape[2] != hidden or w_gate_up.shape[1] % 2:
        _CHECK.fail(
            f"w_gate_up must be (experts, 2·intermediate, {hidden}) with gate rows stacked over "
            f"up rows, got {tuple(w_gate_up.shape)}"
        )
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    if experts < 1:
        _CHECK.fail("there must be at least one expert")
    if w_down.shape != (experts, hidden, inter):
        _CHECK.fail(
            f"w_down must be (experts, hidden, intermediate) = {(experts, hidden, inter)}, "
            f"got {tuple(w_down.shape)}"
        )
    _check_routing(topk_weights, topk_ids, tokens, experts)
    _CHECK.dtype("x", x, FLOAT_DTYPES)
    fp8 = _check_weight_dtype(x, w_gate_up, "w_gate_up", "x")
    if _check_weight_dtype(x, w_down, "w_down", "x") != fp8:
        _CHECK.fail(
            f"w_gate_up and w_down must both be fp8 or neither, got {w_gate_up.dtype} and "
            f"{w_down.dtype}"
        )
    device = _CHECK.device(
        x=x, w_gate_up=w_gate_up, w_down=w_down, topk_weights=topk_weights, topk_ids=topk_ids
    )
    _CHECK.dots(x.dtype)
    if not fp8:
        if w_scales is not None:
            _CHECK.fail("w_scales is only for float8_e4m3fn weights; pass None")
        return
    _CHECK.fp8(device, "fp8 weights")
    if not isinstance(w_scales, (tuple, list)) or len(w_scales) != 2:
        _CHECK.fail("fp8 weights need w_scales=(gate_up_scale, down_scale), float32 tensors")
    for i, scale in enumerate(w_scales):
        _CHECK.scale(f"w_scales[{i}]", scale, _scale_shapes(experts), device)


# -------------------------------------------------------------------------------- alignment


def max_blocks_of(pairs: int, experts: int, block_m: int) -> int:
    """The most blocks of block_m sorted pairs the pairs can take: each expert that gets a pair
    pads its group by at most block_m - 1."""
    return (pairs + min(experts, pairs) * (block_m - 1)) // block_m


def moe_align(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the (token, slot) pairs by expert, each expert's group padded to a multiple of
    block_m, as vLLM's moe_align_block_size does.

    Pair p is (token p // top_k, slot p % top_k). Within an expert the pairs keep their order.

    Args:
        topk_ids: (tokens, top_k) int32/int64 expert ids, each in [0, num_experts).
        num_experts: E >= 1.
        block_m: Pairs per block, >= 1.

    Returns:
        sorted_token_ids: int32 (max_blocks·block_m,): the pair ids, expert by expert, each
            expert's group followed by the sentinel tokens·top_k up to a multiple of block_m;
            the sentinel also fills the unused tail.
        expert_ids: int32 (max_blocks,): the expert of each block; -1 for the unused tail.
            An expert that gets no pair gets no block.
        num_tokens_post_padded: int32 (1,): the padded length, Σ_e block_m·⌈count_e/block_m⌉.

    The buffers are sized for the worst case, max_blocks = ⌊(P + min(E, P)·(block_m − 1)) /
    block_m⌋ with P = tokens·top_k, so nothing but the id range check waits for the device.

    Raises:
        ValueError: on a bad shape or dtype, num_experts or block_m < 1, or an id out of range.
    """
    _CHECK.tensors(topk_ids=topk_ids)
    if topk_ids.dim() != 2 or topk_ids.dtype not in ID_DTYPES:
        _CHECK.fail(
            f"topk_ids must be 2-D int32/int64, got {topk_ids.dtype} {tuple(topk_ids.shape)}"
        )
    for name, value in (("num_experts", num_experts), ("block_m", block_m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _CHECK.fail(f"{name} must be an int >= 1, got {value!r}")
    flat = topk_ids.reshape(-1).to(torch.int64)
    pairs, device = flat.numel(), topk_ids.device
    if pairs > _INT32_MAX:
        _CHECK.fail(f"{pairs} (token, slot) pairs overflow the int32 pair ids")
    _check_id_range(topk_ids, num_experts)  # the one host synchronisation
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    experts = flat[order]
    # Rank of each sorted pair within its expert's group, then its padded position.
    first = torch.cumsum(counts, 0) - counts
    dest = (ends - padded)[experts] + torch.arange(pairs, device=device) - first[experts]
    max_blocks = max_blocks_of(pairs, num_experts, block_m)
    sorted_ids = torch.full((max_blocks * block_m,), pairs, dtype=torch.int32, device=device)
    sorted_ids[dest] = order.to(torch.int32)
    blocks = torch.arange(max_blocks, device=device)
    # Block b belongs to the first expert whose cumulative block count exceeds b.
    expert_ids = torch.searchsorted(ends // block_m, blocks, right=True)
    expert_ids = torch.where(expert_ids < num_experts, expert_ids, -1).to(torch.int32)
    return sorted_ids, expert_ids, ends[-1:].to(torch.int32)


def choose_block_m(num_pairs: int, num_experts: int) -> int:
    """BLOCK_M for the grouped GEMMs: the mean pairs per expert rounded up to a power of two,
    clamped to [MIN_BLOCK_M, MAX_BLOCK_M], so the padding stays under one block per expert.
    Always MIN_BLOCK_M under the interpreter, so the small test problems span many blocks."""
    if interpreted():
        return MIN_BLOCK_M
    return _gpu_block_m(num_pairs, num_experts)


def _gpu_block_m(num_pairs: int, num_experts: int) -> int:
    return min(bucket(triton.cdiv(num_pairs, max(num_experts, 1)), MIN_BLOCK_M), MAX_BLOCK_M)


def tuning_configs(
    tokens: int,
    hidden: int,
    inter: int,
    experts: int,
    top_k: int,
    a_bytes: int,
    w_bytes: int,
    max_smem: int = HOPPER_SMEM,
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for fused_moe's two grouped GEMMs (the
    gated one: N = inter outputs, K = hidden; down: N = hidden, K = inter): what sizes a GPU run
    before it starts, also from a machine without one."""
    block_m = _gpu_block_m(tokens * top_k, experts)
    sizes = block_m, a_bytes, w_bytes
    gate_up = _select(GPU_CONFIGS, inter, hidden, *sizes, gated=True, max_smem=max_smem)
    down = _select(GPU_CONFIGS, hidden, inter, *sizes, gated=False, max_smem=max_smem)
    return gate_up + down


# ----------------------------------------------------------------------------------- launch


def _grid(em: int, n: int) -> Callable[[dict], tuple[int]]:
    # Triton calls this with the chosen config, so the tile count follows BLOCK_N.
    return lambda meta: (triton.cdiv(em, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)


def _launch(
    a: torch.Tensor,
    a_div: int,
    w: torch.Tensor,
    out: torch.Tensor,
    sorted_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    block_m: int,
    *,
    top_k: int,
    gated: bool,
    routing: torch.Tensor | None,
    scale: torch.Tensor | None,
) -> None:
    """out[pair] = A[pair // a_div]·W[expert]ᵀ (gated: SiLU(gate)·up; times the pair's routing
    weight when given), out (pairs, N), over the sorted ids of moe_align."""
    pairs, n = out.shape
    k = a.shape[1]
    em = sorted_ids.numel()
    if em == 0 or n == 0:
        return
    if k == 0:  # an empty product; tl.dot would never run and SiLU(0)·0 = 0 too
        out.zero_()
        return
    route_strides = (0, 0) if routing is None else routing.stride()
    with on_device(a):
        _moe_gemm_kernel[_grid(em, n)](
            a_ptr=a,
            w_ptr=w,
            c_ptr=out,
            sorted_ids_ptr=sorted_ids,
            expert_ids_ptr=expert_ids,
            route_w_ptr=routing,
            scale_ptr=scale,
            N=n,
            K=k,
            EM=em,
            num_pairs=pairs,
            a_div=a_div,
            top_k=top_k,
            TOKEN_BUCKET=triton.next_power_of_2(pairs),
            **strides(a, "stride_am", "stride_ak"),
            **strides(w, "stride_we", "stride_wn", "stride_wk"),
            **strides(out, "stride_cm", "stride_cn"),
            stride_route_t=route_strides[0],
            stride_route_s=route_strides[1],
            stride_scale=0 if scale is None or scale.numel() == 1 else scale.stride(-1),
            GATED=gated,
            BLOCK_M=block_m,
        )


def fused_moe(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    w_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The expert MLP of a MoE layer: Σ_s topk_weights[t, s]·W2[e]·(SiLU(gate)·up), e =
    topk_ids[t, s], (gate, up) = W1[e]·x[t]. Two grouped-GEMM launches, see the module doc.

    Args:
        x: (T, H) float16/bfloat16/float32, any strides; T may be 0.
        w_gate_up: (E, 2I, H) W1, gate rows [0, I) over up rows [I, 2I); x's dtype, or
            float8_e4m3fn (weight-only fp8; x then float16/bfloat16). Any strides.
        w_down: (E, H, I) W2, same dtype as w_gate_up. Any strides.
        topk_weights: (T, top_k) routing weights, float32/float16/bfloat16, any strides.
        topk_ids: (T, top_k) int32/int64 expert ids in [0, E); 1 <= top_k <= E. Repeated ids
            in a row are allowed (each slot counts).
        w_scales: fp8 only: (gate_up_scale, down_scale), float32 tensors of shape () or (1,)
            (per tensor) or (E,) (per expert), finite and > 0; the weights dequantise as
            W·scale.

    Returns:
        A new contiguous (T, H) tensor in x's dtype.

    Raises:
        ValueError: one line naming the first problem: shapes, dtypes, devices, scales, an
            expert id out of range, bfloat16 under the CPU interpreter, fp8 on a device without
            fp8 support.
    """
    _validate_moe(x, w_gate_up, w_down, topk_weights, topk_ids, w_scales)
    if w_scales is not None:
        _CHECK.positive(**{f"w_scales[{i}]": s for i, s in enumerate(w_scales)})
    gate_up_scale, down_scale = (None, None) if w_scales is None else w_scales
    (tokens, hidden), top_k = x.shape, topk_ids.shape[1]
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    if tokens == 0 or hidden == 0:
        _check_id_range(topk_ids, experts)
        return torch.zeros((tokens, hidden), dtype=x.dtype, device=x.device)
    pairs = tokens * top_k
    block_m = choose_block_m(pairs, experts)
    sorted_ids, expert_ids, _ = moe_align(topk_ids, experts, block_m)
    h = torch.empty((pairs, inter), dtype=x.dtype, device=x.device)
    aligned = sorted_ids, expert_ids, block_m
    _launch(x, top_k, w_gate_up, h, *aligned, top_k=top_k, gated=True, routing=None,
            scale=gate_up_scale)  # fmt: skip
    y = torch.empty((pairs, hidden), dtype=x.dtype, device=x.device)
    _launch(h, 1, w_down, y, *aligned, top_k=top_k, gated=False, routing=topk_weights,
            scale=down_scale)  # fmt: skip
    # torch sums half-precision inputs in fp32 and rounds once.
    return y.view(tokens, top_k, hidden).sum(dim=1)


def moe_gemm(
    a: torch.Tensor,
    w: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    topk_weights: torch.Tensor | None = None,
    w_scale: torch.Tensor | None = None,
    gated: bool = False,
) -> torch.Tensor:
    """One grouped GEMM of the MoE: out[t, s] = row(t, s)·W[topk_ids[t, s]]ᵀ, one launch.

    Args:
        a: (T, K), each token's row used for all its slots, or (T, top_k, K), one row per
            (token, slot); float16/bfloat16/float32, any strides (a 3-D view that cannot be
            flattened is copied).
        w: (E, N, K), or (E, 2N, K) with ``gated``; a's dtype, or float8_e4m3fn with w_scale.
        topk_ids: (T, top_k) int32/int64 expert ids in [0, E).
        topk_weights: (T, top_k); when given, each output row is multiplied by its weight.
        w_scale: fp8 only: float32 tensor of shape () or (1,) (per tensor) or (E,) (per
            expert), finite and > 0.
        gated: w stacks gate rows over up rows; out is SiLU(row·gateᵀ)·(row·upᵀ).

    Returns:
        A new contiguous (T, top_k, N) tensor in a's dtype.

    Raises:
        ValueError: one line naming the first problem with the inputs.
    """
    _CHECK.tensors(a=a, w=w, topk_ids=topk_ids)
    if a.dim() not in (2, 3):
        _CHECK.fail(f"a must be (tokens, K) or (tokens, top_k, K), got shape {tuple(a.shape)}")
    if w.dim() != 3 or w.shape[2] != a.shape[-1] or (gated and w.shape[1] % 2):
        rows = "2N" if gated else "N"
        _CHECK.fail(f"w must be (experts, {rows}, {a.shape[-1]}), got {tuple(w.shape)}")
    experts, n = w.shape[0], w.shape[1] // (2 if gated else 1)
    if experts < 1:
        _CHECK.fail("there must be at least one expert")
    routing = {} if topk_weights is None else {"topk_weights": topk_weights}
    _CHECK.tensors(**routing)
    top_k = _check_routing(topk_weights, topk_ids, a.shape[0], experts)
    if a.dim() == 3 and a.shape[1] != top_k:
        _CHECK.fail(f"a has {a.shape[1]} rows per token for top_k {top_k}; need one per slot")
    _CHECK.dtype("a", a, FLOAT_DTYPES)
    fp8 = _check_weight_dtype(a, w, "w", "a")
    if fp8 != (w_scale is not None):
        _CHECK.fail("w_scale must be given for float8_e4m3fn weights, and only for them")
    device = _CHECK.device(a=a, w=w, topk_ids=topk_ids, **routing)
    _CHECK.dots(a.dtype)
    if fp8:
        _CHECK.fp8(device, "fp8 weights")
        _CHECK.scale("w_scale", w_scale, _scale_shapes(experts), device)
        _CHECK.positive(w_scale=w_scale)
    tokens, k = a.shape[0], a.shape[-1]
    pairs = tokens * top_k
    out = torch.empty((pairs, n), dtype=a.dtype, device=a.device)
    if pairs:
        block_m = choose_block_m(pairs, experts)
        sorted_ids, expert_ids, _ = moe_align(topk_ids, experts, block_m)
        a2 = a if a.dim() == 2 else a.reshape(pairs, k)
        _launch(a2, top_k if a.dim() == 2 else 1, w, out, sorted_ids, expert_ids, block_m,
                top_k=top_k, gated=gated, routing=topk_weights, scale=w_scale)  # fmt: skip
    return out.view(tokens, top_k, n)
