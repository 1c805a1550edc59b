"""The `tokbench` command: parses options, calls the layers below, prints their tables.

torch and Triton are imported only by the commands that measure (`run`, `info`, and `estimate
--validate`), inside them, so every other command starts without them; those commands first
choose how Triton runs (kernels.use_interpreter_without_gpu), before anything imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

import kernels
from bench import BenchError, check_range
from bench.measure import ops, suites
from bench.measure.ops.base import dtype_unsupported
from bench.plan import capacity, compare, models, simulate
from bench.plan.models import Serving
from bench.plan.throughput import (
    StepModel,
    Throughput,
    Validation,
    estimate_throughput,
    json_record,
    save,
    step_model_for,
)
from bench.present import export, plots, tables
from bench.record import results
from bench.record.hardware import match_spec
from bench.record.schema import CaseResult, RankInfo, ResultDoc
from bench.record.units import fmt_big, plural

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.measure.distributed import Ranks
    from bench.measure.runner import RunConfig
    from bench.record.hardware import GpuSpec
    from bench.record.schema import DeviceInfo

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
    from bench.measure import device as dev

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
    tables.console().print(tables.info_table(device, spec, software, telemetry))


@app.command("ops")
def ops_cmd() -> None:
    """List the ops that can be benchmarked: shape keys, dtypes, implementations."""
    tables.console().print(tables.ops_table())


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
        typer.Option(
            help=f"Shape replacing the suite's for its op, by keys: {ops.shape_help()} "
            "(`tokbench ops` explains them). E.g. M=64,N=128,K=256; repeatable."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Result file (default: a new one in results/ named by device and date)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing --out file (from the first case on).")
    ] = False,
    append: Annotated[
        bool, typer.Option(help="Add this run's cases to an existing --out file.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result document to stdout.")
    ] = False,
    cuda_graph: Annotated[
        bool, typer.Option(help="Replay each case from a CUDA graph (no launch overhead).")
    ] = False,
    noise: Annotated[
        float,
        typer.Option(min=1e-4, help="Target relative CI half-width of the median (0.01: 1%)."),
    ] = 0.01,
    max_time: Annotated[
        float | None,
        typer.Option(min=1e-3, help="Seconds of timed reps per case (default 1 GPU, 0.1 CPU)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random inputs.")] = 0,
    ceilings: Annotated[
        bool, typer.Option(help="First measure copy bandwidth and a large GEMM as ceilings.")
    ] = True,
    model: Annotated[
        str | None,
        typer.Option(help="Model suite: a model name or config file (implies --suite model)."),
    ] = None,
    tp: Annotated[
        list[int] | None,
        typer.Option(help="Model suite: tensor-parallel degree; repeatable (default 1)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="Model suite: GEMM precision, bf16, fp16, fp8 or fp32.")
    ] = "bf16",
    kv_precision: Annotated[
        str, typer.Option(help="Model suite: KV-cache precision, auto or fp8.")
    ] = "auto",
    batch: Annotated[
        list[int] | None,
        typer.Option(help="Model suite: batch size; repeatable (default 1, 8, 32, 128)."),
    ] = None,
    isl: Annotated[
        list[int] | None,
        typer.Option(help="Model suite: prompt length; repeatable (default 1024)."),
    ] = None,
    osl: Annotated[
        list[int] | None,
        typer.Option(help="Model suite: output length (decode at prompt + output/2; default 256)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="List the cases and the configs each Triton kernel would autotune over on a "
            "Hopper GPU; measure and write nothing (plan a GPU run from any machine)."
        ),
    ] = False,
) -> None:
    """Run a suite: check every case against a reference, time it, write the result file.
    Under torchrun every rank runs it on its own GPU and rank 0 writes one file."""
    kernels.use_interpreter_without_gpu()
    from bench.measure import device as dev
    from bench.measure import distributed
    from bench.measure.runner import RunConfig
    from bench.measure.timing import TimerConfig

    ranks = distributed.start()
    device = dev.detect(ranks.local_rank if ranks else 0)
    suite = suite or (suites.MODEL_SUITE if model else suites.default_suite(device.kind == "cuda"))
    if model or suite == suites.MODEL_SUITE:
        if suite != suites.MODEL_SUITE:
            raise BenchError(f"--model runs the model suite, not --suite {suite}")
        if dtype or shape:
            raise BenchError("--dtype and --shape do not apply to the model suite; use --precision")
        if precision == "fp4":
            raise BenchError(
                "no op here runs fp4 GEMMs; estimate fp4 from spec peaks: tokbench estimate "
                f"--model {model} --gpu b200 --precision fp4"
            )
        setups = _setups(
            model, tp or [1], precision, kv_precision, isl or [models.DEFAULT_ISL], osl
        )
        cases = models.suite_cases(
            setups, batch or models.DEFAULT_BATCHES, float(device.memory_bytes)
        )
        cases = [c for c in cases if not op or c.op in [ops.get_op(name).name for name in op]]
        asked = [precision]
    else:
        given = [suites.parse_shape(s) for s in shape or ()]
        world = ranks.world if ranks else 1
        cases = suites.build(suite, ops=op, dtypes=dtype, given=given, world=world)
        asked = dtype or []
    cases = _select_impls(cases, impl)
    if dry_run:
        tables.console().print(tables.plan_table(suites.plan(cases, impl)))
        return
    _check_dtypes(device, asked)
    if force and append:
        raise BenchError("--force and --append exclude each other")
    check_range("--noise", noise)
    if max_time is not None:
        check_range("--max-time", max_time)
    spec = match_spec(device.name) if device.kind == "cuda" else None
    timer = TimerConfig(noise=noise, max_time_s=max_time or (1.0 if device.kind == "cuda" else 0.1))
    config = RunConfig(timer=timer, cuda_graph=cuda_graph, impls=impl, seed=seed)
    doc = ResultDoc(
        device=device,
        software=dev.software(),
        command=results.command_line(),
        suite=suite,
        spec=spec.key if spec else None,
        ranks=_ranks(ranks, device),
    )
    leader = ranks is None or ranks.leader
    path = (out or results.default_path(device)) if leader else None
    mode = "replace" if force else "append" if append else "new"
    with results.ResultWriter(doc, path, mode) as writer, _stopped_by_torchrun(ranks):
        try:
            if ceilings and leader and not writer.doc.measured_peaks:
                from bench.measure.ceilings import measure

                writer.doc.measured_peaks = measure(device, timer)
                err.print(tables.ceilings_line(writer.doc.measured_peaks), highlight=False)
            _run_with_progress(cases, device, spec, writer, config, ranks)
        except KeyboardInterrupt:
            err.print(f"interrupted: {_kept(writer)}")
            raise typer.Exit(130) from None
        except BenchError as e:
            raise BenchError(f"{e} ({_kept(writer)})") from None
        except RuntimeError as e:  # a collective whose peers are gone
            if ranks is None:
                raise
            raise BenchError(f"lost the other ranks ({_why(e)}); {_kept(writer)}") from None
        writer.finish()
    distributed.stop()
    if not leader:
        return
    if as_json:
        typer.echo(writer.doc.to_json())
    else:
        tables.console().print(*tables.results_tables(writer.doc))
    err.print(f"wrote {path}" if writer.measured else "measured no case: wrote nothing")


def _ranks(ranks: Ranks | None, device: DeviceInfo) -> list[RankInfo]:
    """Every rank's host and device, in rank order (on rank 0; this rank's alone elsewhere)."""
    from bench.measure import device as dev
    from bench.measure import distributed

    mine = RankInfo(ranks.rank if ranks else 0, socket.gethostname(), device, dev.nvlinks(device))
    return (distributed.gather(mine) or [mine]) if ranks else [mine]


@contextlib.contextmanager
def _stopped_by_torchrun(ranks: Ranks | None) -> Iterator[None]:
    """torchrun stops the other ranks with SIGTERM when one fails: rank 0 then ends like an
    interrupted run, keeping what it measured, instead of dying without a word."""
    if ranks is None:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise BenchError("torchrun stopped this run: another rank ended first")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _why(e: Exception) -> str:
    """A backend's error in a few words: its first line, without gloo's source location."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", text)[:120]


