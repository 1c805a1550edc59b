"""Fleet capacity, GPUs needed, cost per token, claim checks and a deal's market checks, from
per-GPU throughput.

The arithmetic (docs/estimate.md): tokens/day = per-GPU tokens/s × GPUs × utilization × 86,400;
cost per million tokens = what the GPUs cost an hour / (the tokens they serve an hour) × 10⁶,
every GPU paid for whether busy or not (so utilization raises the cost of each token). A model
served at tensor-parallel degree TP runs on whole groups of TP GPUs. A fleet may mix GPU kinds,
each at its own per-GPU rate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bench import BenchError, check_range
from bench.plan.bounds import Bound, output_bound
from bench.plan.deal import (
    ApiCheck,
    Deal,
    Power,
    PriceCheck,
    api_check,
    check_pue,
    gpu_power,
    price_check,
)
from bench.plan.models import Serving, layout_label
from bench.record.hardware import GpuSpec, get_spec
from bench.record.market import (
    COMMITTED_SOURCE,
    ELECTRICITY_SOURCE,
    ELECTRICITY_USD_PER_KWH,
    PUE_AWS,
    PUE_SOURCE,
)

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
# Average share of the day a fleet spends serving at the planned rate. An assumption: no
# published fleet-wide figure backs it; traffic has daily peaks and troughs, and a fleet is
# sized for the peaks. --utilization overrides it, and every plan prints the share it used.
DEFAULT_UTILIZATION = 0.6
# Claim / estimate ratios, both assumptions (judgement, not measured): up to PLAUSIBLE the claim
# is within what kernel fusion, overlap and better kernels than the measured ones can add to an
# op-sum estimate; up to OPTIMISTIC it needs techniques the estimate does not model (speculative
# decoding, lower precision, prefix caching); beyond that it is implausible for the hardware,
# and above the physical bound (bench.plan.bounds) impossible without such techniques.
PLAUSIBLE = 1.25
OPTIMISTIC = 2.0
# Slack when rounding a number of TP groups up: a target that is a whole number of groups in
# exact arithmetic must not become one more through floating-point error.
ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class PerGpu:
    """Throughput of one GPU serving a model, and the serving model it comes from."""

    output_tokens_per_s: float
    total_tokens_per_s: float  # input + output
    requests_per_s: float
    source: str


def per_gpu(output_tokens_per_s: float, mean_in: float, mean_out: float, source: str) -> PerGpu:
    """A per-GPU output rate as the serving mix of requests of these mean lengths."""
    rps = output_tokens_per_s / mean_out
    return PerGpu(output_tokens_per_s, rps * (mean_in + mean_out), rps, source)


def whole_groups(gpus: int, tp: int) -> int:
    """GPUs in whole groups of `tp` (a copy of the model: TP × attention DP); a remainder
    cannot hold one."""
    return gpus // tp * tp


@dataclass(frozen=True)
class Part:
    """One GPU kind of a fleet as planned: its GPUs, the set-up they serve, their per-GPU rate,
    the physical bound of that rate, and the layouts --tp auto tried."""

    gpu: str  # the GPU's name, or "GPU" when none was named
    key: str | None  # its spec-table key
    gpus: int
    setup: Serving
    rate: PerGpu
    bound: Bound | None = None
    layouts: tuple[Layout, ...] = ()

    @property
    def serving_gpus(self) -> int:
        return whole_groups(self.gpus, self.setup.gpus)


@dataclass(frozen=True)
class Fleet:
    """What the fleet's GPUs serve at a utilization, and at what cost."""

    parts: tuple[Part, ...]
    utilization: float
    price_per_gpu_hour: float | None = None

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.parts)

    @property
    def serving_gpus(self) -> int:
        return sum(p.serving_gpus for p in self.parts)

    def busy_rate(self, metric: str) -> float:
        """Per second, every serving GPU busy: 'output', 'total' tokens or 'requests'."""
        name = {"output": "output_tokens_per_s", "total": "total_tokens_per_s"}.get(
            metric, "requests_per_s"
        )
        return sum(getattr(p.rate, name) * p.serving_gpus for p in self.parts)

    def per_day(self, metric: str) -> float:
        return self.busy_rate(metric) * self.utilization * SECONDS_PER_DAY

    def cost_per_million(self, metric: str) -> float | None:
        """USD per million tokens: every GPU's price over what the fleet serves."""
        cost = self.cost_per_unit(metric)
        return None if cost is None else cost * 1e6

    def cost_per_unit(self, metric: str) -> float | None:
        if self.price_per_gpu_hour is None:
            return None
        served = self.busy_rate(metric) * self.utilization * SECONDS_PER_HOUR
        return self.price_per_gpu_hour * self.gpus / served


