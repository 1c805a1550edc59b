"""The SiLU·mul kernel against the float64 reference: widths off the block, strides, empty and
one-row inputs, extreme gates, bad inputs."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from kernels import interpreted
from kernels.activation import silu_mul
from kernels.reference import silu_mul_ref

# Unit roundoff of one rounding to each dtype. The kernel computes silu(gate)·up in fp32 and
# rounds once: |err| <= u·|ref| elementwise, so ‖err‖/‖ref‖ <= u. bf16: the interpreter
# truncates to bf16 (error < 2^-7), a GPU rounds to nearest (2^-8). fp32: a GPU's exp and
# division are approximate to a few ulp (2^-24) each, with exp's error growing with |gate|.
UNIT = {
    torch.float16: 2**-11,
    torch.bfloat16: 2**-7 if interpreted() else 2**-8,
    torch.float32: 2**-19,
}
TOL = {dtype: 1.1 * u for dtype, u in UNIT.items()}
DTYPES = [torch.float16, torch.bfloat16, torch.float32]

# (tokens, intermediate): one element, odd widths, 1,000 (one masked block), 1,500 (a full block
# and a tail), exactly one block, many rows.
SHAPES = [(1, 1), (3, 7), (5, 1000), (2, 1500), (3, 1024), (17, 96)]


def _gate_up(tokens: int, inter: int, dtype: torch.dtype, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    # Gates spread over [-12, 12] or so, where the sigmoid goes from 0 to 1.
    return (3 * torch.randn((tokens, 2 * inter), generator=gen, device=device)).to(dtype)


def _check(gate_up: torch.Tensor) -> None:
    out = silu_mul(gate_up)
    assert out.dtype == gate_up.dtype and out.is_contiguous()
    assert out.shape == (gate_up.shape[0], gate_up.shape[1] // 2)
    assert rel_err(out, silu_mul_ref(gate_up)) < TOL[gate_up.dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape: tuple[int, int], dtype: torch.dtype, device) -> None:
    _check(_gate_up(*shape, dtype, device))


def test_gate_is_the_first_half(device) -> None:
    """silu(1)·2 = 2 / (1 + e^-1), not silu(2)·1: known values, independent of the reference."""
    gate_up = torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.0, 5.0]], device=device)
    expected = [2 / (1 + math.exp(-1)), 2 / (1 + math.exp(-2)), 0.0]
    assert silu_mul_ref(gate_up).flatten().tolist() == pytest.approx(expected, rel=1e-15)
    assert silu_mul(gate_up).flatten().tolist() == pytest.approx(expected, rel=1e-6)


# The interpreter's numpy exp overflows to inf for gates below about -88, as a GPU's does; the
# silu is then gate / inf = -0.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_extreme_gates(dtype: torch.dtype, device) -> None:
    """Far into both tails: silu(g) -> 0 below, -> g above; never inf or nan."""
    gates = [-6e4, -200.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 200.0, 6e4]
    gate_up = torch.tensor([gates + [0.5] * len(gates)], device=device).to(dtype)
    out = silu_mul(gate_up)
    assert torch.isfinite(out).all()
    assert rel_err(out, silu_mul_ref(gate_up)) < TOL[dtype]


@VIEWS
@given(data=st.data(), tokens=st.integers(0, 3), inter=st.integers(1, 40))
def test_any_view_of_the_input(data, tokens: int, inter: int) -> None:
    _check(data.draw(views(_gate_up(tokens, inter, torch.float32, torch.device("cpu")))))


def test_strided_inputs(device) -> None:
    """A column slice of a wider row, a transposed (column-major) input, every other column."""
    gen = torch.Generator(device=device).manual_seed(1)
    wide = torch.randn((4, 2 * 37 + 5), generator=gen, device=device)[:, : 2 * 37]
    transposed = torch.randn((2 * 37, 4), generator=gen, device=device).t()
    every_other = torch.randn((4, 4 * 37), generator=gen, device=device)[:, ::2]
    for gate_up in (wide, transposed, every_other):
        assert not gate_up.is_contiguous()
        _check(gate_up)


def test_no_tokens(device) -> None:
    out = silu_mul(torch.empty((0, 22), dtype=torch.float16, device=device))
    assert out.shape == (0, 11) and out.dtype == torch.float16


def test_input_is_not_changed(device) -> None:
    gate_up = _gate_up(3, 10, torch.float16, device)
    before = gate_up.clone()
    silu_mul(gate_up)
    assert torch.equal(gate_up, before)


@pytest.mark.parametrize(
    ("gate_up", "words"),
    [
        (lambda d: torch.zeros(8, device=d), "must be \\(tokens, 2 \\* intermediate\\)"),
        (lambda d: torch.zeros(2, 7, device=d), "width must be even and >= 2.*got 7"),
        (lambda d: torch.zeros(2, 0, device=d), "width must be even and >= 2.*got 0"),
        (lambda d: torch.zeros(2, 8, dtype=torch.int32, device=d), "dtype torch.int32 unsup"),
        (lambda d: torch.zeros(2, 8, dtype=torch.float64, device=d), "allowed: float16, bf"),
        (lambda d: [[0.0, 1.0]], "gate_up must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_are_one_clear_line(gate_up, words: str, device) -> None:
    with pytest.raises(ValueError, match=words) as info:
        silu_mul(gate_up(device))
    assert str(info.value).startswith("silu_mul: ") and "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 14336), (333, 11008), (4096, 14336), (4096, 3584)], ids=str)
def test_gpu(shape: tuple[int, int], dtype: torch.dtype, device) -> None:
    """LLM sizes: Llama-3-8B's and Llama-2-7B's intermediate sizes, one decode token to a
    4K-token prefill; Qwen-style 3,584."""
    gate_up = _gate_up(*shape, dtype, device)
    _check(gate_up)
