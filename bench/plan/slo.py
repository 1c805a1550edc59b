"""Latency targets (an SLO) and the highest Poisson request rate that meets them, found so that a
planner can quote it: the rate holds for other seeds and longer runs.

A rate is judged on the steady state of its runs only (bench.plan.simulate: warm-up and drain
left out), each at least MLPerf Server's 600 s long (or 50 turns of the batch, where shorter),
pooled over several seeds. It misses the SLO when a distribution-free 95% confidence interval
of the pooled percentile (the order statistics at ranks n·p ± z·√(n·p·(1 − p)), the binomial's
normal approximation) lies above a target; it meets it when that interval, and a 99% prediction
of one more run's percentile (from the seeds' own percentiles and their sections: a run's
latencies rise and fall together with its batch, so runs, not requests, are the independent
samples), lie under every target; otherwise the runs are lengthened (doubled, up to GROWTH
times) until the verdict is decided, or the rate counts as not met. Bisection between 0 and the
offline ceiling brackets the highest rate met (MLPerf's Server scenario, Vidur-Search), an
undecided rate counting as not met; the answer is one bisection step below it (a margin for the
rare bursts of arrivals no three seeds show), with its interval up to the lowest rate not met,
re-simulated with a seed the search did not use on runs twice as long: the planner's
figures are that run's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench import BenchError
from bench.plan.simulate import (
    DRAIN_PERCENTILE,
    GROWTH,
    WARM_UP_PERCENTILE,
    SimResult,
    StepCost,
    offline,
    simulate,
)
from bench.plan.stats import percentile, split
from bench.plan.workloads import Workload
from bench.record.units import fmt_target

# The normal quantile of a two-sided 95% interval.
Z_95 = 1.959964
# Every run judging a rate spans at least this long in its steady state: MLPerf Inference's
# minimum duration for the Server scenario (LoadGen's mlperf.conf: *.Server.min_duration =
# 600000 ms), or MIN_TURNS turns of the batch (its requests' service time, at the ceiling)
# where that is shorter. Near the ceiling the batch drifts slowly (the fewer free cycles, the
# longer a burst takes to drain), and shorter runs miss the tail it makes; a model whose
# requests take milliseconds drifts in seconds, not minutes.
MIN_DURATION_S = 600.0
# Turns of the batch a run spans at least (assumption: Llama-3.1-8B near its ceiling, issue
# 23's case, first showed its drift after ~50 turns, 540 s).
MIN_TURNS = 50
# Seeds a rate must meet the SLO with, its runs pooled (assumption: three draws of arrivals and
# lengths expose a rate that one lucky draw passes; the re-simulation adds a fourth).
SEEDS = 3
# Sections each run's steady requests are cut into, whose percentiles' spread stands for how
# runs' percentiles spread (assumption: four; three seeds alone tell the spread poorly), and
# Student's t quantile (one-sided 99%) for the SEEDS × SECTIONS − 1 = 11 degrees of freedom:
# one more run exceeds the prediction one time in a hundred.
SECTIONS = 4
T_99 = 2.7181
# The bisection stops when the bracket is this share of the offline ceiling (assumption: about
# as fine as the seeds' spread lets a rate be told from its neighbours).
TOLERANCE = 1 / 32
# Each trial halves the bracket, so TOLERANCE = 2⁻⁵ is five trials: counted, not compared, as
# after five halvings the bracket equals TOLERANCE of the ceiling only up to rounding, and a
# comparison would add a sixth trial or not by the ceiling's last bit.
BISECTIONS = round(-math.log2(TOLERANCE))
VERDICTS = ("met", "missed", "uncertain")


@dataclass(frozen=True)
class Slo:
    """Latency targets, each at a percentile of the requests."""

    ttft: float | None  # seconds
    tpot: float | None  # seconds per output token
    percentile: float = 99.0

    def limits(self) -> list[tuple[str, float]]:
        return [(m, v) for m, v in (("ttft", self.ttft), ("tpot", self.tpot)) if v is not None]

    def met(self, result: SimResult) -> bool:
        """Whether the run's own percentiles meet every target."""
        return all(result.percentile(m, self.percentile) <= v for m, v in self.limits())

    def describe(self) -> str:
        parts = [f"{m.upper()} ≤ {fmt_target(v)}" for m, v in self.limits()]
        return f"p{self.percentile:g} " + " and ".join(parts)


_DURATION = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "µs": 1e-6}