def _kept(writer: results.ResultWriter) -> str:
    if writer.path is None:  # a rank other than 0: rank 0 keeps the file
        return "rank 0 keeps the cases measured so far"
    if not writer.measured:
        return f"no case measured; {writer.path} not written"
    return f"{plural(writer.measured, 'case')} measured so far kept in {writer.path}"


def _setups(
    model: str | None,
    tps: list[int],
    precision: str,
    kv_precision: str,
    isls: list[int],
    osls: list[int] | None,
) -> list[Serving]:
    """The model suite's serving set-ups: one per TP degree and request length."""
    if model is None:
        raise BenchError("suite 'model' needs --model NAME or a config file")
    config = models.get_model(model)
    return [
        Serving(config, tp=t, precision=precision, kv_precision=kv_precision, isl=i, osl=o)
        for t in tps
        for i in isls
        for o in osls or [models.DEFAULT_OSL]
    ]


def _check_dtypes(device: DeviceInfo, dtypes: list[str]) -> None:
    """A dtype the user asked for by name must run on this device."""
    for dtype in dtypes:
        reason = dtype_unsupported(dtype, device)
        if reason:
            raise BenchError(f"dtype {dtype}: {reason}")


def _select_impls(cases: list[suites.CaseSpec], impls: list[str] | None) -> list[suites.CaseSpec]:
    """Keep the cases that one of the requested implementations runs; an implementation name
    no selected op has is an error."""
    if not impls:
        return cases
    names = {i.name for c in cases for i in ops.get_op(c.op).impls}
    for name in impls:
        if name not in names:
            raise BenchError(f"unknown implementation '{name}'; known: {', '.join(sorted(names))}")
    return [c for c in cases if any(i.name in impls for i in ops.get_op(c.op).impls)]


