"""Per-GPU peak figures: compute, memory bandwidth, capacity, interconnect and power.

Every tensor figure here is DENSE. NVIDIA datasheets for Hopper, Ada and Blackwell headline
figures with 2:4 structured sparsity; those sparse vendor figures are halved to get the dense
peaks kept here (AMD headlines dense figures, kept as they are). Units: TFLOP/s, GB/s and GB with
1e9-based prefixes, W. "fp32" is the non-tensor FP32 rate; FP32 matmuls on tensor cores run at the
"tf32" rate. Where sources disagree, one figure is kept and the other is given in the entry's
notes. Each entry names its source (vendor datasheets, or where they are silent, the secondary
copies it names).

Device names are matched by whole tokens: a name matches a pattern when the pattern's tokens occur
in it consecutively and every other token is a vendor word or a neutral descriptor (memory size or
type, SXM form factor, "AC", "VF"). A variant with a token of its own, such as "NVL" in
"NVIDIA H200 NVL" (a lower-power card), matches nothing rather than the wrong entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.record.schema import DeviceInfo

DTYPES = ("bf16", "fp16", "fp8", "fp4", "tf32", "fp32")

_NEUTRAL_TOKEN = re.compile(r"nvidia|amd|instinct|\d+gb|hbm\d*e?|sxm\d*|ac|vf")


@dataclass(frozen=True)
class GpuSpec:
    """Vendor peak figures for one GPU; tensor figures are dense."""

    key: str
    name: str
    match: tuple[str, ...]
    peak_tflops: dict[str, float]
    bandwidth_gbs: float
    memory_gb: float
    interconnect_gbs: float
    power_w: float
    source: str
    notes: str = ""


_SPEC_LIST = (
    GpuSpec(
        key="a100-sxm",
        name="A100 SXM 80GB",
        match=("a100-sxm4-80gb",),
        peak_tflops={"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
        bandwidth_gbs=2039.0,
        memory_gb=80.0,
        interconnect_gbs=600.0,
        power_w=400.0,
        source="NVIDIA A100 datasheet",
        notes="Ampere has no FP8. The 40 GB SXM and the PCIe cards differ and are not matched.",
    ),
    GpuSpec(
        key="h100-sxm",
        name="H100 SXM",
        match=("h100 80gb hbm3", "h100 sxm5 80gb"),
        peak_tflops={
            "bf16": 989.4,
            "fp16": 989.4,
            "fp8": 1978.9,
            "tf32": 494.7,
            "fp32": 66.9,
        },
        bandwidth_gbs=3350.0,
        memory_gb=80.0,
        interconnect_gbs=900.0,
        power_w=700.0,
        source="NVIDIA H100 datasheet (sparse tensor figures halved)",
        notes="H100 NVL (94 GB, 3.9 TB/s, 400 W) is a different card and is not matched.",
    ),
    GpuSpec(
        key="h100-pcie",
        name="H100 PCIe",
        match=("h100 pcie",),
        peak_tflops={"bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "tf32": 378.0, "fp32": 51.0},
        bandwidth_gbs=2000.0,
        memory_gb=80.0,
        interconnect_gbs=128.0,
        power_w=350.0,
        source="NVIDIA H100 PCIe product brief (sparse tensor figures halved)",
        notes="Interconnect is PCIe Gen5 x16 (128 GB/s bidirectional); power 300-350 W.",
    ),
    GpuSpec(
        key="h200",
        name="H200 SXM",
        match=("h200",),
        peak_tflops={
            "bf16": 989.4,
            "fp16": 989.4,
            "fp8": 1978.9,
            "tf32": 494.7,
            "fp32": 66.9,
        },
        bandwidth_gbs=4800.0,
        memory_gb=141.0,
        interconnect_gbs=900.0,
        power_w=700.0,
        source="NVIDIA H200 datasheet (sparse tensor figures halved)",
        notes="H200 NVL (PCIe card, up to 600 W, lower peaks) is a different card, not matched.",
    ),
    GpuSpec(
        key="b200",
        name="B200",
        match=("b200",),
        peak_tflops={
            "bf16": 2250.0,
            "fp16": 2250.0,
            "fp8": 4500.0,
            "fp4": 9000.0,
            "tf32": 1100.0,
            "fp32": 75.0,
        },
        bandwidth_gbs=8000.0,
        memory_gb=180.0,
        interconnect_gbs=1800.0,
        power_w=1000.0,
        source="NVIDIA HGX B200 figures, per GPU (secondary copies; sparse tensor figures halved)",
        notes="Bandwidth: 8.0 TB/s kept; some sources give 7.7 TB/s (62 TB/s per 8-GPU HGX).",
    ),
    GpuSpec(
        key="gb200",
        name="GB200",
        match=("gb200",),
        peak_tflops={
            "bf16": 2500.0,
            "fp16": 2500.0,
            "fp8": 5000.0,
            "fp4": 10000.0,
            "tf32": 1250.0,
            "fp32": 80.0,
        },
        bandwidth_gbs=8000.0,
        memory_gb=186.0,
        interconnect_gbs=1800.0,
        power_w=1200.0,
        source="NVIDIA GB200 NVL72 figures, per GPU (secondary; sparse tensor figures halved)",
        notes=(
            "GB200 NVL72 rack figures divided by 72 kept; some secondary copies repeat B200's "
            "instead (bf16 2,250, fp8 4,500, fp4 9,000 TFLOP/s, 180 GB, 1,000 W)."
        ),
    ),
    GpuSpec(
        key="b300",
        name="B300",
        match=("b300",),
        peak_tflops={
            "bf16": 2250.0,
            "fp16": 2250.0,
            "fp8": 4500.0,
            "fp4": 13000.0,
            "tf32": 1100.0,
            "fp32": 75.0,
        },
        bandwidth_gbs=8000.0,
        memory_gb=288.0,
        interconnect_gbs=1800.0,
        power_w=1100.0,
        source="NVIDIA HGX B300 figures, per GPU (secondary sources disagree; sparse halved)",
        notes=(
            "Secondary sources disagree: fp4 13,000 kept (others up to 14,000 TFLOP/s); "
            "memory 288 GB kept (others 270 GB); power 1,100 W kept for the air-cooled "
            "HGX part ('B300 SXM6 AC'; others up to 1,400 W)."
        ),
    ),
    GpuSpec(
        key="gb300",
        name="GB300",
        match=("gb300",),
        peak_tflops={
            "bf16": 2500.0,
            "fp16": 2500.0,
            "fp8": 5000.0,
            "fp4": 15000.0,
            "tf32": 1250.0,
            "fp32": 80.0,
        },
        bandwidth_gbs=8000.0,
        memory_gb=288.0,
        interconnect_gbs=1800.0,
        power_w=1400.0,
        source="NVIDIA GB300 NVL72 figures, per GPU (secondary; sparse tensor figures halved)",
        notes="Memory: 288 GB per GPU kept; some sources give 279 GB (rack total / 72).",
    ),
    GpuSpec(
        key="l40s",
        name="L40S",
        match=("l40s",),
        peak_tflops={"bf16": 362.0, "fp16": 362.0, "fp8": 733.0, "tf32": 183.0, "fp32": 91.6},
        bandwidth_gbs=864.0,
        memory_gb=48.0,
        interconnect_gbs=64.0,
        power_w=350.0,
        source="NVIDIA L40S datasheet (sparse tensor figures halved)",
        notes="GDDR6 memory; interconnect is PCIe Gen4 x16 (64 GB/s bidirectional), no NVLink.",
    ),
    GpuSpec(
        key="l4",
        name="L4",
        match=("l4",),
        peak_tflops={"bf16": 121.0, "fp16": 121.0, "fp8": 242.5, "tf32": 60.0, "fp32": 30.3},
        bandwidth_gbs=300.0,
        memory_gb=24.0,
        interconnect_gbs=64.0,
        power_w=72.0,
        source="NVIDIA L4 datasheet (sparse tensor figures halved)",
        notes="GDDR6 memory; interconnect is PCIe Gen4 x16 (64 GB/s bidirectional), no NVLink.",
    ),
    GpuSpec(
        key="mi300x",
        name="MI300X",
        match=("mi300x",),
        peak_tflops={
            "bf16": 1307.4,
            "fp16": 1307.4,
            "fp8": 2614.9,
            "tf32": 653.7,
            "fp32": 163.4,
        },
        bandwidth_gbs=5300.0,
        memory_gb=192.0,
        interconnect_gbs=896.0,
        power_w=750.0,
        source="AMD Instinct MI300X datasheet (dense as published)",
        notes="Interconnect is Infinity Fabric, 7 links x 128 GB/s = 896 GB/s aggregate.",
    ),
)

SPECS: dict[str, GpuSpec] = {spec.key: spec for spec in _SPEC_LIST}


def _tokens(text: str) -> tuple[str, ...]:
    """Lowercase alphanumeric runs of a device name or pattern."""
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def _matches(name_tokens: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether `pattern` occurs consecutively in the name and every other token is neutral."""
    width = len(pattern)
    for start in range(len(name_tokens) - width + 1):
        if name_tokens[start : start + width] == pattern:
            rest = name_tokens[:start] + name_tokens[start + width :]
            return all(_NEUTRAL_TOKEN.fullmatch(token) for token in rest)
    return False


