"""The planning commands' questions as small typed settings, and the one function that answers
each: `estimate` and `step` here; `simulate`, `capacity` and `validate` in bench.plan.plans.

Each names a model served at a layout (ServingOptions: a tensor-parallel degree, or auto: every
degree of capacity.TP_CHOICES tried) and where its step times come from (TimeSources: result
files, else a GPU's spec sheet, with the reference files' efficiencies lent to shapes the files
lack). The answers are data; bench.present shows them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import kernels
from bench import BenchError
from bench.measure.ops import load_results
from bench.plan import capacity, models
from bench.plan.capacity import Layout, Parallel
from bench.plan.layer_times import LayerTimes, layer_times, roofline_shares
from bench.plan.models import Serving
from bench.plan.throughput import (
    StepModel,
    Throughput,
    Validation,
    estimate_throughput,
    measured_steps,
    step_model_for,
)
from bench.record import results
from bench.record.hardware import get_spec
from bench.record.schema import ResultDoc

# Reference result files from real hardware, committed with the code (the repository's results/).
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results"

Result = TypeVar("Result")


@dataclass(frozen=True)
class ServingOptions:
    """A model served as the options name it."""

    model: str  # a name or a config file
    tp: str = "1"  # a tensor-parallel degree, or "auto"
    precision: str = "bf16"
    kv_precision: str = "auto"
    isl: int | None = None  # None: the lengths the result files measured, else the default
    osl: int | None = None
    workspace: float = models.DEFAULT_WORKSPACE
    max_batch: int = models.DEFAULT_MAX_BATCH
    max_tokens: int = models.DEFAULT_MAX_PREFILL_TOKENS
    collectives: str = models.COLLECTIVES[0]
    redundant: int = 0  # redundant expert replicas under expert parallelism
    router_skew: int = 0  # the router's Zipf exponent, in hundredths

    @property
    def auto(self) -> bool:
        return self.tp.strip().lower() == "auto"

    def degree(self) -> Parallel:
        """The layout given (not auto): a TP degree, or TP × attention DP with EP."""
        return capacity.parse_parallel(self.tp)

    def layouts(self, gpu: str | None) -> list[Parallel]:
        """The layouts to try: with auto, capacity.layout_choices within `gpu`'s NVLink domain
        (an HGX board's 8 GPUs where no GPU is named: assumption); else the one given."""
        if not self.auto:
            return [self.degree()]
        domain = get_spec(gpu).domain if gpu else 8
        return capacity.layout_choices(models.get_model(self.model).moe, domain)

    def at(self, layout: int | Parallel) -> Serving:
        """The serving set-up at a layout (a bare number: that TP degree)."""
        p = Parallel(layout) if isinstance(layout, int) else layout
        return Serving(
            models.get_model(self.model),
            tp=p.tp,
            dp=p.dp,
            ep=p.ep,
            redundant=self.redundant,
            router_skew=self.router_skew,
            precision=self.precision,
            kv_precision=self.kv_precision,
            prefill_budget=self.max_tokens,
            isl=self.isl or models.DEFAULT_ISL,
            osl=self.osl or models.DEFAULT_OSL,
            workspace=self.workspace,
            max_batch=self.max_batch,
            collectives=self.collectives,
        )


@dataclass(frozen=True)
class TimeSources:
    """Where step times come from: result files (else `gpu`'s spec sheet alone), on `gpu` (a
    projection when the files were measured on another), with `impl` forced for every op that
    has an implementation of that name."""

    results: tuple[Path, ...] = ()
    gpu: str | None = None
    impl: str | None = None

    def step_model(self, setup: Serving, model_arg: str) -> StepModel:
        """The step-time model; `model_arg` is the model as the user named it, for hints."""
        return step_model_for(
            setup, self.docs(), self._paths(), gpu=self.gpu, impl=self.impl,
            model_arg=model_arg, references=references(),
        )  # fmt: skip

    def layer_model(self, setup: Serving) -> StepModel:
        """The step-time model for one step's times: no memory fit needed."""
        return step_model_for(
            setup, self.docs(), self._paths(), gpu=self.gpu, impl=self.impl,
            references=references(), fit=False,
        )  # fmt: skip

    def throughput(
        self, setup: Serving, model_arg: str, batches: list[int] | None = None
    ) -> Throughput:
        """The per-GPU throughput estimate, at `batches` (default: those the files measured)."""
        return estimate_throughput(
            setup, self.docs(), self._paths(), batches=batches, gpu=self.gpu, impl=self.impl,
            command=results.command_line(), model_arg=model_arg, references=references(),
        )  # fmt: skip

    def docs(self) -> list[ResultDoc]:
        return [load_results(p) for p in self.results]

    def _paths(self) -> list[str]:
        return [str(p) for p in self.results]


def references() -> list[ResultDoc]:
    """The GPU result files in the reference folder, whose measured efficiencies stand in for
    shapes the files given lack; one that does not load is left out."""
    found = []
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        try:
            doc = load_results(path)
        except BenchError:
            continue
        if doc.device.kind == "cuda":
            found.append(doc)
    return found


def with_lengths(serving: ServingOptions, sources: TimeSources) -> tuple[ServingOptions, str]:
    """The serving options with their request lengths settled, and where they came from: as
    given, else as the result files measured the model (one prompt length and one decode
    context: isl and isl + osl/2), else tokbench's defaults, which every command shares."""
    isl, osl = serving.isl, serving.osl
    if isl is not None and osl is not None:
        return serving, f"{isl} + {osl} tokens (given)"
    found = _measured_lengths(serving, sources) if sources.results else None
    if found is not None:
        where = ", ".join(p.name for p in sources.results)
        isl, osl = isl or found[0], osl or found[1]
        words = f"{isl} + {osl} tokens, as {where} measured them (--isl, --osl to change)"
    else:
        isl, osl = isl or models.DEFAULT_ISL, osl or models.DEFAULT_OSL
        words = f"{isl} + {osl} tokens, tokbench's default (--isl, --osl to change)"
    return dataclasses.replace(serving, isl=isl, osl=osl), words


def _measured_lengths(serving: ServingOptions, sources: TimeSources) -> tuple[int, int] | None:
    """(isl, osl) of the one fresh prompt length and one longer decode context the files
    measured this model at; None when they measured none; ambiguity is a one-line error."""
    setup = dataclasses.replace(serving, isl=1, osl=1, tp="1").at(1)
    steps = measured_steps(setup, sources.docs())
    prompts = sorted({s[3] for s in steps if s[1] == "prefill" and s[3] == s[4]})
    contexts = sorted({s[4] for s in steps if s[1] == "decode"})
    if not prompts or not contexts:
        return None
    longer = [c for c in contexts if c > prompts[0]]
    if len(prompts) > 1 or len(longer) != 1:
        raise BenchError(
            f"{', '.join(p.name for p in sources.results)} measured {setup.model.name} at prompt "
            f"lengths {', '.join(map(str, prompts))} and decode contexts "
            f"{', '.join(map(str, contexts))}: pass --isl and --osl"
        )
    return prompts[0], 2 * (longer[0] - prompts[0])


def laid_out(
    serving: ServingOptions,
    build: Callable[[Parallel], Result],
    rate: Callable[[Result], float],
    gpu: str | None = None,
) -> tuple[Result, list[Layout]]:
    """`build` at the layout given, or at the layout of `gpu` serving the most per GPU (auto),
    with every layout tried."""
    if serving.auto:
        return capacity.best_layout(build, rate, serving.layouts(gpu))
    return build(serving.degree()), []


# --- estimate -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateSettings:
    serving: ServingOptions
    sources: TimeSources = TimeSources()
    batches: list[int] | None = None  # decode batches (default: those measured in the files)
    validate: bool = False  # also run one decoder layer here against the op sum


@dataclass(frozen=True)
class Estimate:
    """The per-GPU throughput, the layouts --tp auto tried, and the decoder-layer checks."""

    throughput: Throughput
    layouts: list[Layout] = field(default_factory=list)
    checks: list[Validation] = field(default_factory=list)
    lengths: str = ""  # the request lengths, and where they came from


def estimate(settings: EstimateSettings) -> Estimate:
    """Per-GPU prefill and decode throughput, memory fit and serving mix; with `validate`, one
    decoder layer timed here at each end of the steps, its ratios kept in the record."""
    serving, lengths = with_lengths(settings.serving, settings.sources)
    sources = settings.sources

    def build(layout: Parallel) -> Throughput:
        return sources.throughput(serving.at(layout), serving.model, settings.batches)

    result, layouts = laid_out(
        serving, build, lambda r: r.record.serving_output_tokens_per_s, sources.gpu
    )
    checks = _measure_layers(result, sources.results) if settings.validate else []
    for check in checks:
        where = f"{check.phase}_batch{check.batch}"
        result.record.validation[f"{where}_ratio"] = check.ratio
        result.record.validation[f"{where}_measured_ms"] = check.measured_s * 1e3
        result.record.validation[f"{where}_estimated_ms"] = check.estimated_s * 1e3
    return Estimate(result, layouts, checks, lengths)


def _measure_layers(result: Throughput, paths: Sequence[Path]) -> list[Validation]:
    """Run the layer on this machine at the smallest and largest prefill and decode steps
    estimated: the latency end and the throughput end."""
    kernels.use_interpreter_without_gpu()
    from bench.measure import device as dev
    from bench.plan.throughput import measure_layer

    device = dev.detect()
    if result.target.projected or result.target.name != device.name:
        source = paths[0] if paths else "its spec sheet"
        raise BenchError(
            f"--validate runs a layer on this machine ({device.name}) but the estimate is for "
            f"{result.target.name} ({source}); validate with a file measured here"
        )
    ends = (result.prefill[0], result.prefill[-1], result.decode[0], result.decode[-1])
    steps = dict.fromkeys((s.phase, s.batch, s.context) for s in ends)
    return [measure_layer(result.step_model, *key, device) for key in steps]


# --- one layer's step --------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSettings:
    serving: ServingOptions
    sources: TimeSources = TimeSources()
    tokens: int = 1  # tokens the step computes
    batch: int = 1  # sequences they belong to
    context: int = 0  # tokens each sequence has cached
    sweep: tuple[int, ...] = ()  # token counts for the roofline shares (a plot), if any


@dataclass(frozen=True)
class LayerStep:
    """One layer's ops at the step, and their predicted shares of the roofline over a sweep."""

    layer: LayerTimes
    shares: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def layer_step(settings: StepSettings) -> LayerStep:
    """Every op of one decoder layer at one step: time, source, bound, FLOP/s and bytes/s."""
    serving = settings.serving
    step_model = settings.sources.layer_model(serving.at(serving.degree()))
    layer = layer_times(step_model, settings.tokens, settings.batch, settings.context)
    shares = roofline_shares(step_model, list(settings.sweep)) if settings.sweep else {}
    return LayerStep(layer, shares)
