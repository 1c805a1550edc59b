"""Synthetic model-suite result documents with controlled times, for the estimate tests.

Nothing here is a measurement: every time is set by the test, so the estimate's arithmetic can
be checked by hand.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.measure.ops import get_op
from bench.plan.models import ModelConfig, Serving, suite_cases
from bench.record.hardware import SPECS, GpuSpec, roofline
from bench.record.schema import CaseResult, DeviceInfo, ResultDoc, Shape, Timing

H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 80 * 10**9, 132, "9.0", 50 * 2**20)
H200 = DeviceInfo("cuda", "NVIDIA H200", 141 * 10**9, 132, "9.0", 60 * 2**20)
CPU = DeviceInfo("cpu", "Test CPU", 16 * 2**30, 8)

TimeFn = Callable[[str, Shape, str], float]  # (op, shape, dtype) -> seconds


def record(
    op: str,
    shape: Shape,
    dtype: str,
    seconds: float,
    *,
    impl: str = "torch",
    interpreted: bool = False,
    gbps: float | None = None,
) -> CaseResult:
    """An ok, timed case; `gbps` overrides the achieved bandwidth the runner would compute."""
    ms = seconds * 1e3
    timing = Timing(ms, ms, ms, ms, ms, ms, 0.0, 10, "interpreted" if interpreted else "cpu")
    spec_op = get_op(op)
    case = CaseResult(
        op=op,
        impl=impl,
        dtype=dtype,
        shape=dict(shape),
        status="ok",
        flops=spec_op.flops(shape),
        bytes=spec_op.bytes(shape, dtype),
        rel_error=1e-3,
        interpreted=interpreted,
        timing=timing,
    )
    case.gbps = gbps if gbps is not None else case.bytes / seconds / 1e9
    return case


def model_doc(
    config: ModelConfig,
    time_fn: TimeFn,
    *,
    device: DeviceInfo = CPU,
    spec: str | None = None,
    tps: tuple[int, ...] = (1,),
    precision: str = "bf16",
    batches: tuple[int, ...] = (1, 4),
    isl: int = 32,
    osl: int = 16,
    skip: Callable[[str, Shape], bool] = lambda op, shape: False,
    gbps: float | None = None,
    collectives: TimeFn | None = None,
    kv_precision: str = "auto",
) -> ResultDoc:
    """A result file with every case the model suite would measure, timed by time_fn; its
    collectives (TP > 1) only with `collectives` to time them, as a run under torchrun has."""
    setups = [
        Serving(config, tp=tp, precision=precision, kv_precision=kv_precision, isl=isl, osl=osl)
        for tp in tps
    ]
    cases = []
    for c in suite_cases(setups, batches, float(device.memory_bytes), device.kind == "cuda"):
        timer = collectives if get_op(c.op).part == "communication" else time_fn
        if timer is not None and not skip(c.op, c.shape):
            cases.append(record(c.op, c.shape, c.dtype, timer(c.op, c.shape, c.dtype), gbps=gbps))
    return ResultDoc(
        device=device,
        software={},
        command="synthetic",
        suite="model",
        complete=True,
        spec=spec,
        cases=cases,
    )


def roofline_seconds(op: str, shape: Shape, dtype: str, spec: GpuSpec) -> float:
    """max(FLOPs / dense peak, bytes / bandwidth) of an op at a shape on a GPU."""
    o = get_op(op)
    return roofline(spec, dtype, o.flops(shape), o.bytes(shape, dtype), o.tf32).seconds


def at_fraction(spec_key: str, share: float):
    """Times at `share` of a spec's roofline for each op."""
    return lambda op, shape, dtype: roofline_seconds(op, shape, dtype, SPECS[spec_key]) / share


def at_half_roofline(spec_key: str):
    """Times at 50% of a spec's roofline for each op."""
    return at_fraction(spec_key, 0.5)
