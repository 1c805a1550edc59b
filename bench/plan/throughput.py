"""Per-GPU token throughput of a model, from the kernel times in result files or the op-time
model.

One forward step on one GPU (docs/estimate.md) is the sum of:

- its registry ops at the model's shapes (`Serving.prefill_step` / `decode_step`): the GEMMs of
  every layer, rotary, the KV-cache write, prefill or decode attention (windowed where the
  layer is), SiLU·mul or the fused MoE, the residual add + RMSNorms, with TP > 1 the two
  all-reduces of the hidden state per layer, and the LM head, each timed by bench.plan.lookup
  (measured, interpolated, or the op-time model, scaled by a measured case where there is one;
  collectives by the network model); without a spec entry (a CPU file) a memory-bound op the
  files cannot time is modelled from its bytes, and the notes say so;
- the kernels no op measures (a MoE router's softmax + top-k): their bytes, modelled alike.

Ops are summed without overlap, as a serving engine without fusion would run them; the layer
validation (bench.measure.decoder_check) measures how far that is from a real layer. Decode
tokens/s per GPU is batch / step time / TP; prefill likewise with batch × prompt length. A GPU
other than the measured one is a projection: every measured op time is scaled by the ratio of
the two spec sheets' rooflines.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bench import BenchError
from bench.measure.ops import OPS, get_op
from bench.measure.ops.base import PARTS, dtype_unsupported
from bench.measure.ops.step import OpUse
from bench.plan import optime
from bench.plan.lookup import Measurements, Timed
from bench.plan.models import DEFAULT_BATCHES, MemoryPlan, Serving, part
from bench.record import results
from bench.record.hardware import GpuSpec, get_spec, spec_of
from bench.record.schema import DeviceInfo, EstimateRecord, EstimateRow, ResultDoc
from bench.record.units import fmt_bytes, plural

if TYPE_CHECKING:
    from bench.measure.timing import TimerConfig

# The parts of a step the tables show: the registry's parts of a model step, and the LM head
# (a GEMM run once per step, not per layer) on its own.
STEP_PARTS = {**PARTS, "lm_head": "LM head"}
# Provenances of a step's time, with their short names for table cells.
SOURCES = {
    "measured": "meas.",
    "interpolated": "interp.",
    "scaled": "scaled",
    "reference": "ref.",
    "modelled": "model",
}


@dataclass(frozen=True)
class Target:
    """The GPU an estimate is for, and whether it is the measured one."""

    name: str
    spec: GpuSpec | None
    memory: float  # bytes per GPU
    projected: bool  # some measurements come from another GPU, scaled by spec sheets
    measured_on: str  # the device(s) the result files were measured on
    cuda: bool = True  # a GPU (a serving engine keeps its reserve), not a CPU

    def memory_plan(self, setup: Serving) -> MemoryPlan:
        return setup.memory_plan(self.memory, self.cuda)


def resolve_target(docs: list[ResultDoc], paths: list[str], gpu: str | None) -> Target:
    """The measured device, or with `gpu` a spec-table GPU (a projection unless every file was
    measured on it; from its spec sheet alone without files). Files from different devices
    only combine when projected onto one GPU."""
    names = list(dict.fromkeys(doc.device.name for doc in docs))
    if not docs:
        if gpu is None:
            raise BenchError(
                "name a GPU (--gpu KEY, e.g. h100-sxm) to estimate from its spec sheet, or give "
                "result files (--results FILE) measured on it"
            )
        spec = _spec(gpu)
        return Target(spec.name, spec, spec.memory_bytes, False, "")
    first = docs[0]
    if gpu is None:
        if len(names) > 1:
            detail = "; ".join(f"{p}: {d.device.name}" for p, d in zip(paths, docs, strict=True))
            raise BenchError(
                f"result files from different devices ({detail}); estimate one device at a "
                "time, or pass --gpu KEY to project them all onto one spec"
            )
        spec = spec_of(first.device, first.spec)
        cuda = first.device.kind == "cuda"
        memory = float(first.device.memory_bytes)
        return Target(first.device.name, spec, memory, False, names[0], cuda)
    spec = _spec(gpu)
    specs = [spec_of(doc.device, doc.spec) for doc in docs]
    for path, doc, own in zip(paths, docs, specs, strict=True):
        if own is None:
            raise BenchError(
                f"{path} was measured on {doc.device.name}, which has no spec-table entry to "
                f"project from; --gpu {gpu} needs result files from GPUs in the spec table, or "
                f"none (drop --results to estimate {spec.name} from its spec sheet)"
            )
    if all(own.key == spec.key for own in specs) and len(names) == 1:
        return Target(first.device.name, spec, float(first.device.memory_bytes), False, names[0])
    return Target(spec.name, spec, spec.memory_bytes, True, ", ".join(names))


def _spec(gpu: str) -> GpuSpec:
    try:
        return get_spec(gpu)
    except ValueError as e:
        raise BenchError(str(e)) from None


@dataclass
class Step:
    """One forward step on one GPU: its time by part and by provenance."""

    phase: str  # "prefill" or "decode"
    batch: int
    context: int  # prefill: prompt length; decode: context length
    tokens: int  # tokens the step produces work for: batch × prompt, or batch
    tp: int
    parts: dict[str, float] = field(default_factory=dict)  # seconds by STEP_PARTS key
    sources: dict[str, float] = field(default_factory=dict)  # seconds by SOURCES key

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    @property
    def tokens_per_s(self) -> float:
        """Per GPU: a TP group of `tp` GPUs shares the step."""
        return self.tokens / self.seconds / self.tp

    def add(self, part: str, seconds: float, source: str) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds
        self.sources[source] = self.sources.get(source, 0.0) + seconds


class StepModel:
    """Step times of one served model on one target GPU, from measurements."""

    def __init__(self, setup: Serving, measurements: Measurements, target: Target) -> None:
        self.setup, self.meas, self.target = setup, measurements, target
        self.notes: dict[str, None] = {}  # ordered, without duplicates
        # The efficiencies not measured in the files (a reference file's, the defaults), each
        # with the ops that rest on it.
        self.assumed: dict[str, dict[str, None]] = {}

    def prefill(self, batch: int, isl: int | None = None) -> Step:
        isl = isl or self.setup.isl
        step = Step("prefill", batch, isl, batch * isl, self.setup.tp)
        return self._fill(step, self.setup.prefill_step(batch, isl))

    def decode(self, batch: int, context: int | None = None) -> Step:
        context = context or self.setup.context
        step = Step("decode", batch, context, batch, self.setup.tp)
        return self._fill(step, self.setup.decode_step(batch, context))

    def op_time(self, use: OpUse) -> Timed:
        """One op's time on the target GPU (projected already by the measurements if needed).
        Without a spec entry (a CPU file), a memory-bound op the files cannot time is modelled
        from its bytes at the bandwidth the files reached."""
        op = get_op(use.op)
        try:
            timed = self.meas.time(use.op, use.shape, use.dtype)
        except BenchError:
            if op.part == "memory":
                note = f"{use.op} not measured in the files: modelled from its bytes, as below"
                self.notes[note] = None
                seconds = self._bytes_time(op.bytes(use.shape, use.dtype))
                return Timed(seconds, "modelled", "bytes", bound="memory")
            if op.part == "communication":
                raise BenchError(
                    f"TP {self.setup.tp} needs {use.op} times: the files hold none measured on "
                    f"{use.shape['world']} ranks at this size, and {self.target.name} has no "
                    f"spec entry to model them from; measure one with torchrun --nproc-per-node "
                    f"{use.shape['world']} -m bench run --op {use.op}"
                ) from None
            raise
        if op.part == "communication" and timed.source != "modelled":
            world = use.shape["world"]
            self.notes[f"{use.op}: from the one measured on {world} ranks ({timed.source})"] = None
        if timed.source in ("modelled", "reference"):
            self.assumed.setdefault(timed.detail, {})[use.op] = None
        return timed

    def _fill(self, step: Step, uses: list[OpUse]) -> Step:
        self.add_ops(step, uses)
        self.add_modelled(step)
        return step

    def add_ops(self, step: Step, uses: list[OpUse]) -> None:
        """Add each op's time, `count` times, to the step's parts."""
        for use in uses:
            timed = self.op_time(use)
            step.add(part(use), timed.seconds * use.count, timed.source)

    def add_modelled(self, step: Step) -> None:
        """Add the kernels no op measures, for the step's tokens, to its memory-bound part."""
        kernels = self.setup.modelled_kernels(step.tokens)
        if kernels:
            per_layer = sum(self._bytes_time(nbytes, step.tokens) for _, nbytes in kernels)
            moe_layers = self.setup.model.layers - self.setup.model.dense_layers
            step.add("memory", per_layer * moe_layers, "modelled")
            self.notes[
                f"modelled per layer, no op measures it ({', '.join(k for k, _ in kernels)}): "
                f"{self._bytes_note()}"
            ] = None

    def _bytes_time(self, nbytes: float, programs: float | None = None) -> float:
        """A memory-bound kernel no file times: the op-time model's on a GPU of the spec table;
        else (a CPU) its bytes at the most any measured case reached, but no less than the
        shortest measured case."""
        if self.target.spec is not None:
            spec, share = self.target.spec, optime.ELEMENTWISE_SHARE
            return optime.streaming_time(nbytes, programs, spec, share).seconds
        fastest = max(p.case.gbps for p in self.meas.best.values() if p.case.gbps)
        return max(nbytes / (fastest * 1e9), self._shortest[0])

    def _bytes_note(self) -> str:
        if self.target.spec is not None:
            share, spec = optime.ELEMENTWISE_SHARE, self.target.spec
            return optime.streaming_time(0.0, None, spec, share).detail
        fastest = max(p.case.gbps for p in self.meas.best.values() if p.case.gbps)
        floor, why = self._shortest
        return (
            f"bytes at {fastest:.0f} GB/s, the most any measured case reached (no spec entry), "
            f"each at least {floor * 1e6:.1f} µs ({why})"
        )

    @cached_property
    def _shortest(self) -> tuple[float, str]:
        """The shortest time any measured case took, and which."""
        shortest = min(self.meas.best.values(), key=lambda p: p.case.timing.median_ms)
        return (
            shortest.case.timing.median_ms / 1e3,
            f"the shortest measured case, {shortest.describe()}",
        )


