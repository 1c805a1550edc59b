"""Fused mixture-of-experts (MoE) MLP in Triton, as vLLM's fused_moe runs a Mixtral or Qwen-MoE
layer, plus the plain-PyTorch baselines a harness times it against and a router for benchmarks.

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
accumulation; outputs in x's dtype. fp8 weights (float8_e4m3fn, compute capability >= 8.9) are
*weight-only* (W8A16): x stays float16/bfloat16, each weight tile is converted to x's dtype
after it is loaded (exact: every e4m3 value is a float16 and a bfloat16) and the fp32 tile is
multiplied by the expert's fp32 scale after the K loop (exact-equivalent, the scale being
constant over the tile). This halves the weight bytes, which dominate decode, and needs no
activation quantisation pass; W8A8 fp8 tensor-core dots would be faster for large T.

Baselines: :func:`moe_loop` loops over the experts with torch.matmul as Hugging Face's
MixtralSparseMoeBlock does; :func:`moe_grouped_mm` runs both GEMMs with ``torch._grouped_mm``
where :func:`grouped_mm_unsupported` says it can. :func:`route` makes uniform or Zipf-skewed
routing for benchmarks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels import SMEM_BUDGET, fp8_unsupported, interpreted, not_a_tensor, on_device
from kernels.matmul import _tile_coords

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FP8_DTYPE = torch.float8_e4m3fn
# Activations that fp8 weights are converted to inside the kernel.
FP8_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)
# The BLOCK_M choices of choose_block_m; tl.dot needs tiles of at least 16 rows on NVIDIA GPUs.
MIN_BLOCK_M = 16
MAX_BLOCK_M = 64
_INT32_MAX = 2**31 - 1


def _config(bn: int, bk: int, group_m: int, stages: int, warps: int) -> triton.Config:
    meta = {"BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}
    return triton.Config(meta, num_stages=stages, num_warps=warps)


# Narrow-N, long-K tiles stream the weights for decode-like blocks (BLOCK_M=16); wide ones reuse
# the gathered activations for prefill. GROUP_M=1 runs the N tiles of one block back to back.
_GPU_CONFIGS = [
    _config(32, 64, 1, 4, 4),
    _config(64, 64, 1, 4, 4),
    _config(64, 128, 1, 3, 4),
    _config(32, 256, 1, 3, 4),
    _config(128, 64, 1, 4, 4),
    _config(64, 64, 8, 4, 4),
    _config(128, 64, 8, 3, 8),
    _config(128, 128, 8, 3, 8),
    _config(256, 64, 8, 3, 8),
]
# GROUP_M=2 so that the small test problems span several bands, partial ones included.
_INTERPRETER_CONFIGS = [_config(32, 32, 2, 1, 1)]
_CONFIGS = _INTERPRETER_CONFIGS if interpreted() else _GPU_CONFIGS


def _meta(config: triton.Config, name: str) -> int:
    return int(config.kwargs[name])


def _smem_bytes(
    config: triton.Config, block_m: int, a_bytes: int, w_bytes: int, gated: bool
) -> int:
    """Shared memory of the pipelined activation and weight tiles (one buffer per stage); a
    gated GEMM loads a gate and an up tile per step. fp8 weight tiles are staged as fp8."""
    bn, bk = _meta(config, "BLOCK_N"), _meta(config, "BLOCK_K")
    return config.num_stages * (block_m * bk * a_bytes + (2 if gated else 1) * bk * bn * w_bytes)


def _select_configs(
    configs: list[triton.Config],
    n: int,
    k: int,
    block_m: int,
    a_bytes: int,
    w_bytes: int,
    gated: bool,
    max_smem: int | None = SMEM_BUDGET,
) -> list[triton.Config]:
    """Drop configs whose BLOCK_N/BLOCK_K overshoot N/K rounded up to a power of two (the
    smallest on offer always passes) or whose tiles overflow ``max_smem``. Never empty: if
    nothing is left, the config with the least shared memory is kept."""

    def limit(size: int, name: str) -> int:
        return max(triton.next_power_of_2(size), min(_meta(c, name) for c in configs))

    ln, lk = limit(n, "BLOCK_N"), limit(k, "BLOCK_K")

    def smem(c: triton.Config) -> int:
        return _smem_bytes(c, block_m, a_bytes, w_bytes, gated)

    kept = [
        c
        for c in configs
        if _meta(c, "BLOCK_N") <= ln
        and _meta(c, "BLOCK_K") <= lk
        and (max_smem is None or smem(c) <= max_smem)
    ]
    return kept or [min(configs, key=smem)]


def _prune_configs(
    configs: list[triton.Config], named_args: dict, **kwargs: object
) -> list[triton.Config]:
    """The autotuner's early_config_prune hook: positional launch arguments arrive in
    named_args, keyword ones (the constexprs) in kwargs."""
    args = {**named_args, **kwargs}
    return _select_configs(
        configs,
        int(args["N"]),
        int(args["K"]),
        int(args["BLOCK_M"]),
        args["a_ptr"].element_size(),
        args["w_ptr"].element_size(),
        bool(args["GATED"]),
        None if interpreted() else SMEM_BUDGET,
    )


@triton.autotune(
    configs=_CONFIGS,
    key=["N", "K", "TOKEN_BUCKET", "BLOCK_M", "GATED", "ROUTED", "SCALED"],
    prune_configs_by={"early_config_prune": _prune_configs},
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
    TOKEN_BUCKET,
    stride_am,
    stride_ak,
    stride_we,
    stride_wn,
    stride_wk,
    stride_cm,
    stride_cn,
    stride_scale,
    GATED: tl.constexpr,
    ROUTED: tl.constexpr,
    SCALED: tl.constexpr,
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
        route_w_ptr: Routing weight per pair (contiguous (num_pairs,)), read when ROUTED.
        scale_ptr: fp32 dequantisation scale per expert (stride_scale 1) or per tensor
            (stride_scale 0), read when SCALED.
        N: Output columns.
        K: Inner dimension.
        EM: Length of the sorted ids, a multiple of BLOCK_M.
        num_pairs: T·top_k, the number of real pairs (and the padding sentinel).
        a_div: Pairs per row of A: top_k when A has one row per token, 1 for one per pair.
        TOKEN_BUCKET: num_pairs rounded up to a power of two; only an autotuning key.
        stride_am: Elements between rows of A.
        stride_ak: Elements between columns of A.
        stride_we: Elements between experts of W.
        stride_wn: Elements between output rows of W.
        stride_wk: Elements between inner columns of W.
        stride_cm: Elements between rows of C.
        stride_cn: Elements between columns of C.
        stride_scale: 1 for a per-expert scale, 0 for a per-tensor one.
        GATED: Write SiLU(A·gateᵀ)·(A·upᵀ) instead of A·Wᵀ.
        ROUTED: Multiply each output row by its pair's routing weight.
        SCALED: Multiply by the expert's scale (fp8 weights) before the activation.
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
    if SCALED:
        scale = tl.load(scale_ptr + expert.to(tl.int64) * stride_scale)
        acc = acc * scale
        acc_up = acc_up * scale
    if GATED:
        # SiLU(g) = g·sigmoid(g); exp(-g) = inf for very negative g gives 0, not nan.
        acc = acc / (1.0 + tl.exp(-acc)) * acc_up
    if ROUTED:
        weight = tl.load(route_w_ptr + pair, mask=valid, other=0.0)
        acc = acc * weight.to(tl.float32)[:, None]
    c_ptrs = c_ptr + pair[:, None] * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])


# ------------------------------------------------------------------------------- validation


def _fail(message: str) -> None:
    raise ValueError(f"moe: {message}")


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def _need_tensors(**tensors: object) -> None:
    if problem := not_a_tensor(**tensors):
        _fail(problem)


def _check_device(kernel: bool, fp8: bool, **tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{n} on {t.device}" for n, t in tensors.items())
        _fail(f"inputs must be on one device, got {listing}")
    device = devices.pop()
    if fp8:
        capability = None
        if device.type == "cuda" and torch.cuda.is_available():
            capability = torch.cuda.get_device_capability(device)
        reason = fp8_unsupported(device.type, capability, rocm=torch.version.hip is not None)
        if reason is not None:
            _fail(reason)
    if kernel and not (device.type == "cuda" or (device.type == "cpu" and interpreted())):
        _fail(
            f"inputs are on {device}; allowed: CUDA tensors "
            "(CPU tensors only under the Triton interpreter, TRITON_INTERPRET=1)"
        )


def _check_routing(
    topk_weights: torch.Tensor | None, topk_ids: torch.Tensor, tokens: int, experts: int
) -> int:
    """Shapes and dtypes of the routing (weights optional); returns top_k."""
    if topk_ids.dim() != 2 or (topk_weights is not None and topk_weights.shape != topk_ids.shape):
        got = "None" if topk_weights is None else str(tuple(topk_weights.shape))
        _fail(
            "topk_weights and topk_ids must be (tokens, top_k) of one shape, got "
            f"{got} and {tuple(topk_ids.shape)}"
        )
    if topk_ids.shape[0] != tokens:
        _fail(f"topk_ids has {topk_ids.shape[0]} rows for {tokens} tokens; need one per token")
    top_k = topk_ids.shape[1]
    if not 1 <= top_k <= experts:
        _fail(f"top_k {top_k} unsupported with {experts} experts; allowed: 1 to {experts}")
    if topk_ids.dtype not in (torch.int32, torch.int64):
        _fail(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    if topk_weights is not None and topk_weights.dtype not in SUPPORTED_DTYPES:
        _fail(
            f"topk_weights dtype {topk_weights.dtype} unsupported; "
            f"allowed: {_names(SUPPORTED_DTYPES)}"
        )
    if tokens * top_k > _INT32_MAX:
        _fail(f"{tokens}×{top_k} (token, slot) pairs overflow the int32 pair ids")
    return top_k


def _check_id_range(topk_ids: torch.Tensor, experts: int) -> None:
    """Every expert id in [0, experts): one host synchronisation (none for no ids)."""
    if topk_ids.numel():
        low, high = torch.stack(torch.aminmax(topk_ids.reshape(-1))).tolist()
        if low < 0 or high >= experts:
            _fail(f"topk_ids hold {low} to {high}; allowed: 0 to {experts - 1}")


def _check_scale(scale: object, name: str, experts: int, device: torch.device) -> torch.Tensor:
    if not isinstance(scale, torch.Tensor) or scale.numel() not in (1, experts):
        _fail(f"{name} must be a tensor of 1 (per tensor) or {experts} (per expert) elements")
    if scale.dtype != torch.float32 or scale.device != device:
        _fail(f"{name} must be float32 on {device}, got {scale.dtype} on {scale.device}")
    return scale.reshape(-1)


def _check_activation_dtype(x: torch.Tensor, kernel: bool, name: str = "x") -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        _fail(f"{name} dtype {x.dtype} unsupported; allowed: {_names(SUPPORTED_DTYPES)}")
    if kernel and interpreted() and x.dtype == torch.bfloat16:
        # The interpreter keeps bf16 as raw uint16 and its tl.dot multiplies those integers.
        _fail(
            "bfloat16 gives wrong results under the Triton CPU interpreter; "
            "use float16/float32 there, or a GPU"
        )


def _check_weight_dtype(
    x: torch.Tensor, w: torch.Tensor, name: str, fp8_ok: bool, x_name: str = "x"
) -> bool:
    """True for fp8 weights; raises unless w has x's dtype or (fp8_ok) is float8_e4m3fn."""
    if fp8_ok and w.dtype == FP8_DTYPE:
        if x.dtype not in FP8_ACTIVATION_DTYPES:
            _fail(f"fp8 weights need float16 or bfloat16 {x_name} (weight-only fp8), got {x.dtype}")
        return True
    if w.dtype != x.dtype:
        also = f" or {FP8_DTYPE} with a scale" if fp8_ok else ""
        _fail(f"{name} dtype {w.dtype} must match {x_name} ({x.dtype}){also}")
    return False


