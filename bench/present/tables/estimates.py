"""`tokbench estimate`: the memory fit, the prefill and decode steps, the serving mix, the
decoder-layer validation; and the tensor-parallel degrees --tp auto tried, which `simulate`
and `capacity` show too."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from bench.plan.capacity import Layout
from bench.plan.models import Serving
from bench.plan.optime import NATIVE_PEAK, gemm_rate
from bench.plan.throughput import (
    SOURCES,
    STEP_PARTS,
    Step,
    Throughput,
    Validation,
    projection_prefix,
    shares,
)
from bench.present.tables.base import Column, bullets, column_table, key_value_table, text
from bench.record.schema import EstimateRecord
from bench.record.units import fmt_bytes, fmt_ms, fmt_rate


def estimate_tables(result: Throughput) -> list[Table]:
    """The memory fit, prefill and decode steps, the serving mix and the notes."""
    return [_summary(result), _steps(result, "prefill"), _steps(result, "decode"), _serving(result)]


def _gemms(result: Throughput) -> str:
    """'fp8 GEMMs', or the weight-only form where the GPU lacks the format's tensor cores."""
    precision, spec = result.record.precision, result.target.spec
    compute = gemm_rate(precision, spec)[0] if spec is not None else precision
    if compute == NATIVE_PEAK.get(precision, precision):
        return f"{precision} GEMMs"
    return f"{precision} weights in {compute} GEMMs (weight-only: no {precision} tensor cores)"


def _summary(result: Throughput) -> Table:
    r, plan, cfg = result.record, result.plan, result.setup.model
    table = key_value_table(f"{cfg.name} on {r.gpu}: per GPU")
    table.add_row("model", f"{cfg.name} ({cfg.source})")
    if r.projected:
        device = " [yellow](projection from spec sheets)[/yellow]"
    elif not result.target.measured_on:
        device = " [yellow](its spec sheet: nothing measured)[/yellow]"
    else:
        device = " (measured)"
    table.add_row("device", r.gpu + device)
    table.add_row(
        "parallelism / precision",
        f"{result.setup.layout}, {_gemms(result)}, {result.setup.act} activations, "
        f"{result.setup.kv_dtype} KV cache",
    )
    table.add_row("weights per GPU", fmt_bytes(plan.weights))
    table.add_row("KV cache per token per GPU", f"{plan.kv_per_token:,.0f} B")
    table.add_row(
        "memory",
        f"{fmt_bytes(plan.memory)}, {plan.workspace_fraction:.0%} kept by the engine and "
        f"{fmt_bytes(plan.reserved)} for context, CUDA graphs and activations, "
        f"{fmt_bytes(max(plan.kv_budget, 0))} left for KV cache",
    )
    table.add_row(
        "largest batch that fits", f"{plan.max_batch:,} sequences of {r.isl} + {r.osl} tokens"
    )
    return table


SOURCE_KEY = (
    f"source: share of the step's time measured ({SOURCES['measured']}), interpolated between "
    f"measured shapes ({SOURCES['interpolated']}), the op-time model scaled by the files' most "
    f"similar case ({SOURCES['scaled']}) or a reference file's ({SOURCES['reference']}), or the "
    f"op-time model alone ({SOURCES['modelled']}: its terms and sources below)"
)
# Per phase: the table's title, and the headers of its length and time columns.
PHASES = {
    "prefill": (
        "prefill: time to first token (TTFT) and prompt tokens/s per GPU",
        "prompt",
        "TTFT",
    ),
    "decode": (
        "decode: time per output token (TPOT) and output tokens/s per GPU",
        "context",
        "TPOT",
    ),
}


def _steps(result: Throughput, phase: str) -> Table:
    steps = result.prefill if phase == "prefill" else result.decode
    title, length, time = PHASES[phase]

    def batch(step: Step) -> str:
        mark = ""
        if phase == "decode" and step is steps[-1]:
            mark = " (cap)" if result.capped else " (max fit)"
        if phase == "prefill" and step.batch == result.budget_batch:
            mark = " (budget)"
        return f"{step.batch}{mark}"

    def share(part: str) -> Column[Step]:
        return Column(STEP_PARTS[part], lambda s: f"{s.parts.get(part, 0) / s.seconds:.0%}")

    parts = [p for p in STEP_PARTS if any(step.parts.get(p) for step in steps)]
    columns = [
        Column("batch", batch),
        Column(length, lambda s: str(s.context)),
        Column(time, lambda s: fmt_ms(s.seconds * 1e3)),
        Column("tok/s/GPU", lambda s: fmt_rate(s.tokens_per_s)),
        *(share(p) for p in parts),
        text("source", lambda s: " ".join(shares(s.sources, short=True))),
    ]
    return column_table(title, columns, steps, caption=bullets(_step_notes(result, phase)))


