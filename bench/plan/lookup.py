"""The time of an op at a shape, taken from result files or the op-time model, and where that
figure comes from.

In order of preference, measured over assumed (docs/estimate.md):

1. measured: the fastest correct, really timed implementation at exactly that shape and dtype
   (interpreted Triton runs and failed cases never count);
2. interpolated: linear in the op's work (FLOPs; a collective's bytes) between the nearest
   measured shapes on either side along one of the op's axes (a GEMM's M, attention's batch or
   sequence, decode's batch or context, a collective's message size), every other shape key
   equal;
3. scaled: the op-time model (bench.plan.optime) on the GPU's spec-table entry, scaled by how
   the files' most similar case of the same op and dtype measured against the model there;
4. reference: the same, scaled by a case of a reference file of another GPU (results/, committed
   with its card, date and command) against the model on that GPU;
5. modelled: the op-time model alone, every parameter sourced; collectives by their own model
   (bench.plan.network).

With no spec entry (a CPU result file) there is no model, and a shape that was neither measured
nor bracketed is an error that says how to measure it. A case measured on several ranks counts
at its median rank's time. Cases of ops this version does not know are left out: no model step
uses them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops import OPS, get_op
from bench.plan import network, optime
from bench.record.hardware import GpuSpec, projection, spec_of
from bench.record.schema import CaseResult, ResultDoc, Shape, shape_key


@dataclass(frozen=True)
class Timed:
    """An op's time at one shape and where it came from."""

    seconds: float
    source: str  # "measured", "interpolated", "scaled", "reference" or "modelled"
    detail: str  # the case(s) or the model's terms and sources it rests on, for notes
    impl: str | None = None  # the implementation whose times it rests on
    bound: str = ""  # a modelled time's: "latency", "compute", "memory" or "network"


def label(op: str, shape: Shape) -> str:
    return f"{op} {get_op(op).label(shape)}"


def model_time(
    op: str, shape: Shape, dtype: str, spec: GpuSpec, engine: str = "nccl"
) -> optime.Modelled:
    """The op-time model's time for an op at a shape on a GPU; a collective's by the network
    model, over the `engine` a serving engine would run it with."""
    o = get_op(op)
    if o.part == "communication":
        return network.collective_time(o, shape, spec, engine)
    return optime.op_time(o, shape, dtype, spec)


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


@dataclass(frozen=True)
class Reached:
    """How a measured case compares with the op-time model on its own GPU."""

    point: Point
    ratio: float  # measured seconds / modelled seconds
    where: str = ""  # the device of a reference file


