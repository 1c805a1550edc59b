"""The time of an op at a shape, taken from result files, and where that figure comes from.

In order of preference, measured over assumed (docs/estimate.md):

1. measured: the fastest correct, really timed implementation at exactly that shape and dtype
   (interpreted Triton runs and failed cases never count);
2. interpolated: linear in the op's work (FLOPs; a collective's bytes) between the nearest
   measured shapes on either side along one of the op's axes (a GEMM's M, attention's batch or
   sequence, decode's batch or context, a collective's message size), every other shape key
   equal;
3. roofline: max(FLOPs / peak, bytes / bandwidth) on the device's spec-table entry, divided by
   the efficiency measured at the most similar shape of the same op and dtype.

With no spec entry (a CPU result file) there is no roofline (nor ever for a collective), and a
shape that was neither measured nor bracketed is an error that says how to measure it. A case
measured on several ranks counts at its median rank's time. Cases of ops this version does not
know are left out: no model step uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import BenchError
from bench.hardware import GpuSpec, projection, roofline, spec_of
from bench.ops import OPS, get_op
from bench.schema import CaseResult, ResultDoc, Shape, shape_key


@dataclass(frozen=True)
class Timed:
    """An op's time at one shape and where it came from."""

    seconds: float
    source: str  # "measured", "interpolated" or "roofline"
    detail: str  # the case(s) it rests on, for notes
    impl: str | None = None  # the implementation whose times it rests on


def label(op: str, shape: Shape) -> str:
    return f"{op} {get_op(op).label(shape)}"


def roofline_seconds(op: str, shape: Shape, dtype: str, spec: GpuSpec) -> float:
    """Lower bound on an op's time on a GPU from its spec sheet."""
    o = get_op(op)
    bound = roofline(spec, dtype, o.flops(shape), o.bytes(shape, dtype), o.tf32)
    if bound is None:
        raise BenchError(
            f"{spec.name} has no {dtype} peak in the spec table; use another precision"
        )
    return bound.seconds


@dataclass(frozen=True)
class Point:
    """A comparable case and its time on the GPU the estimate is for."""

    case: CaseResult
    seconds: float
    scale: float = 1.0  # spec-sheet projection factor applied to the measured time

    @property
    def shape(self) -> Shape:
        return self.case.shape

    @property
    def work(self) -> float:
        return get_op(self.case.op).work(self.case.shape)

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
        own = spec_of(docs[0].device, docs[0].spec)
        self.spec: GpuSpec | None = target or own
        self.hint = hint
        # Each implementation's time is its median over the ranks that measured it (a run
        # under torchrun measures every case on every GPU); the fastest implementation wins.
        per_rank: dict[tuple, list[Point]] = {}
        for doc in docs:
            source = spec_of(doc.device, doc.spec)
            for case in doc.cases:
                if case.op not in OPS or not case.comparable or not _wanted(case, impl):
                    continue
                if point := _point(case, source, target):
                    per_rank.setdefault((*case.problem, case.impl), []).append(point)
        self.best: dict[tuple, Point] = {}
        for points in per_rank.values():
            point = sorted(points, key=lambda p: p.seconds)[(len(points) - 1) // 2]
            held = self.best.get(point.case.problem)
            if held is None or point.seconds < held.seconds:
                self.best[point.case.problem] = point

    def time(self, op: str, shape: Shape, dtype: str) -> Timed:
        """Measured, else interpolated, else roofline × measured efficiency, else an error."""
        point = self.best.get((op, dtype, shape_key(shape)))
        if point is not None:
            return Timed(point.seconds, "measured", point.describe(), point.case.impl)
        timed = self._interpolate(op, shape, dtype)
        if timed is not None:
            return timed
        if self.spec is not None and get_op(op).part != "communication":
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
        want = get_op(op).work(shape)
        for axis in get_op(op).axes:
            fixed = {k: v for k, v in shape.items() if k not in axis}
            line = [
                p
                for p in self._same_op(op, dtype)
                if {k: v for k, v in p.shape.items() if k not in axis} == fixed
            ]
            below = [p for p in line if p.work <= want]
            above = [p for p in line if p.work >= want]
            if not below or not above:
                continue
            lo = max(below, key=lambda p: p.work)
            hi = min(above, key=lambda p: p.work)
            t = lo.seconds
            if hi.work > lo.work:
                t += (hi.seconds - lo.seconds) * (want - lo.work) / (hi.work - lo.work)
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
        free = {k for group in get_op(op).axes for k in group}
        fixed = {k: v for k, v in shape.items() if k not in free}
        similar = [p for p in points if {k: p.shape.get(k) for k in fixed} == fixed] or points
        want = math.log(max(get_op(op).work(shape), 1.0))
        nearest = min(similar, key=lambda p: abs(math.log(max(p.work, 1.0)) - want))
        efficiency = roofline_seconds(op, nearest.shape, dtype, self.spec) / nearest.seconds
        seconds = roofline_seconds(op, shape, dtype, self.spec) / efficiency
        detail = f"{efficiency:.0%} of roofline as measured at {nearest.describe()}"
        return Timed(seconds, "roofline", detail, nearest.case.impl)


def _point(case: CaseResult, source: GpuSpec | None, target: GpuSpec | None) -> Point | None:
    """The case as a time on the target GPU, or None when either GPU lacks its dtype."""
    seconds = case.timing.median_ms / 1e3
    if target is None or (source is not None and source.key == target.key):
        return Point(case, seconds)
    if source is None:
        raise BenchError(f"cannot project {case.op} measured on a device without a spec entry")
    op = get_op(case.op)
    if op.part == "communication":  # links do not scale with the GPU's roofline
        return None
    projected = projection(
        source, target, case.dtype, op.flops(case.shape), op.bytes(case.shape, case.dtype), op.tf32
    )
    return None if projected is None else Point(case, seconds * projected.scale, projected.scale)


def _wanted(case: CaseResult, impl: str | None) -> bool:
    """Whether a case may be used: any implementation, or only the forced one where its op
    has an implementation of that name."""
    if impl is None:
        return True
    names = {i.name for i in OPS[case.op].impls}
    return impl not in names or case.impl == impl