@dataclass(frozen=True)
class Validation:
    """Measured against estimated time of one decoder layer at one step (the decoder check)."""

    phase: str
    batch: int
    context: int
    measured_s: float
    estimated_s: float

    @property
    def ratio(self) -> float:
        return self.measured_s / self.estimated_s


@dataclass
class Throughput:
    """A whole estimate: the saved record and what the tables show."""

    record: EstimateRecord
    setup: Serving
    target: Target
    plan: MemoryPlan
    prefill: list[Step]
    decode: list[Step]
    step_model: StepModel
    budget_batch: int  # the prefill batch at the step's token budget: the serving mix's

    @property
    def decode_cap(self) -> int:
        """The largest decode batch estimated: min(memory fit, max_batch)."""
        return self.decode[-1].batch

    @property
    def capped(self) -> bool:
        """Whether the largest decode batch is the scheduler cap, not the memory limit."""
        return self.decode_cap < self.plan.max_batch


def shares(sources: dict[str, float], short: bool = False) -> list[str]:
    """Each provenance with its share of the time, largest first ('measured 93%'); a lone one
    by name only. `short` uses the SOURCES abbreviations."""
    total = sum(sources.values())
    ranked = sorted(((s / total, name) for name, s in sources.items() if s > 0), reverse=True)
    if len(ranked) == 1:
        return [ranked[0][1]]
    names = SOURCES if short else {}
    return [
        f"{names.get(n, n)} {share:.0%}" if share >= 0.005 else f"{names.get(n, n)} <1%"
        for share, n in ranked
    ]