def _step_notes(result: Throughput, phase: str) -> list[str]:
    notes = [SOURCE_KEY] if phase == "decode" else []
    if phase == "prefill":
        notes.append(
            "(budget): the most prompts one prefill step's token budget holds, at most the "
            "decode batch; the serving mix's prefill"
        )
    else:
        cap = result.decode_cap
        notes.append(
            f"(cap): --max-batch {cap} below the {result.plan.max_batch:,} that fit memory"
            if result.capped
            else f"(max fit): the {cap:,} sequences that fit memory"
        )
    if result.target.projected:
        notes.append(
            f"projection to {result.target.name} from spec sheets of times measured on "
            f"{result.target.measured_on}"
        )
    return notes


SERVING_COLUMNS: tuple[Column[EstimateRecord], ...] = (
    Column("decode batch", lambda r: str(r.rows[-1].batch)),
    Column("requests/s/GPU", lambda r: fmt_rate(r.requests_per_s)),
    Column("output tok/s/GPU", lambda r: fmt_rate(r.requests_per_s * r.osl)),
    Column("total tok/s/GPU", lambda r: fmt_rate(r.requests_per_s * (r.isl + r.osl))),
    Column("latency ≥", lambda r: fmt_ms(r.rows[-1].step_ms)),
    text("source", lambda r: r.rows[-1].source.removeprefix(projection_prefix(r.gpu))),
)


def _serving(result: Throughput) -> Table:
    r = result.record
    title = f"serving mix: {r.isl} input + {r.osl} output tokens per request"
    return column_table(title, SERVING_COLUMNS, [r], caption=bullets(r.notes))


# Measured / estimated layer time the validation table shows as agreeing. A real layer runs
# slower than the op sum: the estimate models the memory-bound work as the fused kernels of a
# serving engine, while an eager PyTorch layer dispatches ~30 small ops; and the layer is timed
# now, the ops when the file was made. At the latency end (batch 1) on a CPU that dispatch
# dominates. The band's ends are an assumption, wide enough for that dispatch.
VALIDATION_BAND = (0.5, 3.0)


def _agreement(c: Validation) -> str:
    low, high = VALIDATION_BAND
    colour = "green" if low <= c.ratio <= high else "red"
    return f"[{colour}]{c.ratio:.2f}[/{colour}]"


VALIDATION_COLUMNS: tuple[Column[Validation], ...] = (
    text("step", lambda c: c.phase),
    Column("batch", lambda c: str(c.batch)),
    Column("context", lambda c: str(c.context)),
    Column("measured", lambda c: fmt_ms(c.measured_s * 1e3)),
    Column("estimated", lambda c: fmt_ms(c.estimated_s * 1e3)),
    Column("measured / estimated", _agreement),
)


def validation_table(checks: list[Validation]) -> Table:
    """Measured against estimated layer time, coloured by VALIDATION_BAND."""
    low, high = VALIDATION_BAND
    caption = (
        f"one layer, without the LM head and all-reduces; green: within [{low}, {high}] of "
        "the op sum"
    )
    title = "validation: one decoder layer run here against the op sum"
    return column_table(title, VALIDATION_COLUMNS, checks, caption=caption)


def layout_table(layouts: list[Layout], chosen: Serving, what: str) -> Table:
    """The layouts --tp auto tried (TP, attention DP, EP), and the one `chosen` serves."""
    picked = (chosen.tp, chosen.dp, chosen.ep)

    def note(t: Layout) -> str:
        return "[green]chosen[/green]" if (t.tp, t.dp, t.ep) == picked else escape(t.why)

    columns: tuple[Column[Layout], ...] = (
        Column("layout", lambda t: t.label),
        Column(f"output tok/s/GPU, {what}", lambda t: fmt_rate(t.rate) if t.rate else "—"),
        text("note", note),
    )
    caption = "replicas of the chosen layout fill the fleet (data parallel)"
    return column_table("--tp auto: each layout tried", columns, layouts, caption=caption)
