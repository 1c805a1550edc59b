"""`tokbench simulate`: what the simulated replica served in its steady state, its latencies, its
batch over time, the SLO search's rates, and the throughput–interactivity frontier."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from bench.plan.frontier import Frontier, Point
from bench.plan.scenarios import Simulation
from bench.plan.simulate import PERCENTILES, SimResult, occupancy_series
from bench.plan.slo import Trial
from bench.plan.throughput import source_notes
from bench.present.tables.base import Column, bullets, column_table, key_value_table, text
from bench.record.units import fmt_ms, fmt_rate, plural

if TYPE_CHECKING:  # the planner's modules load as a command runs (bench.present.commands)
    from bench.plan.disagg import Disaggregated
    from bench.plan.sweep import Row


def simulation_tables(sim: Simulation, lengths: str) -> list[Table]:
    """What the simulated replica served, its latencies, the rates an SLO search tried, and its
    batch over time."""
    setup, r = sim.step_model.setup, sim.result
    title = f"{setup.model.name} on {sim.step_model.target.name}: simulated serving, per GPU"
    summary = key_value_table(title)
    summary.add_row(
        "set-up",
        f"TP {setup.tp}, {setup.precision} weights, {setup.kv_dtype} KV cache, at most "
        f"{setup.max_batch:,} sequences and {setup.prefill_budget:,} tokens a step, "
        f"{sim.kv_pages:,} KV pages of {setup.page} tokens, reserved for whole requests",
    )
    summary.add_row("workload", escape(sim.workload.name(sim.requests)))
    summary.add_row("lengths", escape(lengths))
    summary.add_row("arrivals", _arrivals(sim))
    if sim.search is not None:
        summary.add_row("SLO", _slo_line(sim))
    summary.add_row("served", _served(sim))
    for metric in ("TTFT", "TPOT"):
        summary.add_row(metric, _latencies(r, metric))
    summary.add_row(
        "batch",
        f"{r.mean_occupancy:,.1f} sequences running on average in the steady state; "
        f"{r.steps:,} steps over {fmt_ms(r.seconds * 1e3)}",
    )
    summary.caption = bullets(
        [*sim.workload.notes, *sim.features.describe(), *source_notes(sim.step_model)]
    )
    tables = [summary]
    if sim.search is not None:
        tables.append(trials_table(sim))
    return [*tables, _occupancy(r)]


def _arrivals(sim: Simulation) -> str:
    if sim.mode == "slo":
        search = sim.search
        return (
            f"Poisson, {sim.rate:.3g} requests/s per replica: the highest meeting the SLO, "
            f"re-simulated with seed {search.check_seed} (the search's: "
            f"{', '.join(map(str, search.seeds))})"
        )
    if sim.mode == "rate":
        return f"Poisson, {sim.rate:.3g} requests/s per replica"
    if sim.mode == "trace":
        return "the trace's own times"
    fed = "all at once" if sim.pace is None else f"evenly at {sim.pace:.3g} requests/s"
    return f"offline: every request queued from the start, fed {fed} (the throughput ceiling)"


def _served(sim: Simulation) -> str:
    r = sim.result
    w = r.window
    where = (
        f"steady state {fmt_ms(w.start * 1e3)} to {fmt_ms(w.end * 1e3)} (warm-up and drain "
        "left out)"
        if w.steady
        else "no steady state: the whole run (too short; raise --requests)"
    )
    held = ""
    if sim.output_tokens_per_s < r.output_tokens_per_s:
        held = (
            f" (the steady window read {fmt_rate(r.output_tokens_per_s)}: above the offline "
            "ceiling by the reading's noise, so held to it)"
        )
    return (
        f"{fmt_rate(sim.output_tokens_per_s)} output tok/s per GPU{held}, "
        f"{fmt_rate(sim.requests_per_s)} requests/s per GPU; {where}; {sim.serving_model}"
    )


def _latencies(r: SimResult, metric: str) -> str:
    values = [r.percentile(metric.lower(), q) for q in PERCENTILES]
    if math.isnan(values[0]):
        return "undefined: no request makes a second token"
    cells = ", ".join(f"p{q} {fmt_ms(v * 1e3)}" for q, v in zip(PERCENTILES, values, strict=True))
    count = sum(r.steady) if r.latency_steady else r.requests
    where = "steady" if r.latency_steady else "all (no steady state)"
    return f"{cells} over {plural(count, 'request')}, {where}"


def _slo_line(sim: Simulation) -> str:
    search, slo = sim.search, sim.slo
    low, high = search.interval
    met = "met" if slo.met(sim.result) else "missed"
    return (
        f"{slo.describe()}: {low:.3g} requests/s per replica, one step below the highest met "
        f"with {len(search.seeds)} seeds ({search.highest_met:.3g}); interval {low:.3g} to "
        f"{high:.3g} (the lowest rate not met, or the ceiling); {met} again in the "
        f"re-simulation; offline ceiling {search.ceiling_rate:.3g} requests/s, "
        f"{fmt_rate(search.ceiling.output_tokens_per_s)} output tok/s per GPU"
    )


def _bounds(trial: Trial) -> str:
    return "; ".join(
        f"{m.upper()} {fmt_ms(b.estimate * 1e3)} (≤ {fmt_ms(b.high * 1e3)})"
        if math.isfinite(b.high)
        else f"{m.upper()} {fmt_ms(b.estimate * 1e3)}"
        for m, b in trial.bounds
    )


TRIAL_COLUMNS: tuple[Column[Trial], ...] = (
    Column("requests/s", lambda t: f"{t.rate:.3g}"),
    text("verdict", lambda t: t.verdict),
    Column("requests × seeds", lambda t: f"{t.requests:,} × {t.seeds}"),
    text("percentile (its upper bound)", _bounds),
)


def trials_table(sim: Simulation) -> Table:
    """Each rate the SLO search tried, in order."""
    caption = (
        "met: the pooled percentile's 95% interval and the 99% prediction for one more run lie "
        "under every target; missed: the interval lies above one; uncertain: neither at the "
        "longest runs tried (counted as not met); each run's steady state spans at least 600 s "
        "(MLPerf Server) or 50 turns of the batch"
    )
    title = f"SLO search: each rate tried, {sim.slo.describe()}"
    return column_table(title, TRIAL_COLUMNS, sim.search.trials, caption=caption)


OCCUPANCY_COLUMNS: tuple[Column[tuple[float, int]], ...] = (
    Column("time", lambda point: fmt_ms(point[0] * 1e3)),
    Column("running", lambda point: f"{point[1]:,}"),
)


def _occupancy(r: SimResult) -> Table:
    title = "batch over time: sequences running"
    return column_table(title, OCCUPANCY_COLUMNS, occupancy_series(r))


# --- the frontier -------------------------------------------------------------------------------

FRONTIER_COLUMNS: tuple[Column[tuple[Frontier, Point]], ...] = (
    text("GPU, layout", lambda fp: fp[0].label),
    Column("clients", lambda fp: f"{fp[1].concurrency:,}"),
    Column("output tok/s/GPU", lambda fp: fmt_rate(fp[1].output_tokens_per_s)),
    Column("tok/s per user", lambda fp: f"{fp[1].per_user:.3g}"),
    Column("TTFT p50", lambda fp: fmt_ms(fp[1].result.percentile("ttft", 50) * 1e3)),
    Column("TPOT p50", lambda fp: fmt_ms(fp[1].result.percentile("tpot", 50) * 1e3)),
    Column("TPOT p99", lambda fp: fmt_ms(fp[1].result.percentile("tpot", 99) * 1e3)),
    Column("running", lambda fp: f"{fp[1].result.mean_occupancy:,.1f}"),
)


def frontier_table(frontiers: list[Frontier], lengths: str) -> Table:
    """Each GPU and layout's points: output tok/s per GPU against tok/s per user."""
    setup = frontiers[0].step_model.setup
    title = f"{setup.model.name}: throughput–interactivity frontier (closed loops of clients)"
    rows = [(f, p) for f in frontiers for p in f.points]
    caption = bullets([
        f"requests: {lengths}; each point ten requests per client (InferenceX), its steady "
        "state (warm-up and drain left out)",
        "tok/s per user: 1 / median TPOT (InferenceX's interactivity)",
        "with --tp auto, each GPU's points that no other layout of it beats on both axes",
        *dict.fromkeys(n for f in frontiers for n in f.features),
    ])  # fmt: skip
    return column_table(title, FRONTIER_COLUMNS, rows, caption=escape(caption))


