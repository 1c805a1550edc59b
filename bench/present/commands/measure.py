"""The commands that measure on this machine: `run` and `info`. torch and Triton are imported
by bench.measure.session inside its functions, so that the other commands start without them;
the session itself is imported by the command that uses it, as the planning commands import
the planner (see bench.present.commands.planning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bench import BenchError
from bench.measure import ops
from bench.measure.suites import MODEL_SUITE
from bench.present import markdown as md
from bench.present.consoles import console, err
from bench.present.options import file_to_write
from bench.present.progress import ConsoleProgress
from bench.present.tables.runs import info_table, plan_table, provenance_table, results_tables

if TYPE_CHECKING:
    from bench.measure.session import CaseSource
    from bench.record.schema import ResultDoc

InfoJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def info(as_json: InfoJsonOpt = False) -> None:
    """Show the device as the harness sees it, its spec-table entry and software versions."""
    from bench.measure import session

    found = session.machine()
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=1))
        return
    console().print(info_table(found.device, found.spec, found.software, found.telemetry))


SuiteOpt = Annotated[
    str | None,
    typer.Option(help="Suite: smoke (default without a GPU) or standard (default on a GPU)."),
]
OpsOpt = Annotated[list[str] | None, typer.Option(help="Op to run; repeat for several.")]
DtypesOpt = Annotated[
    list[str] | None, typer.Option(help="Dtype: fp32, fp16, bf16, fp8; repeat for several.")
]
ImplsOpt = Annotated[
    list[str] | None, typer.Option(help="Implementation, e.g. triton or torch; repeatable.")
]
ShapesOpt = Annotated[
    list[str] | None,
    typer.Option(
        help=f"Shape replacing the suite's for its op, by keys: {ops.shape_help()} "
        "(`tokbench ops` explains them). E.g. M=64,N=128,K=256; repeatable."
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        callback=file_to_write,
        help="Result file (default: a new one in results/ named by device and date).",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option(help="Replace an existing --out file (from the first case on).")
]
AppendOpt = Annotated[bool, typer.Option(help="Add this run's cases to an existing --out file.")]
RunJsonOpt = Annotated[bool, typer.Option("--json", help="Print the result document to stdout.")]
CudaGraphOpt = Annotated[
    bool, typer.Option(help="Replay each case from a CUDA graph (no launch overhead).")
]
NoiseOpt = Annotated[
    float,
    typer.Option(help="Target relative CI half-width of the median (0.01: 1%), at least 1e-4."),
]
MaxTimeOpt = Annotated[
    float | None,
    typer.Option(help="Seconds of timed reps per case, 0.001 to 3600 (default 1 GPU, 0.1 CPU)."),
]
NprocOpt = Annotated[
    int | None,
    typer.Option(
        "--nproc-per-node",
        min=1,
        help="Run on this many ranks of this machine, started as torchrun would (without "
        "torchrun's report on a failure: rank 0's one line); ignored under torchrun.",
    ),
]
RankTimeoutOpt = Annotated[
    float,
    typer.Option(
        help="Under torchrun: seconds a rank may go without answering (longer than any case, "
        "at least 0.1) before the run ends, keeping its cases.",
    ),
]
# torch.Generator.manual_seed takes 0 to 2**64 - 1 (a negative seed would fold onto the top half:
# two seeds, one stream).
SeedOpt = Annotated[int, typer.Option(min=0, max=2**64 - 1, help="Seed for the random inputs.")]
CeilingsOpt = Annotated[
    bool, typer.Option(help="First measure copy bandwidth and a large GEMM as ceilings.")
]
SuiteModelOpt = Annotated[
    str | None,
    typer.Option(help="Model suite: a model name or config file (implies --suite model)."),
]
TpsOpt = Annotated[
    list[int] | None,
    typer.Option(min=1, help="Model suite: tensor-parallel degree; repeatable (default 1)."),
]
SuitePrecisionOpt = Annotated[
    str, typer.Option(help="Model suite: GEMM precision, bf16, fp16, fp8 or fp32.")
]
SuiteKvPrecisionOpt = Annotated[
    str, typer.Option(help="Model suite: KV-cache precision, auto or fp8.")
]
# Sequences one GPU decodes together: vLLM's max_num_seqs is 256-1024; past 2**20 a case's shapes
# describe no deployment, and its inputs fit no GPU.
MAX_SUITE_BATCH = 2**20
BatchesOpt = Annotated[
    list[int] | None,
    typer.Option(
        min=1,
        max=MAX_SUITE_BATCH,
        help="Model suite: batch size; repeatable (default 1, 8, 32, 128).",
    ),
]
IslsOpt = Annotated[
    list[int] | None,
    typer.Option(min=1, help="Model suite: prompt length; repeatable (default 1024)."),
]
OslsOpt = Annotated[
    list[int] | None,
    typer.Option(
        min=1, help="Model suite: output length (decode at prompt + output/2; default 256)."
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        help="List the cases and the configs each Triton kernel would autotune over on a "
        "Hopper GPU; measure and write nothing (plan a GPU run from any machine)."
    ),
]
SummaryOpt = Annotated[
    Path | None,
    typer.Option(
        "--summary-md",
        callback=file_to_write,
        help="Also append the run's tables as Markdown to this file: a CI job summary "
        "(e.g. $GITHUB_STEP_SUMMARY).",
    ),
]


def _model_suite_only(suite: str | None, dtype: list[str] | None, shape: list[str] | None) -> None:
    """--model runs the model suite alone, at its own shapes and precision."""
    if suite not in (None, MODEL_SUITE):
        raise BenchError(f"--model runs the model suite, not --suite {suite}")
    if dtype or shape:
        raise BenchError("--dtype and --shape do not apply to the model suite; use --precision")


def _no_model_flags(**given: object) -> None:
    """The model suite's flags mean nothing without --model: refused rather than ignored."""
    if named := [f"--{name.replace('_', '-')}" for name, value in given.items() if value]:
        verb = "sets" if len(named) == 1 else "set"
        raise BenchError(f"{', '.join(named)} {verb} the model suite: give --model (or drop it)")


