"""What can be benchmarked: per op, its inputs, FLOPs, minimum bytes, implementations and reference.

An op is registered once with everything the harness needs, as in tritonbench's operators: the
runner never knows which op it is running. Each implementation is a `prepare` function that takes
the inputs and returns the closure to time, so that input preparation (layouts, scales, gathers)
stays out of the timed region.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

import kernels
from bench import BenchError
from bench.device import DeviceInfo
from kernels import reference
from kernels.attention import SUPPORTED_HEAD_DIMS as ATTENTION_HEAD_DIMS
from kernels.attention import flash_attention
from kernels.decode import SUPPORTED_HEAD_DIMS as DECODE_HEAD_DIMS
from kernels.decode import decode_attention, gather_paged_kv, make_paged_cache
from kernels.matmul import fp8_supported, matmul, matmul_fp8

Shape = dict[str, int | bool | str]
Inputs = dict[str, Any]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8": torch.float8_e4m3fn,
}
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}

# Relative error ‖out − ref‖ / ‖ref‖ allowed per dtype: a few units of the output's rounding
# (fp16 2^-11, bf16 2^-8) plus fp32-accumulation error over long reductions.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2, "fp8": 2e-2}
# The attention kernels' fp32 tl.dot runs as tf32 on GPUs (10-bit mantissa).
ATTENTION_TOLERANCE = {**TOLERANCE, "fp32": 5e-3}

# Triton's interpreter runs a kernel in numpy, program by program: fine for checking small
# shapes, hopeless for large ones.
INTERPRETER_MAX_FLOPS = 2e8


@dataclass(frozen=True)
class Impl:
    """One implementation of an op."""

    name: str
    prepare: Callable[[Inputs], Callable[[], torch.Tensor]]
    triton: bool = False  # a tokbench Triton kernel (interpreted without a GPU)
    # Memory it needs beyond the case's inputs and reference: when that is not free, it is
    # skipped (materialised attention scores at 16k tokens outgrow an 80 GB GPU).
    workspace: Callable[[Shape, str], float] = lambda *_: 0.0
    # Why this implementation cannot run a case here, or None when it can.
    unsupported: Callable[[Shape, str, DeviceInfo], str | None] = lambda *_: None


@dataclass(frozen=True)
class Op:
    """A benchmarkable operation and everything the harness needs to run it."""

    name: str
    description: str
    shape_keys: tuple[str, ...]
    dtypes: tuple[str, ...]
    make_inputs: Callable[[Shape, str, torch.device, torch.Generator], Inputs]
    reference: Callable[[Inputs], torch.Tensor]
    flops: Callable[[Shape], float]
    bytes: Callable[[Shape, str], float]  # minimum traffic: every input read, output written once
    footprint: Callable[[Shape, str], float]  # device memory a case needs, reference included
    label: Callable[[Shape], str]
    baseline: str  # implementation that speedups are measured against
    impls: tuple[Impl, ...] = field(default_factory=tuple)
    # Op-specific rules a shape must follow beyond positive integer sizes, or None.
    shape_rule: Callable[[Shape], str | None] = lambda _: None
    tolerance: dict[str, float] = field(default_factory=lambda: dict(TOLERANCE))
    # fp32 peak to judge it against: "tf32" where its kernels' fp32 dots run as tf32 on GPUs.
    fp32_peak: str = "fp32"
    # The part of an output the reference covers, when the reference checks a sample of it.
    check_view: Callable[[torch.Tensor, Inputs], torch.Tensor] = lambda out, _: out

    def check_shape(self, shape: Shape) -> None:
        """Raise a BenchError naming what is wrong with a shape and what is allowed."""
        keys = ",".join(self.shape_keys)
        if set(shape) != set(self.shape_keys):
            raise BenchError(f"{self.name} shape {_text(shape)} needs exactly the keys {keys}")
        for key, value in shape.items():
            if key in BOOL_KEYS:
                if not isinstance(value, bool):
                    raise BenchError(
                        f"{self.name} shape {_text(shape)}: {key} must be true or false"
                    )
                continue
            least = MIN_VALUE.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BenchError(
                    f"{self.name} shape {_text(shape)}: {key} must be an integer >= {least}"
                )
        if problem := self.shape_rule(shape):
            raise BenchError(f"{self.name} shape {_text(shape)}: {problem}")

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        known = ", ".join(i.name for i in self.impls)
        raise BenchError(f"unknown implementation '{name}' for {self.name}; known: {known}")


# Shape keys that are switches, not sizes; and sizes where 0 means something (page 0: a
# contiguous cache). Every other size is at least 1.
BOOL_KEYS = {"causal"}
MIN_VALUE = {"page": 0}


def _text(shape: Shape) -> str:
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in shape.items())


class Unsupported(Exception):
    """Raised by an implementation's prepare when it finds it cannot run a case here."""


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    if name not in OPS:
        raise BenchError(f"unknown op '{name}'; known: {', '.join(OPS)}")
    return OPS[name]


