"""Custom Triton kernels and their float64 references.

This package's own module imports neither torch nor Triton: it holds the limits the harness checks
shapes and devices against before any kernel is compiled, and the switch to Triton's interpreter.

Without a GPU the kernels run in Triton's CPU interpreter. Triton reads TRITON_INTERPRET when
``triton.jit`` decorates a function, its own library's included, so the choice has to be made
before Triton is first imported: :func:`use_interpreter_without_gpu` makes it, explicitly; the
commands that measure and the test set-up call it first. Nothing happens on import.
"""

from __future__ import annotations

import os
import sys

# The largest head dimension the attention and decode kernels support; any from 1 up works, their
# tiles padded to a power of two.
MAX_HEAD_DIM = 256
# fp8 (e4m3) tensor-core GEMMs: Ada (8.9) and Hopper (9.0) onwards.
FP8_MIN_CAPABILITY = (8, 9)
# Shared memory one block may use on Hopper (H100, H200) and Blackwell (B200) GPUs: 227 KiB (CUDA
# C++ Programming Guide, "Technical Specifications per Compute Capability", 9.0 and 10.0). What
# the autotuning pruners hold configs to on such a device, and what a plan made without one
# assumes.
HOPPER_SMEM = 227 * 1024


def use_interpreter_without_gpu() -> None:
    """Without a CUDA device, run the kernels in Triton's CPU interpreter (TRITON_INTERPRET=1),
    unless the variable is already set. Call before anything imports Triton (torch does for some
    features); a call after that, on a machine that needs the interpreter, raises RuntimeError
    rather than leave Triton's own library compiled for a GPU that is not there."""
    import torch

    if "TRITON_INTERPRET" in os.environ or torch.cuda.is_available():
        return
    if "triton" in sys.modules:
        raise RuntimeError(
            "Triton was imported before its CPU interpreter was chosen: call "
            "kernels.use_interpreter_without_gpu() first, or set TRITON_INTERPRET=1"
        )
    os.environ["TRITON_INTERPRET"] = "1"


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter rather than compiled for a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreter_problem(triton: str | None = None, numpy: str | None = None) -> str | None:
    """Why Triton's interpreter cannot run the kernels with these versions (default: the
    installed ones), or None. Triton 3.6's interpreter fails under numpy 2.4 and later, which no
    longer converts an array to a scalar implicitly (triton-lang/triton#9171, fixed after 3.6)."""
    from importlib import metadata

    try:
        triton = triton or metadata.version("triton")
        numpy = numpy or metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None
    if _release(triton) < (3, 7) and _release(numpy) >= (2, 4):
        return (
            f"Triton {triton}'s interpreter fails under numpy {numpy}: install numpy<2.4 "
            "(or Triton 3.9 or later) to check the kernels on a CPU"
        )
    return None


def _release(version: str) -> tuple[int, int]:
    """ "3.6.0+git1" -> (3, 6)."""
    major, minor, *_ = (version.split("+")[0] + ".0").split(".")
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def fp8_unsupported(
    kind: str, capability: tuple[int, int] | None, rocm: bool = False
) -> str | None:
    """Why a device cannot run fp8 GEMMs, or None when it can.

    Args:
        kind: "cuda" or another device type.
        capability: CUDA compute capability (major, minor), when known.
        rocm: A ROCm build of torch, whose float8_e4m3fn GEMMs this harness does not run.
    """
    if kind != "cuda" or capability is None:
        return f"fp8 needs a CUDA device; got {kind}"
    if rocm:
        return "fp8 (float8_e4m3fn) needs an NVIDIA GPU; this is a ROCm build"
    if capability < FP8_MIN_CAPABILITY:
        need = ".".join(map(str, FP8_MIN_CAPABILITY))
        have = ".".join(map(str, capability))
        return f"fp8 needs compute capability >= {need}; this device has {have}"
    return None


def on_device(t):
    """A context that makes t's GPU the current one: Triton launches on the current CUDA device,
    which need not be the one holding the data (cuda:1 under a multi-GPU run)."""
    import contextlib

    import torch

    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def strides(t, *names: str) -> dict[str, int]:
    """t's strides as keyword launch arguments: strides(q, "stride_qm", "stride_qd")."""
    return dict(zip(names, t.stride(), strict=True))
