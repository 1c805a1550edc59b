"""Fleet capacity, GPUs needed, cost per token and claim checks, from per-GPU throughput.

The arithmetic (docs/estimate.md): tokens/day = per-GPU tokens/s × GPUs × utilization × 86,400;
cost per million tokens = price per GPU-hour / (per-GPU tokens/s × utilization × 3,600) × 10⁶
(a GPU is paid for whether busy or not, so utilization raises the cost of each token). A model
served at tensor-parallel degree TP runs on whole groups of TP GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench import BenchError, check_range
from bench.measure.ops import get_op
from bench.plan.models import Serving
from bench.plan.simulate import Simulation
from bench.record.hardware import GpuSpec, get_spec
from bench.record.schema import EstimateRecord
from bench.record.units import plural

SECONDS_PER_DAY = 86_400
DEFAULT_UTILIZATION = 0.6  # average share of the day a fleet spends serving at full batch
# Claim / estimate ratios: up to PLAUSIBLE the claim is within what kernel fusion, overlap and
# better kernels than the measured ones can add to an op-sum estimate; up to OPTIMISTIC it needs
# techniques the estimate does not model (speculative decoding, lower precision, prefix caching);
# beyond that it is implausible for the hardware.
PLAUSIBLE = 1.25
OPTIMISTIC = 2.0


@dataclass(frozen=True)
class PerGpu:
    """Throughput of one GPU serving a model, and where it comes from."""

    output_tokens_per_s: float  # serving mix: output tokens
    total_tokens_per_s: float  # serving mix: input + output tokens
    requests_per_s: float
    peak_output_tokens_per_s: float  # decode alone at the largest batch: the upper bound
    source: str


@dataclass(frozen=True)
class Fleet:
    """What `gpus` GPUs serve at a utilization, and at what cost."""

    gpus: int
    tp: int
    utilization: float
    per_gpu: PerGpu
    price_per_gpu_hour: float | None = None

    @property
    def serving_gpus(self) -> int:
        return whole_groups(self.gpus, self.tp)

    def per_day(self, per_gpu_rate: float) -> float:
        return per_gpu_rate * self.serving_gpus * self.utilization * SECONDS_PER_DAY

    def cost_per_million(self, per_gpu_tokens_per_s: float) -> float | None:
        if self.price_per_gpu_hour is None:
            return None
        return cost_per_million(self.price_per_gpu_hour, per_gpu_tokens_per_s, self.utilization)


def whole_groups(gpus: int, tp: int) -> int:
    """GPUs in whole TP groups; a remainder cannot hold a copy of the model."""
    return gpus // tp * tp


def per_gpu(record: EstimateRecord) -> PerGpu:
    """The serving mix and the peak decode rate of a saved or fresh estimate."""
    rps = record.requests_per_s
    source = record.rows[-1].source if record.rows else "estimate"
    return PerGpu(
        output_tokens_per_s=rps * record.osl,
        total_tokens_per_s=rps * (record.isl + record.osl),
        requests_per_s=rps,
        peak_output_tokens_per_s=record.decode_tokens_per_s,
        source=source,
    )


def figures(
    fleet: Fleet, target_tokens_s: float | None, target_tokens_day: float | None
) -> dict[str, float | int | str]:
    """Every fleet figure by name: per-day rates, costs and the GPUs each target needs."""
    p = fleet.per_gpu
    out: dict[str, float | int | str] = {
        "gpus": fleet.gpus,
        "serving_gpus": fleet.serving_gpus,
        "utilization": fleet.utilization,
        "per_gpu_output_tokens_s": p.output_tokens_per_s,
        "output_tokens_day": fleet.per_day(p.output_tokens_per_s),
        "total_tokens_day": fleet.per_day(p.total_tokens_per_s),
        "requests_day": fleet.per_day(p.requests_per_s),
        "source": p.source,
    }
    if fleet.price_per_gpu_hour is not None:
        out["usd_per_million_output_tokens"] = fleet.cost_per_million(p.output_tokens_per_s)
        out["usd_per_million_total_tokens"] = fleet.cost_per_million(p.total_tokens_per_s)
    if target_tokens_s is not None:
        out["target_tokens_s"] = target_tokens_s
        out["gpus_for_target_tokens_s"] = gpus_needed(
            target_tokens_s, p.output_tokens_per_s, fleet.utilization, fleet.tp
        )
    if target_tokens_day is not None:
        out["target_tokens_day"] = target_tokens_day
        out["gpus_for_target_tokens_day"] = gpus_needed(
            target_tokens_day / SECONDS_PER_DAY, p.output_tokens_per_s, fleet.utilization, fleet.tp
        )
    return out


def gpu_name(key: str | None) -> str:
    """The spec-table name of `--gpu KEY` (a clear error for an unknown key), or 'GPU'."""
    return "GPU" if key is None else _spec(key).name


def _spec(key: str) -> GpuSpec:
    try:
        return get_spec(key)
    except ValueError as e:
        raise BenchError(str(e)) from None


def check_targets(
    target_tokens_s: float | None, target_tokens_day: float | None, claim_tokens_s: float | None
) -> None:
    """Raise a one-line BenchError, naming the flag and the value as given, for a target or
    claim that is not a positive, finite number."""
    for flag, value in (
        ("--target-tokens-s", target_tokens_s),
        ("--target-tokens-day", target_tokens_day),
        ("--claim-tokens-s", claim_tokens_s),
    ):
        if value is not None:
            check_range(flag, value)


def check_fleet(gpus: int, tp: int, utilization: float, price: float | None) -> None:
    """Raise a one-line BenchError for a fleet that cannot be."""
    if gpus < 1:
        raise BenchError(f"--gpus must be at least 1, got {gpus}")
    if gpus < tp:
        raise BenchError(f"{plural(gpus, 'GPU')} cannot hold one copy of the model at TP {tp}")
    check_range("--utilization", utilization, 0, 1, closed="high")
    if price is not None:
        check_range("--price", price, what=" (USD per GPU-hour)")


def cost_per_million(
    price_per_gpu_hour: float, per_gpu_tokens_per_s: float, utilization: float
) -> float:
    """Dollars per million tokens from a GPU-hour price."""
    return price_per_gpu_hour / (per_gpu_tokens_per_s * utilization * 3600) * 1e6


def gpus_needed(
    target_tokens_per_s: float, per_gpu_tokens_per_s: float, utilization: float, tp: int
) -> int:
    """GPUs, in whole TP groups, that serve a target rate on average at a utilization."""
    if target_tokens_per_s <= 0:
        raise BenchError(f"the target must be positive, got {target_tokens_per_s}")
    groups = math.ceil(target_tokens_per_s / (per_gpu_tokens_per_s * utilization * tp) - 1e-9)
    return groups * tp


@dataclass(frozen=True)
class Claim:
    """'`gpus` GPUs serve `claimed` output tokens/s' against what they serve."""

    claimed: float
    gpus: int
    estimate: float  # output tokens/s of `gpus` GPUs at the serving rate, fully busy

    @property
    def ratio(self) -> float:
        return self.claimed / self.estimate

    @property
    def verdict(self) -> str:
        if self.ratio <= PLAUSIBLE:
            return "plausible"
        return "optimistic" if self.ratio <= OPTIMISTIC else "implausible"


def check_claim(claimed: float, gpus: int, tp: int, per_gpu: PerGpu) -> Claim:
    """Compare a claimed output rate with what the fleet serves with every GPU busy: the
    serving rate (prefill and decode both, or the highest rate meeting an SLO), not decode
    alone at its peak, which no request stream sustains."""
    if claimed <= 0:
        raise BenchError(f"the claimed rate must be positive, got {claimed}")
    return Claim(claimed, gpus, per_gpu.output_tokens_per_s * whole_groups(gpus, tp))


# --- choosing the layout ------------------------------------------------------------------------

Result = TypeVar("Result")

# Tensor-parallel degrees tried by --tp auto: within one 8-GPU NVLink node.
TP_CHOICES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Layout:
    """One tensor-parallel degree tried: its per-GPU output rate, or why it cannot serve."""

    tp: int
    rate: float | None  # output tokens/s per GPU
    why: str = ""


def best_layout(
    build: Callable[[int], Result], rate: Callable[[Result], float]
) -> tuple[Result, list[Layout]]:
    """The result of `build(tp)` for the TP degree whose per-GPU output rate is highest, and
    every degree tried; a degree that cannot serve (does not fit, does not divide the heads,
    misses the SLO) says why. Data-parallel replicas fill the rest of a fleet."""
    results: dict[int, Result] = {}
    tried = []
    for tp in TP_CHOICES:
        try:
            results[tp] = build(tp)
        except BenchError as e:
            tried.append(Layout(tp, None, str(e)))
            continue
        tried.append(Layout(tp, rate(results[tp])))
    rated = [t for t in tried if t.rate]
    if not rated:
        raise BenchError(
            "no tensor-parallel degree serves it: "
            + "; ".join(f"TP {t.tp}: {t.why or 'no output'}" for t in tried)
        )
    best = max(rated, key=lambda t: t.rate)
    return results[best.tp], tried


# --- rates from a simulation, deals, bounds -----------------------------------------------------

HOURS_PER_YEAR = 365.25 * 24


def deal_price(deal_usd: float, years: float, gpus: int) -> float:
    """USD per GPU-hour of a deal paying `deal_usd` for `gpus` GPUs over `years`."""
    check_range("--deal-usd", deal_usd, what=" (USD for the whole deal)")
    check_range("--years", years)
    return deal_usd / (gpus * years * HOURS_PER_YEAR)


def slo_per_gpu(sim: Simulation) -> PerGpu:
    """The sustained rate of a replica at the highest Poisson arrival rate meeting an SLO,
    per GPU; the offline run's output rate is the peak."""
    setup = sim.step_model.setup
    lengths = sim.workload.lengths
    mean_in = sum(i for i, _ in lengths) / len(lengths)
    mean_out = sum(o for _, o in lengths) / len(lengths)
    rps = sim.rate / setup.tp
    return PerGpu(
        output_tokens_per_s=rps * mean_out,
        total_tokens_per_s=rps * (mean_in + mean_out),
        requests_per_s=rps,
        peak_output_tokens_per_s=sim.search.offline.output_tokens_per_s,
        source=f"simulated at {sim.slo.describe()}",
    )


