"""attention: prefill flash attention, Triton against each SDPA backend pinned and eager PyTorch.

FLOPs 4·B·H·D per (query, key) pair computed (under a causal mask only the visible pairs);
minimum bytes: q, k and v read once, o written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import kernels
from bench.ops.base import (
    TF32_TOLERANCE,
    Impl,
    Inputs,
    Key,
    Op,
    randn,
    triton_impl,
)
from bench.ops.sdpa import pinned, sdpa, sdpa_impls
from bench.schema import DTYPE_BYTES, Shape

if TYPE_CHECKING:
    import torch

# The prefill reference covers the first and last CHECK_ROWS query rows: each is an exact
# sub-problem (bottom-right causal alignment survives taking the last rows, and the first rows
# with the keys they can see), and float64 attention over every row of a 16k sequence would
# cost more than the whole benchmark. The kernel tests check every row.
CHECK_ROWS = 128

# Prefill as in FlashAttention's benchmarks: 16k tokens per batch, heads × head_dim = 2048.
PREFILL_TOKENS = 16384
PREFILL_SEQS = (512, 1024, 2048, 4096, 8192, 16384)


def attn(b: int, h: int, hkv: int, sq: int, skv: int, d: int, causal: bool) -> Shape:
    return {"B": b, "H": h, "Hkv": hkv, "Sq": sq, "Skv": skv, "D": d, "causal": causal}


def heads_rule(shape: Shape) -> str | None:
    """GQA groups and head dims, shared with decode attention."""
    if shape["H"] % shape["Hkv"]:
        return f"H ({shape['H']}) must be a multiple of Hkv ({shape['Hkv']})"
    if shape["D"] > kernels.MAX_HEAD_DIM:
        return f"D must be at most {kernels.MAX_HEAD_DIM}"
    return None


class Attention(Op):
    name = "attention"
    description = "prefill flash attention, (B×H/Hkv×Sq×Skv×D)"
    keys = (
        Key("B", "sequences"),
        Key("H", "query heads"),
        Key("Hkv", "key/value heads (divides H)"),
        Key("Sq", "query tokens"),
        Key("Skv", "key tokens"),
        Key("D", "head dim"),
        Key("causal", "bottom-right causal mask", switch=True),
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "sdpa-flash"
    part = "attention"
    axes = (("B",), ("Sq", "Skv"))
    tolerance = TF32_TOLERANCE
    fp32_peak = "tf32"
    smoke = (
        attn(1, 4, 2, 128, 128, 64, causal=True),
        attn(1, 4, 2, 128, 128, 64, causal=False),
        attn(1, 4, 1, 48, 144, 64, causal=True),  # chunked prefill: a chunk after a prefix
    )
    standard = tuple(
        attn(PREFILL_TOKENS // s, 2048 // d, 2048 // d, s, s, d, causal)
        for d in (64, 128)
        for causal in (False, True)
        for s in PREFILL_SEQS
    )

    def rule(self, shape: Shape) -> str | None:
        if shape["causal"] and shape["Sq"] > shape["Skv"]:
            # Bottom-right alignment would leave the first Sq - Skv queries no key at all.
            return "causal attention needs Sq <= Skv (a chunk of queries after its prefix)"
        return heads_rule(shape)

    def flops(self, shape: Shape) -> float:
        return 4.0 * shape["B"] * shape["H"] * _visible_pairs(shape) * shape["D"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        return _elements(shape) * DTYPE_BYTES[dtype]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # Inputs and a few outputs, and the float64 reference's upcast copies.
        return 3 * self.bytes(shape, dtype) + 8 * _elements(shape)

    def label(self, shape: Shape) -> str:
        mask = "causal" if shape["causal"] else "non-causal"
        b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
        return f"{b}×{h}/{hkv}×{sq}×{skv}×{d} {mask}"

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
        return {
            "q": randn((b, h, sq, d), dtype, device, gen),
            "k": randn((b, hkv, skv, d), dtype, device, gen),
            "v": randn((b, hkv, skv, d), dtype, device, gen),
            "causal": bool(shape["causal"]),
        }

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        from kernels.reference import attention_ref

        q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
        sq, skv = q.shape[2], k.shape[2]
        if sq <= 2 * CHECK_ROWS:
            return attention_ref(q, k, v, causal=causal)
        scale = q.shape[-1] ** -0.5
        # The first rows see keys up to CHECK_ROWS + skv - sq when causal: keep exactly those.
        seen = max(CHECK_ROWS + skv - sq, 0) if causal else skv
        head = attention_ref(
            q[:, :, :CHECK_ROWS], k[:, :, :seen], v[:, :, :seen], causal=causal, sm_scale=scale
        )
        tail = attention_ref(q[:, :, -CHECK_ROWS:], k, v, causal=causal, sm_scale=scale)
        return torch.cat([head, tail], dim=2)

    def check_view(self, out: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        import torch

        if out.shape[2] <= 2 * CHECK_ROWS:
            return out
        return torch.cat([out[:, :, :CHECK_ROWS], out[:, :, -CHECK_ROWS:]], dim=2)

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops),
            *sdpa_impls(_sdpa, scores=_scores),
            Impl("eager", _eager, workspace=_scores),
        )


def _visible_pairs(shape: Shape) -> int:
    """(query, key) pairs attention computes: all of them, or under a bottom-right causal mask
    the row i sees min(Skv, max(0, i + Skv - Sq + 1)) keys."""
    sq, skv = shape["Sq"], shape["Skv"]
    if not shape["causal"]:
        return sq * skv
    return sum(min(skv, max(0, i + skv - sq + 1)) for i in range(sq))


def _elements(shape: Shape) -> int:
    """Elements of q, k, v and the output."""
    b, d = shape["B"], shape["D"]
    return 2 * b * d * (shape["H"] * shape["Sq"] + shape["Hkv"] * shape["Skv"])


def _scores(shape: Shape, dtype: str) -> float:
    """Materialised scores and probabilities, in fp32 and in dtype (eager, SDPA's math)."""
    return shape["B"] * shape["H"] * shape["Sq"] * shape["Skv"] * (8 + DTYPE_BYTES[dtype])


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.attention import flash_attention

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
    return lambda: flash_attention(q, k, v, causal=causal)


def _sdpa(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        return pinned(name, sdpa(inputs["q"], inputs["k"], inputs["v"], inputs["causal"]))

    return prepare


def _eager(inputs: Inputs) -> Callable[[], torch.Tensor]:
    """softmax(q·kᵀ/√d)·v the plain way: every score materialised, softmax in fp32."""
    import torch

    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    group = q.shape[1] // k.shape[1]
    mask = None
    if inputs["causal"]:
        # True where query i may see key j under the bottom-right aligned causal mask.
        sq, skv = q.shape[2], k.shape[2]
        rows = torch.arange(sq, device=q.device)[:, None]
        mask = torch.arange(skv, device=q.device)[None, :] <= rows + (skv - sq)

    def fn() -> torch.Tensor:
        # Each KV head repeated for its query-head group, as an eager model does per call.
        keys, values = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ keys.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1).to(q.dtype) @ values

    return fn


OP = Attention()
