"""silu_mul: a gated MLP's activation, silu(gate)·up over the fused gate/up projection's output;
Triton (one pass) against PyTorch's F.silu(gate) * up (two kernels, the silu written and read
back in between).

Memory-bound: FLOPs 5 per output element (sigmoid's exp, add and divide, two products); minimum
bytes: gate and up read once, the output written once.
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
from bench.measure.ops.rotary import STEP_TOKENS
from bench.measure.ops.rows import Arguments, row_impls
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, Shape

if TYPE_CHECKING:
    import torch


def silu_mul_shape(tokens: int, inter: int) -> Shape:
    return {"tokens": tokens, "I": inter}


class SiluMul(Op):
    name = "silu_mul"
    description = "SiLU·mul of a gated MLP, (tokens×2I → tokens×I): silu(gate)·up"
    keys = (Key("tokens", "tokens in the step"), Key("I", "intermediate size (per GPU under TP)"))
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "memory"
    memory_bound = True
    efficiency = "memory"
    axes = (("tokens",),)
    smoke = (silu_mul_shape(1, 64), silu_mul_shape(37, 1000), silu_mul_shape(64, 1536))
    # Llama-3-8B and Llama-3-70B on one GPU, Llama-3-70B over 8.
    standard = tuple(silu_mul_shape(t, i) for i in (14336, 28672, 3584) for t in STEP_TOKENS)

    def flops(self, shape: Shape) -> float:
        return 5.0 * shape["tokens"] * shape["I"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        return 3 * shape["tokens"] * shape["I"] * DTYPE_BYTES[dtype]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # The input, a few outputs and the baseline's silu, and the float64 reference.
        return 3 * self.bytes(shape, dtype) + 8 * 4 * shape["tokens"] * shape["I"]

    def label(self, shape: Shape) -> str:
        return f"{shape['tokens']}×{2 * shape['I']}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Between a dense MLP's gate/up and down GEMMs (a MoE's dense layers and shared
        experts too; its routed experts fuse it)."""
        return [
            self.use("act", silu_mul_shape(step.tokens, width), step.act, layers)
            for width, layers in step.dense_mlps()
        ]

    def programs(self, shape: Shape) -> float:
        return shape["tokens"]  # engines' kernels (and this one) give each token its own

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        return {"gate_up": randn((shape["tokens"], 2 * shape["I"]), dtype, device, gen)}

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.reference import silu_mul_ref

        return silu_mul_ref(inputs["gate_up"])

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """gate_up -> silu(gate)·up."""
        return feeding(inputs, prepare(inputs), "gate_up")

    def implementations(self) -> tuple[Impl, ...]:
        return row_impls(_kernel, {"torch": silu_mul_torch}, _arguments)


def _arguments(inputs: Inputs) -> Arguments:
    return (inputs["gate_up"],), {}


def _kernel() -> Callable[[torch.Tensor], torch.Tensor]:
    from kernels.activation import silu_mul

    return silu_mul


def silu_mul_torch(gate_up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up`` in plain PyTorch, two kernels with the silu output written and read
    back in between, rounded to the input dtype after each."""
    import torch.nn.functional as F

    inter = gate_up.shape[-1] // 2
    return F.silu(gate_up[:, :inter]) * gate_up[:, inter:]


OP = SiluMul()
