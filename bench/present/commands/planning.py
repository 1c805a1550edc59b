"""The commands that plan from measurements or spec sheets: `estimate`, `simulate`, `capacity`
and `validate`. Each gathers its options into bench.plan.planner's settings and shows the
answer.

Each imports the planner as it runs: making its settings' frozen dataclasses takes a few
milliseconds, which every command's start-up would pay, those that never plan included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bench import BenchError
from bench.plan.capacity import DEFAULT_UTILIZATION, Asks, Plan, Terms, parse_gpus
from bench.plan.deal import DEFAULT_NON_GPU_SHARE, Deal, Ramp, linear_ramp, read_ramp
from bench.plan.models import (
    COLLECTIVES,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PREFILL_TOKENS,
    DEFAULT_WORKSPACE,
)
from bench.plan.scenarios import SERVING_MODELS
from bench.plan.scenarios import figures as simulation_figures
from bench.plan.throughput import json_record, save
from bench.plan.validate import PUBLISHED, as_dicts
from bench.plan.workloads import MAX_REQUESTS
from bench.present.consoles import console, err
from bench.present.options import (
    ChartForceOpt,
    CollectivesOpt,
    GpuOpt,
    ImplOpt,
    IslOpt,
    KvPrecisionOpt,
    MaxBatchOpt,
    MaxTokensOpt,
    ModelOpt,
    OslOpt,
    PercentileOpt,
    PrecisionOpt,
    RedundantOpt,
    ResultsOpt,
    SkewOpt,
    SloOpt,
    TpOpt,
    WorkspaceOpt,
    chart_to_write,
)
from bench.present.tables.estimates import estimate_tables, layout_table, validation_table
from bench.present.tables.fleets import (
    assumptions_table,
    claim_table,
    deal_line,
    fleet_table,
    fleet_title,
    target_lines,
)
from bench.present.tables.markets import market_tables
from bench.present.tables.published import validate_table
from bench.present.tables.simulations import (
    disagg_table,
    frontier_figures,
    frontier_table,
    simulation_tables,
    sweep_figures,
    sweep_table,
)
from bench.present.tables.steps import step_table
from bench.record.market import PUE_AWS

EstimateBatchOpt = Annotated[
    list[int] | None,
    typer.Option(help="Decode batch size; repeatable (default: those measured in the file)."),
]
ValidateOpt = Annotated[
    bool,
    typer.Option(help="Also run one decoder layer here and compare its time to the op sum."),
]
SaveOpt = Annotated[
    bool, typer.Option("--save/--no-save", help="Save the estimate into the first file.")
]
EstimateJsonOpt = Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")]


def estimate_cmd(
    model: ModelOpt,
    results_files: ResultsOpt = None,
    tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = "auto",
    batch: EstimateBatchOpt = None,
    isl: IslOpt = None,
    osl: OslOpt = None,
    gpu: GpuOpt = None,
    impl: ImplOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    max_batch: MaxBatchOpt = DEFAULT_MAX_BATCH,
    collectives: CollectivesOpt = COLLECTIVES[0],
    redundant: RedundantOpt = 0,
    router_skew: SkewOpt = 0,
    validate: ValidateOpt = False,
    save_to_file: SaveOpt = True,
    as_json: EstimateJsonOpt = False,
) -> None:
    """Per-GPU prefill and decode tokens/s, TTFT and TPOT, memory fit and a serving mix."""
    from bench.plan import planner

    serving = planner.ServingOptions(
        model, tp, precision, kv_precision, isl, osl, workspace, max_batch,
        collectives=collectives, redundant=redundant, router_skew=router_skew,
    )  # fmt: skip
    sources = planner.TimeSources(tuple(results_files or ()), gpu, impl)
    answer = planner.estimate(planner.EstimateSettings(serving, sources, batch, validate))
    result = answer.throughput
    if as_json:
        typer.echo(json.dumps(json_record(result), indent=1))
    else:
        out = console()
        out.print(*estimate_tables(result))
        if answer.layouts:
            out.print(layout_table(answer.layouts, result.setup, "serving mix"))
        if answer.checks:
            out.print(validation_table(answer.checks))
        mix = SERVING_MODELS["serving mix"]
        out.print(f"requests: {answer.lengths}; {mix}; simulate replays it", highlight=False)
    # After printing: a file that cannot take the estimate loses nothing shown.
    if save_to_file and results_files:
        save(results_files[0], result.record)
        err.print(f"saved the estimate into {results_files[0]}", soft_wrap=True)


WorkloadOpt = Annotated[
    str,
    typer.Option(
        help="fixed (every request --isl + --osl), lognormal (those as means), or a JSONL "
        'trace of {"arrival": s, "input": n, "output": n} per line.'
    ),
]
RequestsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_REQUESTS,
        help="Requests a run starts with (default: four times the batch that fits, 500 to "
        "4,096; a trace: its own). Runs grow until a steady state shows.",
        show_default=False,
    ),
]
SigmaOpt = Annotated[float, typer.Option(help="lognormal: the spread of log lengths.")]
RateOpt = Annotated[
    float | None,
    typer.Option(
        help="Poisson arrivals, requests/s at one replica (default: all at once, offline); "
        "refused where the run would span over 1e7 s, beyond the simulator's clock."
    ),
]
SimulationSeedOpt = Annotated[int, typer.Option(min=0, help="Seed for lengths and arrivals.")]
FiguresJsonOpt = Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")]
GpusListOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gpu",
        help="Simulate this spec-table GPU (e.g. h100-sxm, b200); repeat it with --concurrency "
        "to draw each GPU's frontier on one chart.",
    ),
]
ConcurrencyOpt = Annotated[
    str | None,
    typer.Option(
        help="Closed loops of this many clients, comma-separated (e.g. 1,4,16,64,256), as "
        "vllm bench serve --max-concurrency: the throughput–interactivity frontier.",
        show_default=False,
    ),
]
SpecOpt = Annotated[
    str | None,
    typer.Option(
        "--spec",
        help="Speculative decoding: mtp:K (DeepSeek MTP, K of 1-3, published acceptance), "
        "eagle3:k=K,accept=A1,.. or k=K,accept=A1,A2,.. (per-position acceptance).",
        show_default=False,
    ),
]
PrefixHitOpt = Annotated[
    float,
    typer.Option(help="Share of prompt tokens found in the prefix cache (no prefill compute)."),
]
PoolsOpt = Annotated[
    str | None,
    typer.Option(
        help="Disaggregated prefill/decode: P:D instances of each pool, or auto (sized for "
        "the most output tok/s per GPU under --slo).",
        show_default=False,
    ),
]
PrefillTpOpt = Annotated[
    str | None,
    typer.Option(help="With --pools: the prefill pool's TP degree (default: --tp).",
                 show_default=False),
]  # fmt: skip
SweepOpt = Annotated[
    str | None,
    typer.Option(
        help="Sweep each --gpu × layout (--tp, or auto's) × these ISL/OSL pairs (e.g. "
        "1024/256,8000/1000), offline, pruned by the physical bound.",
        show_default=False,
    ),
]
WorkersOpt = Annotated[int, typer.Option(min=1, max=1024, help="--sweep: local worker processes.")]
EngineOpt = Annotated[
    str, typer.Option(help="--sweep: local (processes) or ray (pip install 'tokbench[cluster]').")
]
FrontierPlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        callback=chart_to_write,
        help="With --concurrency: also chart the frontier into this PNG.",
    ),
]


def _concurrencies(text: str | None) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise BenchError(
            f"--concurrency takes whole numbers of clients, comma-separated (e.g. 1,4,16); got "
            f"'{text}'"
        ) from None


def simulate_cmd(
    model: ModelOpt, results_files: ResultsOpt = None, gpu: GpusListOpt = None, tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16", kv_precision: KvPrecisionOpt = "auto",
    workload: WorkloadOpt = "fixed", requests: RequestsOpt = None, isl: IslOpt = None,
    osl: OslOpt = None, sigma: SigmaOpt = 1.0, rate: RateOpt = None, slo: SloOpt = None,
    percentile: PercentileOpt = 99.0, seed: SimulationSeedOpt = 0,
    concurrency: ConcurrencyOpt = None, plot: FrontierPlotOpt = None, impl: ImplOpt = None,
    force: ChartForceOpt = False,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE, max_batch: MaxBatchOpt = DEFAULT_MAX_BATCH,
    collectives: CollectivesOpt = COLLECTIVES[0],
    max_tokens: MaxTokensOpt = DEFAULT_MAX_PREFILL_TOKENS, as_json: FiguresJsonOpt = False,
    spec: SpecOpt = None, prefix_hit: PrefixHitOpt = 0.0, pools: PoolsOpt = None,
    prefill_tp: PrefillTpOpt = None, sweep: SweepOpt = None, workers: WorkersOpt = 1,
    engine: EngineOpt = "local",
) -> None:  # fmt: skip
    """Serve a workload through a continuous-batching scheduler on the step-time model: output
    tokens/s in the steady state, TTFT and TPOT percentiles, batch over time; with --slo, at
    the highest rate that meets it; with --concurrency, the throughput–interactivity frontier;
    with --pools, disaggregated prefill and decode pools; with --sweep, GPUs × layouts ×
    workloads."""
    from bench.plan import planner, plans
    from bench.present import plots

    serving = planner.ServingOptions(
        model, tp, precision, kv_precision, isl, osl, workspace, max_batch, max_tokens,
        collectives,
    )  # fmt: skip
    gpus = tuple(gpu or ())
    settings = plans.SimulateSettings(
        serving, planner.TimeSources(tuple(results_files or ()), None, impl), workload,
        requests, sigma, rate, slo, percentile, seed, _concurrencies(concurrency), gpus, spec,
        prefix_hit, pools, prefill_tp, sweep, workers, engine,
    )  # fmt: skip
    if plot is not None and not settings.concurrency:
        raise BenchError("--plot draws the frontier: it needs --concurrency")
    if plot is not None:  # refused before the simulation, which may take minutes
        plots.check_chart(plot, force)
    answer = plans.simulation(settings)
    if answer.frontiers:
        _show_frontiers(answer, plot, as_json, force)
        return
    if answer.disagg or answer.sweep:
        _show_pools_or_sweep(answer, as_json)
        return
    sim = answer.run
    if as_json:
        typer.echo(json.dumps({**simulation_figures(sim), "lengths": answer.lengths}, indent=1))
        return
    out = console()
    out.print(*simulation_tables(sim, answer.lengths))
    if answer.layouts:
        out.print(layout_table(answer.layouts, sim.step_model.setup, "simulated"))


def _show_pools_or_sweep(answer, as_json: bool) -> None:
    """Disaggregated pools' figures, or a sweep's rows, as JSON or a table."""
    from bench.plan import disagg

    if as_json:
        if answer.disagg:
            figures = {**disagg.figures(answer.disagg), "lengths": answer.lengths}
        else:
            figures = {"sweep": sweep_figures(answer.sweep)}
        typer.echo(json.dumps(figures, indent=1))
    elif answer.disagg:
        console().print(disagg_table(answer.disagg, answer.lengths))
    else:
        console().print(sweep_table(answer.sweep))


def _show_frontiers(answer, plot: Path | None, as_json: bool, force: bool) -> None:
    """The frontier as JSON or a table, and the chart."""
    from bench.present import plots

    if as_json:
        typer.echo(json.dumps(frontier_figures(answer.frontiers, answer.lengths), indent=1))
    else:
        console().print(frontier_table(answer.frontiers, answer.lengths))
    if plot is not None:
        err.print(f"wrote {plots.frontier_chart(answer.frontiers, plot, force)}")


GpusOpt = Annotated[
    str,
    typer.Option(
        help="GPUs in the fleet: a number (of --gpu's kind), or KIND=N pairs for a mixed fleet "
        "(e.g. gb200=150000,gb300=150000).",
        show_default=False,
    ),
]
TokensPerGpuOpt = Annotated[
    float | None,
    typer.Option(
        help="Output tokens per second per GPU to plan with, instead of simulating it "
        "(refused above --gpu's physical bound).",
    ),
]
UtilizationOpt = Annotated[
    float, typer.Option(help="Average share of the day the fleet serves at the planned rate.")
]
PriceOpt = Annotated[float | None, typer.Option(help="USD per GPU-hour, for the cost.")]
DealOpt = Annotated[
    float | None,
    typer.Option(help="A deal's total USD for the --gpus GPUs over --years: sets the price."),
]
YearsOpt = Annotated[float | None, typer.Option(help="The deal's term in years.")]
NonGpuOpt = Annotated[
    float,
    typer.Option(help="Share of the deal that buys what is not GPU time (CPUs, storage, ...)."),
]
RampMonthsOpt = Annotated[
    float | None,
    typer.Option(help="The fleet comes online linearly over this many months of the deal."),
]
RampFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ramp",
        help="CSV of month,online: the share of the fleet online by month (linear between).",
    ),
]
PueOpt = Annotated[float, typer.Option(help="The facility's power over the IT equipment's.")]
TargetRateOpt = Annotated[
    float | None, typer.Option(help="Output tokens/s to serve: how many GPUs are needed.")
]
TargetDayOpt = Annotated[
    float | None, typer.Option(help="Output tokens/day to serve: how many GPUs are needed.")
]
ClaimOpt = Annotated[
    float | None,
    typer.Option(
        help="Claim to check: the --gpus GPUs serve this many output tokens/s of the model."
    ),
]
InteractivityOpt = Annotated[
    float | None,
    typer.Option(
        help="Plan where each user sees this many output tok/s (1 / median TPOT), on the "
        "throughput–interactivity frontier.",
    ),
]


def capacity_cmd(
    model: ModelOpt, gpus: GpusOpt, results_files: ResultsOpt = None,
    tokens_per_gpu: TokensPerGpuOpt = None, utilization: UtilizationOpt = DEFAULT_UTILIZATION,
    price: PriceOpt = None, deal_usd: DealOpt = None, years: YearsOpt = None,
    non_gpu_share: NonGpuOpt = DEFAULT_NON_GPU_SHARE, ramp_months: RampMonthsOpt = None,
    ramp: RampFileOpt = None, pue: PueOpt = PUE_AWS, target_tokens_s: TargetRateOpt = None,
    target_tokens_day: TargetDayOpt = None, claim_tokens_s: ClaimOpt = None, tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16", kv_precision: KvPrecisionOpt = "auto",
    isl: IslOpt = None, osl: OslOpt = None, gpu: GpuOpt = None, impl: ImplOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE, max_batch: MaxBatchOpt = DEFAULT_MAX_BATCH,
    collectives: CollectivesOpt = COLLECTIVES[0], slo: SloOpt = None,
    interactivity: InteractivityOpt = None, percentile: PercentileOpt = 99.0,
    requests: RequestsOpt = None, seed: SimulationSeedOpt = 0, as_json: FiguresJsonOpt = False,
    redundant: RedundantOpt = 0, router_skew: SkewOpt = 0, spec: SpecOpt = None,
    prefix_hit: PrefixHitOpt = 0.0, pools: PoolsOpt = None, prefill_tp: PrefillTpOpt = None,
) -> None:  # fmt: skip
    """Fleet tokens/day and requests/day, GPUs for a target, cost per million tokens (from a
    price or a deal's terms, checked against market GPU and API prices), power, and claims
    checked against the simulated rate (offline, at --slo or at --interactivity) and the
    physical bound."""
    from bench.plan import planner, plans

    serving = planner.ServingOptions(
        model, tp, precision, kv_precision, isl, osl, workspace, max_batch,
        collectives=collectives, redundant=redundant, router_skew=router_skew,
    )  # fmt: skip
    deal = _deal(deal_usd, years, non_gpu_share, ramp_months, ramp)
    terms = Terms(parse_gpus(gpus, gpu), utilization, price, deal, pue)
    plan = plans.fleet(
        plans.CapacitySettings(
            serving, terms, Asks(target_tokens_s, target_tokens_day, claim_tokens_s),
            planner.TimeSources(tuple(results_files or ()), None, impl), tokens_per_gpu, slo,
            interactivity, percentile, requests, seed, spec, prefix_hit, pools, prefill_tp,
        )
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(plan.figures, indent=1))
        return
    _show_plan(plan)


def _deal(
    usd: float | None, years: float | None, non_gpu: float, months: float | None,
    ramp: Path | None,
) -> Deal | None:  # fmt: skip
    """A deal's terms, or None without one; a deal needs its total and years together."""
    if usd is None and years is None:
        if months is not None or ramp is not None:
            raise BenchError("--ramp-months and --ramp spread a deal: they need --deal-usd")
        return None
    if usd is None or years is None:
        raise BenchError("a deal needs --deal-usd and --years together")
    if months is not None and ramp is not None:
        raise BenchError("--ramp-months and --ramp exclude each other: give one ramp")
    shape = linear_ramp(months) if months is not None else read_ramp(ramp) if ramp else Ramp()
    return Deal(usd, years, non_gpu, shape)


def _show_plan(plan: Plan) -> None:
    """The deal's price, the fleet, the GPUs each target needs, the layouts, the claim, the
    market checks, the power and every assumption."""
    out = console()
    deal = deal_line(plan)
    if deal is not None:
        out.print(deal, highlight=False)
    out.print(fleet_table(plan.fleet, fleet_title(plan)))
    for line in target_lines(plan.figures):
        out.print(line, highlight=False)
    for part in plan.fleet.parts:
        if part.layouts:
            out.print(layout_table(list(part.layouts), part.setup, f"per {part.gpu}"))
    if plan.claim is not None:
        out.print(claim_table(plan))
    out.print(*market_tables(plan))
    out.print(assumptions_table(plan))


PublishedArg = Annotated[
    Path,
    typer.Argument(
        help="CSV of published results: model, gpu, precision, kv_precision, tp (a layout, as "
        "--tp takes it), isl, osl, scenario (throughput, offline, server; decode: a "
        "disaggregated decode pool), tokens_per_s_per_gpu (output), source; an "
        "slo column for server rows. Default: the published rows tokbench ships "
        "(docs/published.csv).",
        show_default=False,
    ),
]
ValidateResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--results",
        help="Result files measured on GPUs the rows name: those rows use them; the rest "
        "their GPU's spec sheet. Repeatable.",
    ),
]
ChecksJsonOpt = Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")]