def triton_impl(
    prepare: Callable[[Inputs], Callable[[], torch.Tensor]], flops: Callable[[Shape], float]
) -> Impl:
    """An op's tokbench Triton kernel; without a GPU it runs interpreted, within the
    interpreter's limits."""

    def unsupported(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
        if reason := dtype_unsupported(dtype, device):
            return reason
        if not kernels.interpreted():
            return None
        if dtype == "bf16":
            return "bf16 tl.dot is not emulated by Triton's interpreter; checked on GPU only"
        if flops(shape) > INTERPRETER_MAX_FLOPS:
            return f"too large for Triton's interpreter ({flops(shape):.1e} FLOPs); run on a GPU"
        return None

    return Impl("triton", prepare, triton=True, unsupported=unsupported)


def dtype_unsupported(dtype: str, device: DeviceInfo) -> str | None:
    """Why this device cannot compute in dtype at all, or None."""
    if dtype != "fp8":
        return None
    return fp8_supported(torch.device("cuda", device.index) if device.kind == "cuda" else "cpu")


def randn(shape: tuple[int, ...], dtype: str, device: torch.device, gen: torch.Generator):
    """Random normal data in dtype (never zeros: zeros flatter tensor-core power and clocks)."""
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return x.to(DTYPES[dtype])


# --- matmul: C = A·B -------------------------------------------------------------------------


def _matmul_inputs(shape: Shape, dtype: str, device: torch.device, gen: torch.Generator):
    m, n, k = shape["M"], shape["N"], shape["K"]
    a = randn((m, k), dtype, device, gen)
    if dtype != "fp8":
        return {"a": a, "b": randn((k, n), dtype, device, gen)}
    # fp8: B column-major (K-major), as torch._scaled_mm requires and tensor cores prefer.
    b = randn((n, k), dtype, device, gen).t()
    scale_a, scale_b = (torch.rand((), generator=gen, device=device) + 0.5 for _ in range(2))
    return {"a": a, "b": b, "scale_a": scale_a, "scale_b": scale_b}


def _matmul_reference(inputs: Inputs) -> torch.Tensor:
    out = reference.matmul_ref(inputs["a"], inputs["b"])
    if "scale_a" in inputs:
        out = out * inputs["scale_a"].double() * inputs["scale_b"].double()
    return out


def _matmul_flops(shape: Shape) -> float:
    return 2.0 * shape["M"] * shape["N"] * shape["K"]


def _matmul_bytes(shape: Shape, dtype: str) -> float:
    m, n, k = shape["M"], shape["N"], shape["K"]
    out_bytes = 2 if dtype == "fp8" else ELEMENT_BYTES[dtype]  # fp8 GEMMs write bf16
    return (m * k + k * n) * ELEMENT_BYTES[dtype] + m * n * out_bytes


def _matmul_footprint(shape: Shape, dtype: str) -> float:
    m, n, k = shape["M"], shape["N"], shape["K"]
    # Inputs and two outputs, plus the float64 reference with its upcast operands.
    return 2 * _matmul_bytes(shape, dtype) + 8 * (m * n + m * k + k * n)


def _triton_matmul(inputs: Inputs) -> Callable[[], torch.Tensor]:
    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: matmul_fp8(a, b, sa, sb)
    return lambda: matmul(a, b)


def _torch_matmul(inputs: Inputs) -> Callable[[], torch.Tensor]:
    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    return lambda: torch.matmul(a, b)


register(
    Op(
        name="matmul",
        description="GEMM C = A·B (fp32 accumulation; fp32 inputs without tf32)",
        shape_keys=("M", "N", "K"),
        dtypes=("fp32", "fp16", "bf16", "fp8"),
        make_inputs=_matmul_inputs,
        reference=_matmul_reference,
        flops=_matmul_flops,
        bytes=_matmul_bytes,
        footprint=_matmul_footprint,
        label=lambda s: f"{s['M']}×{s['N']}×{s['K']}",
        baseline="torch",
        impls=(
            triton_impl(_triton_matmul, _matmul_flops),
            Impl("torch", _torch_matmul, unsupported=lambda s, dt, dev: dtype_unsupported(dt, dev)),
        ),
    )
)


# --- attention: prefill flash attention --------------------------------------------------------

# The prefill reference covers the first and last CHECK_ROWS query rows: each is an exact
# sub-problem (bottom-right causal alignment survives taking the last rows, and the first rows
# with the keys they can see), and float64 attention over every row of a 16k sequence would
# cost more than the whole benchmark. The kernel tests check every row.
CHECK_ROWS = 128

SDPA_BACKENDS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}


