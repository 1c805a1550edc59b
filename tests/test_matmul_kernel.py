"""Correctness of kernels.matmul against the float64 reference.

Without CUDA the kernels run in Triton's CPU interpreter with one 32×32×32 tile config, so the
CPU shapes (all <= 100) straddle tile edges, span several GROUP_M bands, and stay fast.
GPU-only tests (bf16, tf32, fp8, 1000+ sizes) are marked ``gpu``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from kernels import fp8_unsupported, interpreted
from kernels.matmul import GPU_CONFIGS, _select, _tile_bytes, matmul, matmul_fp8
from kernels.reference import matmul_ref

# Relative Frobenius error bounds. fp16/bf16 are dominated by rounding C to the output dtype
# (at most 2**-11 and 2**-8 per element); fp32 IEEE by fp32 accumulation over K.
TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-5}
TF32_TOL = 5e-3  # tf32 keeps 10 mantissa bits of each input: ~5e-4 typical error.
FP8_TOL = 1e-2  # bf16 output rounding on both sides of the comparison.

CPU_DTYPES = [torch.float16, torch.float32]

# (M, N, K): single elements, primes, vectors, tile-edge straddlers and exact tile multiples;
# M=67 and M=100 give 3 and 4 tile rows, i.e. partial and full GROUP_M=2 bands.
SHAPES = [
    (1, 1, 1),
    (17, 31, 13),
    (1, 37, 53),
    (67, 1, 29),
    (33, 65, 97),
    (64, 96, 32),
    (67, 100, 33),
    (100, 97, 100),
]


def _randn(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def _check(a: torch.Tensor, b: torch.Tensor, tol: float, **kwargs: bool) -> float:
    out = matmul(a, b, **kwargs)
    assert out.shape == (a.shape[0], b.shape[1])
    assert out.dtype == a.dtype and out.device == a.device and out.is_contiguous()
    err = rel_err(out, matmul_ref(a, b))
    assert err < tol, f"relative error {err:.3g} >= {tol:g}"
    return err


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape: tuple[int, int, int], dtype: torch.dtype, device) -> None:
    m, n, k = shape
    _check(_randn((m, k), dtype, device, 0), _randn((k, n), dtype, device, 1), TOL[dtype])


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 37, 53), (33, 65, 97), (67, 100, 33)], ids=str)
def test_transposed_views(shape: tuple[int, int, int], dtype: torch.dtype, device) -> None:
    m, n, k = shape
    a = _randn((k, m), dtype, device, 2).t()
    b = _randn((n, k), dtype, device, 3).t()
    assert a.stride() == (1, m) and b.stride() == (1, k)
    _check(a, b, TOL[dtype])


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_strided_views(dtype: torch.dtype, device) -> None:
    m, n, k = 35, 41, 67
    a = _randn((2 * m, 3 * k), dtype, device, 4)[::2, ::3]
    b = _randn((k + 1, 2 * n + 1), dtype, device, 5)[1:, 1::2]  # storage offset too
    assert a.stride() == (6 * k, 3) and b.storage_offset() > 0
    _check(a, b, TOL[dtype])


def test_transposed_times_strided(device) -> None:
    a = _randn((45, 50), torch.float32, device, 6).t()[:, 3:]
    b = _randn((42, 90), torch.float32, device, 7)[::1, ::3]
    _check(a, b, TOL[torch.float32])


@VIEWS
@given(data=st.data(), m=st.integers(0, 40), n=st.integers(0, 40), k=st.integers(0, 40))
def test_any_views_of_every_argument(data, m: int, n: int, k: int) -> None:
    cpu = torch.device("cpu")
    a = data.draw(views(_randn((m, k), torch.float32, cpu, 20)))
    b = data.draw(views(_randn((k, n), torch.float32, cpu, 21)))
    _check(a, b, TOL[torch.float32])


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_empty_k_gives_zeros(dtype: torch.dtype, device) -> None:
    out = matmul(torch.empty((5, 0), dtype=dtype, device=device),
                 torch.empty((0, 7), dtype=dtype, device=device))  # fmt: skip
    assert out.shape == (5, 7) and out.dtype == dtype and out.device.type == device.type
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize(("m", "n"), [(0, 7), (5, 0), (0, 0)])
def test_empty_m_or_n(m: int, n: int, device) -> None:
    a = torch.ones((m, 3), dtype=torch.float16, device=device)
    out = matmul(a, torch.ones((3, n), dtype=torch.float16, device=device))
    assert out.shape == (m, n) and out.dtype == torch.float16


BAD_INPUTS = {
    "inner-dims": ((4, 5), torch.float32, (6, 3), torch.float32, "inner dimensions differ"),
    "mixed-dtypes": ((4, 5), torch.float16, (5, 3), torch.float32, "a, b must share one dtype"),
    "int-dtype": ((4, 5), torch.int32, (5, 3), torch.int32, "a dtype torch.int32 unsupported"),
    "float64": ((4, 5), torch.float64, (5, 3), torch.float64, "dtype torch.float64 unsupported"),
    "3-d": ((2, 4, 5), torch.float32, (5, 3), torch.float32, "a must be \\(M, K\\), 2-D"),
    "1-d": ((5,), torch.float32, (5, 3), torch.float32, "a must be \\(M, K\\), 2-D"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises(case: tuple, device) -> None:
    a_shape, a_dtype, b_shape, b_dtype, message = case
    a = torch.zeros(a_shape, dtype=a_dtype, device=device)
    b = torch.zeros(b_shape, dtype=b_dtype, device=device)
    with pytest.raises(ValueError, match=f"^matmul: .*{message}") as info:
        matmul(a, b)
    assert "\n" not in str(info.value)


def test_error_names_allowed_dtypes(device) -> None:
    a = torch.zeros((2, 2), dtype=torch.int8, device=device)
    with pytest.raises(ValueError, match="allowed: float16, bfloat16, float32"):
        matmul(a, a)


@pytest.mark.skipif(not interpreted(), reason="only the CPU interpreter mishandles bf16")
def test_bf16_refused_under_interpreter(device) -> None:
    a = torch.ones((4, 4), dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match=r"bfloat16 .* interpreter"):
        matmul(a, a)


def test_config_pruning_fits_problem_and_memory() -> None:
    def sizes(configs: list) -> set[tuple[int, int, int]]:
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in configs}

    everything = _select(GPU_CONFIGS, 8192, 8192, 8192, 2, None)
    assert everything == GPU_CONFIGS

    decode = _select(GPU_CONFIGS, 1, 4096, 4096, 2, None)
    assert decode and {bm for bm, _, _ in sizes(decode)} == {16}

    tiny = _select(GPU_CONFIGS, 1, 1, 1, 2, None)
    assert len(tiny) == 1  # nothing fits 1×1×1, so only the smallest tile is left

    smem = 160 * 1024
    fp16 = _select(GPU_CONFIGS, 8192, 8192, 8192, 2, smem)
    assert all(_tile_bytes(c, 2) <= smem for c in fp16)
    assert len(fp16) < len(everything)
    # fp8's 1-byte tiles fit where 16-bit ones would not; its two accumulators (promoted once a
    # BLOCK_K) leave a thread 64 fp32 of each.
    fp8 = _select(GPU_CONFIGS, 8192, 8192, 8192, 1, smem)
    assert any(_tile_bytes(c, 2) > smem for c in fp8)
    assert all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 32 * c.num_warps for c in fp8)
    assert _select(GPU_CONFIGS, 8192, 8192, 8192, 4, 1)  # never empty


def _fp8_reason(device: torch.device) -> str | None:
    capability = torch.cuda.get_device_capability(device)
    return fp8_unsupported("cuda", capability, rocm=torch.version.hip is not None)


@pytest.mark.gpu
def test_fp8_refused_where_unsupported(device) -> None:
    if _fp8_reason(device) is None:
        pytest.skip("this device supports fp8")
    a = torch.zeros((16, 16), device=device).to(torch.float8_e4m3fn)
    one = torch.ones((), device=device)
    with pytest.raises(ValueError, match=r"^matmul_fp8: fp8 GEMMs: fp8 needs"):
        matmul_fp8(a, a, one, one)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("inf"), float("nan")])
def test_fp8_scales_must_be_finite_and_positive(bad: float, device) -> None:
    a = torch.ones((4, 32), device=device).to(torch.float8_e4m3fn)
    one, wrong = torch.ones((), device=device), torch.tensor(bad, device=device)
    with pytest.raises(ValueError, match=r"^matmul_fp8: scale_b must be finite and > 0"):
        matmul_fp8(a, a.t(), one, wrong)
    with pytest.raises(ValueError, match=r"^matmul_fp8: scale_a must be a float32 tensor"):
        matmul_fp8(a, a.t(), one.double(), one)


def _fp8_operands(m: int, n: int, k: int, device: torch.device, b_col_major: bool):
    a = _randn((m, k), torch.float32, device, 8).to(torch.float8_e4m3fn)
    if b_col_major:
        b = _randn((n, k), torch.float32, device, 9).to(torch.float8_e4m3fn).t()
    else:
        b = _randn((k, n), torch.float32, device, 9).to(torch.float8_e4m3fn)
    scales = torch.tensor(0.5, device=device), torch.tensor(0.25, device=device)
    return a, b, *scales


@pytest.mark.skipif(not interpreted(), reason="CPU interpreter path; the GPU has its own tests")
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32], ids=str)
def test_fp8_kernel_under_interpreter(out_dtype: torch.dtype) -> None:
    a, b, sa, sb = _fp8_operands(33, 65, 97, torch.device("cpu"), b_col_major=True)
    out = matmul_fp8(a, b, sa, sb, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    # fp8 products are exact in fp32, so only accumulation and output rounding remain.
    err = rel_err(out, matmul_ref(a, b) * 0.125)
    assert err < TOL[out_dtype], err


@VIEWS
@given(data=st.data(), m=st.integers(0, 40), n=st.integers(0, 40), k=st.integers(0, 40))
def test_fp8_any_views_of_every_argument(data, m: int, n: int, k: int) -> None:
    operands = _fp8_operands(m, n, k, torch.device("cpu"), b_col_major=False)
    a, b, scale_a, scale_b = (data.draw(views(t)) for t in operands)
    out = matmul_fp8(a, b, scale_a, scale_b, out_dtype=torch.float32)
    assert rel_err(out, matmul_ref(a, b) * 0.125) < TOL[torch.float32]


# ---------------------------------------------------------------------------------- GPU only

GPU_SHAPES = [(1, 1, 1), (17, 31, 13), (1, 4096, 1024), (1000, 1000, 1000), (1031, 517, 2053)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
def test_gpu_half_precision(shape: tuple[int, int, int], dtype: torch.dtype, device) -> None:
    m, n, k = shape
    _check(_randn((m, k), dtype, device, 10), _randn((k, n), dtype, device, 11), TOL[dtype])
    a_t = _randn((k, m), dtype, device, 12).t()
    _check(a_t, _randn((n, k), dtype, device, 13).t(), TOL[dtype])


@pytest.mark.gpu
def test_gpu_fp32_ieee_vs_tf32(device) -> None:
    a = _randn((512, 384), torch.float32, device, 14)
    b = _randn((384, 1024), torch.float32, device, 15)
    # IEEE must beat tf32's ~5e-4 by far, so this fails if tf32 leaks into the default path.
    _check(a, b, TOL[torch.float32])
    tf32_err = _check(a, b, TF32_TOL, allow_tf32=True)
    if torch.cuda.get_device_capability(device) >= (8, 0):
        assert tf32_err > 1e-5, "allow_tf32=True did not use tf32 tensor cores"


@pytest.mark.gpu
def test_gpu_fp32_long_k(device) -> None:
    a = _randn((257, 4099), torch.float32, device, 16)
    _check(a, _randn((4099, 130), torch.float32, device, 17), 2 * TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(16, 32, 64), (1024, 1536, 2048), (4096, 4096, 1024)], ids=str)
def test_gpu_fp8_matches_scaled_mm(shape: tuple[int, int, int], device) -> None:
    if reason := _fp8_reason(device):
        pytest.skip(reason)
    m, n, k = shape
    # torch._scaled_mm wants A row-major and B column-major (a transposed row-major (N, K)).
    a, b, sa, sb = _fp8_operands(m, n, k, device, b_col_major=True)
    ours = matmul_fp8(a, b, sa, sb, out_dtype=torch.bfloat16)
    theirs = torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs  # torch < 2.4 returned (out, amax)
    assert ours.dtype == torch.bfloat16 and ours.shape == (m, n)
    assert rel_err(ours, theirs.to(torch.float64)) < FP8_TOL
    assert rel_err(ours, matmul_ref(a, b) * 0.125) < FP8_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 1, 1), (1031, 517, 2053)], ids=str)
def test_gpu_fp8_any_layout(shape: tuple[int, int, int], device) -> None:
    if reason := _fp8_reason(device):
        pytest.skip(reason)
    a, b, sa, sb = _fp8_operands(*shape, device, b_col_major=False)
    out = matmul_fp8(a, b, sa, sb, out_dtype=torch.float32)
    # Hopper fp8 MMAs accumulate in reduced precision within each BLOCK_K window.
    assert rel_err(out, matmul_ref(a, b) * 0.125) < 1e-3