def validate_cmd(
    published: PublishedArg = PUBLISHED,
    results_files: ValidateResultsOpt = None,
    as_json: ChecksJsonOpt = False,
) -> None:
    """Each published row's estimate (simulate's offline run of the row's set-up, or its SLO
    search) ÷ its published output tokens/s per GPU, and the geometric mean: how far the
    estimator is from the published figures."""
    from bench.plan import plans

    checks = plans.published_checks(published, results_files or [])
    if as_json:
        typer.echo(json.dumps(as_dicts(checks), indent=1))
        return
    console().print(validate_table(checks, published.name))
    if not any(c.ratio for c in checks):
        raise BenchError(f"{published}: no row could be estimated (the table says why)")


TokensOpt = Annotated[int, typer.Option(help="Tokens the step computes, over --batch sequences.")]
StepBatchOpt = Annotated[
    int, typer.Option("--batch", help="Sequences in the step (a decode step: --tokens of them).")
]
ContextOpt = Annotated[int, typer.Option(help="Tokens each sequence has cached already.")]
StepJsonOpt = Annotated[bool, typer.Option("--json", help="Print the layer as JSON.")]
PlotOpt = Annotated[
    Path | None,
    typer.Option(
        callback=chart_to_write,
        help="Also chart each op's predicted share of its roofline from 1 to 16,384 tokens into "
        "this PNG.",
    ),
]
SWEEP = tuple(2**i for i in range(15))  # 1 to 16,384 tokens