def gpus_needed(
    target_tokens_per_s: float, per_gpu_tokens_per_s: float, utilization: float, tp: int
) -> int:
    """GPUs, in whole TP groups, that serve a target rate on average at a utilization."""
    if target_tokens_per_s <= 0:
        raise BenchError(f"the target must be positive, got {target_tokens_per_s}")
    groups = math.ceil(
        target_tokens_per_s / (per_gpu_tokens_per_s * utilization * tp) - ROUNDING_SLACK
    )
    return groups * tp


# --- claims and bounds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """'`gpus` GPUs serve `claimed` output tokens/s' against what they serve and the most they
    could (None where no GPU of the spec table is named)."""

    claimed: float
    gpus: int
    estimate: float  # output tokens/s of `gpus` GPUs at the planned rate, fully busy
    bound: float | None = None  # the same at the physical bound

    @property
    def ratio(self) -> float:
        return self.claimed / self.estimate

    @property
    def verdict(self) -> str:
        if self.bound is not None and self.claimed > self.bound:
            return "impossible"
        if self.ratio <= PLAUSIBLE:
            return "plausible"
        return "optimistic" if self.ratio <= OPTIMISTIC else "implausible"


def check_claim(claimed: float, fleet: Fleet) -> Claim:
    """A claimed output rate against what the fleet serves with every GPU busy at the planned
    rate (prefill and decode both, at the SLO or interactivity asked for), and against the
    physical bound of its GPUs."""
    check_range("--claim-tokens-s", claimed)
    bounds = [p.bound for p in fleet.parts]
    bound = None
    if all(b is not None for b in bounds):
        bound = sum(b.tokens_per_s * p.serving_gpus for b, p in zip(bounds, fleet.parts,
                                                                    strict=True))  # fmt: skip
    return Claim(claimed, fleet.gpus, fleet.busy_rate("output"), bound)


def spec(key: str) -> GpuSpec:
    try:
        return get_spec(key)
    except ValueError as e:
        raise BenchError(str(e)) from None


def given_rate(
    setup: Serving, tokens_per_gpu: float, gpu: str | None
) -> tuple[PerGpu, Bound | None]:
    """A per-GPU output rate given by hand, as the serving mix of `setup`'s requests, refused
    in one line above the named GPU's physical bound (bench.plan.bounds)."""
    check_range("--tokens-per-gpu", tokens_per_gpu)
    rate = per_gpu(tokens_per_gpu, setup.isl, setup.osl, "given with --tokens-per-gpu")
    if gpu is None:
        return rate, None
    the_spec = spec(gpu)
    bound = output_bound(setup, the_spec)
    if tokens_per_gpu > bound.tokens_per_s:
        raise BenchError(
            f"--tokens-per-gpu {tokens_per_gpu:,.6g} exceeds what a {the_spec.name} can make of "
            f"{setup.model.name} in {setup.precision} at {setup.isl} + {setup.osl} tokens: "
            f"{bound.describe()}"
        )
    return rate, bound


# --- choosing the layout ------------------------------------------------------------------------

