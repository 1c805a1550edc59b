"""Fused residual add + RMSNorm in Triton, as a decoder layer runs it before attention and
before the MLP.

``add_rmsnorm(x, residual, weight)`` returns ``(y, h)`` with ``h = x + residual`` (the updated
residual stream, in the input dtype) and ``y = h / sqrt(mean(h², last dim) + eps) · weight``.
Reading both inputs and writing both outputs in one pass is the fusion serving engines use
(vLLM's fused_add_rms_norm); unlike theirs, this kernel writes new tensors instead of updating
its inputs in place, so repeated calls on the same inputs give the same result.

One program per row sums the squares in fp32 and normalises the residual as rounded to the input
dtype, which is what the next layer reads. A row of up to ``MAX_BLOCK`` elements (Llama-3.1-405B's
hidden size) stays in registers between the two; a wider one is summed block by block while h is
written, and h is read back to be normalised, since holding it whole would spill registers.
No ``tl.dot``: it runs in Triton's interpreter in bf16 too. Rows and columns may have any
strides; float16, bfloat16 and float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import on_device, strides
from kernels.checks import FLOAT_DTYPES, Checks

# The widest row one block holds in registers: 16 warps, 32 elements of each of x, residual and
# weight a thread, which compiles without spills for sm_90 and sm_100 (bench.measure.aot).
MAX_BLOCK = 16384
# Elements a warp covers: 16 a thread. Warps grow with the block up to 16 (512 threads).
_WARP_ELEMENTS = 512
_MAX_WARPS = 16


@triton.jit
def _residual(x_ptr, res_ptr, h_ptr, cols, inside, stride_xn, stride_rn, row_of_h):
    """h = x + residual for some columns of one row, rounded to h's dtype and stored; returned
    in fp32.

    Args:
        x_ptr: The row's first element of x.
        res_ptr: The row's first element of the residual.
        h_ptr: The start of h, contiguous (rows, hidden).
        cols: Column indices.
        inside: Which columns lie inside the row.
        stride_xn: Elements between columns of x.
        stride_rn: Elements between columns of the residual.
        row_of_h: Offset of this row in h.
    """
    x = tl.load(x_ptr + cols * stride_xn, mask=inside, other=0.0)
    r = tl.load(res_ptr + cols * stride_rn, mask=inside, other=0.0)
    h = (x.to(tl.float32) + r.to(tl.float32)).to(h_ptr.dtype.element_ty)
    tl.store(h_ptr + row_of_h + cols, h, mask=inside)
    return h.to(tl.float32)


@triton.jit
def _normalise(h, inv_rms, w_ptr, y_ptr, cols, inside, stride_w, row_of_y):
    """y = h·inv_rms·w for some columns of one row, stored in y's dtype.

    Args:
        h: fp32 values of h at cols.
        inv_rms: The row's 1 / sqrt(mean(h²) + eps).
        w_ptr: Norm weight, (hidden,).
        y_ptr: The start of y, contiguous (rows, hidden).
        cols: Column indices.
        inside: Which columns lie inside the row.
        stride_w: Elements between entries of the weight.
        row_of_y: Offset of this row in y.
    """
    w = tl.load(w_ptr + cols * stride_w, mask=inside, other=0.0).to(tl.float32)
    tl.store(y_ptr + row_of_y + cols, (h * inv_rms * w).to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    y_ptr,
    h_ptr,
    stride_xm,
    stride_xn,
    stride_rm,
    stride_rn,
    stride_w,
    hidden,
    eps,
    BLOCK: tl.constexpr,
    WHOLE_ROW: tl.constexpr,
):
    """One program: one row of h = x + residual and y = RMSNorm(h)·w.

    Args:
        x_ptr: Input rows, (rows, hidden), any strides.
        res_ptr: Residual rows, (rows, hidden), same dtype, any strides.
        w_ptr: Norm weight, (hidden,).
        y_ptr: Normalised output, contiguous (rows, hidden), in the input dtype.
        h_ptr: Updated residual x + residual, contiguous (rows, hidden), in the input dtype.
        stride_xm: Elements between rows of x.
        stride_xn: Elements between columns of x.
        stride_rm: Elements between rows of the residual.
        stride_rn: Elements between columns of the residual.
        stride_w: Elements between entries of the weight.
        hidden: Row length.
        eps: Added to the mean square before the reciprocal square root.
        BLOCK: Columns per block, a power of two.
        WHOLE_ROW: The row fits one block: h stays in registers instead of being read back.
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    res_row = res_ptr + row * stride_rm
    offset = row * hidden
    cols = tl.arange(0, BLOCK)
    if WHOLE_ROW:
        inside = cols < hidden
        h = _residual(x_row, res_row, h_ptr, cols, inside, stride_xn, stride_rn, offset)
        inv_rms = tl.rsqrt(tl.sum(h * h, axis=0) / hidden + eps)
        _normalise(h, inv_rms, w_ptr, y_ptr, cols, inside, stride_w, offset)
    else:
        squares = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, hidden, BLOCK):
            inside = start + cols < hidden
            h = _residual(
                x_row + start * stride_xn, res_row + start * stride_rn, h_ptr, cols, inside,
                stride_xn, stride_rn, offset + start,
            )  # fmt: skip
            squares += h * h
        inv_rms = tl.rsqrt(tl.sum(squares, axis=0) / hidden + eps)
        # The compiler may lay out the loads below unlike the stores above, so that a thread
        # reads h another stored: the barrier makes the block's stores visible to all of it.
        tl.debug_barrier()
        for start in range(0, hidden, BLOCK):
            inside = start + cols < hidden
            h = tl.load(h_ptr + offset + start + cols, mask=inside, other=0.0).to(tl.float32)
            _normalise(
                h, inv_rms, w_ptr + start * stride_w, y_ptr, cols, inside, stride_w, offset + start
            )


