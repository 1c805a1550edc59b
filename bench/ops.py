"""What can be benchmarked: per op, its inputs, FLOPs, minimum bytes, implementations and reference.

An op is registered once with everything the harness needs, as in tritonbench's operators: the
runner never knows which op it is running. Each implementation is a `prepare` function that takes
the inputs and returns the closure to time, so that input preparation (layouts, scales, gathers)
stays out of the timed region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import kernels
from bench import BenchError
from bench.device import DeviceInfo
from kernels import reference
from kernels.matmul import fp8_supported, matmul, matmul_fp8

Shape = dict[str, int | bool | str]
Inputs = dict[str, Any]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8": torch.float8_e4m3fn,
}
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}

# Relative error ‖out − ref‖ / ‖ref‖ allowed per dtype: a few units of the output's rounding
# (fp16 2^-11, bf16 2^-8) plus fp32-accumulation error over long reductions.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2, "fp8": 2e-2}

# Triton's interpreter runs a kernel in numpy, program by program: fine for checking small
# shapes, hopeless for large ones.
INTERPRETER_MAX_FLOPS = 2e8


@dataclass(frozen=True)
class Impl:
    """One implementation of an op."""

    name: str
    prepare: Callable[[Inputs], Callable[[], torch.Tensor]]
    triton: bool = False  # a tokbench Triton kernel (interpreted without a GPU)
    # Why this implementation cannot run a case here, or None when it can.
    unsupported: Callable[[Shape, str, DeviceInfo], str | None] = lambda *_: None


@dataclass(frozen=True)
class Op:
    """A benchmarkable operation and everything the harness needs to run it."""

    name: str
    description: str
    shape_keys: tuple[str, ...]
    dtypes: tuple[str, ...]
    make_inputs: Callable[[Shape, str, torch.device, torch.Generator], Inputs]
    reference: Callable[[Inputs], torch.Tensor]
    flops: Callable[[Shape], float]
    bytes: Callable[[Shape, str], float]  # minimum traffic: every input read, output written once
    footprint: Callable[[Shape, str], float]  # device memory a case needs, reference included
    label: Callable[[Shape], str]
    baseline: str  # implementation that speedups are measured against
    impls: tuple[Impl, ...] = field(default_factory=tuple)

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        known = ", ".join(i.name for i in self.impls)
        raise BenchError(f"unknown implementation '{name}' for {self.name}; known: {known}")


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    if name not in OPS:
        raise BenchError(f"unknown op '{name}'; known: {', '.join(OPS)}")
    return OPS[name]


def triton_unsupported(shape: Shape, dtype: str, device: DeviceInfo, flops: float) -> str | None:
    """Reasons every Triton kernel shares for not running a case."""
    if not kernels.interpreted():
        return None
    if dtype == "bf16":
        return "bf16 tl.dot is not emulated by Triton's interpreter; checked on GPU only"
    if flops > INTERPRETER_MAX_FLOPS:
        return f"too large for Triton's interpreter ({flops:.1e} FLOPs); run on a GPU"
    return None


def randn(shape: tuple[int, ...], dtype: str, device: torch.device, gen: torch.Generator):
    """Random normal data in dtype (never zeros: zeros flatter tensor-core power and clocks)."""
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return x.to(DTYPES[dtype])


# --- matmul: C = A·B -------------------------------------------------------------------------


def _matmul_inputs(shape: Shape, dtype: str, device: torch.device, gen: torch.Generator):
    m, n, k = shape["M"], shape["N"], shape["K"]
    a = randn((m, k), dtype, device, gen)
    if dtype != "fp8":
        return {"a": a, "b": randn((k, n), dtype, device, gen)}
    # fp8: B column-major (K-major), as torch._scaled_mm requires and tensor cores prefer.
    b = randn((n, k), dtype, device, gen).t()
    scales = torch.rand(2, generator=gen, device=device) + 0.5
    return {"a": a, "b": b, "scale_a": scales[0:1].reshape(()), "scale_b": scales[1:2].reshape(())}


def _matmul_reference(inputs: Inputs) -> torch.Tensor:
    out = reference.matmul_ref(inputs["a"], inputs["b"])
    if "scale_a" in inputs:
        out = out * inputs["scale_a"].double() * inputs["scale_b"].double()
    return out


def _matmul_flops(shape: Shape) -> float:
    return 2.0 * shape["M"] * shape["N"] * shape["K"]


def _matmul_bytes(shape: Shape, dtype: str) -> float:
    m, n, k = shape["M"], shape["N"], shape["K"]
    out_bytes = 2 if dtype == "fp8" else ELEMENT_BYTES[dtype]  # fp8 GEMMs write bf16
    return (m * k + k * n) * ELEMENT_BYTES[dtype] + m * n * out_bytes


def _matmul_footprint(shape: Shape, dtype: str) -> float:
    m, n, k = shape["M"], shape["N"], shape["K"]
    # Inputs and two outputs, plus the float64 reference with its upcast operands.
    return 2 * _matmul_bytes(shape, dtype) + 8 * (m * n + m * k + k * n)


def _triton_matmul(inputs: Inputs) -> Callable[[], torch.Tensor]:
    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: matmul_fp8(a, b, sa, sb)
    return lambda: matmul(a, b)


def _torch_matmul(inputs: Inputs) -> Callable[[], torch.Tensor]:
    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    return lambda: torch.matmul(a, b)


def dtype_unsupported(dtype: str, device: DeviceInfo) -> str | None:
    """Why this device cannot compute in dtype at all, or None."""
    if dtype != "fp8":
        return None
    return fp8_supported(torch.device("cuda", device.index) if device.kind == "cuda" else "cpu")


register(
    Op(
        name="matmul",
        description="GEMM C = A·B (fp32 accumulation; fp32 inputs without tf32)",
        shape_keys=("M", "N", "K"),
        dtypes=("fp32", "fp16", "bf16", "fp8"),
        make_inputs=_matmul_inputs,
        reference=_matmul_reference,
        flops=_matmul_flops,
        bytes=_matmul_bytes,
        footprint=_matmul_footprint,
        label=lambda s: f"{s['M']}×{s['N']}×{s['K']}",
        baseline="torch",
        impls=(
            Impl(
                "triton",
                _triton_matmul,
                triton=True,
                unsupported=lambda s, dt, dev: (
                    dtype_unsupported(dt, dev) or triton_unsupported(s, dt, dev, _matmul_flops(s))
                ),
            ),
            Impl("torch", _torch_matmul, unsupported=lambda s, dt, dev: dtype_unsupported(dt, dev)),
        ),
    )
)