def _run_with_progress(
    cases: list[suites.CaseSpec],
    device: DeviceInfo,
    spec: GpuSpec | None,
    writer: results.ResultWriter,
    config: RunConfig,
    ranks: Ranks | None,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from bench.measure.runner import run_cases

    total = sum(
        len([i for i in ops.get_op(c.op).impls if config.impls is None or i.name in config.impls])
        for c in cases
    )
    if ranks is not None and not ranks.leader:  # rank 0 reports every rank's cases
        run_cases(cases, device, spec, writer, config, ranks=ranks)
        return
    if not err.is_terminal:  # a log: one line per case
        start, done = time.monotonic(), 0

        def line(record: CaseResult) -> None:
            nonlocal done
            done += 1
            elapsed = time.monotonic() - start
            err.print(
                f"[{done}/{total} {elapsed:.0f}s] {tables.case_line(record)}", highlight=False
            )

        run_cases(cases, device, spec, writer, config, on_case=line, ranks=ranks)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"{device.name}", total=total)

        def advance(record: CaseResult) -> None:
            label = ops.label(record.op, record.shape)
            progress.update(task, advance=1, description=f"{record.op} {label} {record.dtype}")

        run_cases(cases, device, spec, writer, config, on_case=advance, ranks=ranks)


@app.command("compare")
def compare_cmd(
    files: Annotated[list[Path], typer.Argument(help="Result files; the first is the baseline.")],
    fail_on: Annotated[
        str | None,
        typer.Option(
            help="Gate, as slower:PERCENT% (e.g. slower:5%): exit 1 when a case got slower "
            "than in the first file by more than this, outside the p20-p80 spread of both "
            "runs, or when a case timed in the first file failed, was skipped, is missing or "
            "has no usable time in a later one."
        ),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            help="Add a column projected from the first file measured on a GPU in the spec "
            "table to this GPU (e.g. b200); repeatable."
        ),
    ] = None,
    price: Annotated[
        list[str] | None,
        typer.Option(
            help="GPU=USD per GPU-hour for estimates' output tokens per dollar in the serving "
            "mix (as capacity plans); repeatable."
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also write PNG charts of the files into this directory.")
    ] = None,
) -> None:
    """Compare result files side by side; with --fail-on, exit 1 on a regression or a case
    that broke (failed, skipped, missing or untimed in a later file)."""
    threshold = compare.parse_fail_on(fail_on) if fail_on else None
    comparison = compare.compare(
        files, threshold=threshold, project=project or (), prices=compare.parse_prices(price or ())
    )
    out = tables.console()
    out.print(*tables.compare_tables(comparison, out.width))
    if plot is not None:
        runs = [(c.path.stem, c.doc) for c in comparison.columns if c.measured]
        _report_plots(plots.write_plots(runs, plot), plot)
    if threshold is None:
        return
    lines, passed = tables.gate_report(comparison, fail_on)
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)
    if not passed:
        raise typer.Exit(1)


