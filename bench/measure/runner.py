"""Runs cases: inputs, the correctness gate, timing, telemetry and one result record per case.

suite → cases → inputs → check → timing → record: every timed case has first matched a
high-precision reference; a case that fails is recorded as failed with its error and not timed.
Under torchrun each rank runs every case on its own GPU and rank 0 writes all their records; a
collective is checked on every rank and timed on all of them together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import kernels
from bench import BenchError
from bench.measure import device as dev
from bench.measure import distributed
from bench.measure.distributed import Ranks
from bench.measure.ops import get_op
from bench.measure.ops.base import Impl, Inputs, Op, Unsupported
from bench.measure.suites import CaseSpec
from bench.measure.timing import TimerConfig, summarize, time_on
from bench.record.hardware import GpuSpec, peak_tflops
from bench.record.results import ResultWriter
from bench.record.schema import CaseResult, DeviceInfo, Timing
from bench.record.units import fmt_bytes

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
    ranks: Ranks | None = None,
) -> None:
    """Run every case on the device, adding each record to the writer as soon as it exists.

    Under torchrun (`ranks`) every rank runs every case; after each, rank 0 gathers the
    records of all ranks for its writer, and hears of the case once, through its own record.
    """
    tdev = dev.torch_device(device)
    gen = torch.Generator(device=tdev).manual_seed(config.seed)
    for case in cases:
        op = get_op(case.op)
        require_room(op, case, device)
        inputs = op.inputs(case.shape, case.dtype, tdev, gen)
        ref = op.reference(inputs)
        records = [
            run_one(op, impl, case, inputs, ref, device, spec, config)
            for impl in op.impls
            if config.impls is None or impl.name in config.impls
        ]
        for record in _on_rank_0(records, op, ranks):
            writer.add(record)
        for record in records:  # progress counts cases: this rank's records stand for all
            on_case(record)
        del inputs, ref
        if device.kind == "cuda":
            torch.cuda.empty_cache()


def _on_rank_0(records: list[CaseResult], op: Op, ranks: Ranks | None) -> list[CaseResult]:
    """A case's records as rank 0 writes them: every rank's, each with its rank; a collective's
    once (its record already speaks for all ranks); none on the other ranks."""
    if ranks is None:
        return records
    if op.part == "communication":
        return records if ranks.leader else []
    for record in records:
        record.rank = ranks.rank
    gathered = distributed.gather(records)
    return [r for per_rank in gathered or () for r in per_rank]


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
    if op.part == "communication":
        return _run_collective(record, op, impl, inputs, ref, device, config)
    record.status = "failed"
    try:
        fn = impl.prepare(inputs)
        start = time.perf_counter()
        out = op.check_view(fn(), inputs)
        checked_ms = (time.perf_counter() - start) * 1e3
        record.rel_error, record.error = check(out, ref, record.tolerance)
        if record.error:
            return record
        if record.interpreted:
            # Not a speed figure: the checked call's own time says what the run cost, without
            # running the interpreter again.
            record.timing = summarize([checked_ms], mode="interpreted")
        else:
            before, probe = dev.telemetry(device), dev.cpu_probe(device)
            record.timing = _time(fn, device, config)
            record.telemetry = dev.merge(before, dev.telemetry(device))
            record.cpu_load = probe.finish() if probe else None
    except Unsupported as e:
        record.status, record.error = "skipped", str(e)
        return record
    except Exception as e:  # a crashing kernel is a failed case; the sweep goes on
        record.error = f"{type(e).__name__}: {_first_line(e)}"
        return record
    record.status = "ok"
    _roofline(record, op, spec)
    return record


def _run_collective(
    record: CaseResult,
    op: Op,
    impl: Impl,
    inputs: Inputs,
    ref: torch.Tensor,
    device: DeviceInfo,
    config: RunConfig,
) -> CaseResult:
    """Check a collective on every rank, then time it on all of them together: every rank
    takes the same decisions from the same gathered facts, so none waits in a call the others
    skipped."""
    fn = impl.prepare(inputs)
    try:
        mine = check(fn(), ref, record.tolerance)
    except Exception as e:  # a rank whose call fails reports it like a wrong result
        mine = (None, f"{type(e).__name__}: {_first_line(e)}")
    checks = distributed.all_gather(mine)
    failed = [f"rank {r}: {error}" for r, (_, error) in enumerate(checks) if error]
    if failed:
        record.status, record.error = "failed", "; ".join(failed)
        return record
    record.rel_error = max(rel for rel, _ in checks)
    record.timing, record.rank = distributed.time_collective(fn, config.timer, device)
    record.status = "ok"
    seconds = record.timing.median_ms / 1e3
    record.gbps = record.bytes / seconds / 1e9
    record.bus_gbps = record.gbps * op.bus_factor(record.shape["world"])
    return record


def _time(fn: Callable, device: DeviceInfo, config: RunConfig) -> Timing:
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
