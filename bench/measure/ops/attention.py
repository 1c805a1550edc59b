"""attention: prefill flash attention, Triton against each SDPA backend pinned and eager PyTorch,
with an optional sliding window (Mistral, gpt-oss) and attention sinks (gpt-oss).

FLOPs 4·B·H·D per (query, key) pair computed (under a causal mask or a window only the visible
pairs); minimum bytes: q read once, o written once, and of k and v the rows some query sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import kernels
from bench import ceil_div
from bench.measure.ops.base import (
    TF32_TOLERANCE,
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    randn,
    triton_impl,
)
from bench.measure.ops.sdpa import pinned, sdpa, sdpa_impls
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

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


def attention_shape(
    b: int,
    h: int,
    hkv: int,
    sq: int,
    skv: int,
    d: int,
    causal: bool,
    window: int = 0,
    sinks: bool = False,
) -> Shape:
    return {
        "B": b,
        "H": h,
        "Hkv": hkv,
        "Sq": sq,
        "Skv": skv,
        "D": d,
        "causal": causal,
        "window": window,
        "sinks": sinks,
    }


WINDOW = Key(
    "window", "sliding window: the keys a query sees, itself included (0: all)", 0, False, 0
)
SINKS = Key(
    "sinks", "a learned sink logit per head in the softmax (gpt-oss)", switch=True, default=False
)


def sinks_input(h: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """One sink logit per query head, float32, as gpt-oss learns them."""
    import torch

    return torch.randn((h,), generator=gen, device=device, dtype=torch.float32)


def no_sdpa_sinks(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return "scaled_dot_product_attention has no attention sinks" if shape["sinks"] else None


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
        WINDOW,
        SINKS,
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "sdpa-flash"
    part = "attention"
    efficiency = "prefill_attention"
    axes = (("B",), ("Sq", "Skv"))
    tolerance = TF32_TOLERANCE
    fp32_peak = "tf32"
    smoke = (
        attention_shape(1, 4, 2, 128, 128, 64, causal=True),
        attention_shape(1, 4, 2, 128, 128, 64, causal=False),
        attention_shape(
            1, 4, 1, 48, 144, 64, causal=True
        ),  # chunked prefill: a chunk after a prefix
        attention_shape(
            1, 4, 2, 100, 100, 64, causal=True, window=32, sinks=True
        ),  # gpt-oss's layers
    )
    standard = (
        *(
            attention_shape(PREFILL_TOKENS // s, 2048 // d, 2048 // d, s, s, d, causal)
            for d in (64, 128)
            for causal in (False, True)
            for s in PREFILL_SEQS
        ),
        # gpt-oss-120b's sliding-window layers: 64 heads over 8 KV heads of 64, window 128.
        *(
            attention_shape(PREFILL_TOKENS // s, 64, 8, s, s, 64, True, 128, True)
            for s in PREFILL_SEQS
        ),
    )

    def rule(self, shape: Shape) -> str | None:
        if shape["causal"] and shape["Sq"] > shape["Skv"]:
            # Bottom-right alignment would leave the first Sq - Skv queries no key at all.
            return "causal attention needs Sq <= Skv (a chunk of queries after its prefix)"
        if shape["window"] and not shape["causal"]:
            return "a sliding window needs causal=true"
        return heads_rule(shape)

    def flops(self, shape: Shape) -> float:
        return 4.0 * shape["B"] * shape["H"] * _visible_pairs(shape) * shape["D"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        return _elements(shape) * DTYPE_BYTES[dtype] + 4 * shape["H"] * shape["sinks"]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # Inputs and a few outputs, and the float64 reference's upcast copies.
        return 3 * self.bytes(shape, dtype) + 8 * _elements(shape)

    def label(self, shape: Shape) -> str:
        mask = "causal" if shape["causal"] else "non-causal"
        b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
        return f"{b}×{h}/{hkv}×{sq}×{skv}×{d} {mask}{extras(shape)}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """A prefill step's attention, causal: each sequence's new tokens over its context, a
        use for the full layers and one for the windowed ones."""
        if step.phase != "prefill":
            return []
        s = step
        # Latent attention prefills un-absorbed: every head its own keys (nope + rope wide)
        # and values (nope wide); a head dim of their mean gives its FLOPs and bytes exactly.
        dim = (2 * s.head_dim + s.rope_dim) // 2 if s.latent else s.head_dim
        return [
            self.use(
                "attention",
                attention_shape(s.batch, s.heads, s.kv_heads, s.seq, s.context, dim,
                                causal=True, window=window, sinks=s.sinks),
                s.act,
                layers,
            )
            for window, layers in s.attention_groups()
        ]  # fmt: skip

    def step_of(self, shape: Shape) -> tuple[str, int, int, int] | None:
        return "prefill", shape["B"], shape["Sq"], shape["Skv"]

    def programs(self, shape: Shape) -> float:
        """A program per 128 queries of each sequence and head, as flash attention tiles."""
        return shape["B"] * shape["H"] * ceil_div(shape["Sq"], 128)

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
        return {
            "q": randn((b, h, sq, d), dtype, device, gen),
            "k": randn((b, hkv, skv, d), dtype, device, gen),
            "v": randn((b, hkv, skv, d), dtype, device, gen),
            "causal": bool(shape["causal"]),
            "window": shape["window"] or None,
            "sinks": sinks_input(h, device, gen) if shape["sinks"] else None,
        }

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        from kernels.reference import attention_ref

        q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
        options = {"causal": causal, "window": inputs["window"], "sinks": inputs["sinks"]}
        sq, skv = q.shape[2], k.shape[2]
        if sq <= 2 * CHECK_ROWS:
            return attention_ref(q, k, v, **options)
        scale = q.shape[-1] ** -0.5
        # The first rows see keys up to CHECK_ROWS + skv - sq when causal: keep exactly those.
        seen = max(CHECK_ROWS + skv - sq, 0) if causal else skv
        first, last = q[:, :, :CHECK_ROWS], q[:, :, -CHECK_ROWS:]
        head = attention_ref(first, k[:, :, :seen], v[:, :, :seen], sm_scale=scale, **options)
        tail = attention_ref(last, k, v, sm_scale=scale, **options)
        return torch.cat([head, tail], dim=2)

    def check_view(self, out: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        import torch

        if out.shape[2] <= 2 * CHECK_ROWS:
            return out
        return torch.cat([out[:, :, :CHECK_ROWS], out[:, :, -CHECK_ROWS:]], dim=2)

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(q, k, v), (tokens, heads, head_dim) each -> (tokens, heads·head_dim)."""
        run, b, s = prepare(inputs), step.batch, step.seq

        def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            for name, t in (("q", q), ("k", k), ("v", v)):
                inputs[name].copy_(t.view(b, s, t.shape[1], -1).transpose(1, 2))
            return run().transpose(1, 2).reshape(b * s, -1)

        return call

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops, tuning=_tuning),
            *sdpa_impls(_sdpa, scores=_scores, unsupported=no_sdpa_sinks),
            Impl("eager", _eager, workspace=_scores),
        )