def run(
    suite: SuiteOpt = None,
    op: OpsOpt = None,
    dtype: DtypesOpt = None,
    impl: ImplsOpt = None,
    shape: ShapesOpt = None,
    out: OutOpt = None,
    force: ForceOpt = False,
    append: AppendOpt = False,
    as_json: RunJsonOpt = False,
    cuda_graph: CudaGraphOpt = False,
    noise: NoiseOpt = 0.01,
    max_time: MaxTimeOpt = None,
    seed: SeedOpt = 0,
    rank_timeout: RankTimeoutOpt = 600.0,
    nproc: NprocOpt = None,
    ceilings: CeilingsOpt = True,
    model: SuiteModelOpt = None,
    tp: TpsOpt = None,
    precision: SuitePrecisionOpt = "bf16",
    kv_precision: SuiteKvPrecisionOpt = "auto",
    batch: BatchesOpt = None,
    isl: IslsOpt = None,
    osl: OslsOpt = None,
    dry_run: DryRunOpt = False,
    summary_md: SummaryOpt = None,
) -> None:
    """Run a suite: check every case against a reference, time it, write the result file.
    Under torchrun every rank runs it on its own GPU and rank 0 writes one file."""
    from bench.measure import session
    from bench.plan.model_suite import ModelSuite

    cases: CaseSource = session.NamedSuite(suite, op, dtype, shape)
    if model or suite == MODEL_SUITE:
        _model_suite_only(suite, dtype, shape)
        cases = ModelSuite(model, tp or [1], precision, kv_precision, batch, isl, osl, ops=op)
    else:
        _no_model_flags(tp=tp, precision=precision != "bf16", kv_precision=kv_precision != "auto",
                        batch=batch, isl=isl, osl=osl)  # fmt: skip
    settings = session.RunSettings(
        cases, impl, out, force=force, append=append, noise=noise, cuda_graph=cuda_graph,
        max_time=max_time, seed=seed, ceilings=ceilings, rank_timeout=rank_timeout, nproc=nproc,
    )  # fmt: skip
    if dry_run:
        console().print(plan_table(session.dry_run(settings)))
        return
    try:
        done = session.measure(settings, ConsoleProgress(err))
    except session.Interrupted as e:
        err.print(f"interrupted: {e}")
        raise typer.Exit(130) from None
    if done is None:  # a rank other than 0: rank 0 prints every rank's cases
        return
    if as_json:
        typer.echo(done.doc.to_json())
    else:
        console().print(*results_tables(done.doc))
    err.print(f"wrote {done.path}" if done.measured else "measured no case: wrote nothing")
    if summary_md is not None and done.measured:
        _summarise(summary_md, done.doc, done.path)


def _summarise(path: Path, doc: ResultDoc, written: Path) -> None:
    """Add the run's tables as Markdown to the end of a file, as CI job summaries are written
    (one file, several steps), a blank line apart from what is there."""
    text = md.tables([provenance_table(doc, written), *results_tables(doc)])
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"\n{text}")
    except OSError as e:
        raise BenchError(f"cannot write the summary {path}: {e.strerror or e}") from None
