"""Custom Triton kernels and their plain-PyTorch references.

Without CUDA the kernels run in Triton's CPU interpreter. The interpreter is chosen by
TRITON_INTERPRET, which Triton reads when ``triton.jit`` decorates a kernel, so it has to be set
here, before any kernel module is imported.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter rather than compiled for a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