def _validate_moe(
    x: object,
    w_gate_up: object,
    w_down: object,
    topk_weights: object,
    topk_ids: object,
    w_scales: object,
    kernel: bool,
) -> tuple[int, tuple[torch.Tensor, torch.Tensor] | None]:
    """Raise a one-line ValueError on the first problem; returns (top_k, flat fp8 scales)."""
    _need_tensors(
        x=x, w_gate_up=w_gate_up, w_down=w_down, topk_weights=topk_weights, topk_ids=topk_ids
    )
    if x.dim() != 2:
        _fail(f"x must be 2-D (tokens, hidden), got shape {tuple(x.shape)}")
    tokens, hidden = x.shape
    if w_gate_up.dim() != 3 or w_gate_up.shape[2] != hidden or w_gate_up.shape[1] % 2:
        _fail(
            f"w_gate_up must be (experts, 2·intermediate, {hidden}) with gate rows stacked over "
            f"up rows, got {tuple(w_gate_up.shape)}"
        )
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    if experts < 1:
        _fail("there must be at least one expert")
    if w_down.shape != (experts, hidden, inter):
        _fail(
            f"w_down must be (experts, hidden, intermediate) = {(experts, hidden, inter)}, "
            f"got {tuple(w_down.shape)}"
        )
    top_k = _check_routing(topk_weights, topk_ids, tokens, experts)
    _check_activation_dtype(x, kernel)
    fp8 = _check_weight_dtype(x, w_gate_up, "w_gate_up", fp8_ok=kernel)
    if _check_weight_dtype(x, w_down, "w_down", fp8_ok=kernel) != fp8:
        _fail(
            f"w_gate_up and w_down must both be fp8 or neither, got {w_gate_up.dtype} and "
            f"{w_down.dtype}"
        )
    scales = None
    if not fp8 and w_scales is not None:
        _fail("w_scales is only for float8_e4m3fn weights; pass None")
    if fp8:
        if not isinstance(w_scales, (tuple, list)) or len(w_scales) != 2:
            _fail("fp8 weights need w_scales=(gate_up_scale, down_scale), float32 tensors")
        scales = (
            _check_scale(w_scales[0], "w_scales[0]", experts, x.device),
            _check_scale(w_scales[1], "w_scales[1]", experts, x.device),
        )
    _check_device(kernel, fp8, x=x, w_gate_up=w_gate_up, w_down=w_down,
                  topk_weights=topk_weights, topk_ids=topk_ids)  # fmt: skip
    if not kernel:  # the kernel path checks the ids in moe_align
        _check_id_range(topk_ids, experts)
    return top_k, scales


