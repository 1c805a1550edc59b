"""`tokbench compare`: the legend, the side-by-side tables per op, geometric means, per-model
estimates, and the gate's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.measure import ops
from bench.plan import compare
from bench.plan.compare import (
    Cell,
    Comparison,
    Row,
    Verdict,
    estimate_groups,
    tokens_per_dollar,
    tokens_per_watt,
)
from bench.present.tables.base import Column, column_table, key_value_table, text
from bench.record.schema import EstimateRecord
from bench.record.units import fmt_ms, fmt_ratio, plural


def compare_tables(comparison: Comparison, width: int = 120) -> list[Table]:
    """Legend, side-by-side tables per op, and geometric means, laid out for a console of width
    columns: when every column side by side is wider, one table per later column beside A."""
    out = [_legend(comparison)]
    for op in dict.fromkeys(r.case.op for r in comparison.rows):
        out += _op_tables(comparison, op, width)
    if len(comparison.columns) > 1:
        geomeans = _geomean_table(comparison)
        if geomeans.row_count:
            out.append(geomeans)
    if estimate_groups(comparison):
        out.append(_estimates_table(comparison))
    return out


def _legend(comparison: Comparison) -> Table:
    table = key_value_table("compare", no_wrap_keys=True)
    for col in comparison.columns:
        device = f"{col.device} ({col.spec.name})" if col.spec else col.device
        if col.measured:
            what = f"{escape(str(col.path))}: {escape(device)}, {col.date}, suite {col.doc.suite}"
        else:
            what = (
                f"[italic]{escape(col.device)}: PROJECTION from {col.projected_from} through the "
                "spec table (times scaled by the ratio of the two GPUs' rooflines); not "
                "measured[/italic]"
            )
        table.add_row(col.tag, what)
    table.add_row("vs A", "speedup over A: A time / this time, above 1 is faster")
    for word, meaning in _words(comparison):
        table.add_row(word, escape(meaning))
    if comparison.threshold is not None:
        gate = f"a case more than {comparison.threshold:.0%} slower than in A, beyond noise,"
        table.add_row(
            "gate",
            escape(
                f"{gate} fails (exit 1); so does a case timed in A that a later file failed, "
                "skipped, lacks or has no usable time for"
            ),
        )
    for note in comparison.notes:
        table.add_row("note", escape(note))
    return table


NOISE = (
    "the timed rounds' medians do not differ significantly (Mann–Whitney U, p < 0.05) or by "
    "more than either run's noise floor (the spread of its rounds); files without rounds: the "
    "[p20, p80] spreads overlap"
)
CONTENDED = (
    "timed on a CPU that other processes were using too (in either run): not judged by the "
    "gate, which lists it, as its time says more about them than about the code"
)


def _words(comparison: Comparison) -> list[tuple[str, str]]:
    """The short words the side-by-side tables use that this comparison shows, explained."""
    seen = {v for r in comparison.rows for v in r.verdicts if v}
    gate = comparison.threshold
    under = f" but within the {gate:.0%} gate" if gate is not None else ""
    out = []
    if Verdict.SAME in seen:
        out.append(("same", f"within noise: {NOISE}"))
    if seen & {Verdict.SLOWER, Verdict.FASTER}:
        out.append(("slower, faster", f"beyond noise{under}"))
    if Verdict.CONTENDED in seen:
        out.append(("contended", CONTENDED))
    if seen & {Verdict.REGRESSION, Verdict.IMPROVEMENT}:
        out.append(
            ("regressed, improved", f"beyond noise and beyond the {gate:.0%} gate (either way)")
        )
    if any(not c.measured for c in comparison.columns):
        out.append(("memory, compute", "what bounds the case on the projected GPU's roofline"))
    problems = sorted({p.word for r in comparison.rows for p in r.problems if p})
    if problems:
        fails = "; fails the gate" if gate is not None else ""
        out.append((", ".join(problems), f"timed in A, no usable time in this file{fails}"))
    partial = len(comparison.partial())
    if partial:
        out.append(("—", f"not in that file ({partial} cases are in only some files)"))
    return out


def _op_tables(comparison: Comparison, op: str, width: int) -> list[Table]:
    """All columns side by side when that fits width; else A beside each later column."""
    n = len(comparison.columns)
    table = _op_table(comparison, op, range(n))
    if n <= 2 or Console(width=10_000).measure(table).maximum <= width:
        return [table]
    return [_op_table(comparison, op, (0, i)) for i in range(1, n)]


def _op_table(comparison: Comparison, op_name: str, shown: Sequence[int]) -> Table:
    title = f"{op_name}: {ops.description(op_name)}"
    if len(shown) < len(comparison.columns):
        title += f" — {comparison.columns[shown[-1]].tag} vs A"
    columns: list[Column[Row]] = [
        text("shape", lambda r: ops.label(op_name, r.case.shape), no_wrap=True),
        text("dtype", lambda r: r.case.dtype, overflow="fold"),
        text("impl", lambda r: r.case.impl, overflow="fold"),
    ]
    for i in shown:
        columns += _file_columns(i, comparison.columns[i], comparison.threshold)
    rows = [
        r
        for r in comparison.rows
        if r.case.op == op_name and not all(r.cells[i] is None for i in shown)
    ]
    return column_table(escape(title), columns, rows)


def _file_columns(i: int, col: compare.Column, threshold: float | None) -> list[Column[Row]]:
    """time, TFLOP/s, [% peak], [vs A] of the file in column i."""

    def tflops(row: Row) -> str:
        cell = row.cells[i]
        return f"{cell.tflops:.3g}" if cell and cell.speed and cell.tflops is not None else ""

    def peak(row: Row) -> str:
        cell = row.cells[i]
        frac = cell.peak_fraction if cell and cell.speed else None
        return f"{100 * frac:.0f}%" if frac is not None else ""

    def versus(row: Row) -> str:
        problem = row.problems[i] if row.problems else None
        if problem is not None:
            return f"[{'bold red' if threshold is not None else 'red'}]{problem.word}[/]"
        return _vs_text(row.speedups[i], row.verdicts[i], row.cells[i])

    proj = " proj." if col.projected_from else ""
    out = [
        Column(f"{col.tag}{proj}\ntime", lambda r: _time_text(r.cells[i]), no_wrap=True),
        Column(f"{col.tag}\nTFLOP/s", tflops, no_wrap=True),
    ]
    if col.spec is not None:
        out.append(Column(f"{col.tag} %\npeak", peak, no_wrap=True))
    if i > 0:
        out.append(text(f"{col.tag}\nvs A", versus, no_wrap=True))
    return out


def _time_text(cell: Cell | None) -> str:
    if cell is None:
        return "[dim]—[/dim]"
    c = cell.case
    if c.status != "ok":
        return "[red]failed[/red]" if c.status == "failed" else "[dim]skipped[/dim]"
    if cell.median_ms is None:
        return "[red]bad time[/red]" if c.timing is not None else ""
    shown = fmt_ms(cell.median_ms)
    return f"[dim]{shown} interp.[/dim]" if c.interpreted else shown


def _vs_text(speedup: float | None, v: Verdict | None, cell: Cell | None) -> str:
    if speedup is None:
        return ""
    ratio = fmt_ratio(speedup)
    if cell is not None and cell.projected:
        return f"{ratio} [dim]{cell.bound}[/dim]"
    if v is None:
        return ratio
    return f"{ratio} [{_STYLE[v]}]{v.value}[/]"


_STYLE = {
    Verdict.SAME: "dim",
    Verdict.SLOWER: "yellow",
    Verdict.FASTER: "cyan",
    Verdict.REGRESSION: "bold red",
    Verdict.IMPROVEMENT: "bold green",
    Verdict.CONTENDED: "yellow",
}


class _Mean(NamedTuple):
    """The geometric mean of one op's speedups in the later file column i."""

    op: str
    i: int
    col: compare.Column
    mean: float
    cases: int


