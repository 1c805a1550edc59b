"""Per-GPU token throughput of a model, from the kernel times in result files.

One forward step on one GPU (DESIGN.md, "Estimating token throughput") is the sum of:

- its registry ops at the model's shapes (bench.models.prefill_step / decode_step): the GEMMs of
  every layer, prefill or decode attention, and the LM head, each timed by bench.lookup
  (measured, interpolated or roofline × measured efficiency);
- the memory-bound rest (norms, rotary, activation, residuals, KV-cache writes): their minimum
  bytes over a bandwidth, measured where the file has one;
- with TP > 1, two all-reduces of the hidden state per layer: a measured collective if the file
  has one, else a ring all-reduce over the spec sheet's interconnect.

Ops are summed without overlap, as a serving engine without fusion would run them; the layer
validation (bench.layer) measures how far that is from a real layer. Decode tokens/s per GPU is
batch / step time / TP; prefill likewise with batch × prompt length. A GPU other than the measured
one is a projection: every op time is scaled by the ratio of the two spec sheets' rooflines.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from bench import BenchError, results
from bench.hardware import SPECS, GpuSpec, get_spec
from bench.lookup import Measurements, Timed
from bench.models import (
    DEFAULT_BATCHES,
    DEFAULT_ISL,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PREFILL_TOKENS,
    DEFAULT_OSL,
    DEFAULT_PAGE,
    DEFAULT_WORKSPACE,
    MemoryPlan,
    ModelConfig,
    OpUse,
    act_dtype,
    allreduce_bytes,
    budget_batch,
    check_precision,
    check_tp,
    decode_cap,
    decode_context,
    decode_step,
    kv_heads_per_gpu,
    memory_bound_kernels,
    memory_plan,
    param_count,
    prefill_batches,
    prefill_step,
)
from bench.ops import OPS
from bench.report import bullets, fmt_bytes, fmt_ms, key_value_table, new_table

# A small all-reduce is latency-bound; this per-call latency is an assumption of the order of
# NCCL's small-message all-reduce on NVLink (nccl-tests), used only without a measured one.
ALLREDUCE_LATENCY_S = 10e-6
PARTS = ("gemm", "attention", "lm_head", "other", "allreduce")


@dataclass(frozen=True)
class Target:
    """The GPU an estimate is for, and whether it is the measured one."""

    name: str
    spec: GpuSpec | None
    memory: float  # bytes per GPU
    projected: bool  # some measurements come from another GPU, scaled by spec sheets
    measured_on: str  # the device(s) the result files were measured on


def resolve_target(docs: list[results.ResultDoc], paths: list[str], gpu: str | None) -> Target:
    """The measured device, or with `gpu` a spec-table GPU (a projection unless every file was
    measured on it). Files from different devices only combine when projected onto one GPU."""
    names = list(dict.fromkeys(doc.device.name for doc in docs))
    first = docs[0]
    if gpu is None:
        if len(names) > 1:
            detail = "; ".join(f"{p}: {d.device.name}" for p, d in zip(paths, docs, strict=True))
            raise BenchError(
                f"result files from different devices ({detail}); estimate one device at a "
                "time, or pass --gpu KEY to project them all onto one spec"
            )
        spec = SPECS.get(first.spec) if first.spec else None
        return Target(first.device.name, spec, float(first.device.memory_bytes), False, names[0])
    try:
        spec = get_spec(gpu)
    except ValueError as e:
        raise BenchError(str(e)) from None
    for path, doc in zip(paths, docs, strict=True):
        if doc.spec is None:
            raise BenchError(
                f"{path} was measured on {doc.device.name}, which has no spec-table entry to "
                f"project from; --gpu {gpu} needs result files from GPUs in the spec table"
            )
    if all(doc.spec == spec.key for doc in docs) and len(names) == 1:
        return Target(first.device.name, spec, float(first.device.memory_bytes), False, names[0])
    return Target(spec.name, spec, spec.memory_gb * 1e9, True, ", ".join(names))


@dataclass
class Step:
    """One forward step on one GPU: its time by part and by provenance."""

    phase: str  # "prefill" or "decode"
    batch: int
    context: int  # prefill: prompt length; decode: context length
    tokens: int  # tokens the step produces work for: batch × prompt, or batch
    tp: int
    parts: dict[str, float] = field(default_factory=dict)  # seconds by PARTS entry
    sources: dict[str, float] = field(default_factory=dict)  # seconds by provenance

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


class Estimator:
    """Step times of one model at one TP degree and precision, on one target GPU."""

    def __init__(
        self,
        config: ModelConfig,
        tp: int,
        precision: str,
        measurements: Measurements,
        target: Target,
        page: int = DEFAULT_PAGE,
    ) -> None:
        self.config, self.tp, self.precision = config, tp, precision
        self.meas, self.target, self.page = measurements, target, page
        self.notes: dict[str, None] = {}  # ordered, without duplicates

    def prefill(self, batch: int, isl: int) -> Step:
        step = Step("prefill", batch, isl, batch * isl, self.tp)
        uses = prefill_step(self.config, self.tp, self.precision, batch, isl)
        return self._fill(step, uses)

    def decode(self, batch: int, context: int) -> Step:
        step = Step("decode", batch, context, batch, self.tp)
        uses = decode_step(self.config, self.tp, self.precision, batch, context, self.page)
        return self._fill(step, uses)

    def op_time(self, use: OpUse) -> Timed:
        """One op's time on the target GPU (projected already by the measurements if needed)."""
        return self.meas.time(use.op, use.shape, use.dtype)

    def _fill(self, step: Step, uses: list[OpUse]) -> Step:
        for use in uses:
            timed = self.op_time(use)
            part = use.part if use.part in ("attention", "lm_head") else "gemm"
            step.add(part, timed.seconds * use.count, timed.source)
        step.add("other", self._memory_bound(step.tokens), "modelled")
        if self.tp > 1:
            step.add("allreduce", *self._allreduces(step.tokens))
        return step

    def _memory_bound(self, tokens: int) -> float:
        """The layer's memory-bound kernels over all layers: each its minimum bytes over the
        bandwidth, but no less than the shortest time any measured case took (a measured floor
        for one kernel launch on this device)."""
        gbs, where = self._bandwidth()
        floor, case = self._floor()
        kernels = memory_bound_kernels(self.config, self.tp, tokens, self.precision)
        self.notes[
            f"{len(kernels)} memory-bound kernels per layer ({', '.join(k for k, _ in kernels)}): "
            f"bytes / {where}, each at least {floor * 1e6:.1f} µs ({case})"
        ] = None
        per_layer = sum(max(nbytes / (gbs * 1e9), floor) for _, nbytes in kernels)
        return per_layer * self.config.layers

    def _floor(self) -> tuple[float, str]:
        """The shortest measured op time in the files, and the case it comes from."""
        points = [p for p in self.meas.best.values() if p.case.op != "allreduce"]
        shortest = min(points, key=lambda p: p.case.timing.median_ms)
        return (
            shortest.case.timing.median_ms / 1e3,
            f"the shortest measured case, {shortest.describe()}",
        )

    def _bandwidth(self) -> tuple[float, str]:
        """GB/s for the memory-bound ops: measured copy bandwidth, else the spec sheet's, else
        (no spec: a CPU) the highest GB/s any measured case reached."""
        if self.target.projected:
            return self.target.spec.bandwidth_gbs, f"{self.target.spec.name} spec bandwidth"
        copies = [
            d.measured_peaks["copy_gbs"] for d in self.meas.docs if "copy_gbs" in d.measured_peaks
        ]
        if copies:
            return max(copies), f"measured copy bandwidth {max(copies):.0f} GB/s"
        if self.target.spec is not None:
            gbs = self.target.spec.bandwidth_gbs
            return gbs, f"spec bandwidth {gbs:.0f} GB/s (no measured copy in the file)"
        best = max(p.case.gbps for p in self.meas.best.values() if p.case.gbps)
        return best, f"{best:.0f} GB/s, the most any measured case reached (no spec entry)"

    def _allreduces(self, tokens: int) -> tuple[float, str]:
        """Two all-reduces per layer of every token's hidden state: (seconds, provenance)."""
        nbytes = allreduce_bytes(self.config, tokens, self.precision)
        calls = 2 * self.config.layers
        spec = self.target.spec
        if not self.target.projected and self.meas.has("allreduce"):
            shape = {"bytes": int(nbytes), "world": self.tp}
            try:
                timed = self.meas.time("allreduce", shape, act_dtype(self.precision))
            except BenchError:
                if spec is None:
                    raise
                self.notes[f"{nbytes:.0f}-byte all-reduce outside the measured ones"] = None
            else:
                self.notes[
                    f"all-reduce: 2 per layer, from the measured collective ({timed.source})"
                ] = None
                return timed.seconds * calls, timed.source
        if spec is None:
            raise BenchError(
                f"TP {self.tp} needs all-reduce times: the results have no measured allreduce "
                f"and {self.target.name} has no spec interconnect"
            )
        # Ring all-reduce: each GPU sends and receives 2(p−1)/p of the message, one direction
        # of the link at a time; spec sheets quote both directions together.
        per_direction = spec.interconnect_gbs / 2
        ring = 2 * (self.tp - 1) / self.tp * nbytes / (per_direction * 1e9)
        self.notes[
            f"all-reduce: 2 per layer, ring over {spec.name} spec interconnect "
            f"{spec.interconnect_gbs:.0f} GB/s ({per_direction:.0f} per direction) + "
            f"{ALLREDUCE_LATENCY_S * 1e6:.0f} µs assumed latency each (no measured collective)"
        ] = None
        return (ring + ALLREDUCE_LATENCY_S) * calls, "modelled"