def _attention_inputs(shape: Shape, dtype: str, device: torch.device, gen: torch.Generator):
    b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
    return {
        "q": randn((b, h, sq, d), dtype, device, gen),
        "k": randn((b, hkv, skv, d), dtype, device, gen),
        "v": randn((b, hkv, skv, d), dtype, device, gen),
        "causal": bool(shape["causal"]),
    }


def _checked_rows(out: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    sq = out.shape[2]
    if sq <= 2 * CHECK_ROWS:
        return out
    return torch.cat([out[:, :, :CHECK_ROWS], out[:, :, -CHECK_ROWS:]], dim=2)


def _attention_reference(inputs: Inputs) -> torch.Tensor:
    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
    sq, skv = q.shape[2], k.shape[2]
    if sq <= 2 * CHECK_ROWS:
        return reference.attention_ref(q, k, v, causal=causal)
    scale = q.shape[-1] ** -0.5
    # The first rows see keys up to CHECK_ROWS + skv - sq when causal: keep exactly those keys.
    seen = max(CHECK_ROWS + skv - sq, 0) if causal else skv
    head = reference.attention_ref(
        q[:, :, :CHECK_ROWS], k[:, :, :seen], v[:, :, :seen], causal=causal, sm_scale=scale
    )
    tail = reference.attention_ref(q[:, :, -CHECK_ROWS:], k, v, causal=causal, sm_scale=scale)
    return torch.cat([head, tail], dim=2)


def _visible_pairs(shape: Shape) -> int:
    """(query, key) pairs attention computes: all of them, or under a bottom-right causal mask
    the row i sees min(Skv, max(0, i + Skv - Sq + 1)) keys."""
    sq, skv = shape["Sq"], shape["Skv"]
    if not shape["causal"]:
        return sq * skv
    return sum(min(skv, max(0, i + skv - sq + 1)) for i in range(sq))


def _attention_flops(shape: Shape) -> float:
    return 4.0 * shape["B"] * shape["H"] * _visible_pairs(shape) * shape["D"]


def _attention_elements(shape: Shape) -> int:
    """Elements of q, k, v and the output."""
    b, d = shape["B"], shape["D"]
    return 2 * b * d * (shape["H"] * shape["Sq"] + shape["Hkv"] * shape["Skv"])


def _attention_bytes(shape: Shape, dtype: str) -> float:
    return _attention_elements(shape) * ELEMENT_BYTES[dtype]


def _attention_footprint(shape: Shape, dtype: str) -> float:
    # Inputs and a few outputs, and the float64 reference's upcast copies.
    return 3 * _attention_bytes(shape, dtype) + 8 * _attention_elements(shape)


def _scores_bytes(shape: Shape, dtype: str) -> float:
    """Materialised scores and probabilities, in fp32 and in dtype (eager, SDPA's math)."""
    return shape["B"] * shape["H"] * shape["Sq"] * shape["Skv"] * (8 + ELEMENT_BYTES[dtype])


def _triton_attention(inputs: Inputs) -> Callable[[], torch.Tensor]:
    q, k, v, causal = inputs["q"], inputs["k"], inputs["v"], inputs["causal"]
    return lambda: flash_attention(q, k, v, causal=causal)


def _causal_mask(sq: int, skv: int, device: torch.device) -> torch.Tensor:
    """True where query i may see key j under the bottom-right aligned causal mask."""
    rows = torch.arange(sq, device=device)[:, None]
    return torch.arange(skv, device=device)[None, :] <= rows + (skv - sq)


def _sdpa(q, k, v, causal: bool) -> Callable[[], torch.Tensor]:
    """SDPA with FlashAttention's bottom-right causal alignment; is_causal aligns top-left,
    which differs when Sq != Skv."""
    gqa = q.shape[1] != k.shape[1]
    if causal and q.shape[2] != k.shape[2]:
        mask = causal_lower_right(q.shape[2], k.shape[2])
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


def _pinned(name: str, run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """run with SDPA pinned to one backend; Unsupported when that backend refuses the case."""
    backend = SDPA_BACKENDS[name]

    def fn() -> torch.Tensor:
        with sdpa_kernel(backend):
            return run()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SDPA explains a refusal in warnings, then raises
        try:
            fn()
        except RuntimeError as e:
            raise Unsupported(f"{name} does not run this case: {str(e).splitlines()[0]}") from None
    return fn


def _sdpa_attention(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        return _pinned(name, _sdpa(inputs["q"], inputs["k"], inputs["v"], inputs["causal"]))

    return prepare


def _eager(q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v the plain way: every score materialised, softmax in fp32."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).to(q.dtype) @ v


def _eager_attention(inputs: Inputs) -> Callable[[], torch.Tensor]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    mask = _causal_mask(q.shape[2], k.shape[2], q.device) if inputs["causal"] else None
    return lambda: _eager(q, k, v, mask)


def _sdpa_impls(
    prepare: Callable[[str], Callable[[Inputs], Callable]],
    scores: Callable[[Shape, str], float] = lambda *_: 0.0,
) -> tuple[Impl, ...]:
    """One implementation per SDPA backend. math and flash (PyTorch has a fused CPU kernel
    behind the flash backend) also run on the CPU; efficient and cuDNN need CUDA. The math
    backend materialises the scores."""

    def impl(name: str) -> Impl:
        if name == "sdpa-math":
            return Impl(name, prepare(name), workspace=scores)
        if name == "sdpa-flash":
            return Impl(name, prepare(name))
        needs_cuda = f"{name} needs a CUDA device"
        return Impl(
            name,
            prepare(name),
            unsupported=lambda s, dt, dev: None if dev.kind == "cuda" else needs_cuda,
        )

    return tuple(impl(name) for name in SDPA_BACKENDS)


def _heads_rule(s: Shape, head_dims: tuple[int, ...]) -> str | None:
    if s["H"] % s["Hkv"]:
        return f"H ({s['H']}) must be a multiple of Hkv ({s['Hkv']})"
    if s["D"] not in head_dims:
        return f"D must be one of {', '.join(map(str, head_dims))}"
    return None


def _attention_rule(s: Shape) -> str | None:
    if s["causal"] and s["Sq"] > s["Skv"]:
        # Bottom-right alignment would leave the first Sq - Skv queries no key at all.
        return "causal attention needs Sq <= Skv (a chunk of queries after its prefix)"
    return _heads_rule(s, ATTENTION_HEAD_DIMS)


def _attention_label(s: Shape) -> str:
    mask = "causal" if s["causal"] else "non-causal"
    return f"{s['B']}×{s['H']}/{s['Hkv']}×{s['Sq']}×{s['Skv']}×{s['D']} {mask}"


register(
    Op(
        name="attention",
        description="prefill flash attention, (B×H/Hkv×Sq×Skv×D)",
        shape_keys=("B", "H", "Hkv", "Sq", "Skv", "D", "causal"),
        dtypes=("fp32", "fp16", "bf16"),
        make_inputs=_attention_inputs,
        reference=_attention_reference,
        flops=_attention_flops,
        bytes=_attention_bytes,
        footprint=_attention_footprint,
        label=_attention_label,
        baseline="sdpa-flash",
        shape_rule=_attention_rule,
        tolerance=ATTENTION_TOLERANCE,
        fp32_peak="tf32",
        check_view=_checked_rows,
        impls=(
            triton_impl(_triton_attention, _attention_flops),
            *_sdpa_impls(_sdpa_attention, scores=_scores_bytes),
            Impl("eager", _eager_attention, workspace=_scores_bytes),
        ),
    )
)


# --- decode: one query token per sequence over a (paged) KV cache ---------------------------


def _decode_inputs(shape: Shape, dtype: str, device: torch.device, gen: torch.Generator):
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


def _decode_reference(inputs: Inputs) -> torch.Tensor:
    return reference.decode_ref(
        inputs["q"],
        inputs["k_cache"],
        inputs["v_cache"],
        inputs["seq_lens"],
        block_table=inputs.get("block_table"),
    )


def _decode_flops(shape: Shape) -> float:
    return 4.0 * shape["B"] * shape["H"] * shape["L"] * shape["D"]


def _decode_bytes(shape: Shape, dtype: str) -> float:
    b, d, length, page = shape["B"], shape["D"], shape["L"], shape["page"]
    cache = 2 * b * shape["Hkv"] * length * d * ELEMENT_BYTES[dtype]
    q_and_o = 2 * b * shape["H"] * d * ELEMENT_BYTES[dtype]
    table = 4 * b * -(-length // page) if page else 0
    return cache + q_and_o + table


def _decode_footprint(shape: Shape, dtype: str) -> float:
    # The cache three times (kernel's, SDPA's gathered copy, one more gathered while timing),
    # plus one sequence's float64 keys and values repeated over the query heads (reference).
    per_seq_ref = 2 * 8 * shape["H"] * shape["L"] * shape["D"]
    return 3 * _decode_bytes(shape, dtype) + per_seq_ref


def _triton_decode(inputs: Inputs) -> Callable[[], torch.Tensor]:
    q, k, v, lens = inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["seq_lens"]
    table, longest = inputs.get("block_table"), inputs["k_sdpa"].shape[2]
    # The lengths are known here: passing the longest spares each timed call the host-side
    # checks of the lengths and block table (a sync and a few small kernels).
    return lambda: decode_attention(q, k, v, lens, block_table=table, max_seq_len=longest)


def _sdpa_decode(name: str) -> Callable[[Inputs], Callable[[], torch.Tensor]]:
    def prepare(inputs: Inputs) -> Callable[[], torch.Tensor]:
        q = inputs["q"][:, :, None, :]
        run = _sdpa(q, inputs["k_sdpa"], inputs["v_sdpa"], causal=False)
        return _pinned(name, lambda: run().squeeze(2))

    return prepare


def _gather_sdpa_decode(inputs: Inputs) -> Callable[[], torch.Tensor]:
    """What a paged cache costs a kernel that needs it contiguous: gather, then SDPA."""
    q, k, v, lens = (
        inputs["q"][:, :, None, :],
        inputs["k_cache"],
        inputs["v_cache"],
        inputs["seq_lens"],
    )
    table = inputs["block_table"]

    def fn() -> torch.Tensor:
        k_flat, v_flat = gather_paged_kv(k, v, table, lens)
        return _sdpa(q, k_flat, v_flat, causal=False)().squeeze(2)

    return fn


def _eager_decode(inputs: Inputs) -> Callable[[], torch.Tensor]:
    q, k, v = inputs["q"], inputs["k_sdpa"], inputs["v_sdpa"]
    b, h, d = q.shape
    hkv = k.shape[1]
    # Each kv head's query group as rows of one matrix product: no repeated cache.
    grouped = q.view(b, hkv, h // hkv, d)

    def fn() -> torch.Tensor:
        scores = (grouped @ k.transpose(-1, -2)).float() * d**-0.5
        return (torch.softmax(scores, dim=-1).to(q.dtype) @ v).view(b, h, d)

    return fn


def _decode_label(s: Shape) -> str:
    cache = f"page {s['page']}" if s["page"] else "contiguous"
    return f"{s['B']}×{s['H']}/{s['Hkv']}×{s['L']}×{s['D']} {cache}"


register(
    Op(
        name="decode",
        description="decode attention over a KV cache, (B×H/Hkv×context×D); SDPA and eager "
        "read a pre-gathered unpaged cache, gather+sdpa pays for the gather",
        shape_keys=("B", "H", "Hkv", "D", "L", "page"),
        dtypes=("fp32", "fp16", "bf16"),
        make_inputs=_decode_inputs,
        reference=_decode_reference,
        flops=_decode_flops,
        bytes=_decode_bytes,
        footprint=_decode_footprint,
        label=_decode_label,
        baseline="sdpa-flash",
        shape_rule=lambda s: _heads_rule(s, DECODE_HEAD_DIMS),
        tolerance=ATTENTION_TOLERANCE,
        fp32_peak="tf32",
        impls=(
            triton_impl(_triton_decode, _decode_flops),
            *_sdpa_impls(_sdpa_decode),
            Impl(
                "gather+sdpa",
                _gather_sdpa_decode,
                unsupported=lambda s, dt, dev: None if s["page"] else "the cache is not paged",
            ),
            Impl("eager", _eager_decode),
        ),
    )
)
