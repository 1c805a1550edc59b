"""The fused add + RMSNorm kernel against the float64 reference: tails, strides, empty rows."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from kernels.reference import add_rmsnorm_ref
from kernels.rmsnorm import MAX_BLOCK, add_rmsnorm

# Both outputs are rounded once to the input dtype (2^-11 fp16, 2^-8 bf16); fp32 sums squares
# of up to thousands of elements in fp32.
TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6}
# No tl.dot in this kernel: the interpreter runs it in bf16 too.
DTYPES = [torch.float16, torch.bfloat16, torch.float32]

# (rows, hidden): one element, hidden sizes off the power of two (a masked tail), a real one.
SHAPES = [(1, 1), (3, 7), (5, 1000), (2, 4096), (17, 96)]


def _inputs(rows: int, hidden: int, dtype: torch.dtype, device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device).to(dtype)

    return randn(rows, hidden), randn(rows, hidden), randn(hidden)


def _check(x, residual, weight, eps: float = 1e-5) -> None:
    y, h = add_rmsnorm(x, residual, weight, eps)
    y_ref, h_ref = add_rmsnorm_ref(x, residual, weight, eps)
    assert y.dtype == h.dtype == x.dtype and y.is_contiguous() and h.is_contiguous()
    assert rel_err(h, h_ref) < TOL[x.dtype]
    assert rel_err(y, y_ref) < TOL[x.dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape: tuple[int, int], dtype: torch.dtype, device) -> None:
    _check(*_inputs(*shape, dtype, device))


@VIEWS
@given(data=st.data(), rows=st.integers(0, 3), hidden=st.integers(1, 40))
def test_any_views_of_every_argument(data, rows: int, hidden: int) -> None:
    x, residual, weight = _inputs(rows, hidden, torch.float32, torch.device("cpu"))
    _check(data.draw(views(x)), data.draw(views(residual)), data.draw(views(weight)))


def test_rows_wider_than_a_block(device) -> None:
    """Rows past MAX_BLOCK are summed block by block and h read back: a tail block too."""
    _check(*_inputs(2, MAX_BLOCK + 37, torch.float16, device))


def test_strided_and_transposed_inputs(device) -> None:
    """A column slice of a wider x, a transposed residual and a strided weight: no copies."""
    x = torch.randn(6, 24, device=device)[:, ::2]  # row stride 24, column stride 2
    residual = torch.randn(12, 6, device=device).t()  # column-major
    weight = torch.randn(24, device=device)[::2]
    assert not x.is_contiguous() and not residual.is_contiguous()
    _check(x, residual, weight)


def test_eps_enters_the_norm(device) -> None:
    x, residual, weight = _inputs(3, 64, torch.float32, device)
    _check(x * 1e-3, residual * 1e-3, weight, eps=1e-2)  # eps dominates the mean square


def test_no_rows(device) -> None:
    x, residual, weight = _inputs(0, 64, torch.float16, device)
    y, h = add_rmsnorm(x, residual, weight)
    assert y.shape == h.shape == (0, 64)


def test_inputs_are_not_changed(device) -> None:
    x, residual, weight = _inputs(4, 33, torch.float16, device)
    before = (x.clone(), residual.clone())
    add_rmsnorm(x, residual, weight)
    assert torch.equal(x, before[0]) and torch.equal(residual, before[1])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda x, r, w: (x[0], r[0], w), "must be \\(rows, hidden\\)"),
        (lambda x, r, w: (x, r[:, :-1], w), "of one shape"),
        (lambda x, r, w: (x, r, w[:-1]), "weight must be \\(8,\\)"),
        (lambda x, r, w: (x, r.half(), w), "must share one dtype"),
        (lambda x, r, w: (x.long(), r.long(), w.long()), "x dtype torch.int64 unsupported"),
        (lambda x, r, w: (x, r, [1.0] * 8), "weight must be a torch.Tensor"),
    ],
)
def test_bad_inputs_are_one_clear_line(change, words: str, device) -> None:
    x, residual, weight = _inputs(3, 8, torch.float32, device)
    with pytest.raises(ValueError, match=words) as info:
        add_rmsnorm(*change(x, residual, weight))
    assert str(info.value).startswith("add_rmsnorm: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("eps", [-1.0, float("nan"), None, "1e-5", torch.ones(2)], ids=repr)
def test_eps_must_be_a_real_number_at_least_zero(eps, device) -> None:
    x, residual, weight = _inputs(3, 8, torch.float32, device)
    with pytest.raises(ValueError, match=r"^add_rmsnorm: eps must be a finite real number >= 0"):
        add_rmsnorm(x, residual, weight, eps=eps)


def test_eps_may_be_numpy_or_a_tensor(device) -> None:
    x, residual, weight = _inputs(3, 8, torch.float32, device)
    plain = add_rmsnorm(x, residual, weight, eps=1e-3)[0]
    for eps in (np.float32(1e-3), torch.tensor(1e-3), 0):
        y = add_rmsnorm(x, residual, weight, eps=eps)[0]
        assert torch.allclose(y, plain, rtol=1e-3) if eps else torch.isfinite(y).all()


def test_empty_rows_are_refused(device) -> None:
    x = torch.zeros(2, 0, device=device)
    with pytest.raises(ValueError, match="hidden size 0 unsupported"):
        add_rmsnorm(x, x, torch.zeros(0, device=device))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(1, 4096), (333, 8192), (4096, 5120), (2, 16384)], ids=str)
def test_gpu(shape: tuple[int, int], dtype: torch.dtype, device) -> None:
    _check(*_inputs(*shape, dtype, device))
