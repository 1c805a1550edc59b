"""decode: one query token per sequence over a KV cache, paged (vLLM-style block table) or
contiguous, with an optional sliding window and attention sinks (gpt-oss) and an fp8 cache with
per-tensor scales; Triton against each SDPA backend pinned, gather + SDPA and eager PyTorch.

SDPA and eager read a pre-gathered unpaged cache (the gather untimed); gather+sdpa pays for it.
Under a window every baseline reads only the window (each sequence's length is L). An fp8 cache
is dequantised inside the timed call by eager and gather+sdpa (SDPA reads no fp8).
FLOPs 4·B·H·min(L, window)·D; minimum bytes: the KV cache a query sees read once, q and o, the
block table's entries for those pages, and the sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import ceil_div
from bench.measure.ops.attention import (
    SINKS,
    WINDOW,
    extras,
    heads_rule,
    no_sdpa_sinks,
    sinks_input,
    softmax_with_sinks,
)
from bench.measure.ops.base import (
    TF32_TOLERANCE,
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    dtype_unsupported,
    quantize_fp8,
    randn,
    triton_impl,
)
from bench.measure.ops.kv_write import FP8_KV
from bench.measure.ops.sdpa import pinned, sdpa, sdpa_impls
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch


def decode_shape(
    b: int,
    h: int,
    hkv: int,
    length: int,
    d: int = 128,
    page: int = 16,
    *,
    window: int = 0,
    sinks: bool = False,
    fp8kv: bool = False,
) -> Shape:
    return {
        "B": b,
        "H": h,
        "Hkv": hkv,
        "D": d,
        "L": length,
        "page": page,
        "window": window,
        "sinks": sinks,
        "fp8kv": fp8kv,
    }


# The fewest keys one program of a split-KV decode kernel reads (assumption: a few KV pages,
# as FlashDecoding-style kernels split no finer).
SPLIT_KEYS = 256

# Batch × context pairs whose KV cache (one layer) stays within 2^20 tokens.
BATCH_CONTEXT = [
    (b, ctx)
    for b in (1, 16, 64, 256)
    for ctx in (1024, 4096, 16384, 32768, 131072)
    if b * ctx <= 2**20
]


class Decode(Op):
    name = "decode"
    description = (
        "decode attention over a KV cache, (B×H/Hkv×context×D); SDPA and eager read a "
        "pre-gathered unpaged cache, gather+sdpa pays for the gather"
    )
    keys = (
        Key("B", "sequences"),
        Key("H", "query heads"),
        Key("Hkv", "key/value heads (divides H)"),
        Key("D", "head dim"),
        Key("L", "context tokens per sequence"),
        Key("page", "tokens per KV-cache page; 0: a contiguous cache", least=0),
        WINDOW,
        SINKS,
        FP8_KV,
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "sdpa-flash"
    part = "attention"
    memory_bound = True
    efficiency = "decode_attention"
    axes = (("B",), ("L",))
    tolerance = TF32_TOLERANCE
    fp32_peak = "tf32"
    smoke = (
        decode_shape(3, 8, 2, 100, d=64),  # the last page of each sequence part-filled
        decode_shape(2, 4, 4, 37, d=64, page=0),
        decode_shape(4, 8, 1, 1, d=64),
        decode_shape(2, 8, 2, 100, d=64, window=40, sinks=True),  # gpt-oss's sliding layers
        decode_shape(2, 4, 2, 50, d=64, fp8kv=True),
    )
    standard = (
        *(decode_shape(b, h, 8, ctx) for h in (32, 64) for b, ctx in BATCH_CONTEXT),
        *(decode_shape(b, 32, 8, 4096, page=0) for b in (1, 64)),
        # fp8 caches at the long contexts where the cache read dominates.
        *(decode_shape(b, 32, 8, ctx, fp8kv=True) for b, ctx in BATCH_CONTEXT if ctx >= 16384),
        # gpt-oss-120b at TP 1: 64 heads over 8 KV heads of 64, sinks, full and 128-token layers.
        *(
            decode_shape(b, 64, 8, ctx, 64, window=window, sinks=True)
            for b, ctx in BATCH_CONTEXT
            if ctx in (4096, 32768)
            for window in (0, 128)
        ),
    )

    def rule(self, shape: Shape) -> str | None:
        return heads_rule(shape)

    def flops(self, shape: Shape) -> float:
        return 4.0 * shape["B"] * shape["H"] * _span(shape) * shape["D"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        b, d, page, span = shape["B"], shape["D"], shape["page"], _span(shape)
        cache_dtype = "fp8" if shape["fp8kv"] else dtype
        cache = 2 * b * shape["Hkv"] * span * d * DTYPE_BYTES[cache_dtype]
        q_and_o = 2 * b * shape["H"] * d * DTYPE_BYTES[dtype]
        table = 4 * b * ceil_div(span, page) if page else 0
        return cache + q_and_o + table + 4 * shape["H"] * shape["sinks"]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # The whole cache (a window reads less but all of it is held) three times: the kernel's,
        # SDPA's gathered copy and one more gathered while timing; plus one sequence's float64
        # keys and values repeated over the query heads.
        whole = self.bytes({**shape, "window": 0, "fp8kv": False}, dtype)
        per_seq_ref = 2 * 8 * shape["H"] * shape["L"] * shape["D"]
        return 3 * whole + per_seq_ref

    def label(self, shape: Shape) -> str:
        cache = f"page {shape['page']}" if shape["page"] else "contiguous"
        fp8 = " fp8 KV" if shape["fp8kv"] else ""
        b, h, hkv, length, d = (shape[k] for k in ("B", "H", "Hkv", "L", "D"))
        return f"{b}×{h}/{hkv}×{length}×{d} {cache}{extras(shape)}{fp8}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """A decode step's attention: one query a sequence over its cached context, a use for
        the full layers and one for the windowed ones (latent attention's is the mla op's)."""
        if step.phase != "decode" or step.latent:
            return []
        s = step
        return [
            self.use(
                "attention",
                decode_shape(s.batch, s.heads, s.kv_heads, s.context, s.head_dim, s.page,
                             window=window, sinks=s.sinks, fp8kv=s.fp8_kv),
                s.act,
                layers,
            )
            for window, layers in s.attention_groups()
        ]  # fmt: skip

    def step_of(self, shape: Shape) -> tuple[str, int, int, int] | None:
        return "decode", shape["B"], 1, shape["L"]

    def programs(self, shape: Shape) -> float:
        """A program per sequence, KV head and chunk of the keys it reads: split-KV kernels
        (FlashDecoding, this one) split a context to fill the GPU, into chunks of at least
        SPLIT_KEYS keys."""
        return shape["B"] * shape["Hkv"] * ceil_div(_span(shape), SPLIT_KEYS)

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        from kernels.decode import make_paged_cache

        b, h, hkv, d, length, page = (shape[k] for k in ("B", "H", "Hkv", "D", "L", "page"))
        k = randn((b, length, hkv, d), dtype, device, gen)
        v = randn((b, length, hkv, d), dtype, device, gen)
        inputs = {"k_scale": None, "v_scale": None}
        if shape["fp8kv"]:
            (k, inputs["k_scale"]), (v, inputs["v_scale"]) = quantize_fp8(k), quantize_fp8(v)
        seq_lens = torch.full((b,), length, dtype=torch.int32, device=device)
        inputs |= {
            "q": randn((b, h, d), dtype, device, gen),
            "seq_lens": seq_lens,
            "window": shape["window"] or None,
            "sinks": sinks_input(h, device, gen) if shape["sinks"] else None,
            # The SDPA baselines read an unpaged (B, Hkv, L, D) cache, gathered here, untimed.
            "k_sdpa": k.permute(0, 2, 1, 3).contiguous(),
            "v_sdpa": v.permute(0, 2, 1, 3).contiguous(),
        }
        if page:
            # Blocks scattered over the pool, as a long-running server's allocator leaves them.
            shuffle = torch.Generator().manual_seed(
                int(torch.randint(2**31, (1,), generator=gen, device=device))
            )
            k, v, table = make_paged_cache(k, v, seq_lens, page, shuffle=True, generator=shuffle)
            inputs["block_table"] = table
        inputs["k_cache"], inputs["v_cache"] = k, v
        return inputs

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.reference import decode_ref

        return decode_ref(
            inputs["q"],
            inputs["k_cache"],
            inputs["v_cache"],
            inputs["seq_lens"],
            block_table=inputs.get("block_table"),
            **_options(inputs),
        )

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(q, k, v), (tokens, heads, head_dim) each -> (tokens, heads·head_dim); k and v are
        in the cache already (kv_write)."""
        run = prepare(inputs)

        def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            inputs["q"].copy_(q)
            return run().reshape(q.shape[0], -1)

        return call

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops, refuses=_fp8_cache_unsupported, tuning=_tuning),
            *sdpa_impls(_sdpa, unsupported=_sdpa_unsupported),
            Impl("gather+sdpa", _gather_sdpa, unsupported=_gather_unsupported),
            Impl("eager", _eager),
        )


