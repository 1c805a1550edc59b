"""kv_write: a step's new keys and values stored into their slots of a paged KV cache, as a
serving engine does before attention each step, in 16 bits or as fp8 with a per-tensor scale;
Triton (one launch for k and v) against plain PyTorch indexing.

The slots are scattered over a pool twice the tokens' size, as a server's allocator leaves them.
Each implementation writes into its own copy of the pool (copied untimed), so each is checked.
Memory-bound: no FLOPs but the fp8 scaling (1 per element); minimum bytes: k and v read, their
cache rows written, and the slots (int64) read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import ceil_div
from bench.measure.ops.base import (
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    dtype_unsupported,
    feeding,
    randn,
    torch_dtype,
)
from bench.measure.ops.rotary import STEP_TOKENS
from bench.measure.ops.rows import Arguments, row_impls
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch


FP8_KV = Key(
    "fp8kv",
    "the KV cache in float8_e4m3fn with a scale per tensor (the rest in dtype)",
    switch=True,
    default=False,
)


def kv_write_shape(
    tokens: int, hkv: int, d: int = 128, page: int = 16, fp8kv: bool = False
) -> Shape:
    return {"tokens": tokens, "Hkv": hkv, "D": d, "page": page, "fp8kv": fp8kv}


class KVWrite(Op):
    name = "kv_write"
    description = "paged KV-cache write of a step's keys and values, (tokens×Hkv×D) into slots"
    keys = (
        Key("tokens", "tokens in the step"),
        Key("Hkv", "key/value heads (per GPU under TP)"),
        Key("D", "head dim"),
        Key("page", "tokens per KV-cache page", default=16),
        FP8_KV,
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "memory"
    memory_bound = True
    efficiency = "memory"
    axes = (("tokens",),)
    smoke = (
        kv_write_shape(1, 2, 64),
        kv_write_shape(37, 4, 64, page=8),
        kv_write_shape(20, 2, 96, fp8kv=True),
    )
    standard = tuple(
        kv_write_shape(t, hkv, d, fp8kv=fp8)
        for hkv, d in ((8, 128), (8, 64))
        for fp8 in (False, True)
        for t in STEP_TOKENS
    )

    def flops(self, shape: Shape) -> float:
        return _elements(shape) if shape["fp8kv"] else 0.0

    def work(self, shape: Shape) -> float:
        return _elements(shape)

    def bytes(self, shape: Shape, dtype: str) -> float:
        cache = DTYPE_BYTES["fp8" if shape["fp8kv"] else dtype]
        return _elements(shape) * (DTYPE_BYTES[dtype] + cache) + 8 * shape["tokens"]

    def footprint(self, shape: Shape, dtype: str) -> float:
        # k, v and a pool of twice the tokens for each implementation and the reference, and
        # the float64 reference.
        return 10 * _elements(shape) * DTYPE_BYTES[dtype] + 8 * 2 * _elements(shape)

    def label(self, shape: Shape) -> str:
        fp8 = " fp8 KV" if shape["fp8kv"] else ""
        return f"{shape['tokens']}×{shape['Hkv']}×{shape['D']} page {shape['page']}{fp8}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Once a layer: the step's new keys and values into the cache; latent attention's
        one latent + rope row a token, written as a key and a value of two heads of a quarter
        of its width each (the same bytes, within the kernels' head dims)."""
        s = step
        hkv, dim = (2, (s.latent + s.rope_dim) // 4) if s.latent else (s.kv_heads, s.head_dim)
        shape = kv_write_shape(s.tokens, hkv, dim, s.page, s.fp8_kv)
        return [self.use("kv_write", shape, step.act, step.layers)]

    def programs(self, shape: Shape) -> float:
        return shape["tokens"]  # engines' kernels (and this one) give each token its own

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        t, hkv, d, page = (shape[k] for k in ("tokens", "Hkv", "D", "page"))
        blocks = ceil_div(2 * t, page)
        cache_dtype = torch.float8_e4m3fn if shape["fp8kv"] else torch_dtype(dtype)
        pool = (blocks, page, hkv, d)
        inputs = {
            "k": randn((t, hkv, d), dtype, device, gen),
            "v": randn((t, hkv, d), dtype, device, gen),
            "slots": torch.randperm(blocks * page, generator=gen, device=device)[:t],
            "k_cache": randn(pool, dtype, device, gen).to(cache_dtype),
            "v_cache": randn(pool, dtype, device, gen).to(cache_dtype),
            "k_scale": None,
            "v_scale": None,
        }
        if shape["fp8kv"]:
            # Scales as a calibration would set them: the largest value maps to fp8's largest.
            limit = torch.finfo(torch.float8_e4m3fn).max
            for name in ("k", "v"):
                inputs[f"{name}_scale"] = inputs[name].abs().amax().float().reshape(1) / limit
        return inputs

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        from kernels.reference import write_kv_ref

        caches = write_kv_ref(*_args(inputs), **_scales(inputs))
        if inputs["k_scale"] is not None:
            # The cell holds the nearest fp8 value: the check is that it is that value.
            caches = tuple(c.to(torch.float8_e4m3fn).to(torch.float64) for c in caches)
        return self.check_view(caches, inputs)

    def check_view(self, out: tuple[torch.Tensor, torch.Tensor], inputs: Inputs) -> torch.Tensor:
        import torch

        slots = inputs["slots"]

        def written(cache: torch.Tensor) -> torch.Tensor:
            return cache.flatten(0, 1)[slots].to(torch.float64)

        return torch.stack([written(c) for c in out])  # only the rows written: the pool is 2×

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(k, v) -> written into the op's own cache."""
        return feeding(inputs, prepare(inputs), "k", "v")

    def implementations(self) -> tuple[Impl, ...]:
        # The slots are distinct and in range and the scales positive by construction: no sync
        # to check them in the timed call.
        unchecked = {"check_slots": False}
        return row_impls(
            _kernel, {"torch": write_kv_torch}, _own_copy, output=_caches, unchecked=unchecked,
            refuses=_fp8_cache,
        )  # fmt: skip


def _elements(shape: Shape) -> int:
    return 2 * shape["tokens"] * shape["Hkv"] * shape["D"]


def _args(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return inputs["k"], inputs["v"], inputs["k_cache"], inputs["v_cache"], inputs["slots"]


def _scales(inputs: Inputs) -> dict:
    return {"k_scale": inputs["k_scale"], "v_scale": inputs["v_scale"]}


def _fp8_cache(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    # The interpreter writes float8 on any device; compiled, Triton needs an fp8-capable GPU.
    return dtype_unsupported("fp8", device) if shape["fp8kv"] and device.kind == "cuda" else None


def _own_copy(inputs: Inputs) -> Arguments:
    """The arguments with a fresh copy of the pools: each implementation writes its own."""
    k, v, k_cache, v_cache, slots = _args(inputs)
    return (k, v, k_cache.clone(), v_cache.clone(), slots), _scales(inputs)


def _caches(args: tuple, returned: None) -> tuple[torch.Tensor, torch.Tensor]:
    """What a write leaves to check: the two pools it wrote into."""
    return args[2], args[3]


def _kernel() -> Callable[..., None]:
    from kernels.kvcache import write_kv

    return write_kv


def write_kv_torch(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """The same in-place write with plain PyTorch indexing: selecting the kept tokens (slot >= 0)
    costs a device sync and a gather, then one index_put per pool through (block, row) index
    tensors, which works for pools of any strides. fp8 pools get the kernel's scaling,
    saturation and rounding."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    blocks, rows = slots // k_cache.shape[1], slots % k_cache.shape[1]
    k_cache[blocks, rows] = _to_cache(k[keep], k_cache, k_scale)
    v_cache[blocks, rows] = _to_cache(v[keep], v_cache, v_scale)


def _to_cache(x: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x as a pool stores it: itself, or x / scale saturated to ±448 and rounded to fp8."""
    import torch

    if scale is None:
        return x
    limit = torch.finfo(torch.float8_e4m3fn).max
    return (x.float() / scale).clamp(-limit, limit).to(cache.dtype)


OP = KVWrite()
