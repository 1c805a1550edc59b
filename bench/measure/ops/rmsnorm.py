"""rmsnorm: the residual add fused with RMSNorm that a decoder layer runs twice (before attention
and before the MLP); Triton against torch's rms_norm and an eager fp32 version (Hugging Face's
LlamaRMSNorm), each on the sum of the two inputs.

Memory-bound: FLOPs 5 per element (add, square, sum, normalise, weight); minimum bytes: x, the
residual and the weight read once, the output and the updated residual written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.measure.ops.base import (
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    feeding,
    randn,
)
from bench.measure.ops.rows import Arguments, row_impls
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, Shape

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
        """Twice a layer: before attention and before the MLP; latent attention adds one on
        its query latent and one on its KV latent (DeepSeek-V3's q_a and kv_a layernorms)."""
        s = step
        uses = [self.use("norm", rmsnorm_shape(s.tokens, s.hidden), s.act, 2 * s.layers)]
        for width in (s.q_lora, s.latent) if s.latent else ():
            if width:
                uses.append(self.use("norm", rmsnorm_shape(s.tokens, width), s.act, s.layers))
        return uses

    def weight_elements(self, shape: Shape) -> int:
        return shape["hidden"]

    def programs(self, shape: Shape) -> float:
        return shape["tokens"]  # engines' kernels (and this one) give each token its own

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
        return row_impls(_kernel, {"torch": _torch, "eager": _eager}, _arguments)


Outputs = tuple["torch.Tensor", "torch.Tensor"]


def _arguments(inputs: Inputs) -> Arguments:
    return (inputs["x"], inputs["residual"], inputs["weight"], EPS), {}


def _kernel() -> Callable[..., Outputs]:
    from kernels.rmsnorm import add_rmsnorm

    return add_rmsnorm


def _torch(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Outputs:
    import torch.nn.functional as F

    h = x + residual
    return F.rms_norm(h, weight.shape, weight, eps), h


def _eager(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Outputs:
    """As Hugging Face's LlamaRMSNorm: the mean square in fp32, the weight applied after the
    cast back."""
    import torch

    h = x + residual
    h32 = h.float()
    normed = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(h.dtype), h


OP = RMSNorm()
