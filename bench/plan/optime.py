"""The op-time model: how long a kernel takes at a shape no result file measured, from the
shape, the GPU's spec sheet and public measurements. Every parameter names its source, or says
"assumption"; none is fitted to the published throughput figures tokbench validates against.

Each op says how the model treats it (its efficiency class, bench.measure.ops.step) and gives
the geometry the class needs (Op.gemms, Op.programs, flops and bytes):

- gemm, moe: the matrix products tiled as cuBLAS and CUTLASS tile them on Hopper (128×256,
  256×128, 128×128, 64×128 outputs per thread block), the tiles run in waves over the SMs (a
  wave part-filled costs a full one: wave quantisation), each SM at its share of the best large
  GEMM measured on that GPU; against the bytes at the GPU's measured copy bandwidth; fp8 and fp4
  GEMMs add the pass that quantises their activations; weight-only formats (a GPU without
  tensor cores for them) compute in bf16 at Marlin's share of cuBLAS.
- prefill_attention: FLOPs over flash attention's share of the peak, in waves of programs.
- decode_attention: the KV cache read at copy bandwidth and the scores at flash attention's
  share, by as many SMs as the work has pieces.
- memory: bytes at the share of the spec bandwidth that fused small kernels reach, by as many
  SMs as the work has pieces.

Every kernel takes at least KERNEL_FLOOR_S. A time is the floor, or compute and memory combined
as a kernel overlaps them (OVERLAP_NORM), plus the quantisation pass, and says which bound it:
"latency" (the floor), "compute" or "memory".
Collectives have their own model (bench.plan.network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import BenchError, ceil_div
from bench.measure.ops.base import Gemm, Op
from bench.record.hardware import SPECS, GpuSpec, peak_tflops

# --- sourced parameters --------------------------------------------------------------------------

# A kernel takes at least this long, however little it does: the median of the three smallest
# public kernel times found on datacenter GPUs: cuBLAS at M=1 of a 7168×256 bf16 weight 4.66 µs
# (B200, vllm-project/vllm#44217), FlashInfer RoPE of 2 tokens 5.0 µs (H100 NVL,
# flashinfer-ai/flashinfer#2109), SGLang's fused RMSNorm of 512 tokens 3.8 µs (H100,
# sgl-project/sglang#32994).
KERNEL_FLOOR_S = 4.66e-6

# A kernel's compute and memory times add up as the norm of this order, not as their maximum
# (perfect overlap) nor their sum (none): at the ridge, where they are equal, a GEMM takes √2
# times either. An assumption, checked against public H100 cuBLAS sweeps (vLLM pull requests
# #17126, #23280, #49363: 24 shapes from M=1 to 8192): the model gives 0.97 of their times in
# geometric mean, 22 of 24 within 15% (tests/test_optime.py).
OVERLAP_NORM = 2

# Output tiles (rows × columns) of the GEMM kernels cuBLAS picks from on Hopper and Ampere:
# cuBLASLt's tile enum (TILE_64x128, TILE_128x128, TILE_128x256, TILE_256x128) and the
# "tilesize128x128x64" sm90 kernels seen in public profiles; 16 × 128 for the few-row products
# of decode (assumption: the 16 rows of an mma.sync, which small-M kernels use).
GEMM_TILES = ((128, 256), (256, 128), (128, 128), (64, 128), (16, 128))
# Split-K: a product with too few tiles to fill the SMs splits its inner dimension over up to
# this many thread blocks, each taking at least SPLIT_K_DEPTH of it, and sums the partial
# results through memory (cuBLAS's split-K and stream-K kernels; the bounds are assumptions).
SPLIT_K_MAX = 16
SPLIT_K_DEPTH = 256

# The best large GEMM's share of the dense peak where the spec table has no measurement for the
# GPU and dtype: 16-bit 0.80 (H100 bf16 0.807, A100 fp16 0.822: hardware.py), fp8 0.70 (H100
# 0.698, H200 0.690), fp4 0.76 (GB200 0.763), tf32 and fp32 as 16-bit (assumption).
GEMM_SHARE = {"bf16": 0.80, "fp16": 0.80, "tf32": 0.80, "fp32": 0.80, "fp8": 0.70, "fp4": 0.76}

# A weight-only GEMM (4- or 8-bit weights dequantised in the kernel, bf16 tensor cores) runs at
# this share of cuBLAS's speed where compute binds: Marlin at M=256, 0.74× fp16 cuBLAS
# (vllm-project/vllm#2497).
WEIGHT_ONLY_SHARE = 0.74

# Copy bandwidth's share of the spec bandwidth where the spec table has no measurement: between
# A100's 0.79 (Azure STREAM copy) and Hopper's 0.90 (this project's lent H100 and H200):
# assumption.
COPY_SHARE = 0.85

# The share of the spec bandwidth fused small memory-bound kernels (RMSNorm, rotary, SiLU·mul,
# KV writes) reach at scale: the median of five public measurements on Hopper: FlashInfer RoPE
# of 16k tokens 0.38 (H100 NVL, flashinfer#2109), SGLang's fused RMSNorm 0.50, 0.55 and 0.64 at
# 512, 4k and 16k tokens (sglang#32994), FlashInfer RMSNorm at 4k tokens 0.66 (vllm#11241).
ELEMENTWISE_SHARE = 0.55

# Flash attention's share of the dense peak, causal forward, head dim 128, long sequences:
# Hopper FlashAttention-3 616 of 989 TFLOP/s (Shah et al. 2024); Ampere FlashAttention-2 "50-73%
# of the theoretical maximum" on A100 (Dao 2023), the midpoint; others as Hopper (assumption).
ATTENTION_SHARE = {"hopper": 0.62, "ampere": 0.61}
ATTENTION_TILE = 128  # queries per flash-attention program (FlashAttention-2/3's block)

# Weight formats whose GEMMs run on tensor cores of that format where a GPU has them, else
# weight-only (dequantised to bf16 in the kernel): the tensor-core peak each needs.
NATIVE_PEAK = {"fp8": "fp8", "fp4": "fp4", "mxfp4": "fp4", "int8": None, "int4": None}
# Dtypes whose GEMMs quantise their bf16 activations first (a pass over M × K).
QUANTISED_ACTIVATIONS = ("fp8", "fp4")


@dataclass(frozen=True)
class Modelled:
    """An op's modelled time at one shape, what bounds it, and the model's terms and sources
    for its class on this GPU (the same for every shape of the class: the notes list it once)."""

    seconds: float
    bound: str  # "latency", "compute", "memory" or "network"
    detail: str


def op_time(op: Op, shape: dict, dtype: str, spec: GpuSpec) -> Modelled:
    """The modelled time of an op at a shape on a GPU, by the op's efficiency class."""
    nbytes = op.bytes(shape, dtype)
    if op.efficiency in ("gemm", "moe"):
        return gemm_time(op.gemms(shape), dtype, nbytes, spec)
    if op.efficiency == "prefill_attention":
        peak = _peak(spec, dtype, op.tf32)
        return attention_time(op.flops(shape), nbytes, op.programs(shape), peak, spec)
    if op.efficiency == "decode_attention":
        peak = _peak(spec, dtype, op.tf32)
        return decode_time(op.flops(shape), nbytes, op.programs(shape), peak, spec)
    if op.efficiency == "memory":
        return streaming_time(nbytes, op.programs(shape), spec, ELEMENTWISE_SHARE)
    raise BenchError(f"{op.name}: the op-time model has no '{op.efficiency}' class here")