def step_cmd(
    model: ModelOpt,
    gpu: GpuOpt = None,
    results_files: ResultsOpt = None,
    tp: TpOpt = "1",
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = "auto",
    tokens: TokensOpt = 1,
    batch: StepBatchOpt = 1,
    context: ContextOpt = 0,
    collectives: CollectivesOpt = COLLECTIVES[0],
    impl: ImplOpt = None,
    as_json: StepJsonOpt = False,
    plot: PlotOpt = None,
    force: ChartForceOpt = False,
) -> None:
    """One decoder layer's step laid bare: each op's time, source, bound, FLOP/s and bytes/s."""
    from bench.plan import planner
    from bench.present import plots

    serving = planner.ServingOptions(model, tp, precision, kv_precision, collectives=collectives)
    sources = planner.TimeSources(tuple(results_files or ()), gpu, impl)
    settings = planner.StepSettings(serving, sources, tokens, batch, context, SWEEP if plot else ())
    if plot:  # refused before any output
        plots.check_chart(plot, force)
    answer = planner.layer_step(settings)
    if as_json:
        typer.echo(json.dumps(answer.layer.as_dict(), indent=1))
    else:
        console().print(step_table(answer.layer))
    if plot:
        title = f"{answer.layer.gpu}: predicted share of the roofline, one layer of {model}"
        err.print(f"wrote {plots.roofline_shares_chart(answer.shares, title, plot, force)}")
