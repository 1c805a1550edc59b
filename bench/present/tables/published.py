"""`tokbench validate`: each published figure against its estimate, the geometric mean and the
rows furthest off."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from bench.plan.models import layout_label
from bench.plan.validate import Check, geometric_mean, worst
from bench.present.tables.base import Column, bullets, column_table, text
from bench.record.units import fmt_rate, plural

# est/pub shown green: within a quarter of the published figure either way (1/1.25 = 0.8). An
# assumption: a judgement of what counts as close, not a published tolerance.
AGREEMENT = (0.8, 1.25)


def _ratio(c: Check) -> str:
    ratio = c.ratio
    if not ratio:
        return "—"
    low, high = AGREEMENT
    colour = "green" if low <= ratio <= high else "yellow"
    return f"[{colour}]{ratio:.2f}[/{colour}]"


CHECK_COLUMNS: tuple[Column[Check], ...] = (
    text("model", lambda c: escape(c.row.model)),
    text("GPU", lambda c: c.row.gpu),
    Column("weights/KV", lambda c: f"{c.row.precision}/{c.row.kv_precision}"),
    # The TP degree, and where a row has them its attention DP groups and EP degree.
    Column("TP", lambda c: layout_label(c.row.tp, c.row.dp, c.row.ep).removeprefix("TP ")),
    Column("in→out", lambda c: f"{c.row.isl}→{c.row.osl}"),
    Column("published", lambda c: fmt_rate(c.row.published)),
    Column("estimate", lambda c: fmt_rate(c.estimate) if c.estimate is not None else "—"),
    Column("est/pub", _ratio),
    text("note", lambda c: escape(c.note)),
)


def validate_table(checks: list[Check], name: str) -> Table:
    """Estimate ÷ published per row, the geometric mean and the worst rows."""
    mean = geometric_mean(checks)
    rated = [c for c in checks if c.ratio]
    furthest = "; ".join(
        f"{c.row.model} {c.row.gpu} {layout_label(c.row.tp, c.row.dp, c.row.ep)} "
        f"{c.row.isl}→{c.row.osl} {c.ratio:.2f}"
        for c in worst(checks)
    )
    notes = [
        f"geometric mean of est/pub over {plural(len(rated), 'row')}: "
        + (f"{mean:.2f}" if mean else "none"),
        f"furthest: {furthest or 'none'}",
        "sources: line by line in the file; the estimates are from spec sheets and default "
        "efficiencies unless result files were given, never fitted to these rows",
        "estimate: simulate's run of the row's set-up, in its steady state: offline (the "
        "throughput ceiling) for throughput rows, the SLO search for server rows",
    ]
    title = f"{name}: estimate ÷ published output tok/s per GPU"
    return column_table(title, CHECK_COLUMNS, checks, caption=bullets(notes))