def roofline_time(op: Op, shape: dict, dtype: str, spec: GpuSpec) -> float:
    """The spec sheet's least time for an op: max(FLOPs / peak, bytes / bandwidth), the peak
    its tensor cores compute the dtype at (bf16 for a weight-only format)."""
    compute_dtype = gemm_rate(dtype, spec)[0] if op.efficiency in ("gemm", "moe") else dtype
    peak = _peak(spec, compute_dtype, op.tf32)
    return max(op.flops(shape) / peak, op.bytes(shape, dtype) / (spec.bandwidth_gbs * 1e9))


def gemm_time(gemms: list[Gemm], dtype: str, nbytes: float, spec: GpuSpec) -> Modelled:
    """Matrix products in waves of tiles over the SMs against their bytes at copy bandwidth."""
    compute_dtype, share, how = gemm_rate(dtype, spec)
    per_sm = _peak(spec, compute_dtype) * share / spec_sms(spec)
    bandwidth = copy_share(spec) * spec.bandwidth_gbs * 1e9
    compute = sum(_waves(g, per_sm, spec_sms(spec), bandwidth) for g in gemms)
    memory = nbytes / bandwidth
    quant = 0.0
    if compute_dtype in QUANTISED_ACTIVATIONS:
        activations = sum(g.m * g.k * g.groups for g in gemms)
        quant = activations * 3 / (ELEMENTWISE_SHARE * spec.bandwidth_gbs * 1e9)  # bf16 in, 8b out
    seconds, bound = _bounded(compute=compute, memory=memory)
    detail = (
        f"GEMM: tiles of {'/'.join(f'{m}×{n}' for m, n in GEMM_TILES)} (split-K up to "
        f"{SPLIT_K_MAX}) in waves over {spec_sms(spec)} SMs at {how}; bytes at "
        f"{copy_share(spec):.0%} of {spec.bandwidth_gbs:g} GB/s"
        f"{' + the activations quantised first' if quant else ''}; at least "
        f"{KERNEL_FLOOR_S * 1e6:.2g} µs"
    )
    return Modelled(seconds + quant, bound, detail)


