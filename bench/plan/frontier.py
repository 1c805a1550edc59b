"""The throughput–interactivity frontier: a closed loop of C clients, each sending its next
request when its last one ends, as `vllm bench serve --max-concurrency C --request-rate inf`
and public GPU benchmarks (SemiAnalysis's InferenceMAX/InferenceX) sweep it. Each point is the
steady output tok/s per GPU against the tok/s each user sees (1 / median TPOT, InferenceX's
"interactivity", utils/process_result.py), and `capacity --interactivity X` plans at the point
of the frontier where users still see X tok/s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench import BenchError, check_range
from bench.plan.simulate import SimResult, StepCost, simulate
from bench.plan.throughput import StepModel
from bench.plan.workloads import MAX_REQUESTS, Workload, arrivals

# Requests each point serves per client: InferenceX runs `--num-prompts $((CONC * 10))` at
# `--max-concurrency $CONC` (its benchmarks/ scripts), so a point is ten turns of every client.
REQUESTS_PER_CLIENT = 10


@dataclass(frozen=True)
class Point:
    """One concurrency of the sweep and what its steady state served."""

    concurrency: int
    result: SimResult

    @property
    def output_tokens_per_s(self) -> float:
        """Per GPU."""
        return self.result.output_tokens_per_s

    @property
    def per_user(self) -> float:
        """Output tok/s one user sees: 1 / median TPOT (NaN where TPOT is undefined)."""
        return 1 / self.result.percentile("tpot", 50)


@dataclass(frozen=True)
class Frontier:
    """A set-up's points, in order of concurrency."""

    step_model: StepModel
    points: tuple[Point, ...]
    features: tuple[str, ...] = ()  # what the engine did beside plain decoding, in words

    @property
    def label(self) -> str:
        setup = self.step_model.setup
        return f"{self.step_model.target.name}, {setup.layout}, {setup.precision}"


def check_concurrencies(values: Sequence[int]) -> None:
    most = MAX_REQUESTS // REQUESTS_PER_CLIENT  # each client's requests are simulated
    if not values or any(not 1 <= c <= most for c in values):
        raise BenchError(
            f"--concurrency takes whole numbers of clients from 1 to {most:,}, e.g. 1,4,16,64; "
            f"got {','.join(map(str, values)) or 'none'}"
        )


def point(cost: StepCost, pages: int, load: Workload, concurrency: int, seed: int) -> Point:
    """A closed loop of `concurrency` clients, REQUESTS_PER_CLIENT requests each."""
    lengths = load.lengths(concurrency * REQUESTS_PER_CLIENT, seed)
    if max(o for _, o in lengths) < 2:
        raise BenchError(
            "tok/s per user is 1 / TPOT, undefined when no request makes a second token (--osl 1)"
        )
    return Point(concurrency, simulate(arrivals(lengths, None), cost, pages, concurrency))


def sweep(
    step_model: StepModel,
    cost: StepCost,
    pages: int,
    load: Workload,
    concurrencies: Sequence[int],
    seed: int = 0,
) -> Frontier:
    """The frontier's points at each concurrency."""
    check_concurrencies(concurrencies)
    points = [point(cost, pages, load, c, seed) for c in sorted(set(concurrencies))]
    return Frontier(step_model, tuple(points), tuple(cost.features.describe()))


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points no other beats on both throughput and tok/s per user, by tok/s per user."""
    ranked = sorted(points, key=lambda p: -p.per_user)
    kept: list[Point] = []
    for p in ranked:
        if not kept or p.output_tokens_per_s > kept[-1].output_tokens_per_s:
            kept.append(p)
    return kept


def at_interactivity(
    cost: StepCost, pages: int, load: Workload, per_user: float, seed: int = 0
) -> Point:
    """The point of the frontier serving the most per GPU while each user still sees
    `per_user` output tok/s: the most clients that keep it, doubling from one up to the
    scheduler's cap, then halving the gap."""
    check_range("--interactivity", per_user, what=" (output tok/s per user)")
    best = point(cost, pages, load, 1, seed)
    if not best.per_user >= per_user:
        raise BenchError(
            f"{cost.setup.model.name} at {cost.setup.layout} gives one user alone "
            f"{best.per_user:.3g} output tok/s, below --interactivity {per_user:g}"
        )
    low, high = 1, None
    while high is None and low < cost.setup.max_batch:
        trial = point(cost, pages, load, min(2 * low, cost.setup.max_batch), seed)
        if trial.per_user >= per_user:
            low, best = trial.concurrency, trial
        else:
            high = trial.concurrency
    while high is not None and high - low > max(1, math.ceil(low / 16)):
        trial = point(cost, pages, load, (low + high) // 2, seed)
        if trial.per_user >= per_user:
            low, best = trial.concurrency, trial
        else:
            high = trial.concurrency
    return best