def parse_slo(text: str, percentile: float = 99.0) -> Slo:
    """'ttft=2s,tpot=200ms' -> Slo(2.0, 0.2)."""
    limits: dict[str, float] = {}
    for pair in text.split(","):
        key, _, value = (p.strip() for p in pair.partition("="))
        number = value.rstrip("msuµ")
        try:
            seconds = float(number) * _DURATION[value[len(number) :]]
        except (ValueError, KeyError):
            seconds = -1.0
        if key not in ("ttft", "tpot") or key in limits or not 0 < seconds < math.inf:
            raise BenchError(
                f"bad --slo '{text}': expected ttft=DURATION and/or tpot=DURATION, each once "
                "and a positive number with a unit (s, ms, us), e.g. ttft=2s,tpot=200ms"
            )
        limits[key] = seconds
    if not 0 < percentile <= 100:
        raise BenchError(f"--percentile must be in (0, 100], got {percentile}")
    return Slo(limits.get("ttft"), limits.get("tpot"), percentile)


@dataclass(frozen=True)
class Bounds:
    """A percentile's estimate and its 95% bounds: the binomial interval's low end, and the
    higher of its high end and the prediction for one more run (judge); infinite where too few
    values bound it."""

    estimate: float
    low: float
    high: float


def percentile_bounds(values: Sequence[float], q: float) -> Bounds:
    """The q-th percentile of `values` with a distribution-free 95% interval: the order
    statistics at ranks n·p ± z·√(n·p·(1 − p))."""
    n, p = len(values), q / 100
    if not n:
        return Bounds(math.nan, -math.inf, math.inf)
    ordered = sorted(values)
    half = Z_95 * math.sqrt(n * p * (1 - p))
    lo, hi = math.floor(n * p - half) - 1, math.ceil(n * p + half) - 1
    low = float(ordered[lo]) if lo >= 0 else -math.inf
    high = float(ordered[hi]) if hi < n else math.inf
    return Bounds(percentile(ordered, q, ordered=True), low, high)


@dataclass(frozen=True)
class Trial:
    """One rate judged: its verdict, the runs' length and seeds, and each target's pooled
    percentile with its interval."""

    rate: float  # requests/s per replica
    verdict: str  # a VERDICTS entry
    requests: int  # per seed
    seeds: int
    bounds: tuple[tuple[str, Bounds], ...]


def _predicted(runs: Sequence[SimResult], metric: str, q: float) -> float:
    """The upper end of a one-sided 99% prediction of the percentile of one more run like these
    (another seed): the worst run's percentile + t·s·√(1 + 1/k) over k runs, s the spread of
    the percentiles of their sections (each run's steady requests cut into SECTIONS runs of
    consecutive ones). Runs and sections, not requests, are the samples: a run's latencies rise
    and fall together with its batch, and its percentile is set by its few worst bursts, so it
    moves by a few percent from seed to seed where the binomial interval of its requests says a
    few tenths; sections tell that spread better than three seeds alone, and start from the
    worst seed, as the sections of one run move together. Infinite where a section holds too
    few requests to have the percentile inside it."""
    sections = [part for r in runs for part in split(r.values(metric), SECTIONS)]
    if q < 100 and min(len(part) for part in sections) * (1 - q / 100) < 1:
        return math.inf
    spread = statistics.stdev([percentile(part, q) for part in sections])
    worst = max(r.percentile(metric, q) for r in runs)
    return float(worst + T_99 * spread * math.sqrt(1 + 1 / len(runs)))


def _span(result: SimResult) -> float:
    return result.window.end - result.window.start


def judge(
    slo: Slo, runs: Sequence[SimResult], span: float = 0.0
) -> tuple[str, tuple[tuple[str, Bounds], ...]]:
    """The verdict on runs of one rate, and each target's bounds: missed when the pooled
    percentile's interval lies above a target (one run may show it); met, with SEEDS runs, when
    both it and the prediction for one more run lie under every target; else uncertain."""
    verdicts, bounds = [], []
    for metric, limit in slo.limits():
        if not all(r.latency_steady and _span(r) >= span for r in runs):
            verdicts.append("uncertain")  # a run too short for a steady state
            continue
        values = [v for r in runs for v in r.values(metric)]
        b = percentile_bounds(values, slo.percentile)
        if len(runs) == SEEDS and b.low <= limit:
            b = Bounds(b.estimate, b.low, max(b.high, _predicted(runs, metric, slo.percentile)))
        bounds.append((metric, b))
        if b.low > limit:
            verdicts.append("missed")
        else:
            verdicts.append("met" if b.high <= limit and len(runs) == SEEDS else "uncertain")
    if "missed" in verdicts:
        return "missed", tuple(bounds)
    return ("met" if set(verdicts) == {"met"} else "uncertain"), tuple(bounds)