def gemm_rate(dtype: str, spec: GpuSpec) -> tuple[str, float, str]:
    """(the dtype its tensor cores compute in, the share of that peak reached, how, with the
    source): natively, or weight-only in bf16 where the GPU lacks the format's tensor cores."""
    native = NATIVE_PEAK.get(dtype, dtype)
    if native and spec.peak_tflops.get(native):
        share, source = gemm_share(spec, native)
        return native, share, f"{share:.1%} of the {native} peak ({source})"
    share, source = gemm_share(spec, "bf16")
    how = (
        f"{dtype} weights dequantised into bf16 GEMMs, {WEIGHT_ONLY_SHARE:.0%} of {share:.1%} "
        f"of the bf16 peak ({source}; Marlin's share of cuBLAS)"
    )
    return "bf16", share * WEIGHT_ONLY_SHARE, how


def gemm_share(spec: GpuSpec, dtype: str) -> tuple[float, str]:
    """The best large GEMM's share of the dense peak: measured on this GPU, else the default."""
    if dtype in spec.gemm_share:
        return spec.gemm_share[dtype], f"measured on {spec.name}"
    return GEMM_SHARE.get(dtype, GEMM_SHARE["bf16"]), "the default for its dtype"


def copy_share(spec: GpuSpec) -> float:
    return spec.copy_share if spec.copy_share is not None else COPY_SHARE


def spec_sms(spec: GpuSpec) -> int:
    """SMs of the GPU; an entry without a count is taken as an H100's (assumption)."""
    return spec.sms or SPECS["h100-sxm"].sms