class Measurements:
    """The comparable cases of one or more result files, fastest per shape, as times on one GPU.

    Without `target` the files must come from one device and times are as measured. With a
    `target` spec, each case measured on another GPU is projected: its time scaled by the ratio
    of the target's roofline to its own device's for that op, shape and dtype (same efficiency).
    With no files, every time is the op-time model's, scaled by a reference file's where one
    measured the op. `references` (reference result files of GPUs in the spec table) lend how
    their cases compared with the model, never times. `engine` is the collectives' (network).
    """

    def __init__(
        self,
        docs: list[ResultDoc],
        *,
        target: GpuSpec | None = None,
        impl: str | None = None,
        hint: str = "",
        references: list[ResultDoc] | None = None,
        engine: str = "nccl",
    ) -> None:
        """`impl` forces an implementation for every op that has one of that name; `hint` ends
        the error for a shape that cannot be estimated (e.g. the command that measures it)."""
        self.docs = docs
        own = spec_of(docs[0].device, docs[0].spec) if docs else None
        self.spec: GpuSpec | None = target or own
        self.hint, self.engine = hint, engine
        self._known: dict[tuple, Timed] = {}
        self.best = _fastest(docs, impl, target)
        self.reference: dict[tuple[str, str], list[Reached]] = {}
        for doc in references or []:
            spec = spec_of(doc.device, doc.spec)
            for point in _fastest([doc], impl, None).values() if spec else ():
                c = point.case
                if get_op(c.op).part == "communication":  # links differ, cards aside
                    continue
                with contextlib.suppress(BenchError):  # a dtype the model has no peak for
                    model = model_time(c.op, c.shape, c.dtype, spec)
                    known = self.reference.setdefault((c.op, c.dtype), [])
                    known.append(Reached(point, point.seconds / model.seconds, doc.device.name))

    def time(self, op: str, shape: Shape, dtype: str) -> Timed:
        """An op's time at a shape: _time's, kept (the simulator asks for the same shapes
        many times)."""
        key = (op, dtype, shape_key(shape))
        if key not in self._known:
            self._known[key] = self._time(op, shape, dtype)
        return self._known[key]

    def _time(self, op: str, shape: Shape, dtype: str) -> Timed:
        """Measured, else interpolated, else the op-time model (scaled by how the files' or a
        reference file's most similar case compared with it), else an error."""
        point = self.best.get((op, dtype, shape_key(shape)))
        if point is not None:
            return Timed(point.seconds, "measured", point.describe(), point.case.impl)
        timed = self._interpolate(op, shape, dtype)
        if timed is not None:
            return timed
        if self.spec is not None:
            return self._modelled(op, shape, dtype)
        where = ", ".join(sorted({d.device.name for d in self.docs})) or "no file"
        raise BenchError(
            f"the results lack {label(op, shape)} {dtype}: not measured, no measured shapes on "
            f"both sides to interpolate, and {where} has no spec entry for the op-time "
            f"model{'; ' + self.hint if self.hint else ''}"
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

    def _modelled(self, op: str, shape: Shape, dtype: str) -> Timed:
        """The op-time model's time, scaled by the files' most similar case of the same op and
        dtype as it measured against the model, else a reference file's; a collective's from
        the network model alone."""
        model = model_time(op, shape, dtype, self.spec, self.engine)
        if get_op(op).part == "communication":
            return Timed(model.seconds, "modelled", model.detail, bound="network")
        here = [
            Reached(p, p.seconds / model_time(op, p.shape, dtype, self.spec).seconds)
            for p in self._same_op(op, dtype)
        ]
        for source, known in (("scaled", here), ("reference", self.reference.get((op, dtype)))):
            if known:
                e = _most_similar(op, shape, known)
                where = f" on {e.where} (a reference file)" if e.where else ""
                detail = f"the model × {e.ratio:.2f}, as measured at {e.point.describe()}{where}"
                impl = e.point.case.impl
                return Timed(model.seconds * e.ratio, source, detail, impl, model.bound)
        return Timed(model.seconds, "modelled", model.detail, bound=model.bound)


def _most_similar(op: str, shape: Shape, known: list[Reached]) -> Reached:
    """The most similar measured case: the same non-axis shape keys if any case has them, then
    the nearest in work (log scale)."""
    free = {k for group in get_op(op).axes for k in group}
    fixed = {k: v for k, v in shape.items() if k not in free}
    similar = [e for e in known if {k: e.point.shape.get(k) for k in fixed} == fixed] or known
    want = math.log(max(get_op(op).work(shape), 1.0))
    return min(similar, key=lambda e: abs(math.log(max(e.point.work, 1.0)) - want))


def _fastest(docs: list[ResultDoc], impl: str | None, target: GpuSpec | None) -> dict[tuple, Point]:
    """Each problem's fastest implementation, each at its median over the ranks that measured
    it (a run under torchrun measures every case on every GPU)."""
    per_rank: dict[tuple, list[Point]] = {}
    for doc in docs:
        source = spec_of(doc.device, doc.spec)
        for case in doc.cases:
            if case.op not in OPS or not case.comparable or not _wanted(case, impl):
                continue
            if point := _point(case, source, target):
                per_rank.setdefault((*case.problem, case.impl), []).append(point)
    best: dict[tuple, Point] = {}
    for points in per_rank.values():
        point = sorted(points, key=lambda p: p.seconds)[(len(points) - 1) // 2]
        held = best.get(point.case.problem)
        if held is None or point.seconds < held.seconds:
            best[point.case.problem] = point
    return best


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