def match_spec(device_name: str) -> GpuSpec | None:
    """The spec for a torch/NVML device name, or None when no entry fits it safely.

    When several patterns fit, the one with the most tokens (the most specific) wins.
    """
    name_tokens = _tokens(device_name)
    best: GpuSpec | None = None
    best_width = 0
    for spec in SPECS.values():
        for pattern in map(_tokens, spec.match):
            if len(pattern) > best_width and _matches(name_tokens, pattern):
                best, best_width = spec, len(pattern)
    return best


def get_spec(key: str) -> GpuSpec:
    """The spec for a CLI key or display name, case-insensitively."""
    wanted = key.strip().lower()
    for spec in SPECS.values():
        if wanted in (spec.key, spec.name.lower()):
            return spec
    raise ValueError(f"unknown GPU {key!r}; known: {', '.join(SPECS)}")


def peak_tflops(spec: GpuSpec, dtype: str, tf32: bool = False) -> float | None:
    """Dense peak TFLOP/s for a dtype, or None when the GPU (or the table) has none for it.

    "fp32" is the non-tensor rate unless `tf32` is set, when it is the TF32 tensor-core rate.
    """
    return spec.peak_tflops.get("tf32" if dtype == "fp32" and tf32 else dtype)


@dataclass(frozen=True)
class Roofline:
    """The least time a kernel can take on a GPU by its spec sheet, and what bounds it."""

    seconds: float
    bound: str  # "compute" or "memory"