# An H100's or H200's SMs, which set the split count a decode step is autotuned at.
HOPPER_SMS = 132


def _tuning(shape: Shape, dtype: str) -> int:
    from kernels.decode import tuning_configs

    hkv, elem = shape["Hkv"], int(DTYPE_BYTES[dtype])
    kv_elem = 1 if shape["fp8kv"] else elem
    group = shape["H"] // hkv
    return len(
        tuning_configs(shape["B"], hkv, group, _span(shape), shape["D"], elem, kv_elem, HOPPER_SMS)
    )


def _span(shape: Shape) -> int:
    """The cached tokens one query reads: its sequence, or the window when shorter."""
    return min(shape["L"], shape["window"]) if shape["window"] else shape["L"]


def _options(inputs: Inputs) -> dict:
    return {k: inputs[k] for k in ("window", "sinks", "k_scale", "v_scale")}


def _fp8_cache_unsupported(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    if not shape["fp8kv"]:
        return None
    if dtype == "fp32":
        return "an fp8 KV cache is read with fp16 or bf16 queries, not fp32"
    # The interpreter reads float8 on any device; compiled, Triton needs an fp8-capable GPU.
    return dtype_unsupported("fp8", device) if device.kind == "cuda" else None


def _sdpa_unsupported(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    if shape["fp8kv"]:
        return "scaled_dot_product_attention reads no fp8 cache (gather+sdpa dequantises)"
    return no_sdpa_sinks(shape, dtype, device)


def _gather_unsupported(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    if not shape["page"]:
        return "the cache is not paged"
    return no_sdpa_sinks(shape, dtype, device)


def _window(inputs: Inputs, t: torch.Tensor) -> torch.Tensor:
    """The last `window` tokens of an unpaged (B, Hkv, L, D) cache (every sequence is L long)."""
    return t if inputs["window"] is None else t[:, :, -inputs["window"] :]


def _dequantised(t: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    return t if scale is None else (t.to(dtype) * scale).to(dtype)


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.decode import decode_attention

    q, k, v, lens = inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["seq_lens"]
    table, longest, options = inputs.get("block_table"), inputs["k_sdpa"].shape[2], _options(inputs)
    # The lengths are known here: passing the longest spares each timed call the host-side
    # checks of the lengths and block table (a sync and a few small kernels).
    return lambda: decode_attention(
        q, k, v, lens, block_table=table, max_seq_len=longest, **options
    )


def _sdpa(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        q = inputs["q"][:, :, None, :]
        k, v = _window(inputs, inputs["k_sdpa"]), _window(inputs, inputs["v_sdpa"])
        run = sdpa(q, k, v, causal=False)
        return pinned(name, lambda: run().squeeze(2))

    return prepare


def _gather_sdpa(inputs: Inputs) -> Callable[[], torch.Tensor]:
    """What a paged (or fp8) cache costs a kernel that needs it contiguous in 16 bits: gather
    the pages holding the window (all, without one), dequantise, then SDPA."""
    from kernels.decode import gather_paged_kv

    q, k, v = inputs["q"][:, :, None, :], inputs["k_cache"], inputs["v_cache"]
    lens, table, window = inputs["seq_lens"], inputs["block_table"], inputs["window"]
    skip, page = 0, k.shape[1]
    if window is not None:
        skip = max(0, inputs["k_sdpa"].shape[2] - window) // page  # whole pages before it
        lens, table = lens - skip * page, table[:, skip:]
    k_scale, v_scale = inputs["k_scale"], inputs["v_scale"]

    def fn() -> torch.Tensor:
        k_flat, v_flat = gather_paged_kv(k, v, table, lens)
        keys = _window(inputs, _dequantised(k_flat, k_scale, q.dtype))
        values = _window(inputs, _dequantised(v_flat, v_scale, q.dtype))
        return sdpa(q, keys, values, causal=False)().squeeze(2)

    return fn


def _eager(inputs: Inputs) -> Callable[[], torch.Tensor]:

    q, sinks, k_scale, v_scale = inputs["q"], inputs["sinks"], inputs["k_scale"], inputs["v_scale"]
    k, v = _window(inputs, inputs["k_sdpa"]), _window(inputs, inputs["v_sdpa"])
    b, h, d = q.shape
    hkv = k.shape[1]
    # Each kv head's query group as rows of one matrix product: no repeated cache.
    grouped = q.view(b, hkv, h // hkv, d)
    if sinks is not None:
        sinks = sinks.view(1, hkv, h // hkv, 1)  # against (B, Hkv, group, L) scores

    def fn() -> torch.Tensor:
        keys, values = _dequantised(k, k_scale, q.dtype), _dequantised(v, v_scale, q.dtype)
        scores = (grouped @ keys.transpose(-1, -2)).float() * d**-0.5
        return (softmax_with_sinks(scores, sinks).to(q.dtype) @ values).view(b, h, d)

    return fn


OP = Decode()