def _tuning(shape: Shape, dtype: str) -> int:
    from kernels.attention import tuning_configs

    window = shape["window"] or None
    elem = int(DTYPE_BYTES[dtype])
    return len(tuning_configs(shape["Sq"], shape["Skv"], shape["D"], elem, window))


def extras(shape: Shape) -> str:
    """The label's words for a window and sinks."""
    window = f" window {shape['window']}" if shape["window"] else ""
    return window + (" sinks" if shape["sinks"] else "")


def _visible_pairs(shape: Shape) -> int:
    """(query, key) pairs attention computes: all of them, or under a bottom-right causal mask
    row i sees the keys j <= i + Skv - Sq, and within a window W only the last W of them."""
    sq, skv, window = shape["Sq"], shape["Skv"], shape["window"]
    if not shape["causal"]:
        return sq * skv

    # Row i sees x = i + Skv - Sq + 1 keys (none when x <= 0), at most W of them: the sum of
    # min(x, W) over x from Skv - Sq + 1 to Skv, in closed form.
    def seen(n: int) -> int:  # sum of min(x, W) for x = 1..n
        cap = window or n
        return n * (n + 1) // 2 if n <= cap else cap * (cap + 1) // 2 + (n - cap) * cap

    return seen(skv) - seen(max(skv - sq, 0))


def _elements(shape: Shape) -> int:
    """Elements of q and the output, and of the k and v rows some query sees (a window of W
    leaves the Skv - Sq - W + 1 oldest keys unread)."""
    b, d, sq, skv, window = shape["B"], shape["D"], shape["Sq"], shape["Skv"], shape["window"]
    keys = min(skv, sq + window - 1) if window else skv
    return 2 * b * d * (shape["H"] * sq + shape["Hkv"] * keys)


def _scores(shape: Shape, dtype: str) -> float:
    """Materialised scores and probabilities, in fp32 and in dtype (eager, SDPA's math)."""
    return shape["B"] * shape["H"] * shape["Sq"] * shape["Skv"] * (8 + DTYPE_BYTES[dtype])


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.attention import flash_attention

    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
    window, sinks = inputs["window"], inputs["sinks"]
    return lambda: flash_attention(q, k, v, causal=causal, window=window, sinks=sinks)


def _sdpa(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
        if inputs["window"]:  # a boolean mask: backends that take none (flash) refuse it
            mask = _visible(q.shape[2], k.shape[2], inputs["window"], q.device)
            return pinned(name, sdpa(q, k, v, causal=False, mask=mask))
        return pinned(name, sdpa(q, k, v, causal))

    return prepare


def _visible(sq: int, skv: int, window: int | None, device: torch.device) -> torch.Tensor:
    """True where query i sees key j: bottom-right causal, and within the window if any."""
    import torch

    rows = torch.arange(sq, device=device)[:, None] + (skv - sq)
    cols = torch.arange(skv, device=device)[None, :]
    return (cols <= rows) & (cols > rows - window) if window else cols <= rows


def _eager(inputs: Inputs) -> Callable[[], torch.Tensor]:
    """softmax(q·kᵀ/√d)·v the plain way: every score materialised, softmax in fp32."""

    q, k, v, sinks = inputs["q"], inputs["k"], inputs["v"], inputs["sinks"]
    group = q.shape[1] // k.shape[1]
    if sinks is not None:
        sinks = sinks[None, :, None, None]  # (1, H, 1, 1) against (B, H, Sq, Skv) scores
    mask = None
    if inputs["causal"]:
        mask = _visible(q.shape[2], k.shape[2], inputs["window"], q.device)

    def fn() -> torch.Tensor:
        # Each KV head repeated for its query-head group, as an eager model does per call.
        keys, values = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ keys.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return softmax_with_sinks(scores, sinks).to(q.dtype) @ values

    return fn


def softmax_with_sinks(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """softmax over the last dim of scores; with sinks (shaped to broadcast against a column of
    scores), each head's logit as one more column that takes probability and is then dropped
    (gpt-oss's eager attention)."""
    import torch

    if sinks is None:
        return torch.softmax(scores, dim=-1)
    column = sinks.float().expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores, column], dim=-1), dim=-1)[..., :-1]


OP = Attention()
