"""Triton GEMM: C = A·B for fp16, bf16 and fp32, plus a per-tensor-scaled fp8 variant.

Every launch accumulates in fp32 and writes C in the input dtype (fp8: in ``out_dtype``).
fp32 inputs are multiplied in full IEEE fp32 by default; ``allow_tf32=True`` lets tensor cores
round the inputs to tf32 (10-bit mantissa), which is much faster and about 1e-3 relative error.

Inputs may be strided or transposed views: strides are passed to the kernel, nothing is copied.
The output is always a fresh row-major tensor.

On a GPU the kernel is autotuned per (M, N, K, dtype, precision); the first call for a new key
benchmarks the surviving configs, so time a warmed-up call. Under the Triton CPU interpreter
(``kernels.interpreted()``) a single small config is used instead, because benchmarking there
would only measure the interpreter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, on_device, strides
from kernels.autotune import autotune, bucket, config, fitting, meta
from kernels.checks import FLOAT_DTYPES, FP8_DTYPE, Checks

FP8_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Big tiles for large problems, thin ones (BLOCK_M=16) for decode-like M, and BLOCK_K=128
# tiles that only fit shared memory with 1-byte fp8 operands. Every BLOCK_K is >= 32 because
# fp8 tl.dot needs K >= 32 and all tiles are >= 16 because tl.dot needs that on NVIDIA.
GPU_CONFIGS = [
    config(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8),
    config(8, 3, BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8),
    config(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8),
    config(8, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8),
    config(4, 4, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8),
    config(4, 4, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8),
    config(4, 4, BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=8),
    config(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8),
    config(4, 4, BLOCK_M=128, BLOCK_N=32, BLOCK_K=32, GROUP_M=8),
    config(2, 5, BLOCK_M=64, BLOCK_N=32, BLOCK_K=32, GROUP_M=8),
    config(2, 5, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, GROUP_M=8),
    config(2, 4, BLOCK_M=32, BLOCK_N=32, BLOCK_K=64, GROUP_M=8),
    config(4, 4, BLOCK_M=16, BLOCK_N=128, BLOCK_K=64, GROUP_M=8),
    config(2, 4, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=8),
    config(2, 4, BLOCK_M=16, BLOCK_N=32, BLOCK_K=128, GROUP_M=8),
]
# Accumulator elements a thread may hold (BLOCK_M × BLOCK_N over the block's threads), by operand
# bytes: fp8 keeps two fp32 accumulators (max_num_imprecise_acc promotes one into the other) and
# IEEE fp32 feeds its FMAs from registers, so that 128 spilled on sm_90 (bench.measure.aot); a
# 16-bit warp-group MMA holds 128 without.
_ACC_PER_THREAD = {1: 64, 2: 128, 4: 64}
# GROUP_M=2 (not 8) so that the small test shapes span several groups, partial ones included,
# and the grouped tile order is really exercised.
INTERPRETER_CONFIG = config(1, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)


def _tile_bytes(config: triton.Config, elem_bytes: int) -> int:
    """Shared memory the pipelined A and B tiles need (one buffer per stage)."""
    bm, bn, bk = (meta(config, n) for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (bm * bk + bk * bn) * elem_bytes


def _select(
    configs: list[triton.Config], m: int, n: int, k: int, elem_bytes: int, max_smem: int | None
) -> list[triton.Config]:
    """Drop configs whose tiles overshoot the problem, whose accumulator would spill registers
    or whose tiles do not fit shared memory.

    A tile dimension survives if it is no larger than the problem dimension rounded up to a
    power of two (or is the smallest size on offer), so a 1×N problem does not benchmark
    256-row tiles.
    """

    def limit(size: int, name: str) -> int:
        return bucket(size, min(meta(c, name) for c in configs))

    lm, ln, lk = limit(m, "BLOCK_M"), limit(n, "BLOCK_N"), limit(k, "BLOCK_K")

    def fits(c: triton.Config) -> bool:
        bm, bn, bk = (meta(c, n) for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
        per_thread = bm * bn // (32 * c.num_warps)
        return bm <= lm and bn <= ln and bk <= lk and per_thread <= _ACC_PER_THREAD[elem_bytes]

    return fitting(configs, lambda c: _tile_bytes(c, elem_bytes), max_smem, fits)


def select(configs: list[triton.Config], args: dict, max_smem: int | None) -> list[triton.Config]:
    """The autotuner's pruning: read the problem off the launch arguments."""
    m, n, k = (int(args[name]) for name in ("M", "N", "K"))
    return _select(configs, m, n, k, args["a_ptr"].element_size(), max_smem)


