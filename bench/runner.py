"""Runs cases: inputs, the correctness gate, timing, telemetry and one result record per case.

suite → cases → inputs → check → timing → record: every timed case has first matched a
high-precision reference; a case that fails is recorded as failed with its error and not timed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import kernels
from bench import BenchError
from bench import device as dev
from bench.hardware import GpuSpec, peak_tflops
from bench.ops import get_op
from bench.ops.base import Impl, Inputs, Op, Unsupported
from bench.results import ResultWriter
from bench.schema import CaseResult, DeviceInfo, Timing
from bench.suites import CaseSpec
from bench.timing import TimerConfig, time_cpu, time_on
from bench.units import fmt_bytes

# The interpreter is a correctness run: a couple of reps say how long it took, nothing more.
INTERPRETED_TIMER = TimerConfig(max_time_s=0.2, min_reps=1, max_reps=3, warmup_ms=0)
# Share of the free memory a case (or an implementation's workspace) may take.
MEMORY_HEADROOM = 0.9


@dataclass
class RunConfig:
    timer: TimerConfig = field(default_factory=TimerConfig)
    cuda_graph: bool = False
    impls: list[str] | None = None  # None: every implementation of each op
    seed: int = 0


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN when out has non-finite values, so it never passes."""
    out = out.to(torch.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return math.nan
    scale = torch.linalg.vector_norm(ref).item()
    diff = torch.linalg.vector_norm(out - ref).item()
    return diff / scale if scale > 0 else diff


def check(
    out: torch.Tensor, ref: torch.Tensor, tolerance: float
) -> tuple[float | None, str | None]:
    """(relative error, None) when out passes, else (error or None, why it failed)."""
    rel = relative_error(out, ref)
    if math.isnan(rel):
        return None, "output has NaN or Inf"
    if rel > tolerance:
        return rel, f"relative error {rel:.2e} exceeds tolerance {tolerance:.0e}"
    return rel, None


def require_room(op: Op, case: CaseSpec, device: DeviceInfo) -> None:
    """Raise a BenchError when a case cannot fit the memory free on the device."""
    need = op.footprint(case.shape, case.dtype)
    free = dev.free_memory_bytes(device)
    if need > MEMORY_HEADROOM * free:
        raise BenchError(
            f"{op.name} {op.label(case.shape)} {case.dtype} needs {fmt_bytes(need)} but "
            f"{device.name} has {fmt_bytes(free)} free; choose smaller shapes"
        )


def _no_room(workspace: float, device: DeviceInfo) -> str | None:
    """Why an implementation's own workspace cannot be had now, or None."""
    if workspace == 0:
        return None
    free = dev.free_memory_bytes(device)
    if workspace <= MEMORY_HEADROOM * free:
        return None
    return f"needs {fmt_bytes(workspace)} of workspace, {fmt_bytes(free)} free"


def run_cases(
    cases: list[CaseSpec],
    device: DeviceInfo,
    spec: GpuSpec | None,
    writer: ResultWriter,
    config: RunConfig,
    on_case: Callable[[CaseResult], None] = lambda _: None,
) -> None:
    """Run every case on the device, adding each record to the writer as soon as it exists."""
    tdev = dev.torch_device(device)
    gen = torch.Generator(device=tdev).manual_seed(config.seed)
    for case in cases:
        op = get_op(case.op)
        require_room(op, case, device)
        inputs = op.inputs(case.shape, case.dtype, tdev, gen)
        ref = op.reference(inputs)
        for impl in op.impls:
            if config.impls is None or impl.name in config.impls:
                record = run_one(op, impl, case, inputs, ref, device, spec, config)
                writer.add(record)
                on_case(record)
        del inputs, ref
        if device.kind == "cuda":
            torch.cuda.empty_cache()


def run_one(
    op: Op,
    impl: Impl,
    case: CaseSpec,
    inputs: Inputs,
    ref: torch.Tensor,
    device: DeviceInfo,
    spec: GpuSpec | None,
    config: RunConfig,
) -> CaseResult:
    """Check one implementation against the reference and, if it passes, time it."""
    record = CaseResult(
        op=op.name,
        impl=impl.name,
        dtype=case.dtype,
        shape=case.shape,
        status="skipped",
        flops=op.flops(case.shape),
        bytes=op.bytes(case.shape, case.dtype),
        interpreted=impl.triton and kernels.interpreted(),
        tolerance=op.tolerance[case.dtype],
    )
    record.error = impl.unsupported(case.shape, case.dtype, device) or _no_room(
        impl.workspace(case.shape, case.dtype), device
    )
    if record.error:
        return record
    record.status = "failed"
    try:
        fn = impl.prepare(inputs)
        out = op.check_view(fn(), inputs)
        record.rel_error, record.error = check(out, ref, record.tolerance)
        if record.error:
            return record
        before = dev.telemetry(device)
        record.timing = _time(fn, device, record.interpreted, config)
        record.telemetry = dev.merge(before, dev.telemetry(device))
    except Unsupported as e:
        record.status, record.error = "skipped", str(e)
        return record
    except Exception as e:  # a crashing kernel is a failed case; the sweep goes on
        record.error = f"{type(e).__name__}: {_first_line(e)}"
        return record
    record.status = "ok"
    _roofline(record, op, spec)
    return record


def _time(fn: Callable, device: DeviceInfo, interpreted: bool, config: RunConfig) -> Timing:
    if interpreted:
        return time_cpu(fn, INTERPRETED_TIMER, mode="interpreted")
    try:
        return time_on(device, fn, config.timer, cuda_graph=config.cuda_graph)
    except RuntimeError:
        if not config.cuda_graph:
            raise
        # An implementation that syncs with the host cannot be captured (gather+sdpa reads the
        # longest length there); it is timed with plain events, and its timing's mode says so.
        return time_on(device, fn, config.timer)


def _roofline(record: CaseResult, op: Op, spec: GpuSpec | None) -> None:
    seconds = record.timing.median_ms / 1e3
    if seconds <= 0:
        return
    record.tflops = record.flops / seconds / 1e12
    record.gbps = record.bytes / seconds / 1e9
    if spec is None or record.interpreted:
        return
    peak = peak_tflops(spec, record.dtype, tf32=op.tf32)
    if peak:
        record.peak_fraction = record.tflops / peak
    record.bandwidth_fraction = record.gbps / spec.bandwidth_gbs


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"