def served_per_gpu(sim: Simulation) -> float:
    """Output tokens/s per GPU a simulated replica serves: offline, what the run served; under
    an SLO, the sustained arrival rate's."""
    if sim.search is None:
        return sim.result.output_tokens_per_s
    return slo_per_gpu(sim).output_tokens_per_s


def roofline_rate(setup: Serving, spec: GpuSpec) -> float:
    """The most output tokens/s one GPU could make of the model: every token's weight FLOPs
    (GEMMs, experts, LM head; attention left out) at the dense peak of the precision, however
    large the batch."""
    uses = [u for u in Serving(setup.model, precision=setup.precision).decode_step(1)]
    flops = sum(
        get_op(u.op).flops(u.shape) * u.count for u in uses if get_op(u.op).part != "attention"
    )
    peak = spec.peak_tflops.get(setup.precision) or spec.peak_tflops["bf16"]
    return peak * 1e12 / flops


def check_given_rate(setup: Serving, tokens_per_gpu: float, gpu: str | None) -> None:
    """A rate given by hand must be one the named GPU could reach, for a model it can hold."""
    check_range("--tokens-per-gpu", tokens_per_gpu)
    if gpu is None:
        return
    spec = _spec(gpu)
    plan = setup.memory_plan(spec.memory_gb * 1e9)
    if plan.max_batch < 1:
        raise BenchError(
            f"{setup.model.name} at TP {setup.tp} in {setup.precision} does not fit {spec.name}: "
            f"{plan.weights / 1e9:.0f} GB of weights per GPU beside {spec.memory_gb:.0f} GB"
        )
    bound = roofline_rate(setup, spec)
    if tokens_per_gpu > bound:
        raise BenchError(
            f"--tokens-per-gpu {tokens_per_gpu:,.0f} exceeds what a {spec.name} can make of "
            f"{setup.model.name} in {setup.precision}: at most {bound:,.0f} output tok/s per GPU "
            "(each token's weight FLOPs at the dense peak)"
        )
