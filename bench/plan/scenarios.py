"""A simulated serving run of one model replica (a TP group) as the commands ask for it, and the
rate it serves per GPU, which every planning figure (simulate, capacity, validate) takes:

- offline: every request queued from the start, the throughput ceiling (simulate.offline);
- Poisson arrivals at a rate, or a trace at its own times;
- the highest Poisson rate meeting an SLO (bench.plan.slo), re-simulated;
- a closed loop of clients (bench.plan.frontier).

Each run's served rate is its steady state's (simulate.SimResult.window), never its warm-up or
drain. Every run of a set-up uses the same requests unless asked otherwise (REQUESTS), so that
simulate, validate and capacity give one answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.plan.simulate import (
    PLAIN,
    Features,
    SimResult,
    StepCost,
    grid_exact,
    kv_pages,
    offline,
    simulate,
)
from bench.plan.slo import RateSearch, Slo, highest_rate
from bench.plan.speculative import check_prefix_hit, parse_spec
from bench.plan.throughput import StepModel, source_notes
from bench.plan.workloads import Workload

# Requests of an offline run left to the default: four times the largest batch that fits, so
# that the steady window holds several turns of the batch, within these bounds (assumption).
REQUESTS = (500, 4096)
# The serving model each figure comes from, in words, so that none passes for another: the
# estimate's formula (estimate, and capacity without a latency target, which a CPU result file
# can answer though it cannot time every shape a simulation meets) or the simulated scheduler.
SERVING_MODELS = {
    "serving mix": "the estimate's serving mix: the steady-state formula (prefill at the step "
    "budget's batch and decode at the largest batch, in turn, every sequence at isl + osl "
    "tokens), no latency target",
    "offline": "simulated scheduler, offline: the throughput ceiling, no latency target",
    "rate": "simulated scheduler, Poisson arrivals at the rate given",
    "trace": "simulated scheduler, the trace's own arrival times",
    "slo": "simulated scheduler at the highest Poisson rate meeting the SLO",
    "closed loop": "simulated scheduler, a closed loop of clients",
}


def engine_features(spec: str | None, prefix_hit: float, model: str) -> Features:
    """The engine's features as the options name them: --spec (bench.plan.speculative's
    forms, for `model`) and --prefix-hit."""
    speculation = parse_spec(spec, model) if spec is not None else None
    return Features(speculation, check_prefix_hit(prefix_hit))


def default_requests(step_model: StepModel) -> int:
    """The requests a run serves when none are asked for: see REQUESTS."""
    setup = step_model.setup
    batch = setup.decode_cap(step_model.target.memory_plan(setup))
    return min(max(REQUESTS[0], 4 * batch), REQUESTS[1])


@dataclass(frozen=True)
class Simulation:
    """A simulated serving run of one model replica (a TP group), and how it was set up."""

    step_model: StepModel
    workload: Workload
    requests: int  # the run's
    mode: str  # a SERVING_MODELS key
    result: SimResult
    kv_pages: int
    rate: float | None = None  # Poisson requests/s at the replica
    pace: float | None = None  # offline: fed evenly at this many requests/s (None: all at once)
    search: RateSearch | None = None
    slo: Slo | None = None
    ceiling: SimResult | None = None  # the offline run of the workload, beside an open loop
    features: Features = PLAIN  # what the engine did beside plain decoding

    @property
    def serving_model(self) -> str:
        return SERVING_MODELS[self.mode]

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens/s per GPU the run served in its steady state, held to the offline
        ceiling: a saturated open loop is the offline run's state fed another way, and its
        steady window's reading above the ceiling is that reading's noise (a few tenths of
        a percent)."""
        served = self.result.output_tokens_per_s
        return served if self.ceiling is None else min(served, self.ceiling.output_tokens_per_s)

    @property
    def requests_per_s(self) -> float:
        return self.output_tokens_per_s / self.result.mean_output


