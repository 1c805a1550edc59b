"""The report's sections for result files: each run's provenance, charts and tables (the tables
`run` prints), the comparison of the runs with its projections (the tables `compare` prints),
and the tokens/s per GPU of the estimates saved in them."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench import BenchError
from bench.measure.ops import OPS, label
from bench.plan import compare
from bench.present.plain import plain
from bench.present.plots import timed
from bench.present.report import charts
from bench.present.report.charts import SERIES, Layer, Spec, line, log, nominal, point
from bench.present.report.inputs import Input
from bench.present.report.page import ChartBlock, NotesBlock, Section, TableBlock
from bench.present.tables.comparisons import compare_tables
from bench.present.tables.runs import provenance_table, results_tables
from bench.record.hardware import GpuSpec, get_spec, peak_tflops, spec_of
from bench.record.schema import CaseResult, EstimateRecord, ResultDoc
from bench.record.units import fmt_ms, fmt_rate

_CASE_TIPS = (("case", "case"), ("time", "median"), ("rate", "achieved"))


def run_section(item: Input) -> Section:
    """A run: where and how it was measured, its roofline and per-op charts, its tables."""
    doc = item.doc
    blocks = [TableBlock(plain(provenance_table(doc, item.path)))]
    blocks += [ChartBlock(spec) for spec in (_roofline(doc, item.name), *_op_charts(doc))]
    blocks += [TableBlock(plain(t)) for t in results_tables(doc)]
    interpreted = not timed(doc) and doc.cases
    intro = "No case was timed on hardware: no chart (interpreted times are not speed figures)."
    return Section(f"Run {item.name}: {_device(doc)}", blocks, intro if interpreted else "")


def _device(doc: ResultDoc) -> str:
    spec = spec_of(doc.device, doc.spec)
    name = f"{doc.device.name} ({spec.name})" if spec else doc.device.name
    return f"{name}, {doc.created[:10]}"


def _case(c: CaseResult) -> dict[str, str]:
    """What hovering a case shows, as the tables show it."""
    rate = f"{c.tflops:.3g} TFLOP/s, {c.gbps:.3g} GB/s" if c.gbps is not None else ""
    return {
        SERIES: f"{c.impl} {c.dtype}",
        "case": f"{c.op} {label(c.op, c.shape)} {c.dtype} {c.impl}",
        "time": fmt_ms(c.timing.median_ms),
        "rate": rate,
    }


def _roofline(doc: ResultDoc, name: str) -> Spec | None:
    """Each timed case at (FLOP/byte, TFLOP/s) under the device's roofs, one per dtype."""
    cases = timed(doc)
    if not cases:
        return None
    spec = spec_of(doc.device, doc.spec)
    points = [{**_case(c), "intensity": c.flops / c.bytes, "tflops": c.tflops} for c in cases]
    intensities = [p["intensity"] for p in points]
    roofs = [] if spec is None else _roofs(spec, [c.dtype for c in cases], intensities)
    where = "" if spec else " (no spec-table entry: the measured points only)"
    return charts.chart(
        f"Roofline: {name}, {_device(doc)}{where}",
        log("intensity", "arithmetic intensity (FLOP/byte)"),
        log("tflops", "achieved TFLOP/s"),
        [point(points), line(roofs, dashed=True)],
        _CASE_TIPS,
    )


def _roofs(spec: GpuSpec, dtypes: list[str], intensities: list[float]) -> list[dict]:
    """Per dtype, min(dense peak, intensity × bandwidth) at the ends of the points' range and
    at the ridge between them."""
    lo, hi = min(intensities) / 4, max(intensities) * 4
    rows = []
    for dtype in dict.fromkeys(dtypes):
        peak = peak_tflops(spec, dtype)
        if not peak:
            continue
        ridge = peak * 1e3 / spec.bandwidth_gbs
        roof = f"roof {dtype}: {peak:g} TFLOP/s, {spec.bandwidth_gbs:g} GB/s"
        for x in sorted({lo, hi, min(max(ridge, lo), hi)}):
            tflops = min(peak, x * spec.bandwidth_gbs / 1e3)
            rows.append({SERIES: roof, "intensity": x, "tflops": tflops, "case": roof})
    return rows


def _op_charts(doc: ResultDoc) -> list[Spec]:
    """Per op, achieved rate against problem size, a line per implementation and dtype:
    TFLOP/s against GFLOP, or for a memory-bound op GB/s against MB moved."""
    out = []
    cases = timed(doc)
    for op in dict.fromkeys(c.op for c in cases):
        mine = [c for c in cases if c.op == op]
        memory = op in OPS and OPS[op].memory_bound
        rows = [
            {
                **_case(c),
                "size": c.bytes / 1e6 if memory else c.flops / 1e9,
                "speed": c.gbps if memory else c.tflops,
            }
            for c in mine
        ]
        size, speed = ("MB moved per call", "GB/s") if memory else ("GFLOP per call", "TFLOP/s")
        out.append(
            charts.chart(
                f"{op}: {speed} against size, {_device(doc)}",
                log("size", f"problem size ({size})"),
                log("speed", f"achieved {speed}"),
                [line(rows)],
                _CASE_TIPS,
            )
        )
    return out


