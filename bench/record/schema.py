"""The result file's schema: what one run measured, where and how, as plain dataclasses.

These records are the contract between measuring (which fills them), planning (which reads them)
and presenting (which shows them); they hold data only and import nothing beyond the standard
library, so a result file can be read, compared and planned from without torch or Triton.
Reading and writing files is `bench.record.results`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

FORMAT = "tokbench.results"
# 2 added the ranks of a run under torchrun (`ranks`, `cases[].rank`) and collectives' bus
# bandwidth (`cases[].bus_gbps`); a version-1 file loads as a run of one rank. Fields added
# since, each optional, keep the version, as readers of either age load the other's files (a
# reader skips fields it does not know): the timed rounds and noise floor of a timing
# (`timing.rounds_ms`, `timing.noise_floor`) and a CPU run's load (`cpu`, `cases[].cpu_load`).
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

# Sizes and switches; a string value is kept for ops of newer versions that use one.
Shape = dict[str, int | bool | str]

# The dtypes cases are measured or estimated in, with their element sizes in bytes. fp4 is
# NVFP4: 4-bit values with one fp8 scale per 16 (4.5 bits an element); mxfp4 (OCP MX, gpt-oss's
# experts) one 8-bit exponent per 32 ("4.25 bits per parameter": the gpt-oss model card); int4
# is W4A16 with an fp16 scale per 128 weights (GPTQ's and AWQ's default group size); int8 is
# W8A16 with per-channel scales (a negligible share).
DTYPE_BYTES = {
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "fp4": 0.5625,
    "mxfp4": 0.53125,
    "int8": 1,
    "int4": 0.515625,
}
STATUSES = ("ok", "failed", "skipped")
TIMING_MODES = ("cuda-events", "cuda-graph", "cpu", "interpreted")


def shape_key(shape: Shape) -> tuple:
    """A shape as a hashable key, the same whatever order its keys were given in."""
    return tuple(sorted(shape.items()))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Timing:
    """Statistics of one case's repetitions, in milliseconds."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    cv: float  # standard deviation / mean
    n: int
    mode: str  # one of TIMING_MODES
    # The median of each timed round (bench.measure.timing), in the order timed; empty in older
    # files, for a single-call timing (interpreted) and for collectives.
    rounds_ms: list[float] = field(default_factory=list)
    # The interquartile range of the round medians / their median: a change smaller than it is
    # one this run cannot tell from its own noise.
    noise_floor: float | None = None


@dataclass
class DeviceInfo:
    """The device as the harness saw it."""

    kind: str  # "cuda" or "cpu"
    name: str
    memory_bytes: int
    cores: int  # SMs on a GPU, logical cores on a CPU
    compute_capability: str | None = None
    l2_bytes: int | None = None
    driver: str | None = None
    cuda: str | None = None
    index: int = 0
    rocm: bool = False  # an AMD GPU, which torch drives as "cuda" through ROCm (HIP)

    @property
    def slug(self) -> str:
        """File-name friendly device name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
        return "-".join("".join(c if c.isalnum() else " " for c in self.name.lower()).split())

    @property
    def capability(self) -> tuple[int, int] | None:
        """The compute capability as (major, minor), or None off CUDA or when unknown."""
        if self.kind != "cuda" or not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            return None


@dataclass
class Telemetry:
    """One NVML reading of a GPU; a field NVML did not report is None."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    throttle_reasons: list[str] = field(default_factory=list)

    @property
    def throttled(self) -> bool:
        return any(r in THROTTLING for r in self.throttle_reasons)


# Clock-event reasons that mean the clocks were held down during the measurement. "gpu_idle" and
# "applications_clocks_setting" are normal states, not throttling.
THROTTLING = frozenset(
    {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    }
)


@dataclass
class CpuLoad:
    """The CPU as a CPU run found it: before the run (ResultDoc.cpu), or during one case's timed
    loop (CaseResult.cpu_load)."""

    threads: int  # torch's intra-op threads
    cores: float  # CPUs this process may run on (affinity mask and cgroup quota)
    others: float  # cores other processes (and the hypervisor's steal) kept busy, on average
    loadavg: float  # the 1-minute load average at the end of the reading
    contended: bool  # others and our threads wanted more cores than there were


@dataclass
class RankInfo:
    """One process of a run: under torchrun, one per GPU; otherwise the only one."""

    rank: int
    host: str
    device: DeviceInfo
    nvlinks: int | None = None  # NVLink links NVML reports active on its GPU