@app.command("plot")
def plot_cmd(
    files: Annotated[list[Path], typer.Argument(help="Result files to chart.")],
    out: Annotated[Path, typer.Option(help="Directory for the PNG files.")] = Path("plots"),
) -> None:
    """Write PNG charts: a roofline per file, TFLOP/s vs size per op, tokens/s per GPU."""
    runs = [(path.stem, ops.load_results(path)) for path in files]
    _report_plots(plots.write_plots(runs, out), out)


def _report_plots(written: list[Path], out: Path) -> None:
    if not written:
        raise BenchError(f"nothing to plot in {out}: no case was timed on hardware")
    err.print(f"wrote {len(written)} charts to {out}: {', '.join(p.name for p in written)}")


@app.command("export")
def export_cmd(
    file: Annotated[Path, typer.Argument(help="Result file to export.")],
    fmt: Annotated[
        export.ExportFormat, typer.Option("--format", help="Output format.")
    ] = export.ExportFormat.pytest_benchmark,
    out: Annotated[
        Path | None, typer.Option(help="Output file (default FILE with .<format>.json).")
    ] = None,
) -> None:
    """Export a result file for other tools: `pytest-benchmark compare` reads the output."""
    path, count = export.export(file, fmt, out)
    err.print(f"wrote {count} cases to {path}")


@app.command("models")
def models_cmd() -> None:
    """List the built-in model configs with their sources (or pass a config file to --model)."""
    tables.console().print(tables.models_table(list(models.MODELS.values())))


# Options `estimate` and `capacity` share.
ModelOpt = Annotated[
    str,
    typer.Option(
        help="Model name (e.g. llama-3.1-8b, tiny) or a config file: tokbench JSON "
        "or a Hugging Face config.json."
    ),
]
ResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--results",
        help="Result file of the model suite; repeatable. Without one, --gpu's spec sheet "
        "and default efficiencies answer, labelled.",
    ),
]
TpOpt = Annotated[
    str,
    typer.Option(
        help="Tensor-parallel degree: GPUs per model copy, or auto: the degree (1, 2, 4, 8) "
        "that serves the most output tokens/s per GPU; replicas fill the rest."
    ),
]
# Reference result files from real hardware, committed with the code.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results"

PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="Weights' precision (GEMMs, MoE experts): bf16, fp16, fp8, fp4 (GPUs with fp4 "
        "tensor cores; from spec peaks) or fp32."
    ),
]
KvPrecisionOpt = Annotated[
    str,
    typer.Option(
        help="KV-cache precision: auto (the activations' dtype) or fp8 (e4m3, a scale per tensor)."
    ),
]
IslOpt = Annotated[int, typer.Option(help="Prompt (input) tokens per request.")]
OslOpt = Annotated[int, typer.Option(help="Output tokens per request.")]
GpuOpt = Annotated[
    str | None,
    typer.Option(
        help="Estimate for this spec-table GPU (e.g. h100-sxm, b200): a spec-sheet "
        "projection when the files were measured on another GPU."
    ),
]
ImplOpt = Annotated[
    str | None,
    typer.Option(
        help="Use only this implementation's times for every op that has one of that "
        "name (default: the fastest correct implementation per shape)."
    ),
]
SloOpt = Annotated[
    str | None,
    typer.Option(
        help="Latency targets, e.g. ttft=2s,tpot=200ms: the highest Poisson rate meeting them "
        "at --percentile is found by simulation."
    ),
]
PercentileOpt = Annotated[float, typer.Option(help="Percentile of requests the SLO holds for.")]
MaxTokensOpt = Annotated[
    int, typer.Option(help="Tokens one engine step may hold (prefill chunks and decodes).")
]
WorkspaceOpt = Annotated[
    float, typer.Option(help="Fraction of GPU memory kept out of weights + KV cache.")
]
MaxBatchOpt = Annotated[int, typer.Option(help="Scheduler cap on sequences decoded together.")]


