"""The commands that list what tokbench knows: `ops` and `models`."""

from __future__ import annotations

import typer

from bench.plan.models import MODELS
from bench.present import markdown as md
from bench.present.consoles import console
from bench.present.options import Format, FormatOpt
from bench.present.tables.catalog import OPS_COLUMNS, models_table, ops_rows, ops_table


def ops_cmd(fmt: FormatOpt = Format.table) -> None:
    """List the ops that can be benchmarked: shape keys, dtypes, implementations (as Markdown:
    docs/ops.md)."""
    if fmt is Format.markdown:
        typer.echo(md.table(OPS_COLUMNS, ops_rows()), nl=False)
        return
    console().print(ops_table())


def models_cmd() -> None:
    """List the built-in model configs with their sources (or pass a config file to --model)."""
    console().print(models_table(list(MODELS.values())))