@dataclass
class CaseResult:
    """One (op, implementation, shape, dtype) case: its check, its timing and its roofline."""

    op: str
    impl: str
    dtype: str
    shape: Shape
    status: str  # STATUSES: "ok", "failed" (wrong result or error), "skipped" (cannot run here)
    flops: float
    bytes: float
    error: str | None = None
    rel_error: float | None = None
    tolerance: float | None = None
    interpreted: bool = False  # Triton's CPU interpreter: a correctness run, not a speed figure
    timing: Timing | None = None
    tflops: float | None = None
    gbps: float | None = None
    peak_fraction: float | None = None  # of the device's dense peak for this dtype
    bandwidth_fraction: float | None = None  # of the device's memory bandwidth
    telemetry: Telemetry | None = None
    rank: int = 0  # the rank that measured it; a collective's: its slowest rank
    bus_gbps: float | None = None  # collectives: algorithm bandwidth × the nccl-tests factor
    cpu_load: CpuLoad | None = None  # CPU runs: the machine's load while the case was timed

    @property
    def contended(self) -> bool:
        """Timed on a CPU that other processes were using too: its time is not a fair figure."""
        return self.cpu_load is not None and self.cpu_load.contended

    @property
    def problem(self) -> tuple:
        """The problem the case solves, whatever the implementation: op, dtype and shape."""
        return (self.op, self.dtype, shape_key(self.shape))

    @property
    def key(self) -> tuple:
        """What identifies a case across files: the problem, the implementation and the rank
        (a run of several GPUs is compared GPU by GPU)."""
        return (*self.problem, self.impl, self.rank)

    @property
    def comparable(self) -> bool:
        """Passed its check and was timed on real hardware (not interpreted)."""
        return self.status == "ok" and self.timing is not None and not self.interpreted


@dataclass
class EstimateRow:
    """One line of a saved estimate: a phase at one batch size, per GPU."""

    phase: str  # "prefill", "decode" or "serving"
    batch: int
    context: int  # prefill: prompt length; decode: mean context; serving: input + output length
    step_ms: float  # prefill: time to first token; decode: time per output token
    tokens_per_s: float  # per GPU
    source: str  # provenance, e.g. "measured 92% · interpolated 8%" or "projection to B200 …"


@dataclass
class EstimateRecord:
    """A saved `tokbench estimate`: one model's per-GPU token throughput from a file's cases."""

    model: str
    gpu: str  # the GPU estimated for: the measured device, or a spec-sheet projection target
    spec: str | None  # hardware.SPECS key of that GPU, when it has one
    projected: bool  # True when gpu is not the measured device
    tp: int
    precision: str
    isl: int
    osl: int
    weights_bytes: float  # per GPU
    kv_bytes_per_token: float  # per GPU
    memory_bytes: float  # per GPU capacity the fit used
    workspace_fraction: float  # of memory_bytes kept free for activations and workspace
    max_batch: int  # largest batch whose weights + KV cache fit
    prefill_tokens_per_s: float  # per GPU, best prefill row
    decode_tokens_per_s: float  # per GPU, at the largest batch estimated
    requests_per_s: float  # per GPU, the serving mix of isl input and osl output tokens
    rows: list[EstimateRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)  # measured / estimated layer time
    created: str = field(default_factory=_now)
    command: str = ""
    kv_precision: str = ""  # the KV cache's dtype; "" in files before it was a setting

    @property
    def setup(self) -> tuple:
        """What identifies an estimate across files: the model and how it is served."""
        return (self.model, self.tp, self.precision, self.kv_precision, self.isl, self.osl)

    @property
    def setup_label(self) -> str:
        """The setup in words: 'Llama-3.1-8B TP1 fp8 fp8 KV 1024→256'."""
        kv = " fp8 KV" if self.kv_precision == "fp8" else ""
        return f"{self.model} TP{self.tp} {self.precision}{kv} {self.isl}→{self.osl}"

    @property
    def serving_output_tokens_per_s(self) -> float:
        """Output tokens/s per GPU in the serving mix (isl in, osl out per request): what a
        fleet plans with; decode alone at the largest batch is an upper bound above it."""
        return self.requests_per_s * self.osl


@dataclass
class ResultDoc:
    """A whole result file."""

    device: DeviceInfo  # rank 0's
    software: dict[str, str]
    command: str
    suite: str
    created: str = field(default_factory=_now)
    format: str = FORMAT
    schema_version: int = SCHEMA_VERSION
    complete: bool = False  # False while running, or when the run was interrupted
    spec: str | None = None  # key of the matched hardware.SPECS entry
    measured_peaks: dict[str, float] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    estimates: list[EstimateRecord] = field(default_factory=list)
    ranks: list[RankInfo] = field(default_factory=list)  # every rank of the run, rank 0 first
    cpu: CpuLoad | None = None  # CPU runs: the threads chosen and the load before the cases

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False)