# -------------------------------------------------------------------------------- alignment


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
    _need_tensors(topk_ids=topk_ids)
    if topk_ids.dim() != 2 or topk_ids.dtype not in (torch.int32, torch.int64):
        _fail(f"topk_ids must be 2-D int32/int64, got {topk_ids.dtype} {tuple(topk_ids.shape)}")
    for name, value in (("num_experts", num_experts), ("block_m", block_m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"{name} must be an int >= 1, got {value!r}")
    flat = topk_ids.reshape(-1).to(torch.int64)
    pairs, device = flat.numel(), topk_ids.device
    if pairs > _INT32_MAX:
        _fail(f"{pairs} (token, slot) pairs overflow the int32 pair ids")
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
    max_blocks = (pairs + min(num_experts, pairs) * (block_m - 1)) // block_m
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
    mean = -(-num_pairs // max(num_experts, 1))
    return min(max(triton.next_power_of_2(max(mean, 1)), MIN_BLOCK_M), MAX_BLOCK_M)


def tuning_configs(
    tokens: int, hidden: int, inter: int, experts: int, top_k: int, a_bytes: int, w_bytes: int
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for fused_moe's two grouped GEMMs (the
    gated one: N = inter outputs, K = hidden; down: N = hidden, K = inter): what sizes a GPU run
    before it starts, also from a machine without one."""
    block_m = _gpu_block_m(tokens * top_k, experts)
    gate_up = _select_configs(_GPU_CONFIGS, inter, hidden, block_m, a_bytes, w_bytes, True)
    down = _select_configs(_GPU_CONFIGS, hidden, inter, block_m, a_bytes, w_bytes, False)
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
    alignment: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    block_m: int,
    *,
    gated: bool,
    route_w: torch.Tensor | None,
    scale: torch.Tensor | None,
) -> None:
    """out[pair] = A[pair // a_div]·W[expert]ᵀ (gated: SiLU(gate)·up), out (pairs, N)."""
    sorted_ids, expert_ids, _ = alignment
    pairs, n = out.shape
    k = a.shape[1]
    em = sorted_ids.numel()
    if em == 0 or n == 0:
        return
    if k == 0:  # an empty product; tl.dot would never run and SiLU(0)·0 = 0 too
        out.zero_()
        return
    dummy = expert_ids
    with on_device(a):
        _moe_gemm_kernel[_grid(em, n)](
            a, w, out, sorted_ids, expert_ids,
            dummy if route_w is None else route_w,
            dummy if scale is None else scale,
            n, k, em, pairs, a_div, triton.next_power_of_2(pairs),
            *a.stride(), *w.stride(), *out.stride(),
            0 if scale is None or scale.numel() == 1 else 1,
            GATED=gated, ROUTED=route_w is not None, SCALED=scale is not None, BLOCK_M=block_m,
        )  # fmt: skip


def _fused_moe(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    scales: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """fused_moe without the input checks (the tests call it to run fp8 in the interpreter)."""
    (tokens, hidden), top_k = x.shape, topk_ids.shape[1]
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    if tokens == 0 or hidden == 0:
        return torch.zeros((tokens, hidden), dtype=x.dtype, device=x.device)
    pairs = tokens * top_k
    block_m = choose_block_m(pairs, experts)
    alignment = moe_align(topk_ids, experts, block_m)
    h = torch.empty((pairs, inter), dtype=x.dtype, device=x.device)
    _launch(x, top_k, w_gate_up, h, alignment, block_m, gated=True, route_w=None,
            scale=None if scales is None else scales[0])  # fmt: skip
    y = torch.empty((pairs, hidden), dtype=x.dtype, device=x.device)
    _launch(h, 1, w_down, y, alignment, block_m, gated=False,
            route_w=topk_weights.reshape(-1).contiguous(),
            scale=None if scales is None else scales[1])  # fmt: skip
    # torch sums half-precision inputs in fp32 and rounds once.
    return y.view(tokens, top_k, hidden).sum(dim=1)


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
        topk_weights: (T, top_k) routing weights, float32/float16/bfloat16.
        topk_ids: (T, top_k) int32/int64 expert ids in [0, E); 1 <= top_k <= E. Repeated ids
            in a row are allowed (each slot counts).
        w_scales: fp8 only: (gate_up_scale, down_scale), float32 tensors of E elements (per
            expert) or 1 (per tensor); the weights dequantise as W·scale.

    Returns:
        A new contiguous (T, H) tensor in x's dtype.

    Raises:
        ValueError: one line naming the first problem: shapes, dtypes, devices, scales, an
            expert id out of range, bfloat16 under the CPU interpreter, fp8 on a device without
            fp8 support.
    """
    _top_k, scales = _validate_moe(x, w_gate_up, w_down, topk_weights, topk_ids, w_scales, True)
    return _fused_moe(x, w_gate_up, w_down, topk_weights, topk_ids, scales)


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
        w_scale: fp8 only: float32 tensor of E elements (per expert) or 1 (per tensor).
        gated: w stacks gate rows over up rows; out is SiLU(row·gateᵀ)·(row·upᵀ).

    Returns:
        A new contiguous (T, top_k, N) tensor in a's dtype.

    Raises:
        ValueError: one line naming the first problem with the inputs.
    """
    _need_tensors(a=a, w=w, topk_ids=topk_ids)
    if a.dim() not in (2, 3):
        _fail(f"a must be (tokens, K) or (tokens, top_k, K), got shape {tuple(a.shape)}")
    if w.dim() != 3 or w.shape[2] != a.shape[-1] or (gated and w.shape[1] % 2):
        rows = "2N" if gated else "N"
        _fail(f"w must be (experts, {rows}, {a.shape[-1]}), got {tuple(w.shape)}")
    experts, n = w.shape[0], w.shape[1] // (2 if gated else 1)
    if experts < 1:
        _fail("there must be at least one expert")
    if topk_weights is not None:
        _need_tensors(topk_weights=topk_weights)
    top_k = _check_routing(topk_weights, topk_ids, a.shape[0], experts)
    if a.dim() == 3 and a.shape[1] != top_k:
        _fail(f"a has {a.shape[1]} rows per token for top_k {top_k}; need one per slot")
    _check_activation_dtype(a, kernel=True, name="a")
    fp8 = _check_weight_dtype(a, w, "w", fp8_ok=True, x_name="a")
    if fp8 != (w_scale is not None):
        _fail("w_scale must be given for float8_e4m3fn weights, and only for them")
    scale = _check_scale(w_scale, "w_scale", experts, a.device) if fp8 else None
    routing = {"topk_ids": topk_ids}
    if topk_weights is not None:
        routing["topk_weights"] = topk_weights
    _check_device(True, fp8, a=a, w=w, **routing)
    tokens, k = a.shape[0], a.shape[-1]
    pairs = tokens * top_k
    out = torch.empty((pairs, n), dtype=a.dtype, device=a.device)
    if pairs:
        block_m = choose_block_m(pairs, experts)
        alignment = moe_align(topk_ids, experts, block_m)
        a2 = a if a.dim() == 2 else a.reshape(pairs, k)
        route_w = None if topk_weights is None else topk_weights.reshape(-1).contiguous()
        _launch(a2, top_k if a.dim() == 2 else 1, w, out, alignment, block_m,
                gated=gated, route_w=route_w, scale=scale)  # fmt: skip
    return out.view(tokens, top_k, n)


# -------------------------------------------------------------------------------- baselines


def moe_loop(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """Baseline: the MoE MLP as Hugging Face's MixtralSparseMoeBlock computes it, a Python loop
    over the experts that got tokens, each gathering its tokens (index_select), running two
    torch.matmul and adding its weighted rows back (index_add_, in x's dtype, as HF does).

    Same arguments as :func:`fused_moe` without fp8; any device, bfloat16 on a CPU too. Syncs
    with the device once per expert (torch.where), as the original does.
    """
    _validate_moe(x, w_gate_up, w_down, topk_weights, topk_ids, None, False)
    tokens, hidden = x.shape
    inter = w_gate_up.shape[1] // 2
    out = torch.zeros((tokens, hidden), dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out
    for expert in torch.unique(topk_ids).tolist():
        token, slot = torch.where(topk_ids == expert)
        rows = x.index_select(0, token)
        gate_up = torch.matmul(rows, w_gate_up[expert].t())
        h = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        y = torch.matmul(h, w_down[expert].t()) * topk_weights[token, slot, None].to(x.dtype)
        out.index_add_(0, token, y)
    return out


@functools.cache
def _grouped_mm_probe(device: str, dtype: torch.dtype) -> str | None:
    """Run a tiny torch._grouped_mm once per (device, dtype); its error's first line, or None."""
    try:
        a = torch.ones((8, 16), dtype=dtype, device=device)
        b = torch.ones((2, 16, 16), dtype=dtype, device=device).transpose(1, 2)
        offs = torch.tensor([4, 8], dtype=torch.int32, device=device)
        out = torch._grouped_mm(a, b, offs=offs)
        if out.shape != (8, 16) or float(out[0, 0]) != 16.0:
            return "torch._grouped_mm returned a wrong result on a probe"
    except (RuntimeError, NotImplementedError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"torch._grouped_mm fails on {device} {dtype}: {first}"
    return None


def grouped_mm_unsupported(
    device: torch.device | str, dtype: torch.dtype = torch.bfloat16
) -> str | None:
    """Why :func:`moe_grouped_mm` cannot run on ``device`` in ``dtype``, or None when it can.

    ``torch._grouped_mm`` appeared in torch 2.8 for bfloat16 on Hopper; since torch 2.9 it also
    runs on CUDA from compute capability 8.0 and on the CPU, every float dtype, through a
    per-group fallback. Only bfloat16 on Hopper/Blackwell runs the fused CUTLASS grouped GEMM:
    time it against the Triton kernel there. A tiny probe call settles the rest.
    """
    if not hasattr(torch, "_grouped_mm"):
        return "torch has no _grouped_mm (it needs torch 2.8 or later)"
    device = torch.device(device)
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} unsupported; allowed: {_names(SUPPORTED_DTYPES)}"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch._grouped_mm on CUDA needs a CUDA device; none is available"
        capability = torch.cuda.get_device_capability(device)
        if capability < (8, 0):
            have = ".".join(map(str, capability))
            return f"torch._grouped_mm needs compute capability >= 8.0; this device has {have}"
    elif device.type != "cpu":
        return f"torch._grouped_mm baseline runs on CUDA or CPU; got {device.type}"
    return _grouped_mm_probe(str(device), dtype)


def moe_grouped_mm(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """Baseline: the MoE MLP with ``torch._grouped_mm`` for both GEMMs (torch's own grouped
    GEMM, what recent Hugging Face and torchtitan MoE layers use): pairs sorted by expert,
    tokens gathered, gate_up grouped GEMM, SiLU·up, down grouped GEMM, weighted index_add_.

    Same arguments as :func:`moe_loop`. torch._grouped_mm needs 16-byte aligned rows: H and I
    multiples of 8 (16-bit) or 4 (float32) elements, weights with a unit last stride.

    Raises:
        ValueError: on bad inputs, misaligned rows, or where :func:`grouped_mm_unsupported`
            gives a reason.
    """
    top_k, _ = _validate_moe(x, w_gate_up, w_down, topk_weights, topk_ids, None, False)
    reason = grouped_mm_unsupported(x.device, x.dtype)
    if reason is not None:
        _fail(reason)
    rows = {"hidden": x.shape[1], "intermediate": w_down.shape[2]}
    for name, size in rows.items():
        if size * x.element_size() % 16:
            _fail(
                f"torch._grouped_mm needs 16-byte aligned rows: {name} size {size} of "
                f"{x.element_size()}-byte elements is not"
            )
    for name, w in (("w_gate_up", w_gate_up), ("w_down", w_down)):
        aligned = all(s * w.element_size() % 16 == 0 for s in w.stride()[:2])
        if w.stride(2) != 1 or not aligned or w.data_ptr() % 16:
            _fail(
                f"torch._grouped_mm needs 16-byte aligned {name} rows with a unit last stride, "
                f"got strides {w.stride()} of {w.element_size()}-byte elements"
            )
    tokens, hidden = x.shape
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    if tokens == 0:
        return torch.zeros((0, hidden), dtype=x.dtype, device=x.device)
    flat = topk_ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = order // top_k
    counts = torch.zeros(experts, dtype=torch.int64, device=x.device)
    counts.scatter_add_(0, flat.to(torch.int64), torch.ones_like(order))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    rows = x.index_select(0, token)
    gate_up = torch._grouped_mm(rows, w_gate_up.transpose(1, 2), offs=offs)
    h = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    y = torch._grouped_mm(h, w_down.transpose(1, 2), offs=offs)
    y = y.float() * topk_weights.reshape(-1)[order, None].float()
    out = torch.zeros((tokens, hidden), dtype=torch.float32, device=x.device)
    return out.index_add_(0, token, y).to(x.dtype)


# ---------------------------------------------------------------------------------- routing


def route(
    num_tokens: int,
    num_experts: int,
    top_k: int,
    skew: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic router output for benchmarks: (topk_weights, topk_ids), each (T, top_k).

    Each token draws top_k distinct experts one after another without replacement, expert e
    with probability ∝ 1 / (e + 1)^skew among those not yet drawn: skew = 0 is uniform routing,
    skew = 1 Zipf's law (expert 0 the hottest), larger skews concentrate tokens on the first
    experts further. Distinctness caps the skew's effect: with top_k = E every token has every
    expert. The weights are a softmax of standard normal logits over the chosen experts (what
    Mixtral's router normalises), sorted in descending order, so they are positive and sum to 1.

    Args:
        num_tokens: T >= 0.
        num_experts: E >= 1.
        top_k: 1 <= top_k <= E.
        skew: Zipf exponent, finite and >= 0.
        generator: Seeds the draws; the tensors are made on its device (CPU when None).

    Returns:
        float32 weights and int64 ids, on the generator's device.
    """
    for name, value, low in (("num_tokens", num_tokens, 0), ("num_experts", num_experts, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            _fail(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
        allowed = f"allowed: 1 to {num_experts}"
        _fail(f"top_k {top_k!r} unsupported with {num_experts} experts; {allowed}")
    if not isinstance(skew, (int, float)) or not 0 <= skew < float("inf"):
        _fail(f"skew must be a finite number >= 0, got {skew!r}")
    device = torch.device("cpu") if generator is None else generator.device
    if num_tokens == 0:
        empty = torch.empty((0, top_k), device=device)
        return empty, empty.to(torch.int64)
    probs = (torch.arange(num_experts, dtype=torch.float64, device=device) + 1.0) ** -skew
    ids = torch.multinomial(
        probs.expand(num_tokens, num_experts), top_k, replacement=False, generator=generator
    )
    logits = torch.randn((num_tokens, top_k), generator=generator, device=device)
    weights, slot = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    return weights, ids.gather(1, slot)
