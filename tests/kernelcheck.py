"""What the kernel tests share: relative error against a float64 reference, and the bound the
attention-style kernels (prefill, decode) are held to."""

import torch

import kernels

# fp16/bf16: dominated by rounding the output (2^-11, 2^-8 per element).
_HALF_TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def attention_tol(dtype: torch.dtype) -> float:
    """fp32 dots are exact in the interpreter and tf32 on a GPU (10-bit mantissa)."""
    if dtype == torch.float32:
        return 1e-5 if kernels.interpreted() else 5e-3
    return _HALF_TOL[dtype]