def comparison_section(items: Sequence[Input], project: Sequence[str]) -> Section | None:
    """The result files side by side (the first is the baseline) with the projections asked
    for: compare's tables and, per op, each case's speedup over the first file."""
    if len(items) < 2 and not project:
        return None
    for gpu in project:  # a GPU the spec table lacks is the user's mistake: say so at once
        try:
            get_spec(gpu)
        except ValueError as e:
            raise BenchError(str(e)) from None
    title = "Comparison: " + " vs ".join(i.name for i in items)
    try:
        comparison = compare.compare([i.path for i in items], project=project)
    except BenchError as e:  # files with nothing in common still make a report
        return Section(title, [NotesBlock("not compared", [str(e)])])
    blocks: list = [ChartBlock(spec) for spec in _speedup_charts(comparison)]
    blocks += [TableBlock(plain(t)) for t in compare_tables(comparison, sys.maxsize)]
    return Section(title, blocks)


def _speedup_charts(comparison: compare.Comparison) -> list[Spec]:
    """Per op, each case's speedup over the first file in every later column."""
    out = []
    names = [_column_name(c) for c in comparison.columns]
    for op in dict.fromkeys(r.case.op for r in comparison.rows):
        rows = [
            {
                SERIES: names[i],
                "case": f"{label(op, r.case.shape)} {r.case.dtype} {r.case.impl}",
                "speedup": up,
                "shown": f"{up:.2f}× {_word(r, i)}".strip(),
            }
            for r in comparison.rows
            if r.case.op == op
            for i, up in enumerate(r.speedups)
            if i > 0 and up
        ]
        if rows:
            out.append(_speedup_chart(op, rows, names[0]))
    return out


def _speedup_chart(op: str, rows: list[dict], baseline: str) -> Spec:
    one = Layer({"type": "rule", "strokeDash": [3, 3]}, [{"speedup": 1.0}], _ONLY_X)
    cases = len(dict.fromkeys(r["case"] for r in rows))
    return charts.chart(
        f"{op}: speedup over {baseline} (A time / this time; above 1 is faster)",
        log("speedup", "speedup over A"),
        nominal("case", "case"),
        [point(rows), one],
        (("case", "case"), (SERIES, "column"), ("shown", "speedup")),
        zoom=False,
        height=charts.bar_height(cases),
    )


_ONLY_X = {"y": None, "color": None, "opacity": None, "tooltip": None}


def _column_name(col: compare.Column) -> str:
    if col.projected_from:
        return f"{col.tag}: projection to {col.device}"
    return f"{col.tag}: {col.path}"


def _word(row: compare.Row, i: int) -> str:
    """The verdict, or the bound a projected case hits."""
    cell, verdict = row.cells[i], row.verdicts[i]
    if verdict is not None:
        return verdict.value
    return f"{cell.bound}-bound" if cell is not None and cell.projected else ""


def tokens_section(items: Sequence[Input]) -> Section | None:
    """Prefill and decode tokens/s per GPU of every estimate saved in the files, a chart per
    model and serving set-up."""
    groups: dict[tuple, list[tuple[str, EstimateRecord]]] = {}
    for item in items:
        for e in item.doc.estimates:
            groups.setdefault(e.setup, []).append((item.name, e))
    if not groups:
        return None
    blocks = [ChartBlock(_tokens_chart(entries)) for entries in groups.values()]
    return Section("Tokens/s per GPU: the estimates saved in the files", blocks)


def _tokens_chart(entries: list[tuple[str, EstimateRecord]]) -> Spec:
    rows = [
        {
            SERIES: phase,
            "where": f"{e.gpu}{' (projection)' if e.projected else ''} · {name}",
            "rate": getattr(e, f"{phase}_tokens_per_s"),
            "shown": fmt_rate(getattr(e, f"{phase}_tokens_per_s")) + " tok/s",
        }
        for name, e in entries
        for phase in ("prefill", "decode")
    ]
    bars = charts.bar(rows, yOffset={"field": SERIES, "sort": None})
    return charts.chart(
        f"{entries[0][1].setup_label}: tokens/s per GPU (decode at the largest batch estimated)",
        {"field": "rate", "type": "quantitative", "title": "tokens/s per GPU"},
        nominal("where", "GPU · file"),
        [bars],
        (("where", "GPU · file"), (SERIES, "phase"), ("shown", "rate")),
        zoom=False,
        height=charts.bar_height(len(rows)),
    )