def _waves(g: Gemm, per_sm: float, sms: int, bandwidth: float) -> float:
    """Seconds of a GEMM's tiles in waves over the SMs, with the tile shape and the split of
    its inner dimension that end soonest (a part-filled tile and a part-filled wave cost full
    ones; a split writes and reads back its fp32 partial sums at `bandwidth`)."""

    def seconds(rows: int, cols: int, split: int) -> float:
        tiles = g.groups * ceil_div(g.m, rows) * ceil_div(g.n, cols) * split
        tiled = math.ceil(tiles / sms) * 2 * rows * cols * ceil_div(g.k, split) / per_sm
        return tiled + (split - 1) * g.m * g.n * g.groups * 8 / bandwidth

    deepest = max(1, min(SPLIT_K_MAX, g.k // SPLIT_K_DEPTH))
    best = float("inf")
    for rows, cols in GEMM_TILES:
        tiles = g.groups * ceil_div(g.m, rows) * ceil_div(g.n, cols)
        # Splitting only helps while the tiles leave SMs idle.
        for split in range(1, min(deepest, max(1, math.ceil(sms / tiles))) + 1):
            best = min(best, seconds(rows, cols, split))
    return best


def attention_time(
    flops: float, nbytes: float, programs: float | None, peak: float, spec: GpuSpec
) -> Modelled:
    """Flash attention: its programs in waves over the SMs at its share of the peak."""
    share = ATTENTION_SHARE.get(spec.arch, ATTENTION_SHARE["hopper"])
    sms = spec_sms(spec)
    programs = programs or sms
    per_program = flops / programs / (peak * share / sms)
    compute = math.ceil(programs / sms) * per_program
    memory = nbytes / (copy_share(spec) * spec.bandwidth_gbs * 1e9)
    seconds, bound = _bounded(compute=compute, memory=memory)
    detail = (
        f"flash attention: programs of {ATTENTION_TILE} queries in waves over {sms} SMs at "
        f"{share:.0%} of the peak (FlashAttention-3 on Hopper, -2 on Ampere); at least "
        f"{KERNEL_FLOOR_S * 1e6:.2g} µs"
    )
    return Modelled(seconds, bound, detail)


def decode_time(
    flops: float, nbytes: float, programs: float | None, peak: float, spec: GpuSpec
) -> Modelled:
    """Decode attention: the KV cache read at copy bandwidth and the scores and output at flash
    attention's share of the peak, by as many SMs as the work has pieces (grouped-query decode
    is all reading; latent attention's 128 heads over one cache compute as much as they read)."""
    share, sms = ATTENTION_SHARE.get(spec.arch, ATTENTION_SHARE["hopper"]), spec_sms(spec)
    busy = min(1.0, programs / sms) if programs else 1.0
    memory = nbytes / (copy_share(spec) * busy * spec.bandwidth_gbs * 1e9)
    compute = flops / (share * busy * peak)
    seconds, bound = _bounded(compute=compute, memory=memory)
    detail = (
        f"decode attention: the KV cache at {copy_share(spec):.0%} of {spec.bandwidth_gbs:g} GB/s "
        f"and the scores at {share:.0%} of the peak, over the SMs the work fills; at least "
        f"{KERNEL_FLOOR_S * 1e6:.2g} µs"
    )
    return Modelled(seconds, bound, detail)


def streaming_time(nbytes: float, programs: float | None, spec: GpuSpec, share: float) -> Modelled:
    """A kernel bound by the bytes it moves, at `share` of the spec bandwidth when its work
    spreads over every SM, a proportional part of it when it has fewer pieces (assumption: each
    busy SM draws an equal share)."""
    sms = spec_sms(spec)
    busy = min(1.0, programs / sms) if programs else 1.0
    memory = nbytes / (share * busy * spec.bandwidth_gbs * 1e9)
    seconds, bound = _bounded(memory=memory)
    detail = (
        f"fused memory-bound kernels: bytes at {share:.0%} of {spec.bandwidth_gbs:g} GB/s over "
        f"the SMs the work fills; at least {KERNEL_FLOOR_S * 1e6:.2g} µs"
    )
    return Modelled(seconds, bound, detail)


def _bounded(**terms: float) -> tuple[float, str]:
    """The terms combined as a kernel that overlaps them imperfectly does, but no less than the
    floor, and what bounds it: the floor, or the largest term."""
    combined = sum(t**OVERLAP_NORM for t in terms.values()) ** (1 / OVERLAP_NORM)
    if combined <= KERNEL_FLOOR_S:
        return KERNEL_FLOOR_S, "latency"
    return combined, max(terms, key=lambda name: terms[name])


def _peak(spec: GpuSpec, dtype: str, tf32: bool = False) -> float:
    peak = peak_tflops(spec, dtype, tf32)
    if not peak:
        having = [s.key for s in SPECS.values() if s.peak_tflops.get(dtype)]
        raise BenchError(
            f"{spec.name} has no {dtype} peak in the spec table; {dtype} needs one of: "
            f"{', '.join(having)}; or use another precision"
        )
    return peak * 1e12