def provenance(sources: dict[str, float], target: Target) -> str:
    """'measured' or 'measured 93% · interpolated 5% · modelled 2%', prefixed for projections."""
    text = " · ".join(shares(sources))
    if target.projected:
        return f"{projection_prefix(target.name)}{text}"
    return text


def projection_prefix(gpu: str) -> str:
    return f"projection to {gpu} (spec sheets) of "


def _batches(
    requested: list[int] | None, meas: Measurements, setup: Serving, plan: MemoryPlan, cap: int
) -> list[int]:
    """Requested batches (each must fit memory and the cap), else those the file measured decode
    at for this model, else DEFAULT_BATCHES; defaults beyond the cap are dropped."""
    if requested:
        for b in requested:
            if b < 1:
                raise BenchError(f"--batch must be at least 1, got {b}")
            if b > plan.max_batch:
                raise BenchError(
                    f"batch {b} does not fit: {plan.seq_tokens} tokens per sequence need "
                    f"{fmt_bytes(b * plan.seq_bytes)} of KV cache beside "
                    f"{fmt_bytes(plan.weights)} of weights in {fmt_bytes(plan.usable)} usable; "
                    f"the largest batch that fits is {plan.max_batch}"
                )
            if b > cap:
                raise BenchError(f"--batch {b} exceeds --max-batch {cap}")
        return sorted(set(requested))
    measured = {
        batch
        for tp, phase, batch, _, context in measured_steps(setup, meas.docs)
        if (tp, phase, context) == (setup.tp, "decode", setup.context)
    }
    return sorted(b for b in measured or DEFAULT_BATCHES if b <= cap)


