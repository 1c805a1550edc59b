"""rotary: rotary position embedding (RoPE, rotate-half) of a step's queries and keys, each
token at its own position; Triton (q and k in one launch) against Hugging Face's plain-PyTorch
apply_rotary_pos_emb.

Memory-bound: FLOPs 3 per element rotated; minimum bytes: q and k read and written once, each
token's cos/sin row (float32) and its position (int64) read once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.measure.ops.attention import heads_rule
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

# Positions drawn from a cos/sin table this long (a 32k-token context).
MAX_POSITION = 32768
STEP_TOKENS = (1, 16, 64, 256, 1024, 4096, 16384)


def rotary_shape(tokens: int, h: int, hkv: int, d: int = 128) -> Shape:
    return {"tokens": tokens, "H": h, "Hkv": hkv, "D": d}


class Rotary(Op):
    name = "rotary"
    description = "RoPE of q and k, (tokens×H/Hkv×D), rotate-half, each token at its position"
    keys = (
        Key("tokens", "tokens in the step"),
        Key("H", "query heads"),
        Key("Hkv", "key heads (divides H)"),
        Key("D", "head dim (even)"),
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "memory"
    memory_bound = True
    efficiency = "memory"
    axes = (("tokens",),)
    smoke = (rotary_shape(1, 4, 2, 64), rotary_shape(37, 8, 2, 64), rotary_shape(16, 6, 6, 96))
    # Llama-3-8B, Llama-3-70B and gpt-oss-120b, each on one GPU.
    standard = tuple(
        rotary_shape(t, h, hkv, d)
        for h, hkv, d in ((32, 8, 128), (64, 8, 128), (64, 8, 64))
        for t in STEP_TOKENS
    )

    def rule(self, shape: Shape) -> str | None:
        if shape["D"] % 2:
            return f"D must be even to rotate its halves, got {shape['D']}"
        return heads_rule(shape)

    def flops(self, shape: Shape) -> float:
        return 3.0 * _elements(shape)

    def bytes(self, shape: Shape, dtype: str) -> float:
        table_and_positions = shape["tokens"] * (4 * shape["D"] + 8)
        return 2 * _elements(shape) * DTYPE_BYTES[dtype] + table_and_positions

    def footprint(self, shape: Shape, dtype: str) -> float:
        table = 4 * MAX_POSITION * shape["D"]
        # Inputs, a few outputs and the baseline's intermediates, and the float64 reference.
        return table + 6 * self.bytes(shape, dtype) + 8 * 4 * _elements(shape)

    def label(self, shape: Shape) -> str:
        return f"{shape['tokens']}×{shape['H']}/{shape['Hkv']}×{shape['D']}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Once a layer, on the step's queries and keys (latent attention's: the rope part of
        every head's query and the one shared rope key)."""
        s = step
        shape = (
            rotary_shape(s.tokens, s.heads, 1, s.rope_dim)
            if s.latent
            else rotary_shape(s.tokens, s.heads, s.kv_heads, s.head_dim)
        )
        return [self.use("rotary", shape, step.act, step.layers)]

    def programs(self, shape: Shape) -> float:
        return shape["tokens"]  # engines' kernels (and this one) give each token its own

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        from kernels.rotary import rotary_cache

        t, h, hkv, d = (shape[k] for k in ("tokens", "H", "Hkv", "D"))
        return {
            "q": randn((t, h, d), dtype, device, gen),
            "k": randn((t, hkv, d), dtype, device, gen),
            "positions": torch.randint(MAX_POSITION, (t,), generator=gen, device=device),
            "cos_sin": rotary_cache(MAX_POSITION, d, 500000.0, device=device),  # Llama-3's base
        }

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.reference import rotary_ref

        return self.check_view(rotary_ref(*_args(inputs)), inputs)

    def check_view(self, out: tuple[torch.Tensor, torch.Tensor], inputs: Inputs) -> torch.Tensor:
        import torch

        q, k = out
        return torch.cat([q.flatten(), k.flatten()]).double()  # both outputs

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(q, k) -> (q, k) rotated, each token at its position in its sequence (within the
        cos/sin table)."""
        import torch

        positions = inputs["positions"]
        first = step.context - step.seq  # tokens each sequence had cached before this step
        along = torch.arange(first, step.context, device=positions.device).repeat(step.batch)
        positions.copy_(along.clamp(max=inputs["cos_sin"].shape[0] - 1))
        return feeding(inputs, prepare(inputs), "q", "k")

    def implementations(self) -> tuple[Impl, ...]:
        # The positions are in range by construction: no sync to check them in the timed call.
        unchecked = {"check_positions": False}
        return row_impls(_kernel, {"torch": rotary_torch}, _arguments, unchecked=unchecked)


def _elements(shape: Shape) -> int:
    return shape["tokens"] * (shape["H"] + shape["Hkv"]) * shape["D"]


def _args(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return inputs["q"], inputs["k"], inputs["positions"], inputs["cos_sin"]


def _arguments(inputs: Inputs) -> Arguments:
    return _args(inputs), {}


def _kernel() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    from kernels.rotary import rotary

    return rotary


def rotary_torch(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation in plain PyTorch, as HF Llama's apply_rotary_pos_emb and vLLM's
    forward_native do: each token's cos/sin row gathered and cast to q's dtype, then
    x·cos + rotate_half(x)·sin in that dtype, some fifteen small kernels and their
    intermediate tensors where the Triton kernel has one."""
    import torch

    cos, sin = cos_sin_cache[positions].to(q.dtype).chunk(2, dim=-1)
    cos = torch.cat((cos, cos), dim=-1)[:, None, :]
    sin = torch.cat((sin, sin), dim=-1)[:, None, :]

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


OP = Rotary()
