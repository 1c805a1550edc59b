"""decode: one query token per sequence over a KV cache, paged (vLLM-style block table) or
contiguous; Triton against each SDPA backend pinned, gather + SDPA and eager PyTorch.

SDPA and eager read a pre-gathered unpaged cache (the gather untimed); gather+sdpa pays for it.
FLOPs 4·B·H·L·D; minimum bytes: the KV cache read once, q and o, and the block table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.ops.attention import heads_rule
from bench.ops.base import TF32_TOLERANCE, Impl, Inputs, Key, Op, randn, triton_impl
from bench.ops.sdpa import pinned, sdpa, sdpa_impls
from bench.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch


def dec(b: int, h: int, hkv: int, length: int, d: int = 128, page: int = 16) -> Shape:
    return {"B": b, "H": h, "Hkv": hkv, "D": d, "L": length, "page": page}


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
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "sdpa-flash"
    part = "attention"
    axes = (("B",), ("L",))
    tolerance = TF32_TOLERANCE
    fp32_peak = "tf32"
    smoke = (
        dec(3, 8, 2, 100, d=64),  # the last page of each sequence part-filled
        dec(2, 4, 4, 37, d=64, page=0),
        dec(4, 8, 1, 1, d=64),
    )
    standard = (
        *(dec(b, h, 8, ctx) for h in (32, 64) for b, ctx in BATCH_CONTEXT),
        *(dec(b, 32, 8, 4096, page=0) for b in (1, 64)),
    )

    def rule(self, shape: Shape) -> str | None:
        return heads_rule(shape)

    def flops(self, shape: Shape) -> float:
        return 4.0 * shape["B"] * shape["H"] * shape["L"] * shape["D"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        b, d, length, page = shape["B"], shape["D"], shape["L"], shape["page"]
        cache = 2 * b * shape["Hkv"] * length * d * DTYPE_BYTES[dtype]
        q_and_o = 2 * b * shape["H"] * d * DTYPE_BYTES[dtype]
        table = 4 * b * -(-length // page) if page else 0
        return cache + q_and_o + table

    def footprint(self, shape: Shape, dtype: str) -> float:
        # The cache three times (kernel's, SDPA's gathered copy, one more gathered while
        # timing), plus one sequence's float64 keys and values repeated over the query heads.
        per_seq_ref = 2 * 8 * shape["H"] * shape["L"] * shape["D"]
        return 3 * self.bytes(shape, dtype) + per_seq_ref

    def label(self, shape: Shape) -> str:
        cache = f"page {shape['page']}" if shape["page"] else "contiguous"
        return f"{shape['B']}×{shape['H']}/{shape['Hkv']}×{shape['L']}×{shape['D']} {cache}"

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        from kernels.decode import make_paged_cache

        b, h, hkv, d, length, page = (shape[k] for k in ("B", "H", "Hkv", "D", "L", "page"))
        k = randn((b, length, hkv, d), dtype, device, gen)
        v = randn((b, length, hkv, d), dtype, device, gen)
        seq_lens = torch.full((b,), length, dtype=torch.int32, device=device)
        inputs = {
            "q": randn((b, h, d), dtype, device, gen),
            "seq_lens": seq_lens,
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
        )

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops),
            *sdpa_impls(_sdpa),
            Impl("gather+sdpa", _gather_sdpa, unsupported=_needs_pages),
            Impl("eager", _eager),
        )


def _needs_pages(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return None if shape["page"] else "the cache is not paged"


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.decode import decode_attention

    q, k, v, lens = inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["seq_lens"]
    table, longest = inputs.get("block_table"), inputs["k_sdpa"].shape[2]
    # The lengths are known here: passing the longest spares each timed call the host-side
    # checks of the lengths and block table (a sync and a few small kernels).
    return lambda: decode_attention(q, k, v, lens, block_table=table, max_seq_len=longest)


def _sdpa(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        q = inputs["q"][:, :, None, :]
        run = sdpa(q, inputs["k_sdpa"], inputs["v_sdpa"], causal=False)
        return pinned(name, lambda: run().squeeze(2))

    return prepare


def _gather_sdpa(inputs: Inputs) -> Callable[[], torch.Tensor]:
    """What a paged cache costs a kernel that needs it contiguous: gather, then SDPA."""
    from kernels.decode import gather_paged_kv

    q, k, v = inputs["q"][:, :, None, :], inputs["k_cache"], inputs["v_cache"]
    lens, table = inputs["seq_lens"], inputs["block_table"]

    def fn() -> torch.Tensor:
        k_flat, v_flat = gather_paged_kv(k, v, table, lens)
        return sdpa(q, k_flat, v_flat, causal=False)().squeeze(2)

    return fn


def _eager(inputs: Inputs) -> Callable[[], torch.Tensor]:
    import torch

    q, k, v = inputs["q"], inputs["k_sdpa"], inputs["v_sdpa"]
    b, h, d = q.shape
    hkv = k.shape[1]
    # Each kv head's query group as rows of one matrix product: no repeated cache.
    grouped = q.view(b, hkv, h // hkv, d)

    def fn() -> torch.Tensor:
        scores = (grouped @ k.transpose(-1, -2)).float() * d**-0.5
        return (torch.softmax(scores, dim=-1).to(q.dtype) @ v).view(b, h, d)

    return fn


OP = Decode()