def _serving(
    model: str,
    tp: int,
    precision: str,
    kv_precision: str,
    isl: int,
    osl: int,
    workspace: float,
    max_batch: int,
    max_tokens: int = models.DEFAULT_MAX_PREFILL_TOKENS,
) -> Serving:
    return Serving(
        models.get_model(model),
        tp=tp,
        precision=precision,
        kv_precision=kv_precision,
        prefill_budget=max_tokens,
        isl=isl,
        osl=osl,
        workspace=workspace,
        max_batch=max_batch,
    )


def _throughput(
    setup: Serving,
    model: str,
    paths: list[Path],
    batches: list[int] | None,
    gpu: str | None,
    impl: str | None,
) -> Throughput:
    """Load the result files and estimate the model's per-GPU throughput from them (from the
    GPU's spec sheet alone without files), lent efficiencies by the reference files."""
    docs = [ops.load_results(p) for p in paths]
    return estimate_throughput(
        setup,
        docs,
        [str(p) for p in paths],
        batches=batches,
        gpu=gpu,
        impl=impl,
        command=results.command_line(),
        model_arg=model,
        references=_references(),
    )


def _step_model(
    setup: Serving, model: str, paths: list[Path], gpu: str | None, impl: str | None
) -> StepModel:
    """The step-time model from the result files (or --gpu's spec sheet alone)."""
    docs = [ops.load_results(p) for p in paths]
    return step_model_for(
        setup, docs, [str(p) for p in paths], gpu=gpu, impl=impl, model_arg=model,
        references=_references(),
    )  # fmt: skip


def _references() -> list[ResultDoc]:
    """The GPU result files in tokbench's results/ folder, whose measured efficiencies stand in
    for shapes the files given lack; one that does not load is left out."""
    found = []
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        try:
            doc = ops.load_results(path)
        except BenchError:
            continue
        if doc.device.kind == "cuda":
            found.append(doc)
    return found


