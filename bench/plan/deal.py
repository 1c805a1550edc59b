"""A deal's terms as a price per GPU-hour, and the checks a planner makes of it against the market
(bench.record.market): the implied price beside public GPU rental prices of the same kind, the
cost per million tokens beside public API prices of the same open model, and the power the
fleet draws.

A deal pays `usd` over `years` for a fleet that comes online over time (a ramp: a linear one
over some months, or a file of the share online by month); a share of it buys what is not GPU
time (CPUs, storage, networking: an assumption, printed). The implied price is the GPU share
over the GPU-hours the ramp provides.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from bench import BenchError, check_range
from bench.plan.texts import read_text
from bench.record.hardware import get_spec
from bench.record.market import (
    API_PRICES,
    COMMITTED_DISCOUNT,
    ELECTRICITY_USD_PER_KWH,
    GPU_PRICES,
    STAND_INS,
    WALL_POWER,
    ApiPrice,
    GpuPrice,
)

HOURS_PER_YEAR = 365.25 * 24  # a Julian year: a deal's term in years, leap days included
MONTHS_PER_YEAR = 12
# The share of a deal that buys what is not GPU time: CPUs, storage, networking, the data
# centre. An assumption: the OpenAI-AWS deal (2025-11-03) names "tens of millions of CPUs"
# beside its GPUs and publishes no split; --non-gpu-share sets it.
DEFAULT_NON_GPU_SHARE = 0.2


@dataclass(frozen=True)
class Ramp:
    """The share of the fleet online by month of the term: points (month, share) joined by
    straight lines, the last share held to the end; no points: all online from the first day."""

    points: tuple[tuple[float, float], ...] = ()
    source: str = "every GPU online from the first day (no ramp given)"

    def mean_share(self, months: float) -> float:
        """The share online, averaged over the first `months` (exactly: the area under the
        lines)."""
        if not self.points:
            return 1.0
        points = [(0.0, self.points[0][1]), *self.points, (max(months, self.points[-1][0]),
                  self.points[-1][1])]  # fmt: skip
        area = 0.0
        for (m0, s0), (m1, s1) in itertools.pairwise(points):
            lo, hi = min(m0, months), min(m1, months)
            if hi > lo:
                at = [s0 + (s1 - s0) * (m - m0) / (m1 - m0) for m in (lo, hi)]
                area += (hi - lo) * (at[0] + at[1]) / 2
        return area / months


def linear_ramp(months: float) -> Ramp:
    check_range("--ramp-months", months, what=" (months until the whole fleet is online)")
    return Ramp(((0.0, 0.0), (months, 1.0)), f"online linearly from none to all over {months:g} "
                "months (--ramp-months)")  # fmt: skip


def read_ramp(path: Path) -> Ramp:
    """A CSV with columns month and online (the share of the fleet online, 0 to 1), months
    rising from 0."""
    rows = list(csv.DictReader(read_text(path, "ramp CSV").splitlines()))
    points = []
    for line, row in enumerate(rows, 2):
        try:
            month, share = float(row["month"]), float(row["online"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(
                f"{path}:{line}: a ramp has the columns month,online (a number of months from "
                "the start, the share of the fleet online from 0 to 1)"
            ) from None
        if not 0 <= share <= 1 or not 0 <= month < 1e4 or (points and month <= points[-1][0]):
            raise BenchError(
                f"{path}:{line}: online must be within 0..1 and months rise from 0, got "
                f"{month:g}, {share:g}"
            )
        points.append((month, share))
    if not points:
        raise BenchError(f"{path}: the ramp has no rows")
    return Ramp(tuple(points), f"online as {path.name} says, by month")


@dataclass(frozen=True)
class Deal:
    """A deal's terms: its total, its years, the share that is not GPU time, the ramp."""

    usd: float
    years: float
    non_gpu_share: float = DEFAULT_NON_GPU_SHARE
    ramp: Ramp = field(default_factory=Ramp)

    def __post_init__(self) -> None:
        # The ceiling only keeps the costs finite: no deal near it is meant.
        check_range(
            "--deal-usd", self.usd, 0, 1e15, closed="high", what=" (USD for the whole deal)"
        )
        check_range("--years", self.years)
        check_range("--non-gpu-share", self.non_gpu_share, 0, 1, closed="low")

    @property
    def gpu_usd(self) -> float:
        return self.usd * (1 - self.non_gpu_share)

    @property
    def online_share(self) -> float:
        """The share of the fleet online, averaged over the term."""
        return self.ramp.mean_share(self.years * MONTHS_PER_YEAR)

    def gpu_hours(self, gpus: int) -> float:
        return gpus * self.years * HOURS_PER_YEAR * self.online_share

    def price_per_gpu_hour(self, gpus: int) -> float:
        """USD per GPU-hour: the GPU share over the GPU-hours the ramp provides."""
        return self.gpu_usd / self.gpu_hours(gpus)