_CHECK = Checks("add_rmsnorm")


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm: returns (y, h), h = x + residual, y = RMSNorm(h)·weight.

    Args:
        x: (rows, hidden) float16/bfloat16/float32, any strides; rows may be 0, hidden >= 1.
        residual: Same shape, dtype and device as x, any strides.
        weight: (hidden,), same dtype and device, any stride.
        eps: Added to the mean square, >= 0 (Llama's rms_norm_eps is 1e-5).

    Returns:
        y and h, new contiguous (rows, hidden) tensors in x's dtype.
    """
    _CHECK.tensors(x=x, residual=residual, weight=weight)
    _CHECK.rank("x", x, "(rows, hidden)")
    if residual.shape != x.shape:
        _CHECK.fail(
            f"x and residual must be (rows, hidden) of one shape, got {tuple(x.shape)} and "
            f"{tuple(residual.shape)}"
        )
    if weight.shape != (x.shape[1],):
        _CHECK.fail(f"weight must be ({x.shape[1]},), got {tuple(weight.shape)}")
    if x.shape[1] == 0:
        _CHECK.fail("hidden size 0 unsupported: the mean square of an empty row is undefined")
    _CHECK.dtype("x", x, FLOAT_DTYPES)
    _CHECK.same_dtype(x=x, residual=residual, weight=weight)
    _CHECK.device(x=x, residual=residual, weight=weight)
    eps = _CHECK.number("eps", eps, at_least=0)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    h = torch.empty_like(y)
    if x.shape[0]:
        _launch(x, residual, weight, y, h, eps)
    return y, h


def _launch(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    y: torch.Tensor,
    h: torch.Tensor,
    eps: float,
) -> None:
    """The kernel over every row of x into y and h (contiguous), rows >= 1."""
    rows, hidden = x.shape
    block = min(triton.next_power_of_2(hidden), MAX_BLOCK)
    with on_device(x):
        _add_rmsnorm_kernel[(rows,)](
            x_ptr=x,
            res_ptr=residual,
            w_ptr=weight,
            y_ptr=y,
            h_ptr=h,
            **strides(x, "stride_xm", "stride_xn"),
            **strides(residual, "stride_rm", "stride_rn"),
            stride_w=weight.stride(0),
            hidden=hidden,
            eps=eps,
            BLOCK=block,
            WHOLE_ROW=hidden <= block,
            num_warps=min(max(block // _WARP_ELEMENTS, 1), _MAX_WARPS),
        )
