"""mla: multi-head latent attention's decode (DeepSeek-V2/V3/R1, Kimi-K2), absorbed, over a paged
latent cache: Triton (kernels/mla.py, the FlashMLA idea) against an eager PyTorch version that
gathers the pages and runs three batched products.

Every head reads the same cached rows (a latent and a rotary key per token), so the op is
compute-bound at DeepSeek-V3's 128 heads: FLOPs 2·B·H·L·(2·latent + rope) (the scores over
latent + rope columns, the output over latent); minimum bytes: the cache rows read once per
sequence, the queries read and the output written once, the block table read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import ceil_div
from bench.measure.ops.base import TF32_TOLERANCE, Impl, Inputs, Key, Op, randn, triton_impl
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, Shape

if TYPE_CHECKING:
    import torch

# DeepSeek-V3's latent and rotary widths (its config.json: kv_lora_rank, qk_rope_head_dim) and
# FlashMLA's page of 64 tokens.
LATENT, ROPE, PAGE = 512, 64, 64


def mla_shape(
    b: int, h: int, length: int, latent: int = LATENT, rope: int = ROPE, page: int = PAGE
) -> Shape:
    return {"B": b, "H": h, "L": length, "latent": latent, "rope": rope, "page": page}


class MLA(Op):
    name = "mla"
    description = (
        "MLA decode, absorbed, over a paged latent cache, (B×H×context, latent + rope wide): "
        "DeepSeek-V3's attention while decoding"
    )
    keys = (
        Key("B", "sequences"),
        Key("H", "query heads (all read the one latent cache)"),
        Key("L", "context tokens per sequence"),
        Key("latent", "the latent each token caches (kv_lora_rank)", default=LATENT),
        Key("rope", "the rotary key's width (qk_rope_head_dim)", default=ROPE),
        Key("page", "tokens per KV-cache page", default=PAGE),
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "attention"
    memory_bound = False  # 128 heads over one cache: compute binds at DeepSeek-V3's shapes
    efficiency = "decode_attention"
    axes = (("B",), ("L",))
    tolerance = TF32_TOLERANCE
    fp32_peak = "tf32"
    smoke = (
        mla_shape(2, 16, 37, latent=64, rope=16, page=16),
        mla_shape(3, 20, 70, latent=96, rope=24, page=8),
        mla_shape(1, 4, 1, latent=32, rope=16, page=4),
    )
    standard = tuple(
        mla_shape(b, h, length)
        for h in (128, 16)  # DeepSeek-V3 at attention data parallelism, and at TP 8
        for b, length in ((1, 4096), (16, 4096), (64, 4096), (128, 2048), (16, 32768))
    )

    def flops(self, shape: Shape) -> float:
        latent, rope = shape["latent"], shape["rope"]
        return 2.0 * shape["B"] * shape["H"] * shape["L"] * (2 * latent + rope)

    def bytes(self, shape: Shape, dtype: str) -> float:
        b, h, length, latent, rope = (shape[k] for k in ("B", "H", "L", "latent", "rope"))
        cache = b * length * (latent + rope)
        queries_and_out = b * h * (2 * latent + rope)
        table = 4 * b * ceil_div(length, shape["page"])
        return (cache + queries_and_out) * DTYPE_BYTES[dtype] + table

    def footprint(self, shape: Shape, dtype: str) -> float:
        # The pool (whole pages) twice (the baseline's gather), the float32 scores of the
        # baseline, and one sequence's float64 rows and scores for the reference.
        b, h, length, width = shape["B"], shape["H"], shape["L"], shape["latent"] + shape["rope"]
        padded = ceil_div(length, shape["page"]) * shape["page"]
        pool = b * padded * width * DTYPE_BYTES[dtype]
        return (
            2 * pool
            + 4 * b * h * padded
            + 8 * (padded * width + h * padded)
            + self.bytes(shape, dtype)
        )

    def label(self, shape: Shape) -> str:
        b, h, length, latent, rope = (shape[k] for k in ("B", "H", "L", "latent", "rope"))
        return f"{b}×{h}×{length} latent {latent}+{rope} page {shape['page']}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """A decode step's attention in a model with latent attention: every layer's."""
        if step.phase != "decode" or not step.latent:
            return []
        shape = mla_shape(step.batch, step.heads, step.context, step.latent, step.rope_dim,
                          step.page)  # fmt: skip
        return [self.use("attention", shape, step.act, step.layers)]

    def step_of(self, shape: Shape) -> tuple[str, int, int, int] | None:
        return "decode", shape["B"], 1, shape["L"]

    def programs(self, shape: Shape) -> float:
        """A program per sequence, block of 16 heads and 256 keys it reads (split-KV)."""
        return shape["B"] * ceil_div(shape["H"], 16) * ceil_div(shape["L"], 256)

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        b, h, length, latent, rope, page = (
            shape[k] for k in ("B", "H", "L", "latent", "rope", "page")
        )
        pages = ceil_div(length, page)
        # Blocks scattered over the pool, as a long-running server's allocator leaves them.
        order = torch.randperm(b * pages, generator=gen, device=device).to(torch.int32)
        return {
            "q_latent": randn((b, h, latent), dtype, device, gen),
            "q_rope": randn((b, h, rope), dtype, device, gen),
            "cache": randn((b * pages, page, latent + rope), dtype, device, gen),
            "seq_lens": torch.full((b,), length, dtype=torch.int32, device=device),
            "block_table": order.reshape(b, pages),
            "softmax_scale": (latent + rope) ** -0.5,
        }

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.mla import mla_decode_ref

        return mla_decode_ref(**inputs)

    def implementations(self) -> tuple[Impl, ...]:
        return (triton_impl(_triton, self.flops, tuning=_tuning), Impl("torch", _torch))


def _tuning(shape: Shape, dtype: str) -> int:
    from kernels.mla import tuning_configs

    return len(tuning_configs(shape["latent"], shape["rope"], int(DTYPE_BYTES[dtype])))


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.mla import mla_decode

    # The lengths and table are valid by construction: no host check in the timed call.
    longest = int(inputs["seq_lens"].max())
    return lambda: mla_decode(**inputs, max_seq_len=longest)


def _torch(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.mla import mla_decode_torch

    return lambda: mla_decode_torch(**inputs)


OP = MLA()
