"""The planning commands that simulate serving, each a small typed settings object and the one
function that answers it: `simulate` (a run, an SLO search, or the throughput–interactivity
frontier of several GPUs and layouts), `capacity` (a fleet, possibly of several GPU kinds, at
the rate a simulation serves: offline, at an SLO, or at an interactivity; with a price or a
deal checked against the market) and `validate` (published figures against offline runs).

They share one way to a per-GPU rate (bench.plan.scenarios), the defaults of bench.plan.planner
(request lengths as given, as the result files measured them, else tokbench's), and so one
answer per set-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import BenchError
from bench.measure.ops import load_results
from bench.plan import capacity, disagg, frontier, scenarios, sweep, validate
from bench.plan.bounds import output_bound
from bench.plan.capacity import Layout, Parallel, Part, PerGpu
from bench.plan.models import Serving
from bench.plan.planner import ServingOptions, TimeSources, laid_out, references, with_lengths
from bench.plan.slo import Slo, parse_slo
from bench.plan.throughput import StepModel, step_model_for
from bench.plan.workloads import Workload, workload

# --- simulate -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulateSettings:
    serving: ServingOptions
    sources: TimeSources = field(default_factory=TimeSources)
    workload: str = "fixed"  # fixed, lognormal, or a JSONL trace file
    requests: int | None = None  # None: scenarios.default_requests (a trace: its own)
    sigma: float = 1.0  # lognormal: the spread of log lengths
    rate: float | None = None  # Poisson requests/s at one replica; None: all at once
    slo: str | None = None  # latency targets: the highest rate meeting them is searched for
    percentile: float = 99.0  # of requests the SLO holds for
    seed: int = 0
    concurrency: tuple[int, ...] = ()  # closed-loop clients: the frontier's sweep
    gpus: tuple[str, ...] = ()  # the frontier's GPUs (one at most without --concurrency)
    spec: str | None = None  # speculative decoding (bench.plan.speculative)
    prefix_hit: float = 0.0  # share of prompt tokens found in the prefix cache
    pools: str | None = None  # disaggregated prefill:decode instances, or auto (searched)
    prefill_tp: str | None = None  # the prefill pool's layout (default: --tp)
    sweep: str | None = None  # ISL/OSL pairs: a GPU × layout × workload sweep
    workers: int = 1  # the sweep's local processes
    engine: str = "local"  # the sweep's: local or ray


@dataclass(frozen=True)
class Simulated:
    """A simulate command's answer: one run with the layouts --tp auto tried, or the frontier
    of each GPU and layout; and where the request lengths came from."""

    lengths: str
    run: scenarios.Simulation | None = None
    layouts: list[Layout] = field(default_factory=list)
    frontiers: list[frontier.Frontier] = field(default_factory=list)
    disagg: disagg.Disaggregated | None = None
    sweep: list[sweep.Row] = field(default_factory=list)


def _check_simulate(settings: SimulateSettings) -> Slo | None:
    if settings.rate is not None and settings.slo is not None:
        raise BenchError("--rate and --slo exclude each other: --slo searches for the rate")
    if settings.concurrency and (settings.rate is not None or settings.slo):
        raise BenchError("--concurrency sweeps closed loops of clients: it excludes --rate, --slo")
    modes = [f for f, on in (("--concurrency", settings.concurrency), ("--pools", settings.pools),
                             ("--sweep", settings.sweep)) if on]  # fmt: skip
    if len(modes) > 1 or (modes and settings.rate is not None):
        raise BenchError(f"{', '.join(modes)} and --rate exclude each other: give one")
    if len(settings.gpus) > 1 and not (settings.concurrency or settings.sweep):
        raise BenchError("several --gpu draw one frontier: they need --concurrency")
    keys = [capacity.spec(gpu).key for gpu in settings.gpus]
    if twice := sorted({key for key in keys if keys.count(key) > 1}):
        raise BenchError(f"--gpu names {', '.join(twice)} more than once: give each GPU once")
    if settings.requests is not None and settings.requests < 1:
        raise BenchError(f"--requests must be at least 1, got {settings.requests}")
    return parse_slo(settings.slo, settings.percentile) if settings.slo is not None else None


def simulation(settings: SimulateSettings) -> Simulated:
    """A workload served by a continuous-batching scheduler on the step-time model: offline, at
    a rate, at the highest rate meeting the SLO, or swept over concurrencies (each GPU, and each
    layout of --tp auto: the frontier)."""
    slo = _check_simulate(settings)
    serving, lengths = with_lengths(settings.serving, settings.sources)
    load = _workload(settings, serving)
    if load.trace:
        mean_in, mean_out = load.mean_lengths()
        lengths = (f"{load.source}'s {len(load.trace):,} requests, mean {mean_in:,.0f} + "
                   f"{mean_out:,.0f} tokens")  # fmt: skip
    model = serving.at(1).model.name
    features = scenarios.engine_features(settings.spec, settings.prefix_hit, model)
    if settings.sweep:
        setups = sweep.setups(serving, settings.gpus, sweep.parse_lengths(settings.sweep))
        rows = sweep.sweep(serving, setups, requests=settings.requests, seed=settings.seed,
                           workers=settings.workers, engine=settings.engine)  # fmt: skip
        return Simulated(lengths, sweep=rows)
    if settings.concurrency:
        return Simulated(lengths, frontiers=_frontiers(settings, serving, load, features))
    sources = _sources(settings.sources, settings.gpus[0] if settings.gpus else None)
    if settings.pools:
        answer = disagg.planned(
            serving, sources, load, settings.pools, settings.prefill_tp, slo=slo,
            requests=settings.requests, seed=settings.seed, features=features,
        )  # fmt: skip
        return Simulated(lengths, disagg=answer)

    def build(degree: Parallel) -> scenarios.Simulation:
        step_model = sources.step_model(serving.at(degree), serving.model)
        return scenarios.run(
            step_model, load, settings.requests, rate=settings.rate, slo=slo, seed=settings.seed,
            features=features,
        )  # fmt: skip

    run, layouts = laid_out(serving, build, lambda sim: sim.output_tokens_per_s, sources.gpu)
    return Simulated(lengths, run, layouts)


def _workload(settings: SimulateSettings, serving: ServingOptions) -> Workload:
    n = settings.requests or scenarios.REQUESTS[0]
    return workload(
        settings.workload, n, serving.isl, serving.osl, sigma=settings.sigma, seed=settings.seed,
        config=serving.at(1).model,
    )  # fmt: skip


def _sources(sources: TimeSources, gpu: str | None) -> TimeSources:
    return sources if gpu is None else dataclasses.replace(sources, gpu=gpu)


def _frontiers(
    settings: SimulateSettings, serving: ServingOptions, load: Workload,
    features: scenarios.Features,
) -> list[frontier.Frontier]:  # fmt: skip
    """Each GPU's frontier: at the degree given, or with --tp auto each degree that fits, its
    points kept where no other layout of that GPU beats them (the GPU's Pareto frontier)."""
    out = []
    for gpu in settings.gpus or (None,):
        sources = _sources(settings.sources, gpu)
        swept = []
        for degree in serving.layouts(gpu):
            try:
                step_model = sources.step_model(serving.at(degree), serving.model)
            except BenchError:
                if not serving.auto:
                    raise
                continue  # a degree that does not shard or fit this model
            cost, pages = scenarios.costs(step_model, load, 1, settings.seed, features)
            swept.append(frontier.sweep(step_model, cost, pages, load, settings.concurrency,
                                        settings.seed))  # fmt: skip
        out.extend(_envelope(swept) if serving.auto else swept)
    return out


def _envelope(swept: list[frontier.Frontier]) -> list[frontier.Frontier]:
    """The layouts of one GPU, each with only its points on the GPU's Pareto frontier."""
    if not swept:
        raise BenchError("no tensor-parallel degree of 1, 2, 4, 8 serves it on this GPU")
    kept = {id(p) for p in frontier.pareto([p for f in swept for p in f.points])}
    trimmed = [dataclasses.replace(f, points=tuple(p for p in f.points if id(p) in kept))
               for f in swept]  # fmt: skip
    return [f for f in trimmed if f.points]


# --- capacity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacitySettings:
    serving: ServingOptions
    terms: capacity.Terms
    asks: capacity.Asks = field(default_factory=capacity.Asks)
    # Result files and --impl; each kind's GPU comes from the terms.
    sources: TimeSources = field(default_factory=TimeSources)
    tokens_per_gpu: float | None = None  # the rate to plan with, instead of simulating one
    slo: str | None = None  # plan at the highest rate meeting these latency targets
    interactivity: float | None = None  # plan where each user sees this many output tok/s
    percentile: float = 99.0
    requests: int | None = None  # each simulation's; None: scenarios.default_requests
    seed: int = 0
    spec: str | None = None  # speculative decoding (bench.plan.speculative)
    prefix_hit: float = 0.0  # share of prompt tokens found in the prefix cache
    pools: str | None = None  # disaggregated prefill:decode instances, or auto (searched)
    prefill_tp: str | None = None  # the prefill pool's layout (default: --tp)


def fleet(settings: CapacitySettings) -> capacity.Plan:
    """The fleet's tokens and requests per day, its cost, the GPUs each target needs, the
    claim checked, and with a price or deal the market checks and power, at the per-GPU rate
    given, simulated (at the SLO or at the interactivity) or estimated (the serving mix) for
    each GPU kind."""
    serving = settings.serving
    settings.terms.check(Parallel(1) if serving.auto else serving.degree())
    settings.asks.check()
    given = settings.tokens_per_gpu is not None
    if given and (settings.sources.results or settings.slo or settings.interactivity
                  or serving.auto or len(settings.terms.gpus) > 1):  # fmt: skip
        raise BenchError(
            "--tokens-per-gpu is the rate to plan with: it excludes --results, --slo, "
            "--interactivity, --tp auto and a fleet of several GPU kinds"
        )
    if settings.slo and settings.interactivity is not None:
        raise BenchError("--slo and --interactivity exclude each other: plan at one of them")
    serving, lengths = with_lengths(serving, settings.sources)
    parts = tuple(_part(settings, serving, key, n) for key, n in settings.terms.gpus)
    return capacity.fleet_plan(parts, settings.terms, settings.asks, lengths)


def _part(settings: CapacitySettings, serving: ServingOptions, key: str | None, n: int) -> Part:
    """One GPU kind of the fleet: its set-up, per-GPU rate and bound."""
    gpu = capacity.spec(key).name if key else "GPU"
    if settings.tokens_per_gpu is not None:
        setup = serving.at(serving.degree())
        rate, bound = capacity.given_rate(setup, settings.tokens_per_gpu, key)
        return Part(gpu, key, n, setup, rate, bound)
    build = _per_gpu_builder(settings, serving, key)
    (setup, rate, name), layouts = laid_out(serving, build, lambda b: b[1].output_tokens_per_s, key)
    bound = output_bound(setup, capacity.spec(key)) if key else None
    return Part(name, key, n, setup, rate, bound, tuple(layouts))


def _per_gpu_builder(
    settings: CapacitySettings, serving: ServingOptions, key: str | None
) -> Callable[[Parallel], tuple[Serving, PerGpu, str]]:
    """At a TP degree: the set-up, its per-GPU rate (simulated at the SLO or at the
    interactivity, else the estimate's serving mix) and the GPU's name."""
    sources = _sources(settings.sources, key)
    slo = parse_slo(settings.slo, settings.percentile) if settings.slo is not None else None
    model = serving.at(1).model.name
    features = scenarios.engine_features(settings.spec, settings.prefix_hit, model)
    simulated = settings.pools or features != scenarios.PLAIN

    def build(degree: Parallel) -> tuple[Serving, PerGpu, str]:
        setup = serving.at(degree)
        if settings.pools:
            return setup, _pooled(settings, serving, sources, slo, features), key or "GPU"
        if not simulated and slo is None and settings.interactivity is None:
            estimate = sources.throughput(setup, serving.model)
            record = estimate.record
            rate = capacity.per_gpu(record.requests_per_s * setup.osl, setup.isl, setup.osl,
                                    scenarios.SERVING_MODELS["serving mix"])  # fmt: skip
            return setup, rate, estimate.target.name
        step_model = sources.step_model(setup, serving.model)
        load = workload("fixed", 1, setup.isl, setup.osl, config=setup.model)
        if settings.interactivity is not None:
            rate = _at_interactivity(step_model, load, settings, features)
        else:
            rate = served(scenarios.run(step_model, load, settings.requests, slo=slo,
                                        seed=settings.seed, features=features))  # fmt: skip
        return setup, rate, step_model.target.name

    return build


def _pooled(
    settings: CapacitySettings, serving: ServingOptions, sources: TimeSources, slo: Slo | None,
    features: scenarios.Features,
) -> PerGpu:  # fmt: skip
    """The per-GPU rate of disaggregated pools over all their GPUs (offline, or at the SLO)."""
    if settings.interactivity is not None:
        raise BenchError("--pools plans offline or at --slo: it excludes --interactivity")
    load = workload("fixed", 1, serving.isl, serving.osl, config=serving.at(1).model)
    d = disagg.planned(
        serving, sources, load, settings.pools, settings.prefill_tp, slo=slo,
        requests=settings.requests, seed=settings.seed, features=features,
    )  # fmt: skip
    return capacity.per_gpu(d.output_tokens_per_s, serving.isl, serving.osl, disagg.describe(d))


def served(sim: scenarios.Simulation) -> PerGpu:
    """The rate a simulated run served per GPU in its steady state, and what it is."""
    mean_in, mean_out = sim.workload.mean_lengths()
    source = sim.serving_model
    if sim.search is not None:
        low, high = sim.search.interval
        source += (
            f", {sim.slo.describe()}: {low:.3g} requests/s per replica (interval {low:.3g} to "
            f"{high:.3g}), re-simulated with seed {sim.search.check_seed} over "
            f"{sim.search.check_requests:,} requests"
        )
    return capacity.per_gpu(sim.output_tokens_per_s, mean_in, mean_out, source)


def _at_interactivity(
    step_model: StepModel, load: Workload, settings: CapacitySettings,
    features: scenarios.Features,
) -> PerGpu:  # fmt: skip
    cost, pages = scenarios.costs(step_model, load, 1, settings.seed, features)
    point = frontier.at_interactivity(cost, pages, load, settings.interactivity, settings.seed)
    mean_in, mean_out = load.mean_lengths()
    source = (
        f"{scenarios.SERVING_MODELS['closed loop']} of {point.concurrency:,} (the most at which "
        f"each user sees {point.per_user:.3g} ≥ {settings.interactivity:g} output tok/s)"
    )
    return capacity.per_gpu(point.output_tokens_per_s, mean_in, mean_out, source)


# --- validate -----------------------------------------------------------------------------------


def published_checks(published: Path, result_files: Sequence[Path]) -> list[validate.Check]:
    """Each published row's estimate against its published figure: from the result files
    measured on the GPU the row names, else from that GPU's spec sheet."""
    rows = validate.read_published(published)
    docs = [(str(p), load_results(p)) for p in result_files]
    lent = references()

    def step_model_of(setup: Serving, gpu: str) -> StepModel:
        mine = [(p, d) for p, d in docs if d.spec == gpu]
        return step_model_for(
            setup, [d for _, d in mine], [p for p, _ in mine], gpu=gpu, references=lent
        )

    return [validate.check_row(row, step_model_of) for row in rows]
