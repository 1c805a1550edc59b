"""Triton GEMM: C = A·B for fp16, bf16 and fp32, plus a per-tensor-scaled fp8 variant.

Every kernel accumulates in fp32 and writes C in the input dtype (fp8: in ``out_dtype``).
fp32 inputs are multiplied in full IEEE fp32 by default; ``allow_tf32=True`` lets tensor cores
round the inputs to tf32 (10-bit mantissa), which is much faster and about 1e-3 relative error.

Inputs may be strided or transposed views: strides are passed to the kernel, nothing is copied.
The output is always a fresh row-major tensor.

On a GPU the kernels are autotuned per (M, N, K, dtype, precision); the first call for a new key
benchmarks the surviving configs, so time a warmed-up call. Under the Triton CPU interpreter
(``kernels.interpreted()``) a single small config is used instead, because benchmarking there
would only measure the interpreter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, fp8_unsupported, interpreted, on_device

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_FP8_DTYPE = torch.float8_e4m3fn
_FP8_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _config(bm: int, bn: int, bk: int, group_m: int, stages: int, warps: int) -> triton.Config:
    meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}
    return triton.Config(meta, num_stages=stages, num_warps=warps)


# Big tiles for large problems, thin ones (BLOCK_M=16) for decode-like M, and BLOCK_K=128
# tiles that only fit shared memory with 1-byte fp8 operands. Every BLOCK_K is >= 32 because
# fp8 tl.dot needs K >= 32 and all tiles are >= 16 because tl.dot needs that on NVIDIA.
_GPU_CONFIGS = [
    _config(128, 256, 64, 8, 3, 8),
    _config(256, 128, 64, 8, 3, 8),
    _config(128, 256, 128, 8, 3, 8),
    _config(128, 128, 128, 8, 4, 8),
    _config(128, 128, 32, 8, 4, 4),
    _config(128, 64, 32, 8, 4, 4),
    _config(64, 128, 32, 8, 4, 4),
    _config(64, 64, 64, 8, 4, 4),
    _config(128, 32, 32, 8, 4, 4),
    _config(64, 32, 32, 8, 5, 2),
    _config(32, 64, 32, 8, 5, 2),
    _config(32, 32, 64, 8, 4, 2),
    _config(16, 128, 64, 8, 4, 4),
    _config(16, 64, 64, 8, 4, 2),
    _config(16, 32, 128, 8, 4, 2),
]

# GROUP_M=2 (not 8) so that the small test shapes span several groups, partial ones included,
# and the grouped tile order is really exercised.
_INTERPRETER_CONFIGS = [_config(32, 32, 32, 2, 1, 1)]

_CONFIGS = _INTERPRETER_CONFIGS if interpreted() else _GPU_CONFIGS


def _meta(config: triton.Config, name: str) -> int:
    return int(config.kwargs[name])


def _tile_bytes(config: triton.Config, elem_bytes: int) -> int:
    """Shared memory the pipelined A and B tiles need (conservative: one buffer per stage)."""
    bm, bn, bk = (_meta(config, n) for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (bm * bk + bk * bn) * elem_bytes


def _select_configs(
    configs: list[triton.Config], m: int, n: int, k: int, elem_bytes: int, max_smem: int | None
) -> list[triton.Config]:
    """Drop configs whose tiles overshoot the problem or do not fit shared memory.

    A tile dimension survives if it is no larger than the problem dimension rounded up to a
    power of two (or is the smallest size on offer), so a 1×N problem does not benchmark
    256-row tiles. Never returns an empty list: if nothing survives, the smallest tile is kept.
    """

    def limit(size: int, name: str) -> int:
        return max(triton.next_power_of_2(size), min(_meta(c, name) for c in configs))

    lm, ln, lk = limit(m, "BLOCK_M"), limit(n, "BLOCK_N"), limit(k, "BLOCK_K")
    kept = [
        c
        for c in configs
        if _meta(c, "BLOCK_M") <= lm
        and _meta(c, "BLOCK_N") <= ln
        and _meta(c, "BLOCK_K") <= lk
        and (max_smem is None or _tile_bytes(c, elem_bytes) <= max_smem)
    ]
    if kept:
        return kept
    return [min(configs, key=lambda c: _tile_bytes(c, elem_bytes))]


@functools.cache
def _max_shared_mem(device_index: int) -> int:
    props = triton.runtime.driver.active.utils.get_device_properties(device_index)
    return int(props["max_shared_mem"])


def _prune_configs(
    configs: list[triton.Config], named_args: dict, **kwargs: object
) -> list[triton.Config]:
    """The autotuner's early_config_prune hook: read the problem off the launch arguments."""
    a = named_args["a_ptr"]
    max_smem = None if interpreted() else _max_shared_mem(a.device.index)
    m, n, k = (int(named_args[name]) for name in ("M", "N", "K"))
    return _select_configs(configs, m, n, k, a.element_size(), max_smem)


_PRUNE = {"early_config_prune": _prune_configs}