Result = TypeVar("Result")

# Tensor-parallel degrees tried by --tp auto: within one NVLink node of 8 GPUs (an HGX board's
# 8 GPUs, NVIDIA's HGX H100/H200/B200 platform), where tensor parallelism's all-reduces stay.
TP_CHOICES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Parallel:
    """How one copy of a model is laid out: `dp` attention data-parallel groups of `tp` GPUs;
    with `ep` > 1 a MoE's experts spread over all tp × dp of them (expert parallelism)."""

    tp: int
    dp: int = 1
    ep: int = 1

    @property
    def label(self) -> str:
        return layout_label(self.tp, self.dp, self.ep)


def parse_parallel(text: str) -> Parallel:
    """`--tp`'s layout: N (tensor parallelism), NxD (D attention-DP groups of N GPUs, experts
    over all N × D), either with a trailing `ep` for experts over the group (Nep: TP attention
    with expert-parallel experts)."""
    raw = text.strip().lower()
    body = raw.removesuffix("ep")
    try:
        tp, dp = (int(p) for p in body.split("x")) if "x" in body else (int(body), 1)
    except ValueError:
        raise BenchError(
            f"--tp must be a whole number of GPUs or auto, got '{text}' (or a layout: NxD, TP "
            "N × attention DP D with experts over all; Nep, TP N with experts over them)"
        ) from None
    if tp < 1 or dp < 1:
        raise BenchError(f"--tp {text}: every degree of a layout must be at least 1")
    ep = tp * dp if dp > 1 or raw.endswith("ep") else 1
    return Parallel(tp, dp, ep)