def tuning_configs(
    m: int, n: int, k: int, elem_bytes: int, max_smem: int = HOPPER_SMEM
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for an M×N×K problem with operands of
    ``elem_bytes``, on a device with ``max_smem`` bytes of shared memory per block: what sizes
    a GPU run before it starts, also from a machine without one."""
    return _select(GPU_CONFIGS, m, n, k, elem_bytes, max_smem)


@triton.jit
def _tile_coords(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """
    Map this program to the (row, column) tile of C it computes, in grouped order.

    Consecutive programs walk down a band of GROUP_M tile rows before moving right, so the
    B column tiles they load are shared while still in L2 instead of re-fetched per tile row.

    Args:
        M: Rows of C.
        N: Columns of C.
        BLOCK_M: Rows per tile.
        BLOCK_N: Columns per tile.
        GROUP_M: Tile rows per band; the last band may be shorter.
    """
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    programs_per_band = GROUP_M * tiles_n
    band = pid // programs_per_band
    first_row = band * GROUP_M
    band_rows = min(tiles_m - first_row, GROUP_M)
    within = pid % programs_per_band
    return first_row + within % band_rows, within // band_rows


@triton.jit
def _accumulate(
    a_ptr,
    b_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    pid_m,
    pid_n,
    INPUT_PRECISION: tl.constexpr,
    MAX_IMPRECISE_ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """
    Compute one BLOCK_M × BLOCK_N tile of A·B in fp32.

    Args:
        a_ptr: Pointer to A, of shape [M, K], any strides.
        b_ptr: Pointer to B, of shape [K, N], any strides.
        M: Rows of A.
        N: Columns of B.
        K: Inner dimension; need not be a multiple of BLOCK_K.
        stride_am: Elements between consecutive rows of A.
        stride_ak: Elements between consecutive columns of A.
        stride_bk: Elements between consecutive rows of B.
        stride_bn: Elements between consecutive columns of B.
        pid_m: Tile row index.
        pid_n: Tile column index.
        INPUT_PRECISION: tl.dot input precision ("ieee", "tf32"; None: the default); only
            matters for fp32.
        MAX_IMPRECISE_ACC: tl.dot max_num_imprecise_acc; None for Triton's default.
        BLOCK_M: Rows per tile.
        BLOCK_N: Columns per tile.
        BLOCK_K: Inner-dimension step.
    """
    # int64 so that row × stride cannot overflow for operands past 2**31 elements.
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak
    b_ptrs = b_ptr + ks[:, None] * stride_bk + cols[None, :] * stride_bn
    row_ok = rows[:, None] < M
    col_ok = cols[None, :] < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - step * BLOCK_K
        # Zero-filled K padding adds nothing to the dot; M/N padding is dropped at the store.
        a = tl.load(a_ptrs, mask=row_ok & (ks[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(ks[:, None] < k_left) & col_ok, other=0.0)
        acc = tl.dot(
            a, b, acc, input_precision=INPUT_PRECISION, max_num_imprecise_acc=MAX_IMPRECISE_ACC
        )
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


# Precision changes the best tile (fp32 IEEE dots run on FMA units, not tensor cores); the
# autotuner adds the operands' dtypes to the key itself.
@autotune(GPU_CONFIGS, INTERPRETER_CONFIG, key=["M", "N", "K", "INPUT_PRECISION"], select=select)
@triton.jit
def _matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    scale_a_ptr,
    scale_b_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """
    C = A·B with fp32 accumulation, times scale_a·scale_b when they are given (fp8); one
    program per BLOCK_M × BLOCK_N tile of C.

    Args:
        a_ptr: Pointer to A, of shape [M, K], fp16/bf16/fp32 or float8_e4m3fn, any strides.
        b_ptr: Pointer to B, of shape [K, N], same dtype as A, any strides.
        c_ptr: Pointer to the output C, of shape [M, N]; written in its own dtype.
        scale_a_ptr: A's one-element fp32 dequantisation scale (fp8), or None for none.
        scale_b_ptr: B's one-element fp32 dequantisation scale (fp8), or None for none.
        M: Rows of A and C; >= 1.
        N: Columns of B and C; >= 1.
        K: Inner dimension; >= 1.
        stride_am: Elements between consecutive rows of A.
        stride_ak: Elements between consecutive columns of A.
        stride_bk: Elements between consecutive rows of B.
        stride_bn: Elements between consecutive columns of B.
        stride_cm: Elements between consecutive rows of C.
        stride_cn: Elements between consecutive columns of C.
        INPUT_PRECISION: tl.dot input precision: "ieee" (exact fp32 products) or "tf32"; None
            for fp8.
        BLOCK_M: Rows per tile (autotuned).
        BLOCK_N: Columns per tile (autotuned).
        BLOCK_K: Inner-dimension step (autotuned).
        GROUP_M: Tile rows per L2-friendly band (autotuned).
    """
    pid_m, pid_n = _tile_coords(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    if scale_a_ptr is not None:
        # Hopper's fp8 MMAs accumulate with fewer bits than fp32 (Triton's default there never
        # promotes). Promoting into the fp32 accumulator once per BLOCK_K keeps the error near
        # torch._scaled_mm's default, precise-accumulation mode; other GPUs ignore the setting.
        acc = _accumulate(
            a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
            INPUT_PRECISION, BLOCK_K, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        # Scaling once after the K loop is exact-equivalent to scaling the inputs and far cheaper.
        acc = acc * (tl.load(scale_a_ptr) * tl.load(scale_b_ptr))
    else:
        acc = _accumulate(
            a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
            INPUT_PRECISION, None, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


def _grid(m: int, n: int) -> Callable[[dict], tuple[int]]:
    # Triton calls this with the chosen config, so the tile count follows the tile size.
    return lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)


def _launch(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    precision: str | None,
    scale_a: torch.Tensor | None = None,
    scale_b: torch.Tensor | None = None,
) -> None:
    """C = A·B (·scale_a·scale_b) into c; M, N and K at least 1."""
    (m, k), n = a.shape, b.shape[1]
    _matmul_kernel[_grid(m, n)](
        a_ptr=a,
        b_ptr=b,
        c_ptr=c,
        scale_a_ptr=scale_a,
        scale_b_ptr=scale_b,
        M=m,
        N=n,
        K=k,
        **strides(a, "stride_am", "stride_ak"),
        **strides(b, "stride_bk", "stride_bn"),
        **strides(c, "stride_cm", "stride_cn"),
        INPUT_PRECISION=precision,
    )


def _check_operands(
    check: Checks, a: torch.Tensor, b: torch.Tensor, allowed: tuple[torch.dtype, ...]
) -> torch.device:
    check.tensors(a=a, b=b)
    check.rank("a", a, "(M, K)")
    check.rank("b", b, "(K, N)")
    if a.shape[1] != b.shape[0]:
        check.fail(
            f"inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}; "
            "need a.shape[1] == b.shape[0]"
        )
    check.dtype("a", a, allowed)
    check.same_dtype(a=a, b=b)
    return check.device(a=a, b=b)


def _product(
    a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, launch: Callable
) -> torch.Tensor:
    """A new (M, N) C of dtype, filled by launch(c) unless the product is empty (K == 0: 0)."""
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return torch.zeros((m, n), dtype=dtype, device=a.device)
    c = torch.empty((m, n), dtype=dtype, device=a.device)
    with on_device(a):
        launch(c)
    return c


_MATMUL = Checks("matmul")


def matmul(a: torch.Tensor, b: torch.Tensor, *, allow_tf32: bool = False) -> torch.Tensor:
    """C = A·B for 2-D fp16, bf16 or fp32 tensors; fp32 accumulation, C in the input dtype.

    ``allow_tf32`` only affects fp32 inputs: False (default) multiplies in IEEE fp32
    (``input_precision="ieee"``; slow on tensor-core GPUs), True rounds inputs to tf32.
    Inputs may be any strided views; C is a new contiguous (M, N) tensor. K == 0 gives zeros.

    Raises:
        ValueError: on non-2-D inputs, mismatched inner dimensions, mixed or unsupported
            dtypes (bfloat16 too under the CPU interpreter), or unsupported/mixed devices.
    """
    _check_operands(_MATMUL, a, b, FLOAT_DTYPES)
    _MATMUL.dots(a.dtype)
    precision = "tf32" if allow_tf32 or a.dtype != torch.float32 else "ieee"
    return _product(a, b, a.dtype, lambda c: _launch(a, b, c, precision=precision))


_MATMUL_FP8 = Checks("matmul_fp8")


def matmul_fp8(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.bfloat16,
    check_scales: bool = True,
) -> torch.Tensor:
    """C = (A·B)·scale_a·scale_b for float8_e4m3fn A, B and one-element float32 scales.

    Same maths as ``torch._scaled_mm`` with per-tensor scales, but A and B may have any layout.
    Accumulates in fp32; C is ``out_dtype`` (bfloat16, float16 or float32). Needs a CUDA device
    of compute capability >= 8.9, or Triton's interpreter.

    Args:
        check_scales: Check that the scales are finite and > 0 (one device sync). False skips
            it, so the call can be timed alone or captured in a CUDA graph; the caller vouches
            for them.

    Raises:
        ValueError: on bad shapes, dtypes, scales, or a device without fp8 support.
    """
    device = _check_operands(_MATMUL_FP8, a, b, (FP8_DTYPE,))
    _MATMUL_FP8.fp8(device, "fp8 GEMMs")
    _MATMUL_FP8.scale("scale_a", scale_a, ((), (1,)), device)
    _MATMUL_FP8.scale("scale_b", scale_b, ((), (1,)), device)
    if out_dtype not in FP8_OUT_DTYPES:
        _MATMUL_FP8.fail(f"unsupported out_dtype {out_dtype}; allowed: bfloat16, float16, float32")
    if check_scales:
        _MATMUL_FP8.positive(scale_a=scale_a, scale_b=scale_b)
    return _product(
        a,
        b,
        out_dtype,
        lambda c: _launch(a, b, c, precision=None, scale_a=scale_a, scale_b=scale_b),
    )
