"""The report's sections for what the planning commands print with --json, one small adapter
per command (the fields that tell its JSON apart, its section, its points on the frontier), and
the throughput-interactivity frontier they are drawn on together.

An adapter names the fields it formats; any other field of the JSON is shown as it is, under
its own name, so a command's JSON can grow before its adapter does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.measure.ops.base import shape_text
from bench.present.plain import PlainTable
from bench.present.report import charts
from bench.present.report.charts import SERIES, Spec, bar, linear, log, nominal, point
from bench.present.report.inputs import Fields, Input, shown
from bench.present.report.page import Block, ChartBlock, NotesBlock, Section, TableBlock
from bench.record.units import fmt_big, fmt_bytes, fmt_ms, fmt_rate

Show = Callable[[Fields, str], str]
Labels = Mapping[str, tuple[str, Show]]
Row = dict[str, object]


def _number(fmt: Callable[[float], str], absent: str = "—") -> Show:
    """A number field, formatted; `absent` where it is null."""
    return lambda f, key: fmt(f.number(key)) if f.has(key) else absent


def _text(f: Fields, key: str) -> str:
    return f.text(key) if f.has(key) else "—"


COUNT = _number(lambda v: f"{v:,.0f}")
RATE = _number(fmt_rate)
MS = _number(fmt_ms)
BIG = _number(fmt_big)
SECONDS = _number(lambda v: fmt_ms(v * 1e3))
SHARE = _number(lambda v: f"{v:.0%}")
BYTES = _number(fmt_bytes)
USD = _number(lambda v: "$" + (fmt_big(v) if v >= 1e3 else f"{v:.3g}"))

# Fields every planning JSON may carry: what is served, where.
SETUP: Labels = {
    "model": ("model", _text),
    "gpu": ("GPU", _text),
    "tp": ("tensor-parallel GPUs", COUNT),
    "precision": ("weights", _text),
    "kv_precision": ("KV cache", _text),
    "isl": ("input tokens", COUNT),
    "osl": ("output tokens", COUNT),
}


def figures(
    title: str, f: Fields, labels: Labels, keys: Iterable[str] | None = None
) -> list[Block]:
    """Fields in the order of `keys` (default: the JSON's), each known one labelled and
    formatted, any other under its own name as it is, in a key-value table; a list of objects
    as a table of its own, a list of text as notes."""
    rows, more = [], []
    for key in f.data if keys is None else keys:
        value = f.data.get(key)
        name = labels[key][0] if key in labels else key
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            more.append(TableBlock(records_table(name, value)))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            more.append(NotesBlock(name, value))
        elif key in labels:
            rows.append([name, labels[key][1](f, key)])
        elif key in f.data:
            rows.append([name, shown(value)])
    table = PlainTable(title, ["", ""], [False, False], rows, "", show_header=False)
    return [TableBlock(table), *more]


def records_table(title: str, records: list[dict]) -> PlainTable:
    """A list of objects as a table: a column per field, in the order first seen."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    rows = [[shown(r.get(c)) for c in columns] for r in records]
    right = [all(isinstance(r.get(c), int | float) for r in records) for c in columns]
    return PlainTable(title, columns, right, rows, "")


def _series(f: Fields) -> str:
    """What a frontier's series is: the model served on a GPU at a precision and layout."""
    return f"{f.text('model')} · {f.text('gpu')} · {f.text('precision')} TP{f.text('tp')}"


def _notes(f: Fields) -> list[NotesBlock]:
    notes = f.texts("notes")
    return [NotesBlock("sources and notes", notes)] if notes else []


# --- estimate --------------------------------------------------------------------------------

ESTIMATE: Labels = {
    **SETUP,
    "projected": ("projection", lambda f, k: "yes: not the measured GPU" if f.data[k] else "no"),
    "spec": ("spec-table entry", _text),
    "weights_bytes": ("weights per GPU", BYTES),
    "kv_bytes_per_token": ("KV cache per token per GPU", BYTES),
    "memory_bytes": ("GPU memory", BYTES),
    "workspace_fraction": ("kept for workspace", SHARE),
    "max_batch_fits_memory": ("largest batch that fits", COUNT),
    "decode_batch_cap": ("decode batch used", COUNT),
    "prefill_budget_batch": ("prefill batch in the serving mix", COUNT),
    "prefill_tokens_per_s": ("prefill tokens/s per GPU", RATE),
    "decode_tokens_per_s": ("decode tokens/s per GPU, largest batch", RATE),
    "requests_per_s": ("requests/s per GPU, serving mix", RATE),
}
STEADY = "estimate: steady decode"
_ESTIMATE_ROWS = ("phase", "batch", "context", "step", "tokens/s per GPU", "source")


def estimate_section(item: Input) -> Section:
    f = item.fields
    rows = [
        [r.text("phase"), COUNT(r, "batch"), COUNT(r, "context"), MS(r, "step_ms"),
         RATE(r, "tokens_per_s"), r.text("source")]
        for r in f.records("rows")
    ]  # fmt: skip
    right = [False, True, True, True, True, False]
    title = "per phase and batch (step: the time to first token, or per output token)"
    table = PlainTable(title, list(_ESTIMATE_ROWS), right, rows, "")
    keys = [k for k in f.data if k not in ("rows", "notes")]
    blocks = [*figures("the estimate", f, ESTIMATE, keys), TableBlock(table), *_notes(f)]
    return Section(f"Estimate {item.name}: {f.text('model')} on {f.text('gpu')}", blocks)


def estimate_points(f: Fields) -> list[Row]:
    """Decode at each batch: output tok/s per GPU against tok/s per user (1 / time per token)."""
    return [
        {
            SERIES: _series(f),
            "how": STEADY,
            "per_user": 1e3 / r.number("step_ms"),
            "per_gpu": r.number("tokens_per_s"),
            "batch": r.number("batch"),
            "shown": f"batch {COUNT(r, 'batch')}, {MS(r, 'step_ms')} per token",
            "source": r.text("source"),
        }
        for r in f.records("rows")
        if r.text("phase") == "decode" and r.number("step_ms") > 0
    ]


# --- simulate --------------------------------------------------------------------------------

SIMULATION: Labels = {
    **SETUP,
    "workload": ("workload", _text),
    "rate_requests_s": ("arrivals, requests/s", _number(fmt_rate, "all at once (offline)")),
    "slo": ("latency target", _text),
    "output_tokens_s_per_gpu": ("output tokens/s per GPU", RATE),
    "offline_output_tokens_s_per_gpu": ("output tokens/s per GPU, offline", RATE),
    "requests_s_per_gpu": ("requests/s per GPU", RATE),
    "mean_running": ("mean running requests", RATE),
    "preemptions": ("preemptions", COUNT),
    "steps": ("steps", COUNT),
    "seconds": ("simulated time", SECONDS),
}


def simulation_section(item: Input) -> Section:
    f = item.fields
    percentiles = {  # ttft_p50_s: TTFT p50, for whichever percentiles the run reports
        k: (f"{k[:4].upper()} {k.split('_')[1]}", SECONDS)
        for k in f.data
        if k.startswith(("ttft_p", "tpot_p"))
    }
    keys = [k for k in f.data if k != "notes"]
    blocks = [*figures("the simulation", f, {**SIMULATION, **percentiles}, keys), *_notes(f)]
    return Section(f"Simulation {item.name}: {f.text('model')} on {f.text('gpu')}", blocks)


def simulation_points(f: Fields) -> list[Row]:
    """The simulated run: output tok/s per GPU against tok/s per user at its median TPOT."""
    if not f.has("tpot_p50_s") or f.number("tpot_p50_s") <= 0:
        return []
    return [
        {
            SERIES: _series(f),
            "how": "simulated serving run",
            "per_user": 1 / f.number("tpot_p50_s"),
            "per_gpu": f.number("output_tokens_s_per_gpu"),
            "shown": f"{f.text('workload')}; median TPOT {SECONDS(f, 'tpot_p50_s')}",
            "source": _text(f, "slo"),
        }
    ]


# --- capacity --------------------------------------------------------------------------------

CAPACITY: Labels = {
    "serving_gpus": ("GPUs serving (whole model copies)", COUNT),
    "per_gpu_output_tokens_s": ("output tokens/s per GPU", RATE),
    "output_tokens_day": ("output tokens per day", BIG),
    "total_tokens_day": ("input + output tokens per day", BIG),
    "requests_day": ("requests per day", BIG),
    "usd_per_million_output_tokens": ("USD per million output tokens", USD),
    "usd_per_million_total_tokens": ("USD per million tokens, input + output", USD),
    "target_tokens_s": ("target, output tokens/s", BIG),
    "gpus_for_target_tokens_s": ("GPUs for that target", COUNT),
    "target_tokens_day": ("target, output tokens per day", BIG),
    "gpus_for_target_tokens_day": ("GPUs for that target", COUNT),
    "claim_estimate_tokens_s": ("the fleet's output tokens/s, estimated", BIG),
    "claim_ratio": ("claim ÷ estimate", _number(lambda v: f"{v:.2f}")),
    "claim_verdict": ("claim", _text),
}
ASSUMPTIONS: Labels = {
    **SETUP,
    "gpus": ("GPUs in the fleet", COUNT),
    "utilization": ("share of the day at full batch", SHARE),
    "source": ("per-GPU rate from", _text),
    "deal_usd": ("deal, USD", USD),
    "years": ("deal term, years", _number(lambda v: f"{v:g}")),
    "usd_per_gpu_hour": ("USD per GPU-hour", USD),
}


def capacity_section(item: Input) -> Section:
    f = item.fields
    answer = [k for k in f.data if k not in ASSUMPTIONS]
    blocks = [
        *figures("the answer", f, CAPACITY, answer),
        *figures("its assumptions", f, ASSUMPTIONS, [k for k in ASSUMPTIONS if k in f.data]),
    ]
    title = f"Capacity plan {item.name}: {COUNT(f, 'gpus')} × {f.text('gpu')}, {f.text('model')}"
    return Section(title, blocks)


# --- step ------------------------------------------------------------------------------------

STEP: Labels = {
    "gpu": ("GPU", _text),
    "phase": ("phase", _text),
    "tokens": ("tokens in the step", COUNT),
    "batch": ("sequences", COUNT),
    "context": ("tokens cached per sequence", COUNT),
    "tp": ("tensor-parallel GPUs", COUNT),
    "layer_seconds": ("one layer", SECONDS),
}
_STEP_COLUMNS = ("op", "role", "shape", "dtype", "time", "bound", "TFLOP/s", "GB/s", "source")
TFLOPS = _number(lambda v: f"{v / 1e12:.3g}")
GBPS = _number(lambda v: f"{v / 1e9:,.0f}")


def step_section(item: Input) -> Section:
    f = item.fields
    ops = f.records("ops")
    rows = [
        [o.text("op"), o.text("role"), _shape(o), o.text("dtype"),
         SECONDS(o, "seconds"), o.text("bound"), TFLOPS(o, "flops_per_s"),
         GBPS(o, "bytes_per_s"), o.text("source")]
        for o in ops
    ]  # fmt: skip
    right = [False, False, False, False, True, False, True, True, False]
    table = PlainTable("each op of one layer", list(_STEP_COLUMNS), right, rows, "")
    keys = [k for k in f.data if k not in ("ops", "notes")]
    blocks = [*figures("the step", f, STEP, keys), ChartBlock(_step_chart(f, ops))]
    blocks += [TableBlock(table), *_notes(f)]
    return Section(f"Layer step {item.name}: {f.text('phase')} on {f.text('gpu')}", blocks)


def _shape(o: Fields) -> str:
    """A shape as --shape takes it (tokens=512,hidden=4096); anything else as it is."""
    shape = o.data.get("shape")
    return shape_text(shape) if isinstance(shape, dict) else shown(shape)


def _step_chart(f: Fields, ops: Sequence[Fields]) -> Spec:
    rows = [
        {
            SERIES: o.text("bound"),
            "op": f"{i + 1}. {o.text('op')} ({o.text('role')})",
            "us": o.number("seconds") * 1e6,
            "shown": SECONDS(o, "seconds"),
            "source": o.text("source"),
        }
        for i, o in enumerate(ops)
    ]
    return charts.chart(
        f"One layer's ops on {f.text('gpu')}: time each takes, by what bounds it",
        linear("us", "time (µs)"),
        nominal("op", "op, in step order"),
        [bar(rows)],
        (("op", "op"), ("shown", "time"), (SERIES, "bound"), ("source", "source")),
        zoom=False,
        height=charts.bar_height(len(rows)),
    )


# --- the adapters, and the frontier -----------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A planning command's JSON: the fields that tell it apart, its section, its points."""

    keys: tuple[str, ...]
    section: Callable[[Input], Section]
    points: Callable[[Fields], list[Row]] = lambda f: []


KINDS: dict[str, Kind] = {
    "estimate": Kind(("decode_tokens_per_s", "rows"), estimate_section, estimate_points),
    "simulate": Kind(
        ("output_tokens_s_per_gpu", "workload"), simulation_section, simulation_points
    ),
    "capacity": Kind(("per_gpu_output_tokens_s", "output_tokens_day"), capacity_section),
    "step": Kind(("ops", "layer_seconds"), step_section),
}


def frontier_section(items: Sequence[Input]) -> Section | None:
    """Output tokens/s per GPU against tokens/s per user, for every estimate (given, or saved in
    a result file) and simulation: what serving faster to each user costs in throughput."""
    points = []
    for item in items:
        if item.doc is not None:
            for i, e in enumerate(item.doc.estimates):
                where = f"{item.path}: estimates[{i}]"
                points += estimate_points(Fields(dataclasses.asdict(e), where))
        else:
            points += KINDS[item.kind].points(item.fields)
    if not points:
        return None
    steady = [p for p in points if p["how"] == STEADY]
    simulated = [p for p in points if p["how"] != STEADY]
    spec = charts.chart(
        "Throughput against interactivity: output tokens/s per GPU vs tokens/s per user",
        log("per_user", "tokens/s per user (1 / time per output token)"),
        log("per_gpu", "output tokens/s per GPU"),
        [charts.line(steady, order=_BY_BATCH), point(simulated, shape=_HOW)],
        ((SERIES, "served"), ("how", "from"), ("shown", "at"), ("source", "source")),
    )
    intro = (
        "Each estimate's decode at every batch it was estimated at (steady state), and each "
        "simulated serving run at its median time per output token."
    )
    return Section("Throughput–interactivity frontier", [ChartBlock(spec)], intro)


_HOW = {"field": "how", "type": "nominal", "title": None}
_BY_BATCH = {"field": "batch", "type": "quantitative"}  # a line from batch to batch, not by x
