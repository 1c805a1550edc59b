"""`tokbench kernels`: compile every Triton kernel's autotune configs for a Hopper or Blackwell
GPU on this machine (no GPU needed) and show what each build uses (bench.measure.aot)."""

from __future__ import annotations

from typing import Annotated

import typer

from bench.measure.aot import TARGETS, check_request, compile_report
from bench.present import markdown as md
from bench.present.consoles import console, err
from bench.present.options import Format, FormatOpt
from bench.present.tables.kernels import (
    KERNEL_HEADERS,
    KERNEL_RIGHT,
    kernel_rows,
    kernels_table,
    limits_caption,
    over_the_limits,
)

TargetOpt = Annotated[
    str, typer.Option(help=f"GPU architecture to compile for: {', '.join(TARGETS)}.")
]
KernelOpsOpt = Annotated[
    list[str] | None,
    typer.Option("--op", help="Op whose kernels to compile (default: all); repeatable."),
]
SampleOpt = Annotated[
    bool,
    typer.Option(
        "--sample",
        help="Only each op's heaviest config at its worst shapes: a minute, where every "
        "config (about 1,200 builds) takes an hour or more on two cores the first time "
        "(Triton caches the builds).",
    ),
]


def kernels_cmd(
    target: TargetOpt = "sm_90",
    ops: KernelOpsOpt = None,
    sample: SampleOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Compile the Triton kernels for a GPU that need not be here (Triton's bundled ptxas):
    registers, spills, shared memory and occupancy of every autotune config at the suites'
    shapes and the kernels' limits. Exit 1 when a build spills or does not fit."""
    check_request(target, ops)  # before the line that promises a long compile
    err.print(f"compiling for {target}: long the first time (see --sample); Triton caches builds")
    builds = compile_report(target, ops, sample=sample)
    if fmt is Format.markdown:
        rows = kernel_rows(builds)
        typer.echo(md.table(KERNEL_HEADERS, rows, KERNEL_RIGHT) + "\n" + limits_caption(target))
    else:
        console().print(kernels_table(target, builds))
    if over := over_the_limits(builds):
        err.print(f"[red]{len(over)} of {len(builds)} builds spill or do not fit on {target}[/red]")
        raise typer.Exit(1)
