"""`tokbench capacity`: the deal's price, the fleet's tokens, requests and cost per day, the GPUs
each target needs, the claim checked, and every assumption the answer rests on."""

from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table

from bench.plan.capacity import OPTIMISTIC, PLAUSIBLE, Claim, Fleet, Part, Plan
from bench.present.tables.base import Column, bullets, column_table, text
from bench.record.units import fmt_big, fmt_rate, plural


def _gpus(n: int) -> str:
    return plural(n, "GPU")


def fleet_title(plan: Plan) -> str:
    """What the fleet is: model, GPUs, layouts, precisions and request lengths."""
    parts = plan.fleet.parts
    kinds = " + ".join(
        f"{p.gpus:,} × {p.gpu} ({p.setup.layout} × {p.gpus // p.setup.gpus:,} replicas)"
        for p in parts
    )
    setup = parts[0].setup
    return (
        f"{plan.model} on {kinds}, {setup.precision} weights, {setup.kv_dtype} KV cache, "
        f"{setup.isl} input + {setup.osl} output tokens per request"
    )


def deal_line(plan: Plan) -> str | None:
    """The price per GPU-hour a deal's terms come to, or None without a deal."""
    deal = plan.terms.deal
    if deal is None:
        return None
    hours = deal.gpu_hours(plan.terms.total)
    return (
        f"deal: ${fmt_big(deal.usd)} over {deal.years:g} years; {1 - deal.non_gpu_share:.0%} "
        f"of it, ${fmt_big(deal.gpu_usd)}, buys {fmt_big(hours)} GPU-hours ({plan.terms.total:,} "
        f"GPUs, {deal.online_share:.0%} online on average) = "
        f"${plan.fleet.price_per_gpu_hour:,.2f} per GPU-hour"
    )


@dataclass(frozen=True)
class _Line:
    """A row of the fleet table: what it counts, then a cell per rate."""

    what: str
    output: str
    total: str
    requests: str


FLEET_COLUMNS: tuple[Column[_Line], ...] = (
    text("per day", lambda line: line.what),
    Column("output tokens", lambda line: line.output),
    Column("input + output tokens", lambda line: line.total),
    Column("requests", lambda line: line.requests),
)


def fleet_table(fleet: Fleet, title: str) -> Table:
    """Tokens and requests per day, and the cost per million tokens."""
    metrics = ("output", "total", "requests")
    lines = [
        _Line(f"{_gpus(fleet.serving_gpus)} at {fleet.utilization:.0%}",
              *(fmt_big(fleet.per_day(m)) for m in metrics))
    ]  # fmt: skip
    price = fleet.price_per_gpu_hour
    if price is not None:
        lines.append(
            _Line(
                f"cost at ${price:,.2f}/GPU-hour",
                f"${fleet.cost_per_million('output'):,.3f} / M",
                f"${fleet.cost_per_million('total'):,.3f} / M",
                f"${fleet.cost_per_unit('requests') * 1000:,.3f} / k",
            )
        )
    notes = [_part_note(p) for p in fleet.parts]
    left = fleet.gpus - fleet.serving_gpus
    if left:
        notes.append(f"{_gpus(left)} left over: not a whole TP group")
    return column_table(title, FLEET_COLUMNS, lines, caption=escape(bullets(notes)))


def _part_note(part: Part) -> str:
    r = part.rate
    bound = f"; physical bound {fmt_rate(part.bound.tokens_per_s)}" if part.bound else ""
    return (
        f"per {part.gpu}: {fmt_rate(r.output_tokens_per_s)} output tok/s, "
        f"{fmt_rate(r.total_tokens_per_s)} total tok/s, {fmt_rate(r.requests_per_s)} "
        f"requests/s{bound}"
    )


def _coloured(word: str, colour: str) -> str:
    return f"[{colour}]{word}[/{colour}]"


VERDICT_COLOURS = {
    "plausible": "green", "optimistic": "yellow", "implausible": "red", "impossible": "red",
}  # fmt: skip
CLAIM_COLUMNS: tuple[Column[Claim], ...] = (
    Column("claimed tok/s", lambda c: fmt_rate(c.claimed)),
    Column("estimate tok/s", lambda c: fmt_rate(c.estimate)),
    Column("claim / estimate", lambda c: f"{c.ratio:.2f}"),
    Column("physical bound tok/s", lambda c: fmt_rate(c.bound) if c.bound else "—"),
    Column("verdict", lambda c: _coloured(c.verdict, VERDICT_COLOURS[c.verdict])),
)


def claim_table(plan: Plan) -> Table:
    """The claim against what the fleet serves and the most it could, and the thresholds."""
    claim = plan.claim
    kinds = " + ".join(f"{p.gpus:,} × {p.gpu}" for p in plan.fleet.parts)
    what = f"{kinds} serve {claim.claimed:,.0f} output tok/s of {plan.model}"
    caption = (
        f"estimate: {_gpus(claim.gpus)} all busy at the planned rate (the simulated "
        f"scheduler's, as the fleet notes say). Verdict: ratio ≤ {PLAUSIBLE} plausible (fusion, "
        f"overlap, better kernels); ≤ {OPTIMISTIC} optimistic (needs speculative decoding, lower "
        "precision or caching not modelled); above, implausible; above the physical bound "
        "(FLOPs at the dense peak, weights and KV cache read at full bandwidth), impossible"
    )
    return column_table(f"claim check: {what}", CLAIM_COLUMNS, [claim], caption=caption)


def target_lines(figures: dict[str, object]) -> list[str]:
    """One sentence per target: the GPUs it needs."""
    lines = []
    util = f"at {figures['utilization']:.0%} utilization"
    if "gpus_for_target_tokens_s" in figures:
        lines.append(
            f"{fmt_rate(figures['target_tokens_s'])} output tok/s needs "
            f"{_gpus(figures['gpus_for_target_tokens_s'])} {util}"
        )
    if "gpus_for_target_tokens_day" in figures:
        lines.append(
            f"{fmt_big(figures['target_tokens_day'])} output tokens/day needs "
            f"{_gpus(figures['gpus_for_target_tokens_day'])} {util}"
        )
    return lines


ASSUMPTION_COLUMNS: tuple[Column[str], ...] = (text("the answer rests on", escape),)


def assumptions_table(plan: Plan) -> Table:
    """Every assumption of the plan, one a row."""
    return column_table("assumptions", ASSUMPTION_COLUMNS, plan.assumptions)