def roofline(
    spec: GpuSpec, dtype: str, flops: float, nbytes: float, tf32: bool = False
) -> Roofline | None:
    """max(FLOPs / dense peak, bytes / bandwidth) for a kernel of `flops` and `nbytes`; None
    when the GPU has no peak for the dtype."""
    peak = peak_tflops(spec, dtype, tf32)
    if not peak:
        return None
    compute, memory = flops / (peak * 1e12), nbytes / (spec.bandwidth_gbs * 1e9)
    return Roofline(compute, "compute") if compute >= memory else Roofline(memory, "memory")


@dataclass(frozen=True)
class Projection:
    """How a time measured on one GPU scales to another by their spec sheets."""

    scale: float  # target roofline / source roofline
    bound: str  # what bounds the kernel on the target: "compute" or "memory"


def projection(
    source: GpuSpec, target: GpuSpec, dtype: str, flops: float, nbytes: float, tf32: bool = False
) -> Projection | None:
    """The ratio of the two GPUs' rooflines for a kernel (the same efficiency assumed on both):
    the one projection tokbench makes. None when either GPU has no peak for the dtype."""
    there = roofline(target, dtype, flops, nbytes, tf32)
    here = roofline(source, dtype, flops, nbytes, tf32)
    if there is None or here is None or here.seconds <= 0:
        return None
    return Projection(there.seconds / here.seconds, there.bound)


def spec_of(device: DeviceInfo, key: str | None) -> GpuSpec | None:
    """The spec-table entry of a result file's device: its recorded key, else matched by name."""
    if key in SPECS:
        return SPECS[key]
    return match_spec(device.name) if device.kind == "cuda" else None
