"""The `tokbench` command."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import BenchError, report, results, suites
from bench import device as dev
from bench.hardware import match_spec
from bench.ops import OPS, dtype_unsupported, get_op
from bench.runner import RunConfig, run_cases
from bench.timing import TimerConfig

app = typer.Typer(
    help="Benchmark Triton kernels against PyTorch baselines; turn the times into tokens/s.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the device as the harness sees it, its spec-table entry and software versions."""
    device = dev.detect()
    spec = match_spec(device.name) if device.kind == "cuda" else None
    software = dev.software()
    telemetry = dev.telemetry(device)
    if as_json:
        doc = {
            "device": dataclasses.asdict(device),
            "spec": spec.key if spec else None,
            "software": software,
            "telemetry": dataclasses.asdict(telemetry) if telemetry else None,
        }
        typer.echo(json.dumps(doc, indent=1))
        return
    report.console().print(report.info_table(device, spec, software, telemetry))


@app.command()
def run(
    suite: Annotated[
        str | None,
        typer.Option(help="Suite: smoke (default without a GPU) or standard (default on a GPU)."),
    ] = None,
    op: Annotated[list[str] | None, typer.Option(help="Op to run; repeat for several.")] = None,
    dtype: Annotated[
        list[str] | None, typer.Option(help="Dtype: fp32, fp16, bf16, fp8; repeat for several.")
    ] = None,
    impl: Annotated[
        list[str] | None, typer.Option(help="Implementation, e.g. triton or torch; repeatable.")
    ] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(help="Shape replacing the suite's, e.g. M=64,N=128,K=256; repeatable."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Result file (default results/<device>-<date>-<id>.json).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result document to stdout.")
    ] = False,
    cuda_graph: Annotated[
        bool, typer.Option(help="Replay each case from a CUDA graph (no launch overhead).")
    ] = False,
    noise: Annotated[
        float, typer.Option(help="Target relative CI half-width of the median.")
    ] = 0.01,
    max_time: Annotated[
        float | None, typer.Option(help="Seconds of timed reps per case (default 1 GPU, 0.2 CPU).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random inputs.")] = 0,
) -> None:
    """Run a suite: check every case against a reference, time it, write the result file."""
    device = dev.detect()
    cases = suites.build(
        suite or suites.default_suite(device.kind == "cuda"),
        ops=op,
        dtypes=dtype,
        shapes=[suites.parse_shape(s) for s in shape or ()],
    )
    _check_requested(device, op, dtype, impl)
    spec = match_spec(device.name) if device.kind == "cuda" else None
    timer = TimerConfig(noise=noise, max_time_s=max_time or (1.0 if device.kind == "cuda" else 0.2))
    config = RunConfig(timer=timer, cuda_graph=cuda_graph, impls=impl, seed=seed)
    doc = results.ResultDoc(
        device=device,
        software=dev.software(),
        command=results.command_line(),
        suite=suite or suites.default_suite(device.kind == "cuda"),
        spec=spec.key if spec else None,
    )
    path = out or results.default_path(device)
    writer = results.ResultWriter(doc, path)
    try:
        _run_with_progress(cases, device, spec, writer, config)
    except KeyboardInterrupt:
        err.print(f"interrupted: {len(doc.cases)} cases kept in {path}")
        raise typer.Exit(130) from None
    except BenchError as e:
        raise BenchError(f"{e} ({len(doc.cases)} cases measured so far kept in {path})") from None
    writer.finish()
    if as_json:
        typer.echo(doc.to_json())
        return
    report.console().print(*report.results_tables(doc))
    err.print(f"wrote {path}")


def _check_requested(device, ops, dtypes, impls) -> None:
    """A dtype or implementation the user asked for by name must exist and run on this device."""
    for name in impls or ():
        for op_name in ops or list(OPS):
            get_op(op_name).impl(name)
    for dtype in dtypes or ():
        reason = dtype_unsupported(dtype, device)
        if reason:
            raise BenchError(f"dtype {dtype}: {reason}")


def _run_with_progress(cases, device, spec, writer, config) -> None:
    total = sum(
        len([i for i in get_op(c.op).impls if config.impls is None or i.name in config.impls])
        for c in cases
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"{device.name}", total=total)

        def advance(record) -> None:
            label = get_op(record.op).label(record.shape)
            progress.update(task, advance=1, description=f"{record.op} {label} {record.dtype}")

        run_cases(cases, device, spec, writer, config, on_case=advance)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except BenchError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