@dataclass
class Throughput:
    """A whole estimate: the saved record and what the tables show."""

    record: results.Estimate
    config: ModelConfig
    target: Target
    plan: MemoryPlan
    prefill: list[Step]
    decode: list[Step]
    capped: bool  # the largest decode batch is the scheduler cap, not the memory limit
    estimator: Estimator
    budget_batch: int = 0  # the prefill batch at the step's token budget: the serving mix's

    @property
    def decode_cap(self) -> int:
        """The largest decode batch estimated: min(memory fit, --max-batch)."""
        return self.decode[-1].batch


def _shares(sources: dict[str, float], names: dict[str, str] | None = None) -> list[str]:
    """Each provenance with its share of the time, largest first ('measured 93%'); a lone one
    by name only. `names` shortens the provenance names."""
    total = sum(sources.values())
    shares = sorted(((s / total, name) for name, s in sources.items() if s > 0), reverse=True)
    if len(shares) == 1:
        return [shares[0][1]]
    names = names or {}
    return [
        f"{names.get(n, n)} {share:.0%}" if share >= 0.005 else f"{names.get(n, n)} <1%"
        for share, n in shares
    ]


def provenance(sources: dict[str, float], target: Target) -> str:
    """'measured' or 'measured 93% · interpolated 5% · modelled 2%', prefixed for projections."""
    text = " · ".join(_shares(sources))
    if target.projected:
        return f"projection to {target.name} (spec sheets) of {text}"
    return text