def tuning_configs(
    m: int, n: int, k: int, elem_bytes: int, max_smem: int = HOPPER_SMEM
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for an M×N×K problem with operands of
    ``elem_bytes``, on a device with ``max_smem`` bytes of shared memory per block: what sizes
    a GPU run before it starts, also from a machine without one."""
    return _select_configs(_GPU_CONFIGS, m, n, k, elem_bytes, max_smem)


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


@triton.jit
def _store_tile(
    c_ptr,
    acc,
    M,
    N,
    stride_cm,
    stride_cn,
    pid_m,
    pid_n,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """
    Write a fp32 tile into C, converting to C's dtype and skipping rows/columns outside C.

    Args:
        c_ptr: Pointer to C, of shape [M, N], any strides.
        acc: The BLOCK_M × BLOCK_N fp32 tile.
        M: Rows of C.
        N: Columns of C.
        stride_cm: Elements between consecutive rows of C.
        stride_cn: Elements between consecutive columns of C.
        pid_m: Tile row index.
        pid_n: Tile column index.
        BLOCK_M: Rows per tile.
        BLOCK_N: Columns per tile.
    """
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


# Precision changes the best tile (fp32 IEEE dots run on FMA units, not tensor cores).
@triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "INPUT_PRECISION"], prune_configs_by=_PRUNE)
@triton.jit
def _matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
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
    C = A·B with fp32 accumulation; one program per BLOCK_M × BLOCK_N tile of C.

    Args:
        a_ptr: Pointer to A, of shape [M, K], fp16/bf16/fp32, any strides.
        b_ptr: Pointer to B, of shape [K, N], same dtype as A, any strides.
        c_ptr: Pointer to the output C, of shape [M, N]; written in its own dtype.
        M: Rows of A and C; >= 1.
        N: Columns of B and C; >= 1.
        K: Inner dimension; >= 1.
        stride_am: Elements between consecutive rows of A.
        stride_ak: Elements between consecutive columns of A.
        stride_bk: Elements between consecutive rows of B.
        stride_bn: Elements between consecutive columns of B.
        stride_cm: Elements between consecutive rows of C.
        stride_cn: Elements between consecutive columns of C.
        INPUT_PRECISION: tl.dot input precision: "ieee" (exact fp32 products) or "tf32".
        BLOCK_M: Rows per tile (autotuned).
        BLOCK_N: Columns per tile (autotuned).
        BLOCK_K: Inner-dimension step (autotuned).
        GROUP_M: Tile rows per L2-friendly band (autotuned).
    """
    pid_m, pid_n = _tile_coords(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = _accumulate(
        a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
        INPUT_PRECISION, None, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K"], prune_configs_by=_PRUNE)
@triton.jit
def _matmul_fp8_kernel(
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
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """
    C = (A·B)·scale_a·scale_b for fp8 A and B, accumulated in fp32.

    Args:
        a_ptr: Pointer to A, of shape [M, K], float8_e4m3fn, any strides.
        b_ptr: Pointer to B, of shape [K, N], float8_e4m3fn, any strides.
        c_ptr: Pointer to the output C, of shape [M, N]; written in its own dtype.
        scale_a_ptr: Pointer to A's per-tensor fp32 dequantisation scale (one element).
        scale_b_ptr: Pointer to B's per-tensor fp32 dequantisation scale (one element).
        M: Rows of A and C; >= 1.
        N: Columns of B and C; >= 1.
        K: Inner dimension; >= 1.
        stride_am: Elements between consecutive rows of A.
        stride_ak: Elements between consecutive columns of A.
        stride_bk: Elements between consecutive rows of B.
        stride_bn: Elements between consecutive columns of B.
        stride_cm: Elements between consecutive rows of C.
        stride_cn: Elements between consecutive columns of C.
        BLOCK_M: Rows per tile (autotuned).
        BLOCK_N: Columns per tile (autotuned).
        BLOCK_K: Inner-dimension step (autotuned).
        GROUP_M: Tile rows per L2-friendly band (autotuned).
    """
    pid_m, pid_n = _tile_coords(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    # Hopper's fp8 MMAs accumulate with fewer bits than fp32 (Triton's default there never
    # promotes). Promoting into the fp32 accumulator once per BLOCK_K keeps the error near
    # torch._scaled_mm's default, precise-accumulation mode; other GPUs ignore the setting.
    acc = _accumulate(
        a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
        None, BLOCK_K, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    # Scaling once after the K loop is exact-equivalent to scaling the inputs and far cheaper.
    acc = acc * (tl.load(scale_a_ptr) * tl.load(scale_b_ptr))
    _store_tile(c_ptr, acc, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N)


def _device_problem(a: torch.Tensor, b: torch.Tensor) -> str | None:
    if a.device != b.device:
        return f"inputs are on different devices ({a.device} and {b.device}); use one device"
    if a.device.type == "cuda" or (a.device.type == "cpu" and interpreted()):
        return None
    return (
        f"inputs are on {a.device}; allowed: CUDA tensors "
        "(CPU tensors only under the Triton interpreter, TRITON_INTERPRET=1)"
    )


def _shape_problem(a: torch.Tensor, b: torch.Tensor) -> str | None:
    if a.dim() != 2 or b.dim() != 2:
        return f"inputs must be 2-D, got a.dim()={a.dim()} and b.dim()={b.dim()}"
    if a.shape[1] != b.shape[0]:
        return (
            f"inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}; "
            "need a.shape[1] == b.shape[0]"
        )
    return None


def _dtype_problem(
    a: torch.Tensor, b: torch.Tensor, allowed: tuple[torch.dtype, ...]
) -> str | None:
    names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
    if a.dtype != b.dtype:
        return f"inputs have different dtypes ({a.dtype} and {b.dtype}); need one of {names}"
    if a.dtype not in allowed:
        return f"unsupported dtype {a.dtype}; allowed: {names}"
    return None


def _check(problem: str | None, fn: str) -> None:
    if problem is not None:
        raise ValueError(f"{fn}: {problem}")


def _grid(m: int, n: int) -> Callable[[dict], tuple[int]]:
    # Triton calls this with the chosen config, so the tile count follows the tile size.
    return lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)


def matmul(a: torch.Tensor, b: torch.Tensor, *, allow_tf32: bool = False) -> torch.Tensor:
    """C = A·B for 2-D fp16, bf16 or fp32 tensors; fp32 accumulation, C in the input dtype.

    ``allow_tf32`` only affects fp32 inputs: False (default) multiplies in IEEE fp32
    (``input_precision="ieee"``; slow on tensor-core GPUs), True rounds inputs to tf32.
    Inputs may be any strided views; C is a new contiguous (M, N) tensor. K == 0 gives zeros.

    Raises:
        ValueError: on non-2-D inputs, mismatched inner dimensions, mixed or unsupported
            dtypes (bfloat16 too under the CPU interpreter), or unsupported/mixed devices.
    """
    _check(_shape_problem(a, b), "matmul")
    _check(_dtype_problem(a, b, _DTYPES), "matmul")
    _check(_device_problem(a, b), "matmul")
    if interpreted() and a.dtype == torch.bfloat16:
        # The interpreter keeps bf16 as raw uint16 and its tl.dot multiplies those integers.
        _check(
            "bfloat16 gives wrong results under the Triton CPU interpreter; "
            "use float16/float32 there, or a GPU",
            "matmul",
        )
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return torch.zeros((m, n), dtype=a.dtype, device=a.device)
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    precision = "tf32" if allow_tf32 or a.dtype != torch.float32 else "ieee"
    with on_device(a):
        _matmul_kernel[_grid(m, n)](
            a, b, c, m, n, k, *a.stride(), *b.stride(), *c.stride(), INPUT_PRECISION=precision
        )
    return c


def fp8_supported(device: torch.device | str) -> str | None:
    """None if :func:`matmul_fp8` can run on ``device``, else the reason it cannot."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return fp8_unsupported(device.type, None)
    capability = torch.cuda.get_device_capability(device)
    return fp8_unsupported("cuda", capability, rocm=torch.version.hip is not None)


def _scale_problem(scale: torch.Tensor, name: str, device: torch.device) -> str | None:
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
        return f"{name} must be a one-element tensor (per-tensor scale)"
    if scale.dtype != torch.float32 or scale.device != device:
        return f"{name} must be float32 on {device}, got {scale.dtype} on {scale.device}"
    return None


def _launch_fp8(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return torch.zeros((m, n), dtype=out_dtype, device=a.device)
    c = torch.empty((m, n), dtype=out_dtype, device=a.device)
    with on_device(a):
        _matmul_fp8_kernel[_grid(m, n)](
            a, b, c, scale_a, scale_b, m, n, k, *a.stride(), *b.stride(), *c.stride()
        )  # fmt: skip
    return c


def matmul_fp8(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    *,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """C = (A·B)·scale_a·scale_b for float8_e4m3fn A, B and one-element float32 scales.

    Same maths as ``torch._scaled_mm`` with per-tensor scales, but B may have any layout.
    Accumulates in fp32; C is ``out_dtype`` (bfloat16, float16 or float32).
    Needs a CUDA device of compute capability >= 8.9 (see :func:`fp8_supported`).

    Raises:
        ValueError: on bad shapes, dtypes, scales, or a device without fp8 support.
    """
    _check(_shape_problem(a, b), "matmul_fp8")
    _check(_dtype_problem(a, b, (_FP8_DTYPE,)), "matmul_fp8")
    if a.device != b.device:
        _check(_device_problem(a, b), "matmul_fp8")
    _check(fp8_supported(a.device), "matmul_fp8")
    _check(_scale_problem(scale_a, "scale_a", a.device), "matmul_fp8")
    _check(_scale_problem(scale_b, "scale_b", a.device), "matmul_fp8")
    if out_dtype not in _FP8_OUT_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in _FP8_OUT_DTYPES)
        _check(f"unsupported out_dtype {out_dtype}; allowed: {names}", "matmul_fp8")
    return _launch_fp8(a, b, scale_a, scale_b, out_dtype)