def _check_impl(impl: str | None, docs: list[ResultDoc], paths: list[str]) -> None:
    if impl is None:
        return
    if not docs:
        raise BenchError(
            f"--impl {impl} picks among the result files' implementations: give --results"
        )
    present = sorted({c.impl for doc in docs for c in doc.cases if c.op in OPS})
    if impl not in present:
        raise BenchError(
            f"--impl {impl}: no case in {', '.join(paths)} ran it; implementations there: "
            f"{', '.join(present) or 'none'}"
        )


def measured_steps(setup: Serving, docs: list[ResultDoc]) -> set[tuple[int, str, int, int, int]]:
    """(TP, phase, batch, new tokens per sequence, context) of the steps of this served model,
    at any TP degree it allows, whose attention the files measured: each comparable case whose
    op reads a step off its shape (Op.step_of) and would run that shape in that step."""
    tps = []
    for tp in range(1, setup.model.heads + 1):
        with contextlib.suppress(BenchError):  # a degree that does not shard this model
            tps.append(dataclasses.replace(setup, tp=tp))
    found = set()
    for doc in docs:
        for case in doc.cases:
            if case.op not in OPS or not case.comparable:
                continue
            op = OPS[case.op]
            where = op.step_of(op.complete(case.shape))
            for served in tps if where else ():
                uses = op.step_uses(served.step(*where))
                if any(u.shape == op.complete(case.shape) for u in uses):
                    found.add((served.tp, *where))
    return found


def _joined(values: set) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "none"


def measured_summary(setup: Serving, docs: list[ResultDoc], paths: list[str]) -> str:
    """What the files measured of this model's suite: GEMM dtypes, and the TP degrees, prompt
    lengths and batches, decode contexts and batches of the steps they measured."""
    dtypes = {
        c.dtype for doc in docs for c in doc.cases
        if c.comparable and c.op in OPS and OPS[c.op].part == "gemm"
    }  # fmt: skip
    steps = measured_steps(setup, docs)
    name, where = setup.model.name, ", ".join(paths)
    if not steps:
        return f"{where} has no {name} attention cases (GEMM dtypes: {_joined(dtypes)})"

    def of(phase: str, index: int) -> set[int]:
        return {step[index] for step in steps if step[1] == phase}

    tps = {step[0] for step in steps}
    return (
        f"{where} has for {name}: GEMM dtypes {_joined(dtypes)}; TP {_joined(tps)}; "
        f"prompt lengths (isl) {_joined(of('prefill', 3))} at prefill batches "
        f"{_joined(of('prefill', 2))}; decode contexts (isl + osl/2) {_joined(of('decode', 4))} "
        f"at batches {_joined(of('decode', 2))}"
    )