def frontier_figures(frontiers: list[Frontier], lengths: str) -> dict[str, object]:
    """The frontier as `simulate --concurrency --json` prints it."""
    return {
        "lengths": lengths,
        "frontiers": [
            {
                "gpu": f.step_model.target.name,
                "tp": f.step_model.setup.tp,
                "precision": f.step_model.setup.precision,
                "points": [
                    {
                        "concurrency": p.concurrency,
                        "output_tokens_s_per_gpu": p.output_tokens_per_s,
                        "tokens_s_per_user": p.per_user,
                        "ttft_p50_s": p.result.percentile("ttft", 50),
                        "tpot_p50_s": p.result.percentile("tpot", 50),
                        "tpot_p99_s": p.result.percentile("tpot", 99),
                    }
                    for p in f.points
                ],
            }
            for f in frontiers
        ],
    }


def disagg_table(d: Disaggregated, lengths: str) -> Table:
    """Disaggregated serving: each pool's instances, rate and latency, the KV transfer, and the
    output tok/s per GPU over both pools, each with the serving model it rests on."""
    rp, rd = d.rates
    setup = d.decode.step_model.setup
    title = f"{setup.model.name} on {d.decode.step_model.target.name}: disaggregated serving"
    table = key_value_table(title)
    sized = "sized for the most output tok/s per GPU" if d.searched else "given"
    table.add_row("pools", f"{d.pools.prefill} prefill : {d.pools.decode} decode instances "
                  f"({sized}), {d.gpus:,} GPUs")  # fmt: skip
    for name, sim, rate, metric, extra in (
        ("prefill pool", d.prefill, rp, "ttft", d.transfer.seconds),
        ("decode pool", d.decode, rd, "tpot", 0.0),
    ):
        # Offline, every request is queued from the start: its latencies say nothing.
        p99 = sim.result.percentile(metric, 99) + extra if sim.slo else math.nan
        latency = f", {metric.upper()} p99 {fmt_ms(p99 * 1e3)}" if sim.slo else ""
        table.add_row(name, escape(
            f"{sim.step_model.setup.layout}: {fmt_rate(rate)} requests/s per instance"
            f"{latency} — {sim.serving_model}"
            + (f", {sim.slo.describe()}" if sim.slo else "")
        ))  # fmt: skip
    table.add_row("KV transfer", escape(
        f"{d.transfer.bytes_per_gpu / 2**20:,.1f} MiB per prefill GPU for the longest prompt "
        f"over {d.transfer.fabric}: {fmt_ms(d.transfer.seconds * 1e3)}, in every TTFT"
    ))  # fmt: skip
    table.add_row("served", f"{fmt_rate(d.requests_per_s)} requests/s, "
                  f"{d.output_tokens_per_s:,.0f} output tok/s per GPU over all {d.gpus:,} GPUs "
                  "(the slower pool's rate)")  # fmt: skip
    notes = [f"requests: {lengths}", *d.decode.features.describe(),
             *source_notes(d.decode.step_model)]  # fmt: skip
    table.caption = escape(bullets(notes))
    return table