# --- against the market -------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceCheck:
    """A price per GPU-hour beside the public prices of its GPU kind (or the kind standing in)."""

    gpu: str  # spec-table key
    price: float
    rows: tuple[GpuPrice, ...]
    stand_in: str | None = None  # the kind whose prices stand in, where the GPU has none

    @property
    def name(self) -> str:
        """The GPU kind's name, and its stand-in's."""
        own = get_spec(self.gpu).name
        return f"{get_spec(self.stand_in).name} (standing in for {own})" if self.stand_in else own

    @property
    def lowest(self) -> GpuPrice | None:
        return min(self.rows, key=lambda r: r.usd, default=None)

    @property
    def committed_floor(self) -> float | None:
        """The lowest rental price less the deepest commitment discount a price list states:
        the lowest price a public price list lets one expect to commit to."""
        rentals = [r.usd for r in self.rows if r.kind != "index"]
        return min(rentals) * (1 - COMMITTED_DISCOUNT) if rentals else None


def price_check(gpu: str, price: float) -> PriceCheck:
    """The public prices of `gpu`'s kind (its stand-in's where it has none), cheapest first."""
    kind = gpu if any(r.gpu == gpu for r in GPU_PRICES) else STAND_INS.get(gpu)
    rows = sorted((r for r in GPU_PRICES if r.gpu == kind), key=lambda r: r.usd)
    return PriceCheck(gpu, price, tuple(rows), kind if kind != gpu else None)


@dataclass(frozen=True)
class ApiCheck:
    """The fleet's cost beside public API prices of the same model: per million output tokens
    (every GPU-hour charged to output), and per request at the workload's mean lengths, which
    charges an API's input price too."""

    model: str
    per_million_output: float
    per_request: float
    isl: float
    osl: float
    rows: tuple[ApiPrice, ...]

    def api_per_request(self, row: ApiPrice) -> float:
        return (self.isl * row.input_usd + self.osl * row.output_usd) / 1e6


def api_check(
    model: str, per_million_output: float, per_request: float, isl: float, osl: float
) -> ApiCheck:
    rows = tuple(sorted((r for r in API_PRICES if r.model.lower() == model.lower()),
                        key=lambda r: r.output_usd))  # fmt: skip
    return ApiCheck(model, per_million_output, per_request, isl, osl, rows)


@dataclass(frozen=True)
class GpuPower:
    """What one GPU of a kind draws at the wall, at most, and where the figure comes from."""

    gpu: str  # the kind's name
    kw: float  # before the facility's PUE
    what: str


def gpu_power(gpu: str) -> GpuPower:
    """A system's rating shared by its GPUs; without one, the GPU's own board power (the spec
    table's), which leaves out the CPUs, memory, network and fans."""
    for row in WALL_POWER:
        if row.gpu == gpu:
            return GpuPower(get_spec(gpu).name, row.kw_per_gpu, f"{row.what} ({row.source})")
    spec = get_spec(gpu)
    what = f"{spec.name}'s board power alone ({spec.source}); no system rating found"
    return GpuPower(spec.name, spec.power_w / 1e3, what)


@dataclass(frozen=True)
class Power:
    """A fleet's power at the wall at full deployment, and the electricity over a term."""

    kinds: tuple[tuple[GpuPower, int], ...]  # each kind and its GPUs
    pue: float
    output_tokens_per_s: float  # the fleet's, every GPU serving
    years: float
    online_share: float

    @property
    def megawatts(self) -> float:
        return sum(p.kw * n for p, n in self.kinds) * self.pue / 1e3

    @property
    def tokens_per_megawatt(self) -> float:
        """Output tokens/s per MW at the wall, every GPU serving."""
        return self.output_tokens_per_s / self.megawatts

    @property
    def electricity_usd(self) -> float:
        """At most: every GPU drawing its rating for the whole time it is online."""
        hours = self.years * HOURS_PER_YEAR * self.online_share
        return self.megawatts * 1e3 * hours * ELECTRICITY_USD_PER_KWH


def check_pue(pue: float) -> None:
    check_range("--pue", pue, 1, closed="low", what=" (facility power over IT power)")