def _hint(model_arg: str, setup: Serving, docs: list[ResultDoc], paths: list[str]) -> str:
    """The end of a missing-shape error: what the files have, and how to measure what is not."""
    run = (
        f"tokbench run --model {model_arg} --tp {setup.tp} --precision {setup.precision} "
        f"--isl {setup.isl} --osl {setup.osl}"
    )
    if not docs:
        return f"measure them with: {run}"
    have = measured_summary(setup, docs, paths)
    if setup.precision == "fp8" and all(dtype_unsupported("fp8", d.device) for d in docs):
        devices = ", ".join(sorted({d.device.name for d in docs}))
        return (
            f"{have}; fp8 needs a GPU of compute capability ≥ 8.9, which {devices} is not: "
            f"measure on one with: {run}"
        )
    return f"{have}; measure them with: {run}"


def _kept(plan: MemoryPlan) -> str:
    """What the engine keeps of a GPU's memory, in words."""
    return (
        f"of {fmt_bytes(plan.memory)}, {plan.workspace_fraction:.0%} kept by the engine and "
        f"{fmt_bytes(plan.reserved)} for the CUDA context and graphs and the activations"
    )


def step_model_for(
    setup: Serving,
    docs: list[ResultDoc],
    paths: list[str],
    *,
    gpu: str | None = None,
    impl: str | None = None,
    model_arg: str | None = None,
    references: list[ResultDoc] | None = None,
    fit: bool = True,
) -> StepModel:
    """The step-time model of a served model on the files' device (or `gpu`), once the model
    is known to fit it (unless `fit` is false: a single step's times need no fit)."""
    _check_impl(impl, docs, paths)
    target = resolve_target(docs, paths, gpu)
    plan = target.memory_plan(setup)
    if fit and plan.max_batch < 1:
        why = (
            f"{fmt_bytes(plan.weights)} of weights per GPU and one sequence's KV cache "
            f"({fmt_bytes(plan.seq_bytes)}) exceed {fmt_bytes(plan.usable)} usable "
            f"({_kept(plan)}); raise --tp or lower --precision"
            if plan.usable > 0
            else f"nothing is left for weights and KV cache ({_kept(plan)}); lower --workspace"
        )
        raise BenchError(
            f"{setup.model.name} at {setup.layout} in {setup.precision} does not fit "
            f"{target.name}: {why}"
        )
    hint = _hint(model_arg or setup.model.name, setup, docs, paths)
    meas = Measurements(
        docs, target=target.spec if gpu else None, impl=impl, hint=hint, references=references,
        engine=setup.collectives,
    )  # fmt: skip
    return StepModel(setup, meas, target)


def estimate_throughput(
    setup: Serving,
    docs: list[ResultDoc],
    paths: list[str],
    *,
    batches: list[int] | None = None,
    gpu: str | None = None,
    impl: str | None = None,
    command: str = "",
    model_arg: str | None = None,
    references: list[ResultDoc] | None = None,
) -> Throughput:
    """Prefill and decode throughput per GPU, the memory fit and a serving mix.

    `model_arg` is the model as the user named it (a name or a config path), for the hint;
    `references`, reference result files whose efficiencies stand in for shapes no file has."""
    step_model = step_model_for(
        setup, docs, paths, gpu=gpu, impl=impl, model_arg=model_arg, references=references
    )
    meas, target = step_model.meas, step_model.target
    plan = target.memory_plan(setup)
    largest = setup.decode_cap(plan)
    chosen = _batches(batches, meas, setup, plan, largest)
    meas.hint += "".join(f" --batch {b}" for b in chosen if b != largest)
    budget = setup.budget_batch(largest)
    prefill = [step_model.prefill(b) for b in setup.prefill_batches({*chosen, budget})]
    decode = [step_model.decode(b) for b in sorted({*chosen, largest})]
    budget_step = next(s for s in prefill if s.batch == budget)
    record = _record(setup, target, plan, prefill, budget_step, decode, command)
    record.notes = _notes(step_model, impl, plan, largest, target, budget)
    return Throughput(record, setup, target, plan, prefill, decode, step_model, budget)


