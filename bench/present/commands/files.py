"""The commands that read result files: `compare`, `plot`, `export` and `report`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bench import BenchError
from bench.measure.ops import load_results
from bench.plan import compare
from bench.present import export, plots, report
from bench.present import markdown as md
from bench.present.consoles import console, err
from bench.present.names import short_names
from bench.present.options import ChartForceOpt, Format, FormatOpt
from bench.present.tables.comparisons import compare_tables, gate_report

FilesArg = Annotated[list[Path], typer.Argument(help="Result files; the first is the baseline.")]
FailOnOpt = Annotated[
    str | None,
    typer.Option(
        help="Gate, as slower:PERCENT% (e.g. slower:5%): exit 1 when a case got slower "
        "than in the first file by more than this, outside the p20-p80 spread of both "
        "runs, or when a case timed in the first file failed, was skipped, is missing or "
        "has no usable time in a later one."
    ),
]
ProjectOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Add a column projected from the first file measured on a GPU in the spec "
        "table to this GPU (e.g. b200); repeatable."
    ),
]
PriceOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="GPU=USD per GPU-hour for estimates' output tokens per dollar in the serving "
        "mix (as capacity plans); repeatable."
    ),
]
PlotOpt = Annotated[
    Path | None, typer.Option(help="Also write PNG charts of the files into this directory.")
]


def compare_cmd(
    files: FilesArg,
    fail_on: FailOnOpt = None,
    project: ProjectOpt = None,
    price: PriceOpt = None,
    plot: PlotOpt = None,
    force: ChartForceOpt = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Compare result files side by side; with --fail-on, exit 1 on a regression or a case
    that broke (failed, skipped, missing or untimed in a later file)."""
    threshold = compare.parse_fail_on(fail_on) if fail_on is not None else None
    comparison = compare.compare(
        files, threshold=threshold, project=project or (), prices=compare.parse_prices(price or ())
    )
    lines, passed = gate_report(comparison, fail_on) if fail_on is not None else ([], True)
    if fmt is Format.markdown:  # every column side by side: a page scrolls, a console wraps
        typer.echo(md.tables(compare_tables(comparison, sys.maxsize), lines), nl=False)
    else:
        out = console()
        out.print(*compare_tables(comparison, out.width))
        for line in lines:
            out.print(line, highlight=False, soft_wrap=True)
    if plot is not None:
        measured = [c for c in comparison.columns if c.measured]
        names = short_names([c.path for c in measured])
        runs = [(name, c.doc) for name, c in zip(names, measured, strict=True)]
        _report_plots(plots.write_plots(runs, plot, force, option="--plot"), plot)
    if not passed:
        raise typer.Exit(1)


PlotFilesArg = Annotated[list[Path], typer.Argument(help="Result files to chart.")]
PlotOutOpt = Annotated[Path, typer.Option(help="Directory for the PNG files.")]
PlotForceOpt = Annotated[
    bool, typer.Option(help="Replace files in --out that tokbench did not draw.")
]


def plot_cmd(
    files: PlotFilesArg, out: PlotOutOpt = Path("plots"), force: PlotForceOpt = False
) -> None:
    """Write PNG charts: a roofline per file, TFLOP/s vs size per op, tokens/s per GPU."""
    names = short_names(files)
    runs = [(name, load_results(path)) for name, path in zip(names, files, strict=True)]
    _report_plots(plots.write_plots(runs, out, force=force), out)


def _report_plots(written: list[Path], out: Path) -> None:
    if not written:
        raise BenchError(f"nothing to plot in {out}: no case was timed on hardware")
    err.print(f"wrote {len(written)} charts to {out}: {', '.join(p.name for p in written)}")


ExportFileArg = Annotated[Path, typer.Argument(help="Result file to export.")]
ExportFormatOpt = Annotated[export.ExportFormat, typer.Option("--format", help="Output format.")]
ExportOutOpt = Annotated[
    Path | None, typer.Option(help="Output file (default: FILE with .FORMAT.json).")
]


ExportForceOpt = Annotated[
    bool,
    typer.Option(help="Replace an --out file that is not an earlier export (never a result file)."),
]


def export_cmd(
    file: ExportFileArg,
    fmt: ExportFormatOpt = export.ExportFormat.pytest_benchmark,
    out: ExportOutOpt = None,
    force: ExportForceOpt = False,
) -> None:
    """Export a result file for other tools: `pytest-benchmark compare` reads the output."""
    path, count = export.export(file, fmt, out, force=force)
    err.print(f"wrote {count} cases to {path}")


ReportFilesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Result files (the first is the comparison's baseline) and what estimate, "
        "simulate, capacity and step print with --json, in any order.",
        show_default=False,
    ),
]
ReportOutOpt = Annotated[Path, typer.Option(help="The HTML file to write.")]
TitleOpt = Annotated[str | None, typer.Option(help="The page's title.")]
ReportForceOpt = Annotated[
    bool,
    typer.Option(help="Replace an --out file that is not an earlier report (never a result file)."),
]


def report_cmd(
    files: ReportFilesArg,
    out: ReportOutOpt = Path("report.html"),
    project: ProjectOpt = None,
    title: TitleOpt = None,
    force: ReportForceOpt = False,
) -> None:
    """One self-contained HTML page to share (it opens offline): each run's device, provenance,
    tables and charts, the comparison of the result files with projections, and the estimates,
    simulations, steps and capacity plans given as JSON, with the throughput-interactivity
    frontier."""
    written = report.write(files, out, project=project or (), title=title, force=force)
    err.print(f"wrote {written}", soft_wrap=True)