def costs(
    step_model: StepModel, load: Workload, requests: int, seed: int,
    features: Features = PLAIN,
) -> tuple[StepCost, int]:  # fmt: skip
    """The step costs of the set-up (their grid up to the longest request drawn, exact at a few
    prompt lengths), with the engine's `features`, and the KV pages one GPU holds."""
    lengths = load.lengths(requests, seed)
    longest = max(i + o for i, o in lengths)
    cost = StepCost(step_model, longest, grid_exact(lengths), features)
    pages = kv_pages(step_model.setup, step_model.target.memory, step_model.target.cuda)
    return cost, pages


def run(
    step_model: StepModel,
    load: Workload,
    requests: int | None = None,
    *,
    rate: float | None = None,
    slo: Slo | None = None,
    seed: int = 0,
    features: Features = PLAIN,
) -> Simulation:
    """Simulate `requests` of `load` (default_requests when None; a trace's own) on the step
    model's target, with the engine's `features`: offline, at a Poisson rate, at a trace's
    times, or with an SLO at the highest Poisson rate meeting it (an SLO no rate meets is an
    error)."""
    n = len(load.trace) if load.trace and rate is None and slo is None else requests
    n = n or default_requests(step_model)
    cost, pages = costs(step_model, load, n, seed, features)
    if slo is not None:  # its runs' lengths follow from time: fewer requests may start them
        search = highest_rate(load, cost, pages, slo, requests or REQUESTS[0], seed)
        return Simulation(
            step_model, load, search.check_requests, "slo", search.result, pages,
            rate=search.rate, search=search, slo=slo, ceiling=search.ceiling, features=features,
        )  # fmt: skip
    if rate is None and not load.trace:
        ran = offline(load, n, seed, cost, pages)
        return Simulation(step_model, load, ran.requests, "offline", ran.result, pages,
                          pace=ran.pace, features=features)  # fmt: skip
    result = simulate(load.requests(n, rate, seed), cost, pages)
    ceiling = offline(load, n, seed, cost, pages).result
    mode = "rate" if rate else "trace"
    return Simulation(
        step_model, load, n, mode, result, pages, rate, ceiling=ceiling, features=features
    )


def figures(sim: Simulation) -> dict[str, object]:
    """The simulation's figures by name, as `simulate --json` prints them (null where a
    figure is undefined: TPOT when no request makes a second token)."""
    setup, r = sim.step_model.setup, sim.result
    out: dict[str, object] = {
        "model": setup.model.name,
        "gpu": sim.step_model.target.name,
        "tp": setup.tp,
        "precision": setup.precision,
        "kv_precision": setup.kv_dtype,
        "workload": sim.workload.name(sim.requests),
        "serving_model": sim.serving_model,
        "rate_requests_s": sim.rate,
        "offline_pace_requests_s": sim.pace,
        "output_tokens_s_per_gpu": sim.output_tokens_per_s,
        "requests_s_per_gpu": sim.requests_per_s,
        "steady_window_s": [r.window.start, r.window.end] if r.window.steady else None,
        "mean_running": r.mean_occupancy,
        "steps": r.steps,
        "seconds": r.seconds,
    }
    for metric in ("ttft", "tpot"):
        for q in (50, 90, 99):
            value = r.percentile(metric, q)
            out[f"{metric}_p{q}_s"] = None if math.isnan(value) else value
    if sim.ceiling is not None:
        out["offline_output_tokens_s_per_gpu"] = sim.ceiling.output_tokens_per_s
    if sim.search is not None:
        s = sim.search
        out.update(
            slo=sim.slo.describe(),
            rate_interval_requests_s=list(s.interval),
            check_seed=s.check_seed,
            rates_tried=[
                {"rate": t.rate, "verdict": t.verdict, "requests": t.requests, "seeds": t.seeds}
                for t in s.trials
            ],
        )
    out["notes"] = [*sim.workload.notes, *sim.features.describe(), *source_notes(sim.step_model)]
    return out