def serving_mix(
    prefill: Step, decode: Step, isl: int, osl: int, ttft: Step | None = None
) -> tuple[float, float]:
    """(requests/s per GPU, request latency in s) when prefill and decode share the GPU in turn.

    Each request costs isl tokens of prefill at `prefill`'s rate (the step at the token budget)
    and osl tokens of decode at `decode`'s rate. The latency is a lower bound: a lone prompt's
    prefill (`ttft`, else `prefill`), then osl steps at `decode`'s batch, with no queueing and no
    prefill interleaved.
    """
    per_request = isl / prefill.tokens_per_s + osl / decode.tokens_per_s
    first = (ttft or prefill).seconds
    return 1 / per_request, first + osl * decode.seconds


def _record(
    setup: Serving,
    target: Target,
    plan: MemoryPlan,
    prefill: list[Step],
    best_prefill: Step,
    decode: list[Step],
    command: str,
) -> EstimateRecord:
    isl, osl = setup.isl, setup.osl
    lone = min(prefill, key=lambda s: s.batch)
    rps, latency = serving_mix(best_prefill, decode[-1], isl, osl, lone)
    rows = [
        EstimateRow(
            s.phase,
            s.batch,
            s.context,
            s.seconds * 1e3,
            s.tokens_per_s,
            provenance(s.sources, target),
        )
        for s in prefill + decode
    ]
    # A request's GPU time: isl tokens of the prefill step at the budget, osl of the largest
    # decode.
    mixed: dict[str, float] = {}
    for step, tokens in ((best_prefill, isl), (decode[-1], osl)):
        share = tokens / step.tokens  # the request's share of that step's time
        for source, seconds in step.sources.items():
            mixed[source] = mixed.get(source, 0.0) + seconds * share
    rows.append(
        EstimateRow(
            "serving",
            decode[-1].batch,
            isl + osl,
            latency * 1e3,
            rps * osl,
            provenance(mixed, target),
        )
    )
    return EstimateRecord(
        model=setup.model.name,
        gpu=target.name,
        spec=target.spec.key if target.spec else None,
        projected=target.projected,
        tp=setup.tp,
        precision=setup.precision,
        kv_precision=setup.kv_dtype,
        isl=isl,
        osl=osl,
        weights_bytes=plan.weights,
        kv_bytes_per_token=plan.kv_per_token,
        memory_bytes=plan.memory,
        workspace_fraction=plan.workspace_fraction,
        max_batch=plan.max_batch,
        prefill_tokens_per_s=best_prefill.tokens_per_s,
        decode_tokens_per_s=decode[-1].tokens_per_s,
        requests_per_s=rps,
        rows=rows,
        command=command,
    )


def _notes(
    step_model: StepModel,
    impl: str | None,
    plan: MemoryPlan,
    largest: int,
    target: Target,
    budget: int,
) -> list[str]:
    setup = step_model.setup
    notes = source_notes(step_model)
    if impl:
        notes.append(f"implementation forced to '{impl}' for every op that has one of that name")
    elif step_model.meas.docs:
        notes.append("each op at each shape: the fastest implementation that passed its check")
    if largest < plan.max_batch:
        notes.append(
            f"{plural(plan.max_batch, 'sequence')} fit memory; decode is estimated up to the "
            f"scheduler cap of {setup.max_batch} (--max-batch)"
        )
    if target.projected:
        notes.append(
            f"projection: measured on {target.measured_on}, scaled to {target.name} by the "
            "ratio of spec-sheet rooflines per op (same efficiency assumed)"
        )
    notes.append(
        f"serving mix: prefill at batch {budget} (the {setup.prefill_budget:,}-token step "
        f"budget, at most the decode batch), decode at batch {largest}"
    )
    notes.append("ops summed without overlap; prefill and decode share the GPU in turn")
    return notes


