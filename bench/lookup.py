"""The time of an op at a shape, taken from result files, and where that figure comes from.

In order of preference (DESIGN.md, "measured over assumed"):

1. measured: the fastest correct, really timed implementation at exactly that shape and dtype
   (interpreted Triton runs and failed cases never count);
2. interpolated: linear in the op's work (FLOPs) between the nearest measured shapes on either
   side along one axis (a GEMM's M, attention's batch or sequence, decode's batch or context),
   every other shape key equal;
3. roofline: max(FLOPs / peak, bytes / bandwidth) on the device's spec-table entry, divided by
   the efficiency measured at the most similar shape of the same op and dtype.

With no spec entry (a CPU result file) there is no roofline, and a shape that was neither
measured nor bracketed is an error that says how to measure it.

Result files may also hold an `allreduce` collective (shape keys `bytes`: message size and
`world`: ranks); its time is interpolated in the message size like any other op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import BenchError
from bench.hardware import SPECS, GpuSpec, peak_tflops
from bench.ops import OPS, Shape
from bench.results import CaseResult, ResultDoc

# Shape keys an op's time is interpolated along; keys grouped in a tuple move together
# (a prefill's query and key lengths are the same prompt).
AXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "matmul": (("M",),),
    "attention": (("B",), ("Sq", "Skv")),
    "decode": (("B",), ("L",)),
    "allreduce": (("bytes",),),
}


@dataclass(frozen=True)
class Timed:
    """An op's time at one shape and where it came from."""

    seconds: float
    source: str  # "measured", "interpolated" or "roofline"
    detail: str  # the case(s) it rests on, for notes
    impl: str | None = None  # the implementation whose times it rests on


def work(op: str, shape: Shape) -> float:
    """What an op's time scales with: FLOPs for registry ops, message bytes for collectives."""
    if op in OPS:
        return OPS[op].flops(shape)
    return float(shape.get("bytes", 0))


def label(op: str, shape: Shape) -> str:
    return f"{op} {OPS[op].label(shape) if op in OPS else shape}"


def roofline_seconds(op: str, shape: Shape, dtype: str, spec: GpuSpec) -> float:
    """Lower bound on an op's time on a GPU from its spec sheet: compute or memory, whichever
    takes longer."""
    peak = peak_tflops(spec, dtype)
    if peak is None:
        raise BenchError(
            f"{spec.name} has no {dtype} peak in the spec table; use another precision"
        )
    flops = OPS[op].flops(shape)
    return max(flops / (peak * 1e12), OPS[op].bytes(shape, dtype) / (spec.bandwidth_gbs * 1e9))


def _key(shape: Shape) -> tuple:
    return tuple(sorted(shape.items()))


@dataclass(frozen=True)
class Point:
    """A comparable case and its time on the GPU the estimate is for."""

    case: CaseResult
    seconds: float
    scale: float = 1.0  # spec-sheet projection factor applied to the measured time

    @property
    def shape(self) -> Shape:
        return self.case.shape

    def describe(self) -> str:
        c = self.case
        scaled = f" ×{self.scale:.2f}" if self.scale != 1.0 else ""
        return f"{label(c.op, c.shape)} {c.dtype} {c.impl}{scaled}"