def layout_choices(moe: bool, domain: int) -> list[Parallel]:
    """The layouts --tp auto tries: every TP degree of an HGX board; for a MoE also expert
    parallelism over a board and over the whole NVLink domain (an NVL72 rack's 72), attention
    split by TP × DP within it, as SGLang and TensorRT-LLM run DeepSeek (DP attention + EP)."""
    layouts = [Parallel(tp) for tp in TP_CHOICES]
    if moe:
        for group in sorted({min(8, domain), domain}):
            layouts += [Parallel(tp, group // tp, group) for tp in TP_CHOICES if not group % tp]
    return layouts


@dataclass(frozen=True)
class Layout:
    """One layout tried: its per-GPU output rate, or why it cannot serve."""

    tp: int
    rate: float | None  # output tokens/s per GPU
    why: str = ""
    dp: int = 1
    ep: int = 1

    @property
    def label(self) -> str:
        return layout_label(self.tp, self.dp, self.ep)


def best_layout(
    build: Callable[[Parallel], Result],
    rate: Callable[[Result], float],
    choices: list[Parallel] | None = None,
) -> tuple[Result, list[Layout]]:
    """The result of `build(layout)` for the layout (default: each TP degree) whose per-GPU
    output rate is highest, and every layout tried; one that cannot serve (does not fit, does
    not divide the heads, misses the SLO) says why. Replicas fill the rest of a fleet."""
    results: dict[Parallel, Result] = {}
    tried = []
    for p in choices or [Parallel(tp) for tp in TP_CHOICES]:
        try:
            results[p] = build(p)
        except BenchError as e:
            tried.append(Layout(p.tp, None, str(e), p.dp, p.ep))
            continue
        tried.append(Layout(p.tp, rate(results[p]), "", p.dp, p.ep))
    rated = [t for t in tried if t.rate]
    if not rated:
        raise BenchError(
            "no layout serves it: " + "; ".join(f"{t.label}: {t.why or 'no output'}" for t in tried)
        )
    best = max(rated, key=lambda t: t.rate)
    return results[Parallel(best.tp, best.dp, best.ep)], tried


# --- the fleet's terms --------------------------------------------------------------------------


def parse_gpus(text: str, gpu: str | None) -> tuple[tuple[str | None, int], ...]:
    """--gpus N (of --gpu's kind) or --gpus KIND=N,KIND=N (a mixed fleet, no --gpu) as
    (spec key or None, GPUs) pairs."""
    rule = (
        "--gpus takes a number of GPUs (of --gpu's kind) or KIND=N pairs, e.g. "
        "gb200=150000,gb300=150000"
    )
    if "=" not in text:
        count = _count(text, rule)
        return ((gpu, count),)
    if gpu is not None:
        raise BenchError(f"--gpus {text} names its GPU kinds: drop --gpu {gpu}")
    parts = []
    for pair in text.split(","):
        key, _, n = (p.strip() for p in pair.partition("="))
        parts.append((spec(key).key, _count(n, rule)))
    if len({k for k, _ in parts}) < len(parts):
        raise BenchError(f"--gpus {text} names a GPU kind twice")
    return tuple(parts)


def _count(text: str, rule: str) -> int:
    try:
        count = int(text.replace("_", ""))
    except ValueError:
        raise BenchError(f"{rule}; got '{text}'") from None
    if count < 1:
        raise BenchError(f"--gpus must be at least 1, got {count}")
    return count


@dataclass(frozen=True)
class Terms:
    """A fleet as a plan names it: its GPUs by kind, how busy they are on average, what they
    cost (a price per GPU-hour, or a deal), and its facility's PUE."""

    gpus: tuple[tuple[str | None, int], ...]
    utilization: float = DEFAULT_UTILIZATION
    price: float | None = None  # USD per GPU-hour
    deal: Deal | None = None
    pue: float = PUE_AWS

    def __post_init__(self) -> None:
        check_range("--utilization", self.utilization, 0, 1, closed="high")
        if self.price is not None:
            # The ceiling only keeps the costs finite: no price near it is meant.
            check_range("--price", self.price, 0, 1e6, closed="high", what=" (USD per GPU-hour)")
            if self.deal is not None:
                raise BenchError("--price and --deal-usd exclude each other: a deal sets the price")
        check_pue(self.pue)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.gpus)

    def price_per_gpu_hour(self) -> float | None:
        return self.price if self.deal is None else self.deal.price_per_gpu_hour(self.total)

    def check(self, layout: Parallel) -> None:
        """Raise a one-line BenchError for a kind too small for one copy of the model."""
        for key, n in self.gpus:
            if n < layout.tp * layout.dp:
                kind = f" {spec(key).name}" if key else ""
                raise BenchError(
                    f"{n:,}{kind} GPU{'s' if n > 1 else ''} cannot hold one copy of the model "
                    f"at {layout.label}"
                )


@dataclass(frozen=True)
class Asks:
    """What a plan is asked beside the fleet's own figures: the GPUs a target rate or a daily
    volume needs, and a claimed rate to check."""

    target_tokens_s: float | None = None
    target_tokens_day: float | None = None
    claim_tokens_s: float | None = None

    def check(self) -> None:
        for flag, value in (
            ("--target-tokens-s", self.target_tokens_s),
            ("--target-tokens-day", self.target_tokens_day),
            ("--claim-tokens-s", self.claim_tokens_s),
        ):
            if value is not None:
                check_range(flag, value)


# --- a fleet plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A fleet plan: the fleet, its terms, the claim checked, the market checks of a price or
    deal, the power, every assumption in words, and every figure by name (capacity --json)."""

    model: str
    fleet: Fleet
    terms: Terms
    claim: Claim | None
    figures: dict[str, object]
    assumptions: tuple[str, ...]
    prices: tuple[PriceCheck, ...] = ()
    api: ApiCheck | None = None
    power: Power | None = None


def fleet_plan(parts: tuple[Part, ...], terms: Terms, asks: Asks, lengths: str) -> Plan:
    """The fleet of `parts` on `terms`, with the answers to `asks`; `lengths` says where the
    request lengths came from."""
    fleet = Fleet(parts, terms.utilization, terms.price_per_gpu_hour())
    claim = None if asks.claim_tokens_s is None else check_claim(asks.claim_tokens_s, fleet)
    prices, api, power = _market(fleet, terms)
    plan = Plan(parts[0].setup.model.name, fleet, terms, claim, {}, (), prices, api, power)
    plan = dataclasses.replace(plan, assumptions=_assumptions(plan, lengths))
    return dataclasses.replace(plan, figures=_figures(plan, asks))


def _market(
    fleet: Fleet, terms: Terms
) -> tuple[tuple[PriceCheck, ...], ApiCheck | None, Power | None]:
    """A priced fleet's checks: each kind's price beside the market's, the cost beside API
    prices of the model; a fleet of named GPUs' power."""
    named = all(p.key for p in fleet.parts)
    price = fleet.price_per_gpu_hour
    prices = tuple(price_check(p.key, price) for p in fleet.parts) if named and price else ()
    api = None
    if price is not None:
        requests = fleet.busy_rate("requests")
        mean_out = fleet.busy_rate("output") / requests
        mean_in = fleet.busy_rate("total") / requests - mean_out
        api = api_check(
            fleet.parts[0].setup.model.name, fleet.cost_per_million("output"),
            fleet.cost_per_unit("requests"), mean_in, mean_out,
        )  # fmt: skip
    power = None
    if named:
        share = terms.deal.online_share if terms.deal else 1.0
        years = terms.deal.years if terms.deal else 1.0
        kinds = tuple((gpu_power(p.key), p.gpus) for p in fleet.parts)
        power = Power(kinds, terms.pue, fleet.busy_rate("output"), years, share)
    return prices, api, power


def _figures(plan: Plan, asks: Asks) -> dict[str, object]:
    """Every figure by name: per-day rates, costs, the GPUs each target needs, the parts, the
    deal, the market checks, the power and the claim."""
    fleet, terms = plan.fleet, plan.terms
    first = fleet.parts[0]
    out: dict[str, object] = {
        "model": plan.model,
        "gpus": fleet.gpus,
        "serving_gpus": fleet.serving_gpus,
        "utilization": fleet.utilization,
        # A fleet of several kinds: the mean per serving GPU.
        "per_gpu_output_tokens_s": fleet.busy_rate("output") / fleet.serving_gpus,
        "output_tokens_day": fleet.per_day("output"),
        "total_tokens_day": fleet.per_day("total"),
        "requests_day": fleet.per_day("requests"),
        "isl": first.setup.isl,
        "osl": first.setup.osl,
        "parts": [_part_figures(p) for p in fleet.parts],
    }
    if len(fleet.parts) == 1:  # the one kind's figures at the top, as for any fleet of one
        out.update({k: v for k, v in out["parts"][0].items() if k != "gpus"})
    if fleet.price_per_gpu_hour is not None:
        out["usd_per_gpu_hour"] = fleet.price_per_gpu_hour
        out["usd_per_million_output_tokens"] = fleet.cost_per_million("output")
        out["usd_per_million_total_tokens"] = fleet.cost_per_million("total")
    if terms.deal is not None:
        d = terms.deal
        out.update(deal_usd=d.usd, years=d.years, non_gpu_share=d.non_gpu_share,
                   online_share=d.online_share, gpu_hours=d.gpu_hours(terms.total))  # fmt: skip
    for name, target in (("tokens_s", asks.target_tokens_s),
                         ("tokens_day", asks.target_tokens_day)):  # fmt: skip
        if target is not None:
            per_s = target if name == "tokens_s" else target / SECONDS_PER_DAY
            out[f"target_{name}"] = target
            out[f"gpus_for_target_{name}"] = gpus_needed(
                per_s, fleet.busy_rate("output") / fleet.serving_gpus, fleet.utilization,
                first.setup.gpus,
            )  # fmt: skip
    out.update(_check_figures(plan))
    return out


def _part_figures(part: Part) -> dict[str, object]:
    setup = part.setup
    out: dict[str, object] = {
        "gpu": part.gpu, "gpus": part.gpus, "tp": setup.tp, "dp": setup.dp, "ep": setup.ep,
        "precision": setup.precision,
        "kv_precision": setup.kv_dtype, "per_gpu_output_tokens_s": part.rate.output_tokens_per_s,
        "source": part.rate.source,
    }  # fmt: skip
    if part.bound is not None:
        out["bound_output_tokens_s_per_gpu"] = part.bound.tokens_per_s
    return out


def _check_figures(plan: Plan) -> dict[str, object]:
    out: dict[str, object] = {}
    if plan.claim is not None:
        c = plan.claim
        out.update(claim_ratio=c.ratio, claim_verdict=c.verdict, claim_estimate_tokens_s=c.estimate,
                   claim_bound_tokens_s=c.bound)  # fmt: skip
    if plan.prices:
        out["market_gpu_prices"] = [
            {"gpu": c.gpu, "stand_in": c.stand_in,
             "lowest_usd": c.lowest.usd if c.lowest else None,
             "lowest_seller": c.lowest.seller if c.lowest else None,
             "committed_floor_usd": c.committed_floor}
            for c in plan.prices
        ]  # fmt: skip
    if plan.api is not None and plan.api.rows:
        out["market_api_prices"] = [
            {"seller": r.seller, "input_usd": r.input_usd, "output_usd": r.output_usd,
             "date": r.date, "api_over_fleet_per_request": plan.api.api_per_request(r)
             / plan.api.per_request}
            for r in plan.api.rows
        ]  # fmt: skip
    if plan.power is not None:
        p = plan.power
        out.update(megawatts=p.megawatts, output_tokens_s_per_megawatt=p.tokens_per_megawatt,
                   pue=p.pue, electricity_usd_at_most=p.electricity_usd)  # fmt: skip
    out["assumptions"] = list(plan.assumptions)
    return out


def _assumptions(plan: Plan, lengths: str) -> tuple[str, ...]:
    """Every assumption the plan rests on, in words, printed with the answer."""
    fleet, terms = plan.fleet, plan.terms
    said = [
        f"requests: {lengths}",
        *(f"{p.gpu}: {p.rate.source}" for p in fleet.parts),
        f"utilization {fleet.utilization:.0%}: the average share of the day the fleet serves "
        "at that rate (assumption; --utilization)",
    ]
    if fleet.price_per_gpu_hour is not None:
        said.append("every GPU is paid for whether busy or not")
    if terms.deal is not None:
        d = terms.deal
        said += [
            f"{d.non_gpu_share:.0%} of the deal buys what is not GPU time: CPUs, storage, "
            "networking (assumption; --non-gpu-share)",
            f"GPUs {d.ramp.source}: {d.online_share:.0%} of the fleet online on average over "
            f"{d.years:g} years",
        ]
    if plan.prices:
        said.append(f"market prices are list prices, dated; a commitment's floor is the lowest "
                    f"rental less {COMMITTED_SOURCE}")  # fmt: skip
        said += [f"prices of {c.name}: none of its own was found" for c in plan.prices
                 if c.stand_in]  # fmt: skip
    if plan.power is not None:
        said.append(f"PUE {terms.pue:g}" + (f": {PUE_SOURCE}" if terms.pue == PUE_AWS else
                                            " (--pue)"))  # fmt: skip
        said += [f"power of a {p.gpu}: {p.what}" for p, _ in plan.power.kinds]
        said.append(f"electricity at {ELECTRICITY_USD_PER_KWH * 100:.2f} ¢/kWh "
                    f"({ELECTRICITY_SOURCE}), every GPU at its rating while online")  # fmt: skip
    return tuple(said)
