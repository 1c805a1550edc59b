"""Rotary position embedding (RoPE) on queries and keys in Triton, in Llama's rotate-half form.

``rotary(q, k, positions, cos_sin_cache)`` returns new tensors ``(q_rot, k_rot)``. For token t at
position p = positions[t] and each head, the two halves x1 = x[:D/2], x2 = x[D/2:] of a head
vector become

    out[:D/2] = x1·cos(p·θ) − x2·sin(p·θ)
    out[D/2:] = x2·cos(p·θ) + x1·sin(p·θ),    θ_i = base^(−2i/D), i < D/2,

which is HF Llama's ``x·cos + rotate_half(x)·sin`` and vLLM's ``rotary_embedding`` with
``is_neox=True``. The whole head dimension is rotated (no partial rotary).

Cache layout (as vLLM's): ``cos_sin_cache`` is (max_pos, D); row p holds cos(p·θ_i) in columns
0..D/2−1 and sin(p·θ_i) in columns D/2..D−1. :func:`rotary_cache` builds one.

Design: one launch rotates q and k together. Program (t, b) loads token t's position and its
cos/sin row once, then rotates head block b: blocks ``0 .. q_blocks−1`` are query heads and the
rest key heads, so Hq ≠ Hk (GQA) costs nothing extra. A head block is a (BLOCK_H, D/2) tile per
half, the half padded to a power of two, so any even D up to ``kernels.MAX_HEAD_DIM`` works.
Products and sums are in fp32 and each output is rounded once to the input dtype. Memory-bound:
each q/k element is read and written once, the cos/sin row once per program. No ``tl.dot``, so
the interpreter runs bfloat16 too. float16, bfloat16 and float32; any strides on every input.

Positions are checked against max_pos with one device sync unless ``check_positions=False``;
without the check a position outside [0, max_pos) reads nothing and gives zeros rather than
touching memory outside the cache.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import MAX_HEAD_DIM, on_device, strides
from kernels.checks import FLOAT_DTYPES, Checks

POSITION_DTYPES = (torch.int32, torch.int64)
# Elements of one half-tile (BLOCK_H heads × D/2 padded): 4 warps, 8 a thread per half.
_TILE = 1024
_WARPS = 4


@triton.jit
def _rotate_heads(
    x_ptr,
    out_ptr,
    cos,
    sin,
    heads,
    head_block,
    stride_h,
    stride_d,
    half,
    BLOCK_H: tl.constexpr,
    HALF_PAD: tl.constexpr,
):
    """Rotate one block of heads of one token.

    Args:
        x_ptr: The token's first element in q or k (row offset already applied).
        out_ptr: The token's first element in the contiguous output (heads, 2·half).
        cos: fp32 (1, HALF_PAD) cosines of the token's position, zero past half.
        sin: fp32 (1, HALF_PAD) sines, zero past half.
        heads: Heads in this tensor.
        head_block: Which block of BLOCK_H heads.
        stride_h: Elements between heads of the input.
        stride_d: Elements between head-dimension entries of the input.
        half: D / 2.
        BLOCK_H: Heads per block, a power of two.
        HALF_PAD: half rounded up to a power of two.
    """
    h = (head_block * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    cols = tl.arange(0, HALF_PAD).to(tl.int64)
    inside = (h < heads)[:, None] & (cols < half)[None, :]
    first = x_ptr + h[:, None] * stride_h + cols[None, :] * stride_d
    x1 = tl.load(first, mask=inside, other=0.0).to(tl.float32)
    x2 = tl.load(first + half * stride_d, mask=inside, other=0.0).to(tl.float32)
    out = out_ptr + h[:, None] * (2 * half) + cols[None, :]
    dtype = out_ptr.dtype.element_ty
    tl.store(out, (x1 * cos - x2 * sin).to(dtype), mask=inside)
    tl.store(out + half, (x2 * cos + x1 * sin).to(dtype), mask=inside)


@triton.jit
def _rotary_kernel(
    q_ptr,
    k_ptr,
    pos_ptr,
    cache_ptr,
    q_out_ptr,
    k_out_ptr,
    stride_qt,
    stride_qh,
    stride_qd,
    stride_kt,
    stride_kh,
    stride_kd,
    stride_p,
    stride_cm,
    stride_cn,
    q_heads,
    k_heads,
    q_blocks,
    half,
    max_pos,
    BLOCK_H: tl.constexpr,
    HALF_PAD: tl.constexpr,
):
    """One program: token program_id(0), head block program_id(1) of q then of k.

    Args:
        q_ptr: Queries, (T, q_heads, 2·half), any strides.
        k_ptr: Keys, (T, k_heads, 2·half), q's dtype, any strides.
        pos_ptr: (T,) int32/int64 positions.
        cache_ptr: (max_pos, 2·half) cos in columns [0, half), sin in [half, 2·half).
        q_out_ptr: Rotated queries, contiguous (T, q_heads, 2·half), q's dtype.
        k_out_ptr: Rotated keys, contiguous (T, k_heads, 2·half), q's dtype.
        stride_qt: Elements between tokens of q.
        stride_qh: Elements between heads of q.
        stride_qd: Elements between head-dimension entries of q.
        stride_kt: Elements between tokens of k.
        stride_kh: Elements between heads of k.
        stride_kd: Elements between head-dimension entries of k.
        stride_p: Elements between entries of positions.
        stride_cm: Elements between rows (positions) of the cache.
        stride_cn: Elements between columns of the cache.
        q_heads: Query heads, Hq.
        k_heads: Key heads, Hk.
        q_blocks: ceil(q_heads / BLOCK_H); head blocks from here on are key heads.
        half: D / 2.
        max_pos: Rows of the cache; a position outside [0, max_pos) gives zeros.
        BLOCK_H: Heads per program, a power of two.
        HALF_PAD: half rounded up to a power of two.
    """
    tok = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    pos = tl.load(pos_ptr + tok * stride_p).to(tl.int64)
    cols = tl.arange(0, HALF_PAD).to(tl.int64)
    # An out-of-range position loads no column (a scalar condition folded into the column
    # bound, since the interpreter cannot & a scalar mask with a block mask).
    valid = cols < tl.where((pos >= 0) & (pos < max_pos), half, 0)
    row = cache_ptr + pos * stride_cm
    cos = tl.load(row + cols * stride_cn, mask=valid, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(row + (cols + half) * stride_cn, mask=valid, other=0.0).to(tl.float32)[None, :]
    if head_block < q_blocks:
        _rotate_heads(
            q_ptr + tok * stride_qt, q_out_ptr + tok * q_heads * 2 * half, cos, sin, q_heads,
            head_block, stride_qh, stride_qd, half, BLOCK_H=BLOCK_H, HALF_PAD=HALF_PAD,
        )  # fmt: skip
    else:
        _rotate_heads(
            k_ptr + tok * stride_kt, k_out_ptr + tok * k_heads * 2 * half, cos, sin, k_heads,
            head_block - q_blocks, stride_kh, stride_kd, half, BLOCK_H=BLOCK_H, HALF_PAD=HALF_PAD,
        )  # fmt: skip


_CHECK = Checks("rotary")


def _validate(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    """Raise ValueError with one line naming the first problem with the inputs."""
    _CHECK.tensors(q=q, k=k, positions=positions, cos_sin_cache=cos_sin_cache)
    _CHECK.rank("q", q, "(tokens, heads, head_dim)")
    _CHECK.rank("k", k, "(tokens, heads, head_dim)")
    tokens, _, head_dim = q.shape
    if k.shape[0] != tokens or k.shape[2] != head_dim:
        _CHECK.fail(
            f"q and k must share tokens and head_dim, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape[1] == 0 or k.shape[1] == 0:
        _CHECK.fail(f"q and k need at least one head each, got {q.shape[1]} and {k.shape[1]}")
    if head_dim % 2 or not 2 <= head_dim <= MAX_HEAD_DIM:
        _CHECK.fail(f"head_dim {head_dim} unsupported; allowed: even, 2 to {MAX_HEAD_DIM}")
    _CHECK.dtype("q", q, FLOAT_DTYPES)
    _CHECK.same_dtype(q=q, k=k)
    if positions.shape != (tokens,) or positions.dtype not in POSITION_DTYPES:
        _CHECK.fail(
            f"positions must be ({tokens},) int32 or int64, got {tuple(positions.shape)} "
            f"{positions.dtype}"
        )
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != head_dim:
        _CHECK.fail(
            f"cos_sin_cache must be (max_pos, {head_dim}) (cos then sin), got "
            f"{tuple(cos_sin_cache.shape)}"
        )
    _CHECK.dtype("cos_sin_cache", cos_sin_cache, FLOAT_DTYPES)
    _CHECK.device(q=q, k=k, positions=positions, cos_sin_cache=cos_sin_cache)


def _check_positions(positions: torch.Tensor, max_pos: int) -> None:
    """Every position in [0, max_pos), read with one device sync."""
    if positions.numel() == 0:
        return
    low, high = torch.stack([positions.min(), positions.max()]).tolist()
    if low < 0 or high >= max_pos:
        _CHECK.fail(
            f"positions must lie in [0, {max_pos}) (the cache's rows), got min {low} and max {high}"
        )


def rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    *,
    check_positions: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys by their tokens' positions (rotate-half / neox RoPE), one launch.

    Args:
        q: (tokens, q_heads, head_dim) float16/bfloat16/float32, any strides; tokens may be 0.
            head_dim is even, at most ``kernels.MAX_HEAD_DIM``.
        k: (tokens, k_heads, head_dim), q's dtype and device, any strides; k_heads need not
            equal q_heads (GQA).
        positions: (tokens,) int32 or int64, any order, repeats allowed, each in [0, max_pos).
        cos_sin_cache: (max_pos, head_dim) float16/bfloat16/float32, any strides: row p holds
            cos(p·θ) in its first head_dim/2 columns and sin(p·θ) in the rest (see
            :func:`rotary_cache`).
        check_positions: Check the positions' range (one device sync). False skips it, so the
            call can be timed alone or captured in a CUDA graph; the caller vouches for them,
            and an out-of-range position gives zeros.

    Returns:
        (q_rot, k_rot), new contiguous tensors of q's and k's shapes in q's dtype.
    """
    _validate(q, k, positions, cos_sin_cache)
    tokens = q.shape[0]
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    if check_positions:
        _check_positions(positions, cos_sin_cache.shape[0])
    if tokens:
        _launch(q, k, positions, cos_sin_cache, q_out, k_out)
    return q_out, k_out


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    q_out: torch.Tensor,
    k_out: torch.Tensor,
) -> None:
    """The kernel over every token into q_out and k_out (contiguous), tokens >= 1."""
    tokens, q_heads, head_dim = q.shape
    k_heads = k.shape[1]
    half = head_dim // 2
    half_pad = triton.next_power_of_2(half)
    block_h = min(triton.next_power_of_2(max(q_heads, k_heads)), max(1, _TILE // half_pad))
    q_blocks = triton.cdiv(q_heads, block_h)
    grid = (tokens, q_blocks + triton.cdiv(k_heads, block_h))
    with on_device(q):
        _rotary_kernel[grid](
            q_ptr=q,
            k_ptr=k,
            pos_ptr=positions,
            cache_ptr=cos_sin_cache,
            q_out_ptr=q_out,
            k_out_ptr=k_out,
            **strides(q, "stride_qt", "stride_qh", "stride_qd"),
            **strides(k, "stride_kt", "stride_kh", "stride_kd"),
            stride_p=positions.stride(0),
            **strides(cos_sin_cache, "stride_cm", "stride_cn"),
            q_heads=q_heads,
            k_heads=k_heads,
            q_blocks=q_blocks,
            half=half,
            max_pos=cos_sin_cache.shape[0],
            BLOCK_H=block_h,
            HALF_PAD=half_pad,
            num_warps=_WARPS,
        )


def rotary_cache(
    max_pos: int,
    head_dim: int,
    base: float = 10000.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The (max_pos, head_dim) cos/sin table :func:`rotary` reads.

    Row p holds cos(p·θ_i) then sin(p·θ_i) for θ_i = base^(−2i/head_dim), i < head_dim/2 (Llama's
    frequencies without rope scaling), computed in float64 and rounded once to ``dtype``.
    """
    if head_dim % 2 or head_dim < 2 or max_pos < 1:
        raise ValueError(
            f"rotary_cache: need max_pos >= 1 and an even head_dim >= 2, got {max_pos}, {head_dim}"
        )
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    inv_freq = torch.exp(-math.log(base) * exponents)
    angles = torch.arange(max_pos, dtype=torch.float64, device=device)[:, None] * inv_freq
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(dtype)