class Measurements:
    """The comparable cases of one or more result files, fastest per shape, as times on one GPU.

    Without `target` the files must come from one device and times are as measured. With a
    `target` spec, each case measured on another GPU is projected: its time scaled by the ratio
    of the target's roofline to its own device's for that op, shape and dtype (same efficiency).
    """

    def __init__(
        self,
        docs: list[ResultDoc],
        *,
        target: GpuSpec | None = None,
        impl: str | None = None,
        hint: str = "",
    ) -> None:
        """`impl` forces an implementation for every op that has one of that name; `hint` ends
        the error for a shape that cannot be estimated (e.g. the command that measures it)."""
        self.docs = docs
        own = SPECS.get(docs[0].spec) if docs[0].spec else None
        self.spec: GpuSpec | None = target or own
        self.hint = hint
        self.best: dict[tuple[str, str, tuple], Point] = {}
        for doc in docs:
            source = SPECS.get(doc.spec) if doc.spec else None
            for case in doc.cases:
                if not case.comparable or not _wanted(case, impl):
                    continue
                point = _point(case, source, target)
                key = (case.op, case.dtype, _key(case.shape))
                held = self.best.get(key)
                if point and (held is None or point.seconds < held.seconds):
                    self.best[key] = point

    def has(self, op: str) -> bool:
        return any(key[0] == op and p.seconds < math.inf for key, p in self.best.items())

    def time(self, op: str, shape: Shape, dtype: str) -> Timed:
        """Measured, else interpolated, else roofline × measured efficiency, else an error."""
        point = self.best.get((op, dtype, _key(shape)))
        if point is not None:
            return Timed(point.seconds, "measured", point.describe(), point.case.impl)
        timed = self._interpolate(op, shape, dtype)
        if timed is not None:
            return timed
        if self.spec is not None and op in OPS:
            return self._roofline(op, shape, dtype)
        where = ", ".join(sorted({d.device.name for d in self.docs}))
        raise BenchError(
            f"the results lack {label(op, shape)} {dtype}: not measured, no measured shapes on "
            f"both sides to interpolate, and {where} has no spec entry for a roofline "
            f"fallback{'; ' + self.hint if self.hint else ''}"
        )

    def _same_op(self, op: str, dtype: str) -> list[Point]:
        return [p for (o, dt, _), p in self.best.items() if o == op and dt == dtype]

    def _interpolate(self, op: str, shape: Shape, dtype: str) -> Timed | None:
        want = work(op, shape)
        for axis in AXES.get(op, ()):
            fixed = {k: v for k, v in shape.items() if k not in axis}
            line = [
                p
                for p in self._same_op(op, dtype)
                if {k: v for k, v in p.shape.items() if k not in axis} == fixed
            ]
            below = [p for p in line if work(op, p.shape) <= want]
            above = [p for p in line if work(op, p.shape) >= want]
            if not below or not above:
                continue
            lo = max(below, key=lambda p: work(op, p.shape))
            hi = min(above, key=lambda p: work(op, p.shape))
            w_lo, w_hi = work(op, lo.shape), work(op, hi.shape)
            t = lo.seconds
            if w_hi > w_lo:
                t += (hi.seconds - lo.seconds) * (want - w_lo) / (w_hi - w_lo)
            detail = f"between {lo.describe()} and {hi.describe()}"
            return Timed(t, "interpolated", detail, lo.case.impl)
        return None

    def _roofline(self, op: str, shape: Shape, dtype: str) -> Timed:
        """Roofline time over the efficiency measured at the most similar case: the same
        non-axis shape keys if any such case exists, then the nearest in work (log scale)."""
        points = self._same_op(op, dtype)
        if not points:
            raise BenchError(
                f"the results have no measured {op} {dtype} case to take an efficiency from for "
                f"{label(op, shape)}{'; ' + self.hint if self.hint else ''}"
            )
        free = {k for group in AXES.get(op, ()) for k in group}
        fixed = {k: v for k, v in shape.items() if k not in free}
        similar = [p for p in points if {k: p.shape.get(k) for k in fixed} == fixed] or points
        want = math.log(max(work(op, shape), 1.0))
        nearest = min(similar, key=lambda p: abs(math.log(max(work(op, p.shape), 1.0)) - want))
        efficiency = roofline_seconds(op, nearest.shape, dtype, self.spec) / nearest.seconds
        seconds = roofline_seconds(op, shape, dtype, self.spec) / efficiency
        detail = f"{efficiency:.0%} of roofline as measured at {nearest.describe()}"
        return Timed(seconds, "roofline", detail, nearest.case.impl)


def _point(case: CaseResult, source: GpuSpec | None, target: GpuSpec | None) -> Point | None:
    """The case as a time on the target GPU, or None when the target lacks its dtype."""
    seconds = case.timing.median_ms / 1e3
    if target is None or (source is not None and source.key == target.key):
        return Point(case, seconds)
    if case.op not in OPS:  # a collective: its time does not carry over to another GPU
        return Point(case, math.inf)
    if source is None:
        raise BenchError(f"cannot project {case.op} measured on a device without a spec entry")
    if peak_tflops(target, case.dtype) is None or peak_tflops(source, case.dtype) is None:
        return None
    scale = roofline_seconds(case.op, case.shape, case.dtype, target) / roofline_seconds(
        case.op, case.shape, case.dtype, source
    )
    return Point(case, seconds * scale, scale)


def _wanted(case: CaseResult, impl: str | None) -> bool:
    """Whether a case may be used: any implementation, or only the forced one where its op
    has an implementation of that name."""
    if impl is None or case.op not in OPS:
        return True
    names = {i.name for i in OPS[case.op].impls}
    return impl not in names or case.impl == impl
