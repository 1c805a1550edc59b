"""A sweep of set-ups (layout × workload × GPU): each simulated offline (its throughput
ceiling, bench.plan.scenarios), in parallel over local cores (concurrent.futures) or over a Ray
cluster (the optional extra `tokbench[cluster]`, as Vidur's config explorer runs its search),
with the same answers whatever runs it.

Pruning: within each workload the question is the GPU and layout serving the most output
tok/s per GPU. Each set-up's physical bound (bench.plan.bounds: no engine serves more) is known
without simulating; set-ups go in order of their bound, in rounds of ROUND, and after each
round any set-up whose bound is below the best rate simulated so far cannot win and is not
simulated.
A set-up that does not fit its GPU at all is pruned before any simulation. The rounds' size is
fixed, not the workers' count, so the same set-ups are simulated whatever runs them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from bench import BenchError
from bench.plan import scenarios
from bench.plan.bounds import output_bound
from bench.plan.capacity import Parallel, spec
from bench.plan.planner import ServingOptions, TimeSources
from bench.plan.workloads import workload

# Set-ups simulated per round before the bound prunes again (assumption: two cores' worth of
# work twice over; a fixed number keeps the answer independent of the workers).
ROUND = 4
ENGINES = ("local", "ray")

Task = TypeVar("Task")
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class SetUp:
    """One point of the sweep: a GPU of the spec table, a layout, and request lengths."""

    gpu: str
    layout: Parallel
    isl: int
    osl: int

    @property
    def group(self) -> tuple[int, int]:
        """The set-ups compared with each other: those of one workload."""
        return self.isl, self.osl


@dataclass(frozen=True)
class Row:
    """A set-up's answer: its bound, and its simulated rate or why it was not simulated."""

    setup: SetUp
    bound: float | None  # output tok/s per GPU
    rate: float | None = None  # simulated offline, output tok/s per GPU
    why: str = ""  # pruned: the reason


def parse_lengths(text: str) -> list[tuple[int, int]]:
    """'1024/256,8000/1000' -> [(1024, 256), (8000, 1000)]; every length at least 1."""
    rule = "--sweep takes ISL/OSL pairs of lengths >= 1, comma-separated (e.g. 1024/256,8000/1000)"
    out = []
    for pair in text.split(","):
        isl, _, osl = pair.partition("/")
        try:
            out.append((int(isl), int(osl)))
        except ValueError:
            raise BenchError(f"{rule}; got '{text}'") from None
        if min(out[-1]) < 1:
            raise BenchError(f"{rule}; got '{pair.strip()}'")
    return out


def _bounded(serving: ServingOptions, setup: SetUp) -> Row:
    """The set-up's physical bound, or why it cannot serve at all."""
    options = dataclasses.replace(serving, isl=setup.isl, osl=setup.osl)
    try:
        bound = output_bound(options.at(setup.layout), spec(setup.gpu))
    except BenchError as e:
        return Row(setup, None, why=str(e))
    return Row(setup, bound.tokens_per_s)


def simulate_one(job: tuple[ServingOptions, SetUp, int | None, int]) -> tuple[float | None, str]:
    """One set-up's offline rate per GPU (or why it fails): a top-level function, so that
    worker processes and Ray tasks can run it."""
    serving, setup, requests, seed = job
    options = dataclasses.replace(serving, isl=setup.isl, osl=setup.osl)
    try:
        served = options.at(setup.layout)
        step_model = TimeSources(gpu=setup.gpu).step_model(served, options.model)
        load = workload("fixed", 1, setup.isl, setup.osl, config=served.model)
        return scenarios.run(step_model, load, requests, seed=seed).output_tokens_per_s, ""
    except BenchError as e:
        return None, str(e)


def run_local(fn: Callable[[Task], Answer], tasks: Sequence[Task], workers: int) -> list[Answer]:
    """fn over tasks in order, on `workers` processes (1: in this one)."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        return list(pool.map(fn, tasks))


def run_ray(fn: Callable[[Task], Answer], tasks: Sequence[Task], workers: int) -> list[Answer]:
    """fn over tasks in order as Ray tasks: on the cluster `ray.init` finds (RAY_ADDRESS), else a
    local instance of `workers` CPUs."""
    try:
        import ray  # the optional extra: pip install 'tokbench[cluster]'
    except ImportError:
        raise BenchError("--engine ray needs Ray: pip install 'tokbench[cluster]'") from None
    if not ray.is_initialized():
        ray.init(num_cpus=max(workers, 1), ignore_reinit_error=True, include_dashboard=False)
    remote = ray.remote(fn)
    return ray.get([remote.remote(t) for t in tasks])


def sweep(
    serving: ServingOptions,
    setups: Iterable[SetUp],
    *,
    requests: int | None = None,
    seed: int = 0,
    workers: int = 1,
    engine: str = "local",
) -> list[Row]:
    """Every set-up's row, in the order given: simulated, or pruned by its bound (see above)."""
    if engine not in ENGINES:
        raise BenchError(f"unknown --engine '{engine}'; known: {', '.join(ENGINES)}")
    if workers < 1:
        raise BenchError(f"--workers must be at least 1, got {workers}")
    run = run_local if engine == "local" else run_ray
    rows = {s: _bounded(serving, s) for s in setups}
    live = sorted((r for r in rows.values() if r.bound is not None),
                  key=lambda r: (r.setup.group, -r.bound))  # fmt: skip
    for _, group in itertools.groupby(live, key=lambda r: r.setup.group):
        pending, best = list(group), 0.0
        while pending:
            batch, pending = pending[:ROUND], pending[ROUND:]
            jobs = [(serving, r.setup, requests, seed) for r in batch]
            for row, (rate, why) in zip(batch, run(simulate_one, jobs, workers), strict=True):
                rows[row.setup] = dataclasses.replace(row, rate=rate, why=why)
                best = max(best, rate or 0.0)
            for row in [r for r in pending if r.bound < best]:
                rows[row.setup] = dataclasses.replace(
                    row, why=f"pruned: its bound is below {best:,.0f} tok/s simulated"
                )
            pending = [r for r in pending if r.bound >= best]
    return list(rows.values())


def setups(
    serving: ServingOptions, gpus: Sequence[str], lengths: Sequence[tuple[int, int]]
) -> list[SetUp]:
    """Every GPU × layout (the one given, or --tp auto's choices on that GPU) × lengths."""
    return [
        SetUp(spec(gpu).key, layout, isl, osl)
        for gpu in gpus
        for layout in serving.layouts(spec(gpu).key)
        for isl, osl in lengths
    ]