def check_settings(
    batches: list[int] | None = None,
    workspace: float = DEFAULT_WORKSPACE,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> None:
    """Raise a one-line BenchError, naming the flag, for a setting no estimate can use."""
    for b in batches or ():
        if b < 1:
            raise BenchError(f"--batch must be at least 1, got {b}")
    if not 0 <= workspace < 1:
        raise BenchError(
            f"--workspace is the fraction of GPU memory kept free and must be in [0, 1), "
            f"got {workspace:g}"
        )
    if max_batch < 1:
        raise BenchError(f"--max-batch must be at least 1, got {max_batch}")


def _batches(
    requested: list[int] | None,
    measurements: Measurements,
    config: ModelConfig,
    tp: int,
    context: int,
    page: int,
    plan: MemoryPlan,
    cap: int,
) -> list[int]:
    """Requested batches (each must fit memory and the cap), else those the file measured decode
    at for this model, else DEFAULT_BATCHES; defaults beyond the cap are dropped."""
    if requested:
        for b in requested:
            if b > plan.max_batch:
                raise BenchError(
                    f"batch {b} does not fit: {plan.seq_tokens} tokens per sequence need "
                    f"{fmt_bytes(b * plan.seq_tokens * plan.kv_per_token)} of KV cache beside "
                    f"{fmt_bytes(plan.weights)} of weights in {fmt_bytes(plan.usable)} usable; "
                    f"the largest batch that fits is {plan.max_batch}"
                )
            if b > cap:
                raise BenchError(f"--batch {b} exceeds --max-batch {cap}")
        return sorted(set(requested))
    want = {
        "H": config.heads // tp,
        "Hkv": kv_heads_per_gpu(config, tp),
        "D": config.head_dim,
        "L": context,
        "page": page,
    }
    measured = {
        c.shape["B"]
        for (op, _, _), c in measurements.best.items()
        if op == "decode" and all(c.shape.get(k) == v for k, v in want.items())
    }
    return sorted(b for b in measured or DEFAULT_BATCHES if b <= cap)


def _check_impl(impl: str | None, docs: list[results.ResultDoc], paths: list[str]) -> None:
    if impl is None:
        return
    present = sorted({c.impl for doc in docs for c in doc.cases if c.op in OPS})
    if impl not in present:
        raise BenchError(
            f"--impl {impl}: no case in {', '.join(paths)} ran it; implementations there: "
            f"{', '.join(present) or 'none'}"
        )


def _joined(values) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "none"


def measured_summary(config: ModelConfig, docs: list[results.ResultDoc], paths: list[str]) -> str:
    """What the files measured of this model's suite, derived from their cases: GEMM dtypes, TP
    degrees, prompt lengths and batches, decode contexts and batches."""
    heads = {"D": config.head_dim}
    tps, dtypes, prompts, prefill, contexts, decode = set(), set(), set(), set(), set(), set()
    for doc in docs:
        for c in doc.cases:
            if not c.comparable:
                continue
            if c.op == "matmul":
                dtypes.add(c.dtype)
            if c.op not in ("attention", "decode") or c.shape.get("D") != heads["D"]:
                continue
            h = c.shape.get("H", 0)
            if not h or config.heads % h:
                continue
            tps.add(config.heads // h)
            if c.op == "attention":
                prompts.add(c.shape["Sq"])
                prefill.add(c.shape["B"])
            else:
                contexts.add(c.shape["L"])
                decode.add(c.shape["B"])
    where = ", ".join(paths)
    if not tps:
        return f"{where} has no {config.name} attention cases (GEMM dtypes: {_joined(dtypes)})"
    return (
        f"{where} has for {config.name}: GEMM dtypes {_joined(dtypes)}; TP {_joined(tps)}; "
        f"prompt lengths (isl) {_joined(prompts)} at prefill batches {_joined(prefill)}; "
        f"decode contexts (isl + osl/2) {_joined(contexts)} at batches {_joined(decode)}"
    )


def _fp8_capable(device) -> bool:
    if device.kind != "cuda" or not device.compute_capability:
        return False
    major, _, minor = device.compute_capability.partition(".")
    return (int(major), int(minor or 0)) >= (8, 9)


def _hint(
    model: str,
    config: ModelConfig,
    docs: list[results.ResultDoc],
    paths: list[str],
    tp: int,
    precision: str,
    isl: int,
    osl: int,
) -> str:
    """The end of a missing-shape error: what the files have, and how to measure what is not."""
    run = f"tokbench run --model {model} --tp {tp} --precision {precision} --isl {isl} --osl {osl}"
    have = measured_summary(config, docs, paths)
    if precision == "fp8" and not any(_fp8_capable(d.device) for d in docs):
        devices = ", ".join(sorted({d.device.name for d in docs}))
        return (
            f"{have}; fp8 needs a GPU of compute capability ≥ 8.9, which {devices} is not: "
            f"measure on one with: {run}"
        )
    return f"{have}; measure them with: {run}"


def estimate(
    config: ModelConfig,
    docs: list[results.ResultDoc],
    paths: list[str],
    *,
    tp: int = 1,
    precision: str = "bf16",
    isl: int = DEFAULT_ISL,
    osl: int = DEFAULT_OSL,
    batches: list[int] | None = None,
    gpu: str | None = None,
    impl: str | None = None,
    workspace: float = DEFAULT_WORKSPACE,
    page: int = DEFAULT_PAGE,
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    command: str = "",
    model_arg: str | None = None,
) -> Throughput:
    """Prefill and decode throughput per GPU, the memory fit and a serving mix.

    `model_arg` is the model as the user named it (a name or a config path), for the hint."""
    check_settings(batches, workspace, max_batch)
    check_tp(config, tp)
    check_precision(precision)
    if isl < 1 or osl < 1:
        raise BenchError(f"input and output lengths must be at least 1, got {isl} and {osl}")
    _check_impl(impl, docs, paths)
    target = resolve_target(docs, paths, gpu)
    plan = memory_plan(config, tp, precision, target.memory, isl + osl, workspace)
    if plan.max_batch < 1:
        raise BenchError(
            f"{config.name} at TP {tp} in {precision} does not fit {target.name}: "
            f"{fmt_bytes(plan.weights)} of weights per GPU and one sequence's KV cache "
            f"({fmt_bytes(plan.seq_tokens * plan.kv_per_token)}) exceed "
            f"{fmt_bytes(plan.usable)} usable ({workspace:.0%} kept for workspace); "
            "raise --tp or lower --precision"
        )
    context = decode_context(isl, osl)
    hint = _hint(model_arg or config.name, config, docs, paths, tp, precision, isl, osl)
    meas = Measurements(docs, target=target.spec if gpu else None, impl=impl, hint=hint)
    largest = decode_cap(plan, max_batch)
    chosen = _batches(batches, meas, config, tp, context, page, plan, largest)
    meas.hint += "".join(f" --batch {b}" for b in chosen if b != largest)
    estimator = Estimator(config, tp, precision, meas, target, page)
    budget = budget_batch(isl, max_prefill_tokens, largest)
    prefill = [
        estimator.prefill(b, isl)
        for b in prefill_batches({*chosen, budget}, isl, max_prefill_tokens)
    ]
    decode = [estimator.decode(b, context) for b in sorted({*chosen, largest})]
    budget_step = next(s for s in prefill if s.batch == budget)
    record = _record(
        config, target, plan, prefill, budget_step, decode, tp, precision, isl, osl, command
    )
    record.notes = _notes(
        estimator, impl, plan, largest, max_batch, target, budget, max_prefill_tokens
    )
    capped = largest < plan.max_batch
    return Throughput(record, config, target, plan, prefill, decode, capped, estimator, budget)


def serving_mix(prefill: Step, decode: Step, isl: int, osl: int, ttft: Step | None = None):
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
    config: ModelConfig,
    target: Target,
    plan: MemoryPlan,
    prefill: list[Step],
    best_prefill: Step,
    decode: list[Step],
    tp: int,
    precision: str,
    isl: int,
    osl: int,
    command: str,
) -> results.Estimate:
    lone = min(prefill, key=lambda s: s.batch)
    rps, latency = serving_mix(best_prefill, decode[-1], isl, osl, lone)
    rows = [
        results.EstimateRow(
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
        results.EstimateRow(
            "serving",
            decode[-1].batch,
            isl + osl,
            latency * 1e3,
            rps * osl,
            provenance(mixed, target),
        )
    )
    return results.Estimate(
        model=config.name,
        gpu=target.name,
        spec=target.spec.key if target.spec else None,
        projected=target.projected,
        tp=tp,
        precision=precision,
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
    estimator: Estimator,
    impl: str | None,
    plan: MemoryPlan,
    largest: int,
    max_batch: int,
    target: Target,
    budget: int,
    max_prefill_tokens: int,
) -> list[str]:
    notes = list(estimator.notes)
    if impl:
        notes.append(f"implementation forced to '{impl}' for every op that has one of that name")
    else:
        notes.append("each op at each shape: the fastest implementation that passed its check")
    if largest < plan.max_batch:
        notes.append(
            f"{plan.max_batch:,} sequences fit memory; decode is estimated up to the scheduler "
            f"cap of {max_batch} (--max-batch)"
        )
    if target.projected:
        notes.append(
            f"projection: measured on {target.measured_on}, scaled to {target.name} by the "
            "ratio of spec-sheet rooflines per op (same efficiency assumed)"
        )
    notes.append(
        f"serving mix: prefill at batch {budget} (the {max_prefill_tokens:,}-token step budget, "
        f"at most the decode batch), decode at batch {largest}"
    )
    notes.append("ops summed without overlap; prefill and decode share the GPU in turn")
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


def save(path: str, record: results.Estimate) -> None:
    """Add the estimate to a result file, replacing an earlier one with the same settings."""
    doc = results.load(path)
    same = ("model", "gpu", "tp", "precision", "isl", "osl")
    doc.estimates = [
        e for e in doc.estimates if any(getattr(e, k) != getattr(record, k) for k in same)
    ]
    doc.estimates.append(record)
    results.write_atomic(Path(path), doc.to_json())


# --- tables -------------------------------------------------------------------------------------


def models_table(configs: list[ModelConfig]) -> Table:
    """The model configs and their derived parameter counts; sources as numbered footnotes in
    the caption, which wraps at word boundaries where a table column would cut them short."""
    columns = (
        "model",
        "hidden",
        "layers",
        "heads/kv",
        "head dim",
        "MLP",
        "vocab",
        "experts",
        "params",
        "source",
    )
    table = new_table("models", columns, left={"model"})
    sources: dict[str, int] = {}
    for c in configs:
        experts = f"top-{c.top_k} of {c.experts}" if c.moe else ""
        ref = sources.setdefault(c.source, len(sources) + 1)
        table.add_row(
            c.name,
            str(c.hidden),
            str(c.layers),
            f"{c.heads}/{c.kv_heads}",
            str(c.head_dim),
            str(c.intermediate),
            str(c.vocab),
            experts,
            _params(param_count(c)),
            f"[{ref}]",
        )
    table.caption = "\n".join(f"[{n}] {source}" for source, n in sources.items())
    return table


def tables(result: Throughput) -> list[Table]:
    """The memory fit, prefill and decode steps, the serving mix and the notes."""
    return [_summary(result), _steps(result, "prefill"), _steps(result, "decode"), _serving(result)]


def fmt_rate(x: float) -> str:
    """A rate: whole numbers with separators from 100 up, else 3 significant digits (so a slow
    CPU's 0.0123 requests/s does not print as 0)."""
    if x >= 100 or x == 0 or not math.isfinite(x):
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.1f} M"


def _summary(result: Throughput) -> Table:
    r, plan, cfg = result.record, result.plan, result.config
    table = key_value_table(f"{cfg.name} on {r.gpu}: per GPU")
    table.add_row("model", f"{cfg.name} ({cfg.source})")
    table.add_row(
        "device",
        r.gpu
        + (" [yellow](projection from spec sheets)[/yellow]" if r.projected else " (measured)"),
    )
    table.add_row(
        "parallelism / precision",
        f"TP {r.tp}, {r.precision} GEMMs, {act_dtype(r.precision)} attention and KV cache",
    )
    table.add_row("weights per GPU", fmt_bytes(plan.weights))
    table.add_row("KV cache per token per GPU", f"{plan.kv_per_token:,.0f} B")
    table.add_row(
        "memory",
        f"{fmt_bytes(plan.memory)}, {plan.workspace_fraction:.0%} kept for workspace, "
        f"{fmt_bytes(max(plan.kv_budget, 0))} left for KV cache",
    )
    table.add_row(
        "largest batch that fits", f"{plan.max_batch:,} sequences of {r.isl} + {r.osl} tokens"
    )
    return table


def _short_source(step: Step) -> str:
    """Provenance for a table cell: without the projection prefix (the caption says it)."""
    short = {
        "measured": "meas.",
        "interpolated": "interp.",
        "roofline": "roofl.",
        "modelled": "mod.",
    }
    return " ".join(_shares(step.sources, short))


SOURCE_KEY = (
    "source: share of the step's time measured (meas.), interpolated between measured shapes "
    "(interp.), roofline × measured efficiency (roofl.), or modelled (mod.: memory-bound "
    "kernels, all-reduces)"
)


def _steps(result: Throughput, phase: str) -> Table:
    steps = result.prefill if phase == "prefill" else result.decode
    if phase == "prefill":
        title = "prefill: time to first token (TTFT) and prompt tokens/s per GPU"
        columns = ("batch", "prompt", "TTFT", "tok/s/GPU")
    else:
        title = "decode: time per output token (TPOT) and output tokens/s per GPU"
        columns = ("batch", "context", "TPOT", "tok/s/GPU")
    columns = (*columns, "GEMM", "attn", "LM head", "other", "all-red.", "source")
    table = new_table(title, columns, left={"source"})
    for step in steps:
        mark = ""
        if phase == "decode" and step is steps[-1]:
            mark = " (cap)" if result.capped else " (max fit)"
        if phase == "prefill" and step.batch == result.budget_batch:
            mark = " (budget)"
        shares = [f"{step.parts.get(p, 0) / step.seconds:.0%}" for p in PARTS]
        table.add_row(
            f"{step.batch}{mark}",
            str(step.context),
            fmt_ms(step.seconds * 1e3),
            fmt_rate(step.tokens_per_s),
            *shares,
            _short_source(step),
        )
    caption = [SOURCE_KEY] if phase == "decode" else []
    if phase == "prefill":
        caption.append(
            "(budget): the most prompts one prefill step's token budget holds, at most the "
            "decode batch; the serving mix's prefill"
        )
    else:
        cap = result.decode_cap
        caption.append(
            f"(cap): --max-batch {cap} below the {result.plan.max_batch:,} that fit memory"
            if result.capped
            else f"(max fit): the {cap:,} sequences that fit memory"
        )
    if result.target.projected:
        caption.append(
            f"projection to {result.target.name} from spec sheets of times measured on "
            f"{result.target.measured_on}"
        )
    table.caption = bullets(caption)
    return table


def _serving(result: Throughput) -> Table:
    r = result.record
    row = r.rows[-1]
    columns = (
        "decode batch",
        "requests/s/GPU",
        "output tok/s/GPU",
        "total tok/s/GPU",
        "latency ≥",
        "source",
    )
    table = new_table(
        f"serving mix: {r.isl} input + {r.osl} output tokens per request",
        columns,
        left={"source"},
    )
    table.add_row(
        str(row.batch),
        fmt_rate(r.requests_per_s),
        fmt_rate(r.requests_per_s * r.osl),
        fmt_rate(r.requests_per_s * (r.isl + r.osl)),
        fmt_ms(row.step_ms),
        row.source.removeprefix(f"projection to {r.gpu} (spec sheets) of "),
    )
    table.caption = bullets(r.notes)
    return table
