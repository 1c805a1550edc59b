"""Fused residual add + RMSNorm in Triton, as a decoder layer runs it before attention and
before the MLP.

``add_rmsnorm(x, residual, weight)`` returns ``(y, h)`` with ``h = x + residual`` (the updated
residual stream, in the input dtype) and ``y = h / sqrt(mean(h², last dim) + eps) · weight``.
Reading both inputs and writing both outputs in one pass is the fusion serving engines use
(vLLM's fused_add_rms_norm); unlike theirs, this kernel writes new tensors instead of updating
its inputs in place, so repeated calls on the same inputs give the same result.

One program per row holds the whole row (a block of the hidden size rounded up to a power of
two, at most ``kernels.MAX_HIDDEN``), sums the squares in fp32 and normalises the residual as
rounded to the input dtype, which is what the next layer reads. No ``tl.dot``: it runs in
Triton's interpreter in bf16 too. Rows and columns may have any
strides; float16, bfloat16 and float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import MAX_HIDDEN, not_a_tensor, on_device

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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
        BLOCK: hidden rounded up to a power of two.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < hidden
    x = tl.load(x_ptr + row * stride_xm + cols * stride_xn, mask=inside, other=0.0)
    r = tl.load(res_ptr + row * stride_rm + cols * stride_rn, mask=inside, other=0.0)
    h = (x.to(tl.float32) + r.to(tl.float32)).to(h_ptr.dtype.element_ty)
    tl.store(h_ptr + row * hidden + cols, h, mask=inside)
    h = h.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(h * h, axis=0) / hidden + eps)
    w = tl.load(w_ptr + cols * stride_w, mask=inside, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * hidden + cols, (h * inv_rms * w).to(y_ptr.dtype.element_ty), mask=inside)


def _fail(message: str) -> None:
    raise ValueError(f"add_rmsnorm: {message}")


def _validate(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ValueError with one line naming the first problem with the inputs."""
    if problem := not_a_tensor(x=x, residual=residual, weight=weight):
        _fail(problem)
    if x.dim() != 2 or residual.shape != x.shape:
        _fail(
            f"x and residual must be (rows, hidden) of one shape, got {tuple(x.shape)} and "
            f"{tuple(residual.shape)}"
        )
    if weight.shape != (x.shape[1],):
        _fail(f"weight must be ({x.shape[1]},), got {tuple(weight.shape)}")
    if x.dtype not in SUPPORTED_DTYPES or residual.dtype != x.dtype or weight.dtype != x.dtype:
        _fail(
            f"x, residual and weight must share one dtype of float16, bfloat16, float32; got "
            f"{x.dtype}, {residual.dtype}, {weight.dtype}"
        )
    if residual.device != x.device or weight.device != x.device:
        _fail(f"inputs must be on one device, got {x.device}, {residual.device}, {weight.device}")
    if not 1 <= x.shape[1] <= MAX_HIDDEN:
        _fail(f"hidden size {x.shape[1]} unsupported; allowed: 1 to {MAX_HIDDEN}")


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm: returns (y, h), h = x + residual, y = RMSNorm(h)·weight.

    Args:
        x: (rows, hidden) float16/bfloat16/float32, any strides; rows may be 0.
        residual: Same shape, dtype and device as x, any strides.
        weight: (hidden,), same dtype and device.
        eps: Added to the mean square (Llama's rms_norm_eps is 1e-5).

    Returns:
        y and h, new contiguous (rows, hidden) tensors in x's dtype.
    """
    _validate(x, residual, weight)
    rows, hidden = x.shape
    y = torch.empty((rows, hidden), dtype=x.dtype, device=x.device)
    h = torch.empty_like(y)
    if rows == 0:
        return y, h
    block = triton.next_power_of_2(hidden)
    # One warp per 512 elements (16 a thread) up to 16 warps; wider rows give each thread more.
    warps = min(max(block // 512, 1), 16)
    with on_device(x):
        _add_rmsnorm_kernel[(rows,)](
            x, residual, weight, y, h, *x.stride(), *residual.stride(), weight.stride(0),
            hidden, eps, BLOCK=block, num_warps=warps,
        )  # fmt: skip
    return y, h
