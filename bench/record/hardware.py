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
from dataclasses import dataclass, field

from bench.record.schema import DeviceInfo

DTYPES = ("bf16", "fp16", "fp8", "fp4", "tf32", "fp32")

_NEUTRAL_TOKEN = re.compile(r"nvidia|amd|instinct|\d+gb|hbm\d*e?|sxm\d*|ac|vf")


MIB = 2**20


@dataclass(frozen=True)
class GpuSpec:
    """Vendor peak figures for one GPU (tensor figures dense), what its driver reports, how it
    joins others, and what public measurements found it reaches; each with its source."""

    key: str
    name: str
    match: tuple[str, ...]
    peak_tflops: dict[str, float]
    bandwidth_gbs: float
    memory_gb: float  # the vendor's figure
    interconnect_gbs: float  # scale-up link, both directions together, as vendors quote it
    power_w: float
    source: str
    notes: str = ""
    arch: str = ""  # "ampere", "ada", "hopper", "blackwell", "cdna3"
    sms: int = 0  # streaming multiprocessors (compute units on AMD)
    memory_mib: float = 0.0  # device memory as the driver reports it (nvidia-smi, rocm-smi)
    link: str = "nvlink"  # the scale-up fabric: "nvlink", "xgmi" or "pcie"
    domain: int = 8  # GPUs one scale-up fabric joins (an HGX board 8, an NVL72 rack 72)
    scale_out_gbs: float = 0.0  # network bandwidth per GPU, one direction (its NIC's)
    # What public measurements found (None or absent: the op-time model's defaults apply):
    gemm_share: dict[str, float] = field(default_factory=dict)  # best large GEMM / dense peak
    copy_share: float | None = None  # device-to-device copy bandwidth / spec bandwidth
    nccl_gbs: float | None = None  # NCCL's large-message bus bandwidth within the domain
    nccl_latency_s: float | None = None  # NCCL's small-message all-reduce time on 8 GPUs
    measured: str = ""  # the sources of the fields above

    @property
    def memory_bytes(self) -> float:
        """What a program on the GPU can allocate at most: the driver's figure."""
        return self.memory_mib * MIB


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
        arch="ampere",
        sms=108,
        memory_mib=81920,
        domain=8,
        scale_out_gbs=25.0,
        gemm_share={"fp16": 0.822, "bf16": 0.822},
        copy_share=0.79,
        nccl_gbs=230.0,
        nccl_latency_s=43e-6,
        measured=(
            "108 SMs: NVIDIA A100 Tensor Core GPU Architecture whitepaper; 81920 MiB: nvidia-smi "
            "(A100-SXM4-80GB); NIC: DGX A100 datasheet, 8 × 200 Gb/s HDR; GEMM 256.5 TFLOP/s fp16 "
            "16384³ and STREAM copy 1.61 TB/s: Azure/AI-benchmarking-guide ND_A100_v4_results.md; "
            "NCCL ~230 GB/s bus bandwidth: NCCL maintainer, NVIDIA/nccl-tests#149; NCCL latency "
            "43 µs: the median of nccl-tests 43, 42, 50.7 µs at 8 KiB, 64 KiB, 1 MiB on 8 "
            "A100s (Azure ND_A100_v4_results.md)"
        ),
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
        arch="hopper",
        sms=132,
        memory_mib=81559,
        domain=8,
        scale_out_gbs=50.0,
        gemm_share={"bf16": 0.807, "fp16": 0.807, "fp8": 0.698},
        copy_share=0.90,
        nccl_gbs=370.0,
        nccl_latency_s=29.7e-6,
        measured=(
            "132 SMs and 81559 MiB: this project's lent H100 (device KINDS.md, 2026-11-13), as "
            "in the H100 whitepaper; NIC: DGX H100 datasheet, 8 × 400 Gb/s ConnectX-7; bf16 "
            "8192³ GEMM 798 TFLOP/s and copy 3.0 TB/s on the lent H100 (public: 797.5, "
            "zzc0721/torch-performance-test-data#79; Azure STREAM copy 2.90 TB/s); fp8 GEMM "
            "1382 TFLOP/s at 32768³: Azure ND_H100_v5_results.md; NCCL effective NVLink "
            "bandwidth 370 GB/s (ring; NVLS all-reduce ~480 on 8 GPUs): NVIDIA/nccl-tests#212; "
            "NCCL latency 29.7 µs: the median of six public all-reduces of up to 1 MiB on 8 "
            "H100s, nccl-tests 27, 42, 42 µs at 8 KiB, 64 KiB, 1 MiB (Azure ND H100 v5) and "
            "torch.distributed 19.2, 25.2, 32.4 µs at 128 B, 512 KiB, 1 MiB "
            "(ByteDance-Seed/Triton-distributed#57)"
        ),
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
        arch="hopper",
        sms=114,
        memory_mib=81559,
        link="pcie",
        domain=8,
        scale_out_gbs=50.0,
        measured=(
            "114 SMs: NVIDIA H100 whitepaper; memory: assumption, the H100 SXM's reading; a "
            "PCIe server of 8 GPUs with a 400 Gb/s NIC each: assumption"
        ),
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
        arch="hopper",
        sms=132,
        memory_mib=143771,
        domain=8,
        scale_out_gbs=50.0,
        gemm_share={"bf16": 0.796, "fp16": 0.796, "fp8": 0.690},
        copy_share=0.90,
        nccl_gbs=370.0,
        nccl_latency_s=30.8e-6,
        measured=(
            "132 SMs, 143771 MiB, bf16 8192³ GEMM 788 TFLOP/s and copy 4.3 TB/s: this project's "
            "lent H200 (device KINDS.md, 2026-10-28; Azure STREAM copy 4.01 TB/s); fp8 GEMM 1366 "
            "TFLOP/s at 16384³: Azure ND_H200_v5_results.md; NIC: as the DGX H100's; NCCL: "
            "bandwidth: assumption, the H100's (the same NVLink 4 board); NCCL latency 30.8 "
            "µs: the median of nccl-tests 30.5, 30.8, 34.6 µs at 8 KiB, 64 KiB, 1 MiB on 8 "
            "H200s (Azure ND_H200_v5_results.md)"
        ),
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
        arch="blackwell",
        sms=148,
        memory_mib=183359,
        domain=8,
        scale_out_gbs=50.0,
        measured=(
            "148 SMs: secondary spec copies; 183359 MiB: nvidia-smi (NVIDIA B200); NIC: DGX B200 "
            "datasheet, 8 × 400 Gb/s ConnectX-7"
        ),
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
        arch="blackwell",
        sms=148,
        memory_mib=189471,
        domain=72,
        scale_out_gbs=50.0,
        gemm_share={"fp8": 0.581, "fp4": 0.763},
        nccl_gbs=680.0,
        measured=(
            "SMs: assumption, the B200's 148; 189471 MiB: nvidia-smi (NVIDIA GB200); NVL72: 72 "
            "GPUs on one NVLink domain, NVLink 5 1.8 TB/s a GPU, both directions "
            "(https://www.nvidia.com/en-us/data-center/gb200-nvl72/); NIC: 4 × 400 Gb/s ConnectX-7 "
            "per 4-GPU tray (assumption from NVIDIA's GB200 NVL72 reference); fp8 2906.9 and fp4 "
            "7627.6 TFLOP/s at 16384³, NCCL ring 679.6 GB/s bus bandwidth over 4 GPUs: Azure "
            "ND_GB200_v6_results.md"
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
        arch="blackwell",
        sms=148,
        memory_mib=275040,
        domain=8,
        scale_out_gbs=100.0,
        measured=(
            "SMs: assumption, the B200's 148; 275040 MiB: nvidia-smi (NVIDIA B300 SXM6 AC); NIC: "
            "800 Gb/s ConnectX-8 per GPU (NVIDIA HGX B300 figures, secondary)"
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
        arch="blackwell",
        sms=148,
        memory_mib=275040,
        domain=72,
        scale_out_gbs=100.0,
        measured=(
            "SMs and memory: assumption, the B300's; NVL72: 72 GPUs on one NVLink domain, NVLink 5 "
            "1.8 TB/s a GPU (https://www.nvidia.com/en-us/data-center/gb300-nvl72/); NIC: 800 "
            "Gb/s ConnectX-8 per GPU (secondary)"
        ),
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
        arch="ada",
        sms=142,
        memory_mib=48 * 1024,
        link="pcie",
        domain=8,
        scale_out_gbs=50.0,
        measured=(
            "142 SMs: secondary spec copies; memory: assumption, the vendor's 48 GB as GiB; an "
            "8-GPU PCIe server with a 400 Gb/s NIC per GPU: assumption"
        ),
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
        arch="ada",
        sms=58,
        memory_mib=24 * 1024,
        link="pcie",
        domain=8,
        scale_out_gbs=12.5,
        measured=(
            "58 SMs: secondary spec copies; memory: assumption, the vendor's 24 GB as GiB; an "
            "8-GPU PCIe server with a 100 Gb/s NIC per GPU: assumption"
        ),
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
        arch="cdna3",
        sms=304,
        memory_mib=205822885888 / MIB,
        link="xgmi",
        domain=8,
        scale_out_gbs=50.0,
        measured=(
            "304 compute units: AMD MI300X datasheet; 205822885888 bytes: rocm-smi; NIC: 400 Gb/s "
            "per GPU (assumption, as AMD's reference platforms)"
        ),
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
    """The spec for a CLI key, display name or unambiguous key prefix, case-insensitively.

    A prefix ("a100", "gb3") is taken when it names one entry only; "h100" names two, so the
    error lists them rather than guessing which form factor was meant.
    """
    wanted = key.strip().lower()
    for spec in SPECS.values():
        if wanted in (spec.key, spec.name.lower()):
            return spec
    candidates = [k for k in SPECS if wanted and k.startswith(wanted)]
    if len(candidates) == 1:
        return SPECS[candidates[0]]
    if candidates:
        raise ValueError(f"GPU {key!r} is ambiguous; say which: {', '.join(candidates)}")
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
