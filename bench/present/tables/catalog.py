"""What tokbench knows: the ops it benchmarks (`tokbench ops`, also as Markdown for docs/ops.md)
and the built-in model configs (`tokbench models`)."""

from __future__ import annotations

from rich.table import Table

from bench.measure import ops
from bench.measure.ops.base import Op
from bench.plan.models import ModelConfig, param_count
from bench.present.tables.base import Column, column_table, text
from bench.record.units import fmt_params, plural


def _keys(op: Op) -> str:
    return ", ".join(f"{k.name}{' (true/false)' if k.switch else ''}: {k.help}" for k in op.keys)


def _impls(op: Op) -> str:
    """The baseline first."""
    return ", ".join([op.baseline, *(i.name for i in op.impls if i.name != op.baseline)])


# Every registered op: its shape keys, dtypes, implementations, part of a step and how the
# op-time model treats it.
OP_COLUMNS: tuple[Column[Op], ...] = (
    text("op", lambda op: op.name),
    text("what", lambda op: op.description),
    text("shape keys", _keys),
    text("dtypes", lambda op: ", ".join(op.dtypes)),
    text("implementations (baseline first)", _impls),
    text("part", lambda op: op.part),
    text("efficiency class", lambda op: op.efficiency),
)
OPS_COLUMNS = tuple(c.header for c in OP_COLUMNS)


def ops_rows() -> list[tuple[str, ...]]:
    """Every registered op's cells, as the ops table shows them."""
    return [tuple(c.cell(op) for c in OP_COLUMNS) for op in ops.OPS.values()]


def ops_table() -> Table:
    """`tokbench ops`: the registry as a table."""
    return column_table("ops", OP_COLUMNS, ops.OPS.values())


def models_table(configs: list[ModelConfig]) -> Table:
    """The model configs and their derived parameter counts; sources as numbered footnotes in
    the caption, which wraps at word boundaries where a table column would cut them short."""
    sources: dict[str, int] = {}

    def source(c: ModelConfig) -> str:
        why = f"; no estimates: {c.unsupported} not modelled" if c.unsupported else ""
        return f"[{sources.setdefault(c.source + why, len(sources) + 1)}]"

    def window(c: ModelConfig) -> str:
        layers = plural(c.sliding_layers, "layer")
        shown = f"{c.sliding_window} in {layers}" if c.sliding_layers else ""
        return shown + (" sinks" if c.sinks else "")

    columns: tuple[Column[ModelConfig], ...] = (
        text("model", lambda c: c.name, no_wrap=True),  # names are what a user types: never cut
        Column("hidden", lambda c: str(c.hidden)),
        Column("layers", lambda c: str(c.layers)),
        Column("heads/kv", lambda c: f"{c.heads}/{c.kv_heads}"),
        Column("head dim", lambda c: str(c.head_dim)),
        Column("MLP", lambda c: str(c.intermediate)),
        Column("vocab", lambda c: str(c.vocab)),
        Column("top-k/E", lambda c: f"{c.top_k}/{c.experts}" if c.moe else ""),
        Column("window", window),
        Column("params", lambda c: fmt_params(param_count(c))),
        Column("source", source),
    )
    table = column_table("models", columns, configs)
    table.caption = "\n".join(f"[{n}] {note}" for note, n in sources.items())
    return table