@dataclass(frozen=True)
class RateSearch:
    """The highest rate meeting an SLO with its interval, the re-simulation at it (the
    figures a plan quotes), the offline ceiling, and every rate tried."""

    rate: float  # requests/s per replica
    interval: tuple[float, float]  # the rate .. the lowest not met (or the ceiling)
    result: SimResult  # the re-simulation at `rate`
    check_seed: int
    check_requests: int
    ceiling: SimResult
    ceiling_rate: float  # requests/s per replica the offline run served
    trials: tuple[Trial, ...]
    seeds: tuple[int, ...]
    highest_met: float  # the highest rate the search saw meet the SLO: one step above `rate`


class _Search:
    """One SLO search: its workload, step costs, KV pages and the runs made so far."""

    def __init__(
        self, load: Workload, cost: StepCost, pages: int, slo: Slo, requests: int, seed: int
    ) -> None:
        self.load, self.cost, self.pages, self.slo = load, cost, pages, slo
        self.requests, self.seeds = requests, tuple(range(seed, seed + SEEDS))
        self.trials: list[Trial] = []

    def run(self, rate: float, seed: int, n: int) -> SimResult:
        return simulate(self.load.requests(n, rate, seed), self.cost, self.pages)

    def _length(self, rate: float) -> tuple[int, float]:
        """The requests a run of this rate needs for its steady span, and that span: a first
        run of the requests asked for shows the service time (a turn of the batch) and the
        warm-up and drain around the span."""
        probe = self.run(rate, self.seeds[0], self.requests)
        service = probe.service
        turn = percentile(service, WARM_UP_PERCENTILE, ordered=True)
        span = min(MIN_DURATION_S, MIN_TURNS * turn)
        ends = turn + percentile(service, DRAIN_PERCENTILE, ordered=True)
        return max(self.requests, math.ceil(rate * (span + ends))), span

    def trial(self, rate: float) -> Trial:
        """Judge a rate: one seed first (a clear miss needs no more), then all; longer runs
        while the verdict is undecided."""
        first, span = self._length(rate)
        n, used = first, 1
        while True:
            runs = [self.run(rate, seed, n) for seed in self.seeds[:used]]
            verdict, bounds = judge(self.slo, runs, span)
            if verdict != "missed" and used < SEEDS:
                used = SEEDS
                continue
            if verdict != "uncertain" or 2 * n > GROWTH * first:
                trial = Trial(rate, verdict, n, used, bounds)
                self.trials.append(trial)
                return trial
            n *= 2


def highest_rate(
    load: Workload, cost: StepCost, pages: int, slo: Slo, requests: int, seed: int = 0
) -> RateSearch:
    """The highest Poisson rate (requests/s per replica) that meets the SLO, as described above;
    an SLO that no rate meets, or a TPOT target no request defines, is a one-line error."""
    if slo.tpot is not None and max(o for _, o in load.lengths(requests, seed)) < 2:
        raise BenchError(
            "TPOT is undefined when no request makes a second token (--osl 1): drop tpot= "
            "from --slo"
        )
    ceiling = offline(load, requests, seed, cost, pages).result
    top = ceiling.requests_per_s * ceiling.tp
    search = _Search(load, cost, pages, slo, requests, seed)
    low, high = 0.0, top
    for _ in range(BISECTIONS):
        rate = (low + high) / 2
        if search.trial(rate).verdict == "met":
            low = rate
        else:
            high = rate
    return _checked(search, top, ceiling)


def _checked(search: _Search, top: float, ceiling: SimResult) -> RateSearch:
    """The rate quoted: one bisection step (TOLERANCE of the ceiling) below the highest rate
    met, re-simulated with a fresh seed on runs twice as long; a rate whose re-simulation
    misses gives way to the next lower one met. Near the boundary a run's percentile is set by
    its worst burst of arrivals, and a burst that a few runs in a hundred meet can lift it past
    the target where three seeds met none: the step keeps such runs inside the margin."""
    met = sorted((t for t in search.trials if t.verdict == "met"), key=lambda t: -t.rate)
    missed = [t.rate for t in search.trials if t.verdict != "met"]
    check_seed = search.seeds[-1] + 1
    for trial in met:
        rate = trial.rate - TOLERANCE * top if trial.rate > TOLERANCE * top else trial.rate / 2
        n = 2 * trial.requests
        result = search.run(rate, check_seed, n)
        if search.slo.met(result):
            above = [r for r in missed if r > trial.rate]
            return RateSearch(
                rate, (rate, min(above, default=top)), result, check_seed, n, ceiling, top,
                tuple(search.trials), search.seeds, trial.rate,
            )  # fmt: skip
    lowest = min(t.rate for t in search.trials)
    raise BenchError(
        f"misses {search.slo.describe()} at every arrival rate tried, down to {lowest:.3g} "
        f"requests/s ({lowest / top:.1%} of the offline ceiling)"
    )