def source_notes(step_model: StepModel) -> list[str]:
    """Where the step model's op times came from, what it assumed, and what it leaves out."""
    notes = list(step_model.notes)
    for detail, op_names in step_model.assumed.items():
        notes.append(f"{', '.join(op_names)}: {detail}")
    setup = step_model.setup
    if setup.ep > 1:
        skew = f"Zipf {setup.router_skew / 100:g}" if setup.router_skew else "uniform (assumption)"
        notes.append(
            f"expert parallelism over {setup.ep} GPUs: each runs the busiest rank's pairs, the "
            f"router {skew} with {setup.redundant} redundant experts (--router-skew, "
            "--redundant-experts), and the dispatch and combine all-to-alls as NCCL's"
        )
    if setup.model.unmodelled:
        notes.append(f"not modelled: {'; '.join(setup.model.unmodelled)}")
    if not step_model.meas.docs:
        notes.append(f"no result file: every op from {step_model.target.name}'s spec sheet")
    return notes


def json_record(result: Throughput) -> dict:
    """The estimate as `--json` prints it: the saved record, with `max_batch` split into the
    batch that fits memory and the decode batch cap actually used (min of it and --max-batch)."""
    out = {}
    for key, value in dataclasses.asdict(result.record).items():
        if key == "max_batch":
            out["max_batch_fits_memory"] = value
            out["decode_batch_cap"] = result.decode_cap
            out["prefill_budget_batch"] = result.budget_batch
        else:
            out[key] = value
    return out


def save(path: str | Path, record: EstimateRecord) -> None:
    """Add the estimate to a result file, locked while it changes, replacing an earlier one with
    the same settings."""
    same = ("model", "gpu", "tp", "precision", "kv_precision", "isl", "osl")
    with results.updating(path) as doc:
        doc.estimates = [
            e for e in doc.estimates if any(getattr(e, k) != getattr(record, k) for k in same)
        ]
        doc.estimates.append(record)


def measure_layer(
    step_model: StepModel,
    phase: str,
    batch: int,
    seq: int,
    device: DeviceInfo,
    timer: TimerConfig | None = None,
) -> Validation:
    """Time the layer of `step_model`'s served model at one step on `device` (the decoder-layer
    check) against the estimate for one layer of that step: every part but the LM head and the
    collectives, which a layer does not run."""
    from bench.measure.decoder_check import OUTSIDE_A_LAYER, time_layer

    setup = step_model.setup
    c = setup.model
    if c.latent or c.dense_layers or c.shared_experts or setup.ep > 1:
        raise BenchError(
            f"--validate runs a Llama-style decoder layer on one GPU; {c.name} at "
            f"{setup.layout} (latent attention, dense first layers, shared experts or expert "
            "parallelism) is not one: estimate it without --validate"
        )
    if phase == "prefill":
        step, uses = step_model.prefill(batch, seq), setup.prefill_step(batch, seq)
        where = setup.step("prefill", batch, seq, seq)
    else:
        step, uses = step_model.decode(batch, seq), setup.decode_step(batch, seq)
        where = setup.step("decode", batch, 1, seq)
    per_layer = step.seconds - step.parts.get("lm_head", 0.0) - step.parts.get("communication", 0.0)
    layer = [u for u in uses if u.role not in OUTSIDE_A_LAYER]
    impls = {u.role: step_model.op_time(u).impl or get_op(u.op).baseline for u in layer}
    # One layer of each attention kind (full, windowed), weighted by how many layers have it.
    measured = 0.0
    for attention in (u for u in layer if u.role == "attention"):
        one = [u for u in layer if u.role != "attention" or u is attention]
        seconds = time_layer(where, one, impls, device, timer)
        measured += seconds * attention.count / setup.model.layers
    return Validation(phase, batch, seq, measured, per_layer / setup.model.layers)
