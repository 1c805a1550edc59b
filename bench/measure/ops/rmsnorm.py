"""rmsnorm: the residual add fused with RMSNorm that a decoder layer runs twice (before attention
and before the MLP); Triton against torch's rms_norm and an eager fp32 version (Hugging Face's
LlamaRMSNorm), each on the sum of the two inputs.

Memory-bound: FLOPs 5 per element (add, square, sum, normalise, weight); minimum bytes: x, the
residual and the weight read once, the output and the updated residual written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import kernels
from bench.measure.ops.base import (
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    feeding,
    randn,
    row_kernel_impl,
)
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch

EPS = 1e-5  # Llama's rms_norm_eps


def rmsnorm_shape(tokens: int, hidden: int) -> Shape:
    return {"tokens": tokens, "hidden": hidden}


class RMSNorm(Op):
    name = "rmsnorm"
    description = "residual add + RMSNorm, (tokens×hidden): h = x + residual, y = RMSNorm(h)·w"
    keys = (Key("tokens", "rows: tokens in the step"), Key("hidden", "the model's hidden size"))
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "memory"
    memory_bound = True
    efficiency = "memory"
    axes = (("tokens",),)
    smoke = (rmsnorm_shape(1, 256), rmsnorm_shape(7, 1000), rmsnorm_shape(64, 4096))
    standard = tuple(
        rmsnorm_shape(t, h) for h in (4096, 8192) for t in (1, 16, 64, 256, 1024, 4096, 16384)
    )

    def flops(self, shape: Shape) -> float:
        return 5.0 * shape["tokens"] * shape["hidden"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        t, h = shape["tokens"], shape["hidden"]
        return (4 * t * h + h) * DTYPE_BYTES[dtype]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # Inputs and outputs of a few implementations, the float64 reference and its upcasts.
        return 3 * self.bytes(shape, dtype) + 8 * 5 * shape["tokens"] * shape["hidden"]

    def label(self, shape: Shape) -> str:
        return f"{shape['tokens']}×{shape['hidden']}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Twice a layer: before attention and before the MLP."""
        shape = rmsnorm_shape(step.tokens, step.hidden)
        return [self.use("norm", shape, step.act, 2 * step.layers)]

    def weight_elements(self, shape: Shape) -> int:
        return shape["hidden"]

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        t, h = shape["tokens"], shape["hidden"]
        return {
            "x": randn((t, h), dtype, device, gen),
            "residual": randn((t, h), dtype, device, gen),
            "weight": randn((h,), dtype, device, gen),
        }

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        from kernels.reference import add_rmsnorm_ref

        return torch.stack(add_rmsnorm_ref(inputs["x"], inputs["residual"], inputs["weight"], EPS))

    def check_view(self, out: tuple[torch.Tensor, torch.Tensor], inputs: Inputs) -> torch.Tensor:
        import torch

        return torch.stack(out)  # both outputs: the normalised rows and the updated residual

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(x, residual) -> (normalised, updated residual)."""
        inputs["weight"].fill_(1.0)  # a unit weight keeps the residual stream at its scale
        return feeding(inputs, prepare(inputs), "x", "residual")

    def implementations(self) -> tuple[Impl, ...]:
        triton = row_kernel_impl(_triton, refuses=_wider_than_the_kernel)
        return (triton, Impl("torch", _torch), Impl("eager", _eager))


def _wider_than_the_kernel(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    if shape["hidden"] <= kernels.MAX_HIDDEN:
        return None
    return f"the Triton kernel holds rows of at most {kernels.MAX_HIDDEN} elements"


Closure = Callable[[], "tuple[torch.Tensor, torch.Tensor]"]


def _triton(inputs: Inputs) -> Closure:
    from kernels.rmsnorm import add_rmsnorm

    x, residual, weight = inputs["x"], inputs["residual"], inputs["weight"]
    return lambda: add_rmsnorm(x, residual, weight, EPS)


def _torch(inputs: Inputs) -> Closure:
    import torch.nn.functional as F

    x, residual, weight = inputs["x"], inputs["residual"], inputs["weight"]

    def fn() -> tuple[torch.Tensor, torch.Tensor]:
        h = x + residual
        return F.rms_norm(h, weight.shape, weight, EPS), h

    return fn


def _eager(inputs: Inputs) -> Closure:
    """As Hugging Face's LlamaRMSNorm: the mean square in fp32, the weight applied after the
    cast back."""
    import torch

    x, residual, weight = inputs["x"], inputs["residual"], inputs["weight"]

    def fn() -> tuple[torch.Tensor, torch.Tensor]:
        h = x + residual
        h32 = h.float()
        normed = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + EPS)
        return weight * normed.to(h.dtype), h

    return fn


OP = RMSNorm()