def _geomean_table(comparison: Comparison) -> Table:
    """Per op and later column with at least one case timed in both: the geometric mean."""
    means = [
        _Mean(op, i, col, *per_column[i])
        for op, per_column in comparison.geomeans().items()
        for i, col in enumerate(comparison.columns[1:], start=1)
        if per_column[i] is not None
    ]
    columns: tuple[Column[_Mean], ...] = (
        text("op", lambda m: m.op),
        text("column", lambda m: m.col.tag + (" (projection)" if m.col.projected_from else "")),
        Column("geomean vs A", lambda m: fmt_ratio(m.mean)),
        Column("cases", lambda m: str(m.cases)),
        text("verdicts", lambda m: _verdict_counts(comparison, m.op, m.i)),
    )
    return column_table("per op: geometric mean of the speedup over A", columns, means)


def _verdict_counts(comparison: Comparison, op: str, i: int) -> str:
    tally: dict[str, int] = {}
    for row in comparison.rows:
        if row.case.op != op:
            continue
        v, p = row.verdicts[i], row.problems[i] if row.problems else None
        word = v.value if v is not None else p.word if p is not None else None
        if word is not None:
            tally[word] = tally.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in tally.items())


class _Entry(NamedTuple):
    """An estimate in a file, beside the first of its group's decode rate."""

    col: compare.Column
    estimate: EstimateRecord
    first: float  # decode tokens/s of the group's first estimate