SWEEP_COLUMNS: tuple[Column[Row], ...] = (
    Column("GPU", lambda r: r.setup.gpu, "left"),
    Column("layout", lambda r: r.setup.layout.label, "left"),
    Column("ISL/OSL", lambda r: f"{r.setup.isl}/{r.setup.osl}"),
    Column("bound tok/s/GPU", lambda r: f"{r.bound:,.0f}" if r.bound else "—"),
    Column("simulated tok/s/GPU", lambda r: f"{r.rate:,.0f}" if r.rate else "—"),
    Column("why not", lambda r: escape(r.why), "left"),
)


def sweep_table(rows: list[Row]) -> Table:
    """Each set-up of a sweep: its physical bound and its simulated offline rate, or why not."""
    caption = bullets([
        "simulated: the offline run (the throughput ceiling) of each set-up",
        "bound: bench.plan.bounds' physical upper bound; a set-up whose bound is below the "
        "best rate simulated for its workload cannot win and is not simulated",
    ])  # fmt: skip
    return column_table("sweep: GPU × layout × workload", SWEEP_COLUMNS, rows,
                        caption=escape(caption))  # fmt: skip


def sweep_figures(rows: list[Row]) -> list[dict[str, object]]:
    """The sweep as `simulate --sweep --json` prints it."""
    return [
        {"gpu": r.setup.gpu, "tp": r.setup.layout.tp, "dp": r.setup.layout.dp,
         "ep": r.setup.layout.ep, "isl": r.setup.isl, "osl": r.setup.osl,
         "bound_output_tokens_s_per_gpu": r.bound, "output_tokens_s_per_gpu": r.rate,
         "why": r.why or None}
        for r in rows
    ]  # fmt: skip