@app.command("estimate")
def estimate_cmd(
    model: ModelOpt,
    results_files: ResultsOpt = None,
    tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = "auto",
    batch: Annotated[
        list[int] | None,
        typer.Option(help="Decode batch size; repeatable (default: those measured in the file)."),
    ] = None,
    isl: IslOpt = models.DEFAULT_ISL,
    osl: OslOpt = models.DEFAULT_OSL,
    gpu: GpuOpt = None,
    impl: ImplOpt = None,
    workspace: WorkspaceOpt = models.DEFAULT_WORKSPACE,
    max_batch: MaxBatchOpt = models.DEFAULT_MAX_BATCH,
    validate: Annotated[
        bool,
        typer.Option(help="Also run one decoder layer here and compare its time to the op sum."),
    ] = False,
    save_to_file: Annotated[
        bool, typer.Option("--save/--no-save", help="Save the estimate into the first file.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Per-GPU prefill and decode tokens/s, TTFT and TPOT, memory fit and a serving mix."""
    paths = results_files or []

    def build(degree: int) -> Throughput:
        setup = _serving(model, degree, precision, kv_precision, isl, osl, workspace, max_batch)
        return _throughput(setup, model, paths, batch, gpu, impl)

    result, layouts = _layout(tp, build, lambda r: r.record.serving_output_tokens_per_s)
    checks = _measure_layers(result, paths[0]) if validate else []
    for check in checks:
        where = f"{check.phase}_batch{check.batch}"
        result.record.validation[f"{where}_ratio"] = check.ratio
        result.record.validation[f"{where}_measured_ms"] = check.measured_s * 1e3
        result.record.validation[f"{where}_estimated_ms"] = check.estimated_s * 1e3
    if as_json:
        typer.echo(json.dumps(json_record(result), indent=1))
    else:
        out = tables.console()
        out.print(*tables.estimate_tables(result))
        if layouts:
            out.print(tables.layout_table(layouts, result.setup.tp, "serving mix"))
        if checks:
            out.print(tables.validation_table(checks))
    if save_to_file and paths:  # after printing: a file that cannot take it loses nothing shown
        save(paths[0], result.record)
        err.print(f"saved the estimate into {paths[0]}", soft_wrap=True)


def _measure_layers(result: Throughput, path: Path) -> list[Validation]:
    """Run the layer on this machine at the smallest and largest prefill and decode steps
    estimated: the latency end and the throughput end."""
    kernels.use_interpreter_without_gpu()
    from bench.measure import device as dev
    from bench.plan.throughput import measure_layer

    device = dev.detect()
    if result.target.projected or result.target.name != device.name:
        raise BenchError(
            f"--validate runs a layer on this machine ({device.name}) but the estimate is for "
            f"{result.target.name} ({path}); validate with a file measured here"
        )
    ends = (result.prefill[0], result.prefill[-1], result.decode[0], result.decode[-1])
    steps = dict.fromkeys((s.phase, s.batch, s.context) for s in ends)
    return [measure_layer(result.step_model, *key, device) for key in steps]


@app.command("simulate")
def simulate_cmd(
    model: ModelOpt,
    results_files: ResultsOpt = None,
    gpu: GpuOpt = None,
    tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = "auto",
    workload: Annotated[
        str,
        typer.Option(
            help="fixed (every request --isl + --osl), lognormal (those as means), or a JSONL "
            'trace of {"arrival": s, "input": n, "output": n} per line.'
        ),
    ] = "fixed",
    requests: Annotated[int, typer.Option(help="Requests to simulate (not for a trace).")] = 1000,
    isl: IslOpt = models.DEFAULT_ISL,
    osl: OslOpt = models.DEFAULT_OSL,
    sigma: Annotated[float, typer.Option(help="lognormal: the spread of log lengths.")] = 1.0,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Poisson arrivals, requests/s at one replica (default: all at once, offline)."
        ),
    ] = None,
    slo: SloOpt = None,
    percentile: PercentileOpt = 99.0,
    seed: Annotated[int, typer.Option(help="Seed for lengths and arrivals.")] = 0,
    impl: ImplOpt = None,
    workspace: WorkspaceOpt = models.DEFAULT_WORKSPACE,
    max_batch: MaxBatchOpt = models.DEFAULT_MAX_BATCH,
    max_tokens: MaxTokensOpt = models.DEFAULT_MAX_PREFILL_TOKENS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Serve a workload through a continuous-batching scheduler on the step-time model: output
    tokens/s, TTFT and TPOT percentiles, batch over time; with --slo, at the highest rate that
    meets it."""
    if rate is not None and slo is not None:
        raise BenchError("--rate and --slo exclude each other: --slo searches for the rate")
    target = simulate.parse_slo(slo, percentile) if slo else None
    load = simulate.workload(workload, requests, isl, osl, sigma, seed)

    def build(degree: int) -> simulate.Simulation:
        setup = _serving(
            model, degree, precision, kv_precision, isl, osl, workspace, max_batch, max_tokens
        )
        step_model = _step_model(setup, model, results_files or [], gpu, impl)
        return simulate.run(step_model, load, rate=rate, slo=target, seed=seed)

    sim, layouts = _layout(tp, build, capacity.served_per_gpu)
    if as_json:
        typer.echo(json.dumps(simulate.figures(sim), indent=1))
        return
    out = tables.console()
    out.print(*tables.simulation_tables(sim))
    if layouts:
        out.print(tables.layout_table(layouts, sim.step_model.setup.tp, "simulated"))


Result = TypeVar("Result")


def _layout(
    tp: str, build: Callable[[int], Result], rate: Callable[[Result], float]
) -> tuple[Result, list[capacity.Layout]]:
    """`build` at the --tp given, or at the degree serving the most per GPU (--tp auto) with
    every degree tried."""
    if tp.strip().lower() == "auto":
        return capacity.best_layout(build, rate)
    return build(_degree(tp)), []


@app.command("capacity")
def capacity_cmd(
    model: ModelOpt,
    gpus: Annotated[int, typer.Option(help="GPUs in the fleet.")],
    results_files: ResultsOpt = None,
    tokens_per_gpu: Annotated[
        float | None,
        typer.Option(
            help="Output tokens per second per GPU to plan with, instead of estimating it "
            "(checked against --gpu's roofline when given)."
        ),
    ] = None,
    utilization: Annotated[
        float, typer.Option(help="Average share of the day the fleet serves at full batch.")
    ] = capacity.DEFAULT_UTILIZATION,
    price: Annotated[float | None, typer.Option(help="USD per GPU-hour, for the cost.")] = None,
    deal_usd: Annotated[
        float | None,
        typer.Option(help="A deal's total USD for the --gpus GPUs over --years: sets the price."),
    ] = None,
    years: Annotated[float | None, typer.Option(help="The deal's term in years.")] = None,
    target_tokens_s: Annotated[
        float | None, typer.Option(help="Output tokens/s to serve: how many GPUs are needed.")
    ] = None,
    target_tokens_day: Annotated[
        float | None, typer.Option(help="Output tokens/day to serve: how many GPUs are needed.")
    ] = None,
    claim_tokens_s: Annotated[
        float | None,
        typer.Option(
            help="Claim to check: the --gpus GPUs (of kind --gpu) serve this many "
            "output tokens/s of the model."
        ),
    ] = None,
    tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = "auto",
    isl: IslOpt = models.DEFAULT_ISL,
    osl: OslOpt = models.DEFAULT_OSL,
    gpu: GpuOpt = None,
    impl: ImplOpt = None,
    workspace: WorkspaceOpt = models.DEFAULT_WORKSPACE,
    max_batch: MaxBatchOpt = models.DEFAULT_MAX_BATCH,
    slo: SloOpt = None,
    percentile: PercentileOpt = 99.0,
    requests: Annotated[int, typer.Option(help="Requests each --slo simulation serves.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Fleet tokens/day and requests/day, GPUs for a target, cost per million tokens (from a
    price or a deal's terms), and claims checked against the serving rate (at an SLO with
    --slo)."""
    if deal_usd is not None or years is not None:
        if deal_usd is None or years is None or price is not None:
            raise BenchError("a deal needs --deal-usd and --years together, and no --price")
        price = capacity.deal_price(deal_usd, years, gpus)
    capacity.check_fleet(gpus, 1 if tp == "auto" else _degree(tp), utilization, price)
    capacity.check_targets(target_tokens_s, target_tokens_day, claim_tokens_s)
    if tokens_per_gpu is not None:
        if results_files or slo or tp == "auto":
            raise BenchError(
                "--tokens-per-gpu is the rate to plan with: it excludes --results, --slo and "
                "--tp auto, which estimate one"
            )
        setup = _serving(
            model, _degree(tp), precision, kv_precision, isl, osl, workspace, max_batch
        )
        capacity.check_given_rate(setup, tokens_per_gpu, gpu)
        rps = tokens_per_gpu / osl
        per_gpu = capacity.PerGpu(
            tokens_per_gpu, rps * (isl + osl), rps, tokens_per_gpu, "given with --tokens-per-gpu"
        )
        where, layouts = capacity.gpu_name(gpu), []
    else:
        slo_target = simulate.parse_slo(slo, percentile) if slo else None

        def build(degree: int) -> tuple[Serving, capacity.PerGpu, str]:
            setup = _serving(model, degree, precision, kv_precision, isl, osl, workspace, max_batch)
            if slo_target is None:
                result = _throughput(setup, model, results_files or [], None, gpu, impl)
                return setup, capacity.per_gpu(result.record), result.target.name
            step_model = _step_model(setup, model, results_files or [], gpu, impl)
            load = simulate.workload("fixed", requests, isl, osl)
            sim = simulate.run(step_model, load, slo=slo_target)
            return setup, capacity.slo_per_gpu(sim), step_model.target.name

        (setup, per_gpu, where), layouts = _layout(
            tp, build, lambda built: built[1].output_tokens_per_s
        )
    fleet = capacity.Fleet(gpus, setup.tp, utilization, per_gpu, price)
    figures = capacity.figures(fleet, target_tokens_s, target_tokens_day)
    figures.update(model=setup.model.name, gpu=where, tp=setup.tp, precision=setup.precision,
                   kv_precision=setup.kv_dtype, isl=isl, osl=osl)  # fmt: skip
    if deal_usd is not None:
        figures.update(deal_usd=deal_usd, years=years, usd_per_gpu_hour=price)
    claim = None
    if claim_tokens_s is not None:
        claim = capacity.check_claim(claim_tokens_s, gpus, setup.tp, per_gpu)
        figures.update(
            claim_ratio=claim.ratio,
            claim_verdict=claim.verdict,
            claim_estimate_tokens_s=claim.estimate,
        )
    if as_json:
        typer.echo(json.dumps(figures, indent=1))
        return
    name = setup.model.name
    replicas = gpus // setup.tp
    title = (
        f"{name} on {gpus:,} × {where}: TP {setup.tp} × {replicas:,} replicas, "
        f"{setup.precision} weights, {setup.kv_dtype} KV cache, {isl} input + {osl} output "
        "tokens per request"
    )
    out = tables.console()
    if deal_usd is not None:
        out.print(
            f"deal: ${fmt_big(deal_usd)} over {years:g} years for {gpus:,} GPUs = "
            f"${price:.3g} per GPU-hour",
            highlight=False,
        )
    out.print(tables.fleet_table(fleet, title))
    for line in tables.target_lines(figures):
        out.print(line, highlight=False)
    if layouts:
        out.print(tables.layout_table(layouts, setup.tp, "per GPU"))
    if claim is not None:
        what = f"{gpus:,} × {where} serve {claim_tokens_s:,.0f} output tok/s of {name}"
        out.print(tables.claim_table(claim, what))


def _degree(tp: str) -> int:
    try:
        return int(tp)
    except ValueError:
        raise BenchError(f"--tp must be a whole number of GPUs or auto, got '{tp}'") from None


@app.command("validate")
def validate_cmd(
    published: Annotated[
        Path,
        typer.Argument(
            help="CSV of published results: model, gpu, precision, kv_precision, tp, isl, osl, "
            "scenario (throughput, offline, server), tokens_per_s_per_gpu (output), source; an "
            "slo column for server rows.",
            show_default=False,
        ),
    ],
    results_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--results",
            help="Result files measured on GPUs the rows name: those rows use them; the rest "
            "their GPU's spec sheet. Repeatable.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Each published row's estimate ÷ its published output tokens/s per GPU, and the
    geometric mean: how far the estimator is from the published figures."""
    from bench.plan import validate

    rows = validate.read_published(published)
    docs = [(str(p), ops.load_results(p)) for p in results_files or []]
    references = _references()

    def step_model_of(setup: Serving, gpu: str) -> StepModel:
        mine = [(p, d) for p, d in docs if d.spec == gpu]
        return step_model_for(
            setup, [d for _, d in mine], [p for p, _ in mine], gpu=gpu, references=references
        )

    checks = [validate.check_row(row, step_model_of) for row in rows]
    if as_json:
        typer.echo(json.dumps(validate.as_dicts(checks), indent=1))
        return
    tables.console().print(tables.validate_table(checks, published.name))
    if not any(c.ratio for c in checks):
        raise BenchError(f"{published}: no row could be estimated (the table says why)")


def main() -> None:
    """Entry point: user errors, bad options included, become one line on stderr and exit
    status 2; an interrupted command exits quietly with 130."""
    try:
        code = app(standalone_mode=False)
    except BenchError as e:
        _fail(str(e))
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except Exception as e:
        if not hasattr(e, "format_message"):  # click's usage errors (typer vendors click)
            raise
        context = getattr(e, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context else ""
        _fail(" ".join(e.format_message().split()) + where)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)
