"""High-precision references every kernel is checked against.

They compute in float64 (float32 where float64 would not fit the test budget) with plain
PyTorch, on whatever device the inputs are on, and return float64 results.
"""

import torch


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C = A·B in float64. fp8 inputs are upcast exactly before the product."""
    return a.to(torch.float64) @ b.to(torch.float64)
