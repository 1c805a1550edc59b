"""`tokbench capacity` with a price or a deal: the price per GPU-hour beside public GPU rental
prices of each kind, the cost of the tokens beside public API prices of the model, and the
fleet's power."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from bench.plan.capacity import Plan
from bench.plan.deal import ApiCheck, PriceCheck
from bench.present.tables.base import Column, bullets, column_table, key_value_table, text
from bench.record.market import ApiPrice, GpuPrice
from bench.record.units import fmt_big, fmt_power


def market_tables(plan: Plan) -> list[Table]:
    """Each kind's prices, the API prices and the power, as the plan has them."""
    tables = [gpu_price_table(check) for check in plan.prices]
    if plan.api is not None:
        tables.append(api_price_table(plan.api))
    if plan.power is not None:
        tables.append(power_table(plan))
    return tables


def _date(date: str) -> str:
    return date or "undated"


def _source(source: str, second_hand: bool) -> str:
    return escape(f"{source}{' (second-hand)' if second_hand else ''}")


def gpu_price_table(check: PriceCheck) -> Table:
    """The price per GPU-hour against each public price of its kind, cheapest first."""
    columns: tuple[Column[GpuPrice], ...] = (
        text("seller", lambda r: escape(r.seller)),
        text("kind", lambda r: r.kind),
        Column("$/GPU-hour", lambda r: f"{r.usd:,.2f}"),
        Column("ours / theirs", lambda r: f"{check.price / r.usd:.2f}"),
        text("date", lambda r: _date(r.date)),
        text("source", lambda r: _source(r.source, r.second_hand)),
    )
    title = f"${check.price:,.2f} per GPU-hour beside public prices of {check.name}"
    notes = []
    if check.lowest is None:
        notes.append("no public price of this kind was found")
    else:
        notes.append(f"{check.price / check.lowest.usd:.2f}× the lowest listed price")
    if check.committed_floor is not None:
        notes.append(
            f"{check.price / check.committed_floor:.2f}× the lowest rental less the deepest "
            f"commitment discount a price list states (${check.committed_floor:,.2f})"
        )
    return column_table(title, columns, check.rows, caption=bullets(notes))


def api_price_table(check: ApiCheck) -> Table:
    """The fleet's cost per request and per million output tokens beside API prices."""
    columns: tuple[Column[ApiPrice], ...] = (
        text("seller", lambda r: escape(r.seller)),
        Column("$/M in", lambda r: f"{r.input_usd:.3g}"),
        Column("$/M out", lambda r: f"{r.output_usd:.3g}"),
        Column("$ per k requests", lambda r: f"{check.api_per_request(r) * 1e3:.3g}"),
        Column("theirs / ours", lambda r: f"{check.api_per_request(r) / check.per_request:.1f}"),
        text("date", lambda r: _date(r.date)),
        text("source", lambda r: escape(r.source)),
    )
    title = (
        f"${check.per_million_output:.3g} per M output tokens, ${check.per_request * 1e3:.3g} "
        f"per thousand requests, beside public API prices of {check.model}"
    )
    notes = [
        f"per request: {check.isl:,.0f} input + {check.osl:,.0f} output tokens at the API's "
        "prices; ours charges every GPU-hour to the requests served",
        "an API's price holds its margin, idle capacity, and the cost of everything but GPUs",
    ]
    if not check.rows:
        notes.insert(0, f"no public API price of {check.model} was found")
    return column_table(title, columns, check.rows, caption=bullets(notes))


def power_table(plan: Plan) -> Table:
    """The fleet's power at the wall, tokens per MW, and the electricity over the term."""
    p = plan.power
    table = key_value_table("power at the wall, every GPU online")
    table.add_row("fleet", f"{fmt_power(p.megawatts)} at most (PUE {p.pue:g})")
    table.add_row(
        "tokens per MW",
        f"{fmt_big(p.tokens_per_megawatt)} output tok/s per MW while serving at the planned rate",
    )
    what = f"over {p.years:g} years" if plan.terms.deal else "a year"
    line = f"${fmt_big(p.electricity_usd)} {what} at most"
    if plan.terms.deal is not None:
        line += f", {p.electricity_usd / plan.terms.deal.usd:.1%} of the deal"
    table.add_row("electricity", line)
    return table
