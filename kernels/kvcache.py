"""Paged KV-cache write in Triton: the new tokens' keys and values stored into their slots, as a
serving engine does every step before attention (vLLM's ``reshape_and_cache_flash``).

``write_kv(k, v, k_cache, v_cache, slot_mapping)`` updates the caches in place. The caches use
the paged layout of :mod:`kernels.decode`, (num_blocks, page_size, kv_heads, head_dim): a pool of
blocks shared by all sequences. ``slot_mapping[t] = block · page_size + row`` says where token t
goes: ``k_cache[block, row] = k[t]``. The engine computes it from the block table (token i of
sequence b: ``block_table[b, i // page_size] · page_size + i % page_size``); a negative slot marks
a padding token, which is skipped. Slots must be distinct, as an engine's are: with two tokens
on one slot, which one lands is unspecified.

Dtypes: a float16/bfloat16/float32 cache takes k and v of its own dtype bit for bit. A float8_e4m3fn
cache takes k and v of any of those dtypes divided by the one-element fp32 per-tensor scale
(``k_scale``, ``v_scale``, finite and > 0; the cache then holds x / scale and a reader multiplies
back), saturated to ±448 so that large values clip instead of becoming NaN (NaN itself stays NaN),
and rounded to nearest even. The division is IEEE (``div_rn``) so the result matches PyTorch's bit
for bit. On a GPU the conversion to fp8 rounds (cvt.rn.satfinite); Triton's CPU interpreter rounds
ties away from zero and drops the carry into the exponent (126.07 becomes 64), so there the kernel
rounds to the fp8 grid in fp32 itself (``_round_to_e4m3``) and the conversion is exact.

Design: program (t, b) reads token t's slot once and copies head block b, a (BLOCK_H, head_dim)
tile padded to powers of two, of both k and v. A skipped token's program loads and stores
nothing (all masked). Every input and cache may have any strides (a k sliced out of a fused qkv
projection, k/v caches that are two halves of one tensor); cache offsets are int64. No
``tl.dot``: the interpreter runs every dtype here, fp8 included.

Slots are checked against the pool's size, and fp8 scales for being finite and positive, with
one device sync unless ``check_slots=False``; without the check a slot past the pool is skipped
rather than written out of bounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import MAX_HEAD_DIM, interpreted, on_device, strides
from kernels.checks import FLOAT_DTYPES, FP8_DTYPE, Checks

# The largest finite float8_e4m3fn value: fp8 writes saturate to ±FP8_MAX.
FP8_MAX = 448.0
# Elements of one k (or v) tile: 4 warps, 16 a thread.
_TILE = 2048
_WARPS = 4


@triton.jit
def _round_to_e4m3(x):
    """fp32 x, |x| <= 448, rounded to nearest even on the float8_e4m3fn grid, still in fp32.

    With e = max(exponent of x, -6) the grid step near x is 2^(e−3) (3 mantissa bits; 2^−9
    among the subnormals), and |x| + 2^(e+20) lies in one binade of step 2^(e−3): the fp32 add
    does the rounding, carries into the exponent included, and subtracting 2^(e+20) is exact.
    """
    bits = x.to(tl.int32, bitcast=True)
    exponent = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)
    magic = ((exponent + 20 + 127) << 23).to(tl.float32, bitcast=True)
    rounded = (tl.abs(x) + magic) - magic
    return tl.where(bits < 0, -rounded, rounded)  # the sign bit, so -0.0 and -tiny give -0


@triton.jit
def _to_e4m3(x, ROUND_IN_FP32: tl.constexpr):
    """fp32 x, NaN or |x| <= 448, converted to float8_e4m3fn, rounding to nearest even.

    Args:
        x: The fp32 values.
        ROUND_IN_FP32: Round on the fp8 grid in fp32 first (_round_to_e4m3), so the conversion
            only meets exact values, and give NaN its fp8 bits (0x7F) directly: the interpreter's
            own conversion rounds wrong and turns NaN into 384.
    """
    if ROUND_IN_FP32:
        nan = tl.full(x.shape, 0x7F, tl.uint8).to(tl.float8e4nv, bitcast=True)
        return tl.where(x != x, nan, _round_to_e4m3(x).to(tl.float8e4nv))
    return x.to(tl.float8e4nv)


@triton.jit
def _write_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_vt,
    stride_vh,
    stride_vd,
    stride_kcb,
    stride_kcp,
    stride_kch,
    stride_kcd,
    stride_vcb,
    stride_vcp,
    stride_vch,
    stride_vcd,
    stride_s,
    kv_heads,
    head_dim,
    page_size,
    capacity,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    FP8_LIMIT: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    """One program: head block program_id(1) of token program_id(0), into its cache slot.

    Args:
        k_ptr: New keys, (tokens, kv_heads, head_dim), any strides.
        v_ptr: New values, same shape and dtype, any strides.
        k_cache_ptr: Key pool, (num_blocks, page_size, kv_heads, head_dim), any strides.
        v_cache_ptr: Value pool, same shape and dtype as the key pool, any strides.
        slot_ptr: (tokens,) int64 slots, block · page_size + row; negative: skip the token.
        k_scale_ptr: One-element fp32 key scale of an fp8 pool; None for a 16- or 32-bit one.
        v_scale_ptr: One-element fp32 value scale of an fp8 pool; None otherwise.
        stride_kt: Elements between tokens of k.
        stride_kh: Elements between heads of k.
        stride_kd: Elements between head-dimension entries of k.
        stride_vt: Elements between tokens of v.
        stride_vh: Elements between heads of v.
        stride_vd: Elements between head-dimension entries of v.
        stride_kcb: Elements between blocks of the key pool.
        stride_kcp: Elements between rows (slots) of a key block.
        stride_kch: Elements between heads of the key pool.
        stride_kcd: Elements between head-dimension entries of the key pool.
        stride_vcb: Elements between blocks of the value pool.
        stride_vcp: Elements between rows (slots) of a value block.
        stride_vch: Elements between heads of the value pool.
        stride_vcd: Elements between head-dimension entries of the value pool.
        stride_s: Elements between entries of slot_mapping.
        kv_heads: Heads per token.
        head_dim: Elements per head.
        page_size: Rows per block.
        capacity: num_blocks · page_size; a slot at or past it is skipped too.
        BLOCK_H: Heads per program, a power of two.
        BLOCK_D: head_dim rounded up to a power of two.
        FP8_LIMIT: The saturation bound of fp8 pools, float8_e4m3fn's largest finite value.
        ROUND_IN_FP32: Round fp8 values to their grid with fp32 arithmetic before the
            conversion, which then only has exact values to convert (the interpreter: its own
            rounding is wrong).
    """
    tok = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + tok * stride_s).to(tl.int64)
    block = slot // page_size
    row = slot % page_size
    heads = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)[:, None]
    dims = tl.arange(0, BLOCK_D).to(tl.int64)[None, :]
    # A skipped token has no heads to copy (a scalar condition folded into the head bound,
    # since the interpreter cannot & a scalar mask with a block mask).
    heads_here = tl.where((slot >= 0) & (slot < capacity), kv_heads, 0)
    inside = (heads < heads_here) & (dims < head_dim)
    k = tl.load(k_ptr + tok * stride_kt + heads * stride_kh + dims * stride_kd, mask=inside)
    v = tl.load(v_ptr + tok * stride_vt + heads * stride_vh + dims * stride_vd, mask=inside)
    if k_scale_ptr is not None:  # fp8 pools: divide by the scales and saturate
        # A GPU's max and min return the other operand for NaN: propagate it, or NaN would be
        # stored as -448.
        k = tl.math.div_rn(k.to(tl.float32), tl.load(k_scale_ptr))
        k = tl.clamp(k, -FP8_LIMIT, FP8_LIMIT, propagate_nan=tl.PropagateNan.ALL)
        v = tl.math.div_rn(v.to(tl.float32), tl.load(v_scale_ptr))
        v = tl.clamp(v, -FP8_LIMIT, FP8_LIMIT, propagate_nan=tl.PropagateNan.ALL)
        k = _to_e4m3(k, ROUND_IN_FP32)
        v = _to_e4m3(v, ROUND_IN_FP32)
    k_dst = k_cache_ptr + block * stride_kcb + row * stride_kcp + heads * stride_kch
    v_dst = v_cache_ptr + block * stride_vcb + row * stride_vcp + heads * stride_vch
    tl.store(k_dst + dims * stride_kcd, k.to(k_cache_ptr.dtype.element_ty), mask=inside)
    tl.store(v_dst + dims * stride_vcd, v.to(v_cache_ptr.dtype.element_ty), mask=inside)


_CHECK = Checks("write_kv")


def _validate(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> None:
    """Raise ValueError with one line naming the first problem; reads no device data."""
    _CHECK.tensors(k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    if k.dim() != 3 or v.shape != k.shape:
        _CHECK.fail(
            f"k and v must be (tokens, kv_heads, head_dim) of one shape, got {tuple(k.shape)} "
            f"and {tuple(v.shape)}"
        )
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        _CHECK.fail(
            "k_cache and v_cache must be (num_blocks, page_size, kv_heads, head_dim) of one "
            f"shape, got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    tokens, kv_heads, head_dim = k.shape
    if k_cache.shape[2:] != (kv_heads, head_dim):
        _CHECK.fail(
            f"the caches' (kv_heads, head_dim) {tuple(k_cache.shape[2:])} differ from k's "
            f"{(kv_heads, head_dim)}"
        )
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        _CHECK.fail(f"head_dim {head_dim} unsupported; allowed: 1 to {MAX_HEAD_DIM}")
    if slot_mapping.shape != (tokens,) or slot_mapping.dtype != torch.int64:
        _CHECK.fail(
            f"slot_mapping must be ({tokens},) int64, got {tuple(slot_mapping.shape)} "
            f"{slot_mapping.dtype}"
        )
    _CHECK.dtype("k", k, FLOAT_DTYPES)
    _CHECK.same_dtype(k=k, v=v)
    if v_cache.dtype != k_cache.dtype or k_cache.dtype not in (k.dtype, FP8_DTYPE):
        _CHECK.fail(
            f"k_cache and v_cache must share k's dtype ({k.dtype}) or float8_e4m3fn, got "
            f"{k_cache.dtype} and {v_cache.dtype}"
        )
    device = _CHECK.device(k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        shared = zip(cache.stride(), cache.shape, strict=True)
        if any(stride == 0 and n > 1 for stride, n in shared):
            _CHECK.fail(f"{name} has a stride of 0 (an expanded view): its slots share memory")
    if k_cache.numel() and k_cache.data_ptr() == v_cache.data_ptr():
        _CHECK.fail(
            "k_cache and v_cache start at the same memory, so values would overwrite keys; "
            "pass two caches or two halves of one"
        )
    if k_cache.dtype != FP8_DTYPE:
        if k_scale is not None or v_scale is not None:
            _CHECK.fail(
                f"k_scale and v_scale apply to float8_e4m3fn caches only, not {k_cache.dtype}"
            )
        return
    if k_scale is None or v_scale is None:
        _CHECK.fail(
            "float8_e4m3fn caches need k_scale and v_scale (what the values are divided by)"
        )
    _CHECK.scale("k_scale", k_scale, ((), (1,)), device)
    _CHECK.scale("v_scale", v_scale, ((), (1,)), device)
    _CHECK.fp8(device, "float8_e4m3fn caches")


def _check_values(
    slot_mapping: torch.Tensor,
    capacity: int,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> None:
    """Every slot below the pool's capacity (negative ones are skips) and the scales finite and
    positive."""
    if slot_mapping.numel():
        high = int(slot_mapping.max())
        if high >= capacity:
            _CHECK.fail(
                f"slot_mapping entries must be < {capacity} (num_blocks x page_size) or "
                f"negative (skip), got a maximum of {high}"
            )
    _CHECK.positive(k_scale=k_scale, v_scale=v_scale)


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    check_slots: bool = True,
) -> None:
    """Store each token's key and value into its slot of the paged caches, in place.

    Args:
        k: (tokens, kv_heads, head_dim) float16/bfloat16/float32, any strides; tokens may be 0.
        v: Same shape, dtype and device as k, any strides.
        k_cache: (num_blocks, page_size, kv_heads, head_dim) pool, any strides, of k's dtype or
            float8_e4m3fn (compute capability 8.9 or later on a GPU).
        v_cache: Same shape, dtype and device as k_cache (it may be a view of the same tensor).
        slot_mapping: (tokens,) int64: token t goes to k_cache[s // page_size, s % page_size]
            for s = slot_mapping[t]; negative skips the token. Entries must be distinct.
        k_scale: One-element float32 tensor, for a float8_e4m3fn cache only (then required):
            the cache holds k / k_scale, saturated to ±448.
        v_scale: Likewise for v.
        check_slots: Check the slots against the pool's size and the scales for being finite
            and > 0 (one device sync). False skips both, so the call can be timed alone or
            captured in a CUDA graph; the caller vouches for the scales, and a slot past the
            pool is skipped.
    """
    _validate(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    num_blocks, page_size = k_cache.shape[:2]
    capacity = num_blocks * page_size
    if check_slots:
        _check_values(slot_mapping, capacity, k_scale, v_scale)
    tokens, kv_heads, _ = k.shape
    if tokens and kv_heads and capacity:
        _launch(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)


def _launch(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> None:
    """The kernel over every token into the pools; tokens, heads and pool at least 1."""
    tokens, kv_heads, head_dim = k.shape
    num_blocks, page_size = k_cache.shape[:2]
    block_d = triton.next_power_of_2(head_dim)
    block_h = min(triton.next_power_of_2(kv_heads), max(1, _TILE // block_d))
    with on_device(k):
        _write_kv_kernel[(tokens, triton.cdiv(kv_heads, block_h))](
            k_ptr=k,
            v_ptr=v,
            k_cache_ptr=k_cache,
            v_cache_ptr=v_cache,
            slot_ptr=slot_mapping,
            k_scale_ptr=k_scale,
            v_scale_ptr=v_scale,
            **strides(k, "stride_kt", "stride_kh", "stride_kd"),
            **strides(v, "stride_vt", "stride_vh", "stride_vd"),
            **strides(k_cache, "stride_kcb", "stride_kcp", "stride_kch", "stride_kcd"),
            **strides(v_cache, "stride_vcb", "stride_vcp", "stride_vch", "stride_vcd"),
            stride_s=slot_mapping.stride(0),
            kv_heads=kv_heads,
            head_dim=head_dim,
            page_size=page_size,
            capacity=num_blocks * page_size,
            BLOCK_H=block_h,
            BLOCK_D=block_d,
            FP8_LIMIT=FP8_MAX,
            ROUND_IN_FP32=interpreted(),
            num_warps=_WARPS,
        )
