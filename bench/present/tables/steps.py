"""`tokbench step`: one decoder layer's ops at one step, each with its time, where the time
comes from, what bounds it and the FLOP/s and bytes/s it means."""

from __future__ import annotations

from rich.table import Table

from bench.measure import ops
from bench.plan.layer_times import LayerTimes, OpTime
from bench.plan.models import layout_label
from bench.present.tables.base import Column, bullets, column_table, text
from bench.record.units import fmt_ms


def _rate(value: float, unit: str) -> str:
    """1.2e12 -> '1.20 T' + unit; '' for nothing."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}" if value else ""


STEP_COLUMNS: tuple[Column[OpTime], ...] = (
    text("role", lambda r: r.role),
    text("op", lambda r: r.op),
    text("shape", lambda r: ops.label(r.op, r.shape)),
    text("dtype", lambda r: r.dtype),
    Column("time", lambda r: fmt_ms(r.seconds * 1e3)),
    text("source", lambda r: r.source),
    text("bound", lambda r: r.bound),
    Column("FLOP/s", lambda r: _rate(r.flops_per_s, "FLOP/s")),
    Column("bytes/s", lambda r: _rate(r.bytes_per_s, "B/s")),
    Column("layers", lambda r: "all" if r.share == 1 else f"{r.share:.0%}"),
)


def step_table(layer: LayerTimes) -> Table:
    s = layer.step
    where = f"{s.batch} sequences × {s.seq} tokens" if s.batch > 1 else f"{s.seq} tokens"
    cached = f", {s.context - s.seq:,} cached each" if s.context > s.seq else ""
    layout = layout_label(s.tp, s.dp, s.ep)
    title = (
        f"one layer's {s.phase} step on {layer.gpu}: {where}{cached}, {layout}, "
        f"{s.weights} weights: {fmt_ms(layer.layer_seconds * 1e3)} a layer"
    )
    return column_table(title, STEP_COLUMNS, layer.rows, caption=bullets(layer.notes))
