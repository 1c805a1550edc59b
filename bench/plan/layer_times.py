"""One decoder layer's step laid bare (`tokbench step`), as LLM-Viewer's layer table: each op
of one layer and the layer's collectives at a step of `tokens` tokens over `batch` sequences
with `context` tokens already cached, with its time, where the time comes from, what bounds it
and the FLOP/s and bytes/s that time means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import BenchError
from bench.measure.ops import get_op
from bench.measure.ops.step import ModelStep, OpUse
from bench.plan import optime
from bench.plan.lookup import model_time
from bench.plan.models import check_context
from bench.plan.throughput import StepModel, source_notes
from bench.record.schema import Shape


@dataclass(frozen=True)
class OpTime:
    """One op's use in one layer (a use a layer makes twice is two rows)."""

    op: str
    role: str
    shape: Shape
    dtype: str
    seconds: float
    source: str  # bench.plan.lookup's: measured, interpolated, scaled, reference, modelled
    bound: str  # "compute", "memory", "latency" or "network"; "" where no model says
    flops: float
    bytes: float
    share: float = 1.0  # the share of the layers that run it (windowed attention: some)

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds

    def as_dict(self) -> dict[str, object]:
        return {
            "op": self.op, "role": self.role, "shape": self.shape, "dtype": self.dtype,
            "seconds": self.seconds, "source": self.source, "bound": self.bound,
            "flops_per_s": self.flops_per_s, "bytes_per_s": self.bytes_per_s,
            "share_of_layers": self.share,
        }  # fmt: skip


@dataclass
class LayerTimes:
    """A layer's ops at one step and what they add up to."""

    step: ModelStep
    gpu: str
    rows: list[OpTime]
    notes: list[str] = field(default_factory=list)

    @property
    def layer_seconds(self) -> float:
        """One layer's time: each op once per use, windowed layers' attention by their share."""
        return sum(row.seconds * row.share for row in self.rows)

    def as_dict(self) -> dict[str, object]:
        return {
            "gpu": self.gpu,
            "phase": self.step.phase,
            "tokens": self.step.tokens,
            "batch": self.step.batch,
            "context": self.step.context - self.step.seq,
            "tp": self.step.tp,
            "ops": [row.as_dict() for row in self.rows],
            "layer_seconds": self.layer_seconds,
            "notes": self.notes,
        }


def step_of(step_model: StepModel, tokens: int, batch: int, context: int) -> ModelStep:
    """The step of `tokens` new tokens over `batch` sequences with `context` cached each: a
    decode step when each sequence adds one token to a cache, else a prefill (chunk)."""
    if tokens < 1 or batch < 1 or context < 0:
        raise BenchError(
            f"--tokens and --batch must be at least 1 and --context at least 0, got {tokens}, "
            f"{batch} and {context}"
        )
    if tokens % batch:
        raise BenchError(f"--tokens {tokens} must split evenly over --batch {batch} sequences")
    seq = tokens // batch
    check_context(step_model.setup.model, context, seq, f"--context {context:,} + {seq:,} new")
    phase = "decode" if seq == 1 and context > 0 else "prefill"
    return step_model.setup.step(phase, batch, seq, context + seq)


def layer_times(step_model: StepModel, tokens: int, batch: int = 1, context: int = 0) -> LayerTimes:
    """Every op of one layer at a step, and the layer's collectives."""
    step = step_of(step_model, tokens, batch, context)
    rows = []
    for use in step_model.setup.uses(step):
        if use.role == "lm_head":
            continue
        per_layer = use.count / step.layers
        repeats = round(per_layer) if per_layer >= 1 else 1
        row = _row(step_model, use, share=min(per_layer, 1.0))
        rows += [row] * repeats
    return LayerTimes(step, step_model.target.name, rows, source_notes(step_model))


def _row(step_model: StepModel, use: OpUse, share: float) -> OpTime:
    op = get_op(use.op)
    timed = step_model.op_time(use)
    bound = timed.bound
    spec = step_model.target.spec
    if not bound and spec is not None:  # measured: the model says what bounds it
        bound = model_time(use.op, use.shape, use.dtype, spec, step_model.setup.collectives).bound
    nbytes, flops = op.bytes(use.shape, use.dtype), op.flops(use.shape)
    return OpTime(
        use.op, use.role, use.shape, use.dtype, timed.seconds, timed.source, bound, flops,
        nbytes, share,
    )  # fmt: skip


def roofline_shares(step_model: StepModel, tokens: list[int]) -> dict[str, list[tuple[int, float]]]:
    """Each op of a layer's predicted share of its spec-sheet roofline at prefill steps of
    these token counts (one sequence, nothing cached), by role (an op a layer runs twice once);
    a collective's bus bandwidth over one direction of its link."""
    spec = step_model.target.spec
    if spec is None:
        raise BenchError("the roofline shares need a GPU of the spec table: pass --gpu KEY")
    shares: dict[str, list[tuple[int, float]]] = {}
    for count in tokens:
        for row in {row.role: row for row in layer_times(step_model, count).rows}.values():
            op = get_op(row.op)
            if op.part == "communication":
                moved = op.bus_factor(row.shape["world"]) * row.shape["bytes"]
                share = moved / row.seconds / (spec.interconnect_gbs / 2 * 1e9)
            else:
                share = optime.roofline_time(op, row.shape, row.dtype, spec) / row.seconds
            shares.setdefault(row.role, []).append((count, share))
    return shares