def _number(value: float | None, unit: float) -> str:
    return f"{value / unit:.3g}" if value is not None else ""


def _gpu(e: EstimateRecord) -> str:
    return escape(e.gpu) + (" [italic](projection)[/italic]" if e.projected else "")


def _versus_first(x: _Entry) -> str:
    return fmt_ratio(x.estimate.decode_tokens_per_s / x.first) if x.first > 0 else ""


_ESTIMATE_COLUMNS: tuple[Column[_Entry], ...] = (
    text("model", lambda x: escape(x.estimate.setup_label)),
    text("file", lambda x: x.col.tag),
    text("GPU", lambda x: _gpu(x.estimate)),
    Column("prefill tok/s", lambda x: f"{x.estimate.prefill_tokens_per_s:,.0f}"),
    Column("decode tok/s", lambda x: f"{x.estimate.decode_tokens_per_s:,.0f}"),
    Column("vs first", _versus_first),
    Column("max batch", lambda x: str(x.estimate.max_batch)),
    Column("req/s", lambda x: f"{x.estimate.requests_per_s:.3g}"),
)


def _estimates_table(comparison: Comparison) -> Table:
    entries = [
        _Entry(col, e, group[0][1].decode_tokens_per_s)
        for group in estimate_groups(comparison).values()
        for col, e in group
    ]
    per_watt = any(tokens_per_watt(x.estimate) is not None for x in entries)
    per_dollar = any(tokens_per_dollar(x.estimate, comparison.prices) is not None for x in entries)
    title = (
        "per-model estimates, per GPU; decode at the largest batch estimated"
        + ("; per W: decode tok/s per watt of spec-sheet power" if per_watt else "")
        + (
            "; serving out Mtok/$: output tokens per USD at --price in the serving mix "
            "(isl in, osl out; req/s × osl), as capacity plans, at full utilisation"
            if per_dollar
            else ""
        )
    )
    columns = list(_ESTIMATE_COLUMNS)
    if per_watt:
        columns.append(Column("per W", lambda x: _number(tokens_per_watt(x.estimate), 1)))
    if per_dollar:

        def dollars(x: _Entry) -> str:
            return _number(tokens_per_dollar(x.estimate, comparison.prices), 1e6)

        columns.append(Column("serving out Mtok/$", dollars))
    return column_table(title, columns, entries)


def gate_report(comparison: Comparison, fail_on: str) -> tuple[list[str], bool]:
    """The gate's lines (console markup) and whether it passed: a warning per later file whose
    run is incomplete, a line per regression and per broken case, then the outcome."""
    lines = [
        f"[yellow]warning:[/yellow] {col.tag} ({escape(str(col.path))}) is an incomplete run: "
        "it was interrupted or is still running; cases it lacks count as missing"
        for col in comparison.incomplete()
    ]
    regressions, broken = comparison.regressions(), comparison.broken()
    contended = comparison.contended()
    lines += [f"[bold red]regression:[/bold red] {escape(line)}" for line in regressions]
    lines += [f"[bold red]broken:[/bold red] {escape(line)}" for line in broken]
    lines += [f"[yellow]contended:[/yellow] {escape(line)}" for line in contended]
    gate = f"gate {escape(fail_on)}"
    judged = plural(comparison.judged(), "comparison")
    if contended:
        judged += f"; {plural(len(contended), 'case')} not judged: timed under CPU contention"
    if regressions or broken:
        lines.append(
            f"{gate}: [bold red]failed[/bold red] ({plural(len(regressions), 'regression')}, "
            f"{plural(len(broken), 'broken case')}; {judged})"
        )
        return lines, False
    lines.append(f"{gate}: passed ({judged})")
    return lines, True
