"""Compare result files side by side, gate regressions, and project to GPUs that were not measured.

Cases are matched across files by CaseResult.key (op, implementation, dtype, shape), so the module
never needs to know which op it is looking at. The first file is the baseline: every other column
shows its speedup over it (baseline time / this time; above 1 is faster).

The regression gate is noise-aware. With the timed rounds of both runs (Timing.rounds_ms), a
change counts only when a two-sided Mann–Whitney U test of their round medians is significant (as
Google Benchmark's compare.py tests its repetitions) and it exceeds both runs' noise floors (the
spread of their rounds); older files fall back to [p20, p80] intervals that do not overlap. A
gate fails a case only when its change counts and is beyond the threshold; where a noise floor
exceeds the threshold, a note says so. A case timed under CPU contention in either run is not
judged, and the gate says so. Only comparable cases (passed, timed on hardware, not
interpreted) are ever judged.

A projection turns a measured file into a column for a GPU that was not measured, through the spec
table: each case's time scales by the ratio of the two GPUs' rooflines for its FLOPs and bytes
(bench.record.hardware.projection, the same function the estimate projects with). It assumes the
same fraction of peak on both GPUs, and is labelled as a projection everywhere. Cases of ops this
version does not know are shown and compared like any other.

This module returns data; bench.present.tables shows it.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from bench import BenchError
from bench.measure.ops import OPS, label, load_results
from bench.record.hardware import SPECS, GpuSpec, get_spec, peak_tflops, projection, spec_of
from bench.record.schema import CaseResult, EstimateRecord, ResultDoc, Timing
from bench.record.units import fmt_slowdown, plural


class Verdict(str, Enum):
    """How a case's time in one run compares with the baseline run."""

    # Short words, as tables are narrow; the legend under them explains each.
    SAME = "same"  # within noise (see differs)
    SLOWER = "slower"  # beyond noise, but not beyond the gate's threshold (or no gate)
    FASTER = "faster"
    REGRESSION = "regressed"  # slower beyond noise and beyond the gate's threshold
    IMPROVEMENT = "improved"  # faster beyond noise and beyond the gate's threshold
    CONTENDED = "contended"  # timed under CPU contention in either run: not judged


# Significance level of the U test: Google Benchmark's compare.py uses 0.05 (its `--alpha`).
ALPHA = 0.05
# Rounds each run needs for the U test (the timer takes 10); fewer (older files, collectives)
# fall back to the [p20, p80] rule. With 5 against 5 the smallest two-sided p is 0.008 (exact)
# or 0.012 (normal approximation), under ALPHA; with 3 against 3 it is 0.1, never significant.
MIN_ROUNDS = 5


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test that a and b come from one distribution:
    the normal approximation with tie and continuity corrections (scipy.stats.mannwhitneyu's
    method="asymptotic"), exact enough at the p ≈ 0.01–0.05 the gate decides at."""
    n1, n2 = len(a), len(b)
    pooled = sorted([*a, *b])
    ranks: dict[float, float] = {}  # value -> its average rank, ties sharing one
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j] == pooled[i]:
            j += 1
        ranks[pooled[i]] = (i + j + 1) / 2
        ties += (j - i) ** 3 - (j - i)
        i = j
    u = sum(ranks[x] for x in a) - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:  # every value equal
        return 1.0
    z = max(abs(u - n1 * n2 / 2) - 0.5, 0.0) / sigma
    return math.erfc(z / math.sqrt(2))


def change(base: Timing, new: Timing) -> float:
    """The relative change of the median, either way: 0.05 is 5% slower or 5% faster."""
    ratio = new.median_ms / base.median_ms
    return max(ratio, 1 / ratio) - 1


def differs(base: Timing, new: Timing) -> bool:
    """Whether new differs from base beyond the noise the runs measured: with MIN_ROUNDS rounds
    in both, the U test of their round medians is significant at ALPHA and the change exceeds
    both runs' noise floors; otherwise (older files, collectives) the two [p20, p80] intervals
    do not overlap."""
    if min(len(base.rounds_ms), len(new.rounds_ms)) >= MIN_ROUNDS:
        floor = max(base.noise_floor or 0.0, new.noise_floor or 0.0)
        return mann_whitney_p(base.rounds_ms, new.rounds_ms) < ALPHA and change(base, new) > floor
    return new.p20_ms > base.p80_ms or base.p20_ms > new.p80_ms


def _evidence(base: Timing, new: Timing) -> str:
    """What made a change count, for the gate's line: the U test's p with the rounds."""
    if min(len(base.rounds_ms), len(new.rounds_ms)) < MIN_ROUNDS:
        return " (outside both runs' [p20, p80] spread)"
    p = mann_whitney_p(base.rounds_ms, new.rounds_ms)
    return f" (Mann–Whitney p = {p:.2g} over {len(base.rounds_ms)} and {len(new.rounds_ms)} rounds)"


def verdict(base: Timing, new: Timing, threshold: float | None = None) -> Verdict:
    """Judge new against base; threshold is the gate's relative change (0.05 for 5%), or None.

    A regression is both: beyond noise (differs) and beyond the threshold. Speedups and
    slowdowns are both measured as ratios above 1, so 5% means the same either way.
    """
    if not differs(base, new):
        return Verdict.SAME
    slower = new.median_ms > base.median_ms
    if threshold is None or change(base, new) <= threshold:
        return Verdict.SLOWER if slower else Verdict.FASTER
    return Verdict.REGRESSION if slower else Verdict.IMPROVEMENT


_FAIL_ON = re.compile(r"slower:(\d+(?:\.\d*)?|\.\d+)%")


def parse_fail_on(text: str) -> float:
    """ "slower:5%" -> 0.05. The % is required: a bare "slower:0.05" could mean 5% or 0.05%."""
    match = _FAIL_ON.fullmatch(text.strip().lower())
    if not match:
        raise BenchError(
            f"bad --fail-on '{text}'; expected slower:PERCENT% with the % sign, e.g. slower:5%"
        )
    return float(match.group(1)) / 100


def parse_prices(items: Sequence[str]) -> dict[str, float]:
    """["h100-sxm=2.5"] -> {"h100-sxm": 2.5}: USD per GPU-hour by spec-table key."""
    prices = {}
    for item in items:
        gpu, _, value = item.partition("=")
        try:
            key = get_spec(gpu).key
        except ValueError as e:
            raise BenchError(f"bad --price '{item}': {e}") from None
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not (math.isfinite(price) and price > 0):
            raise BenchError(f"bad --price '{item}': expected GPU=USD per GPU-hour, e.g. b200=4.5")
        prices[key] = price
    return prices


# --- columns: measured files and projections -----------------------------------------------------


def usable_time(timing: Timing | None) -> bool:
    """Whether a timing's median and [p20, p80] are finite and positive: a time to compare."""
    return timing is not None and all(
        math.isfinite(x) and x > 0 for x in (timing.median_ms, timing.p20_ms, timing.p80_ms)
    )


def usable(case: CaseResult) -> bool:
    """Comparable (passed, timed on hardware, not interpreted) with a usable time."""
    return case.comparable and usable_time(case.timing)


@dataclass(frozen=True)
class Cell:
    """One case as one column sees it: a measured record, or a projection of one."""

    case: CaseResult  # the measured record; for a projection, the source file's record
    median_ms: float | None  # None when the case was not timed, or its time is not usable
    tflops: float | None
    peak_fraction: float | None
    bound: str | None = None  # projections only: "compute" or "memory"

    @property
    def projected(self) -> bool:
        return self.bound is not None

    @property
    def speed(self) -> bool:
        """Whether the time is a speed figure: measured on hardware, or projected from one."""
        return self.case.comparable and self.median_ms is not None


@dataclass
class Column:
    """One file, or one projection of a file, as a column of the comparison."""

    tag: str  # "A", "B", ...: short name used in the table headers
    device: str
    spec: GpuSpec | None
    created: str
    cells: dict[tuple, Cell]
    path: Path | None = None
    doc: ResultDoc | None = None  # None for a projection
    projected_from: str | None = None  # tag of the measured column a projection comes from

    @property
    def measured(self) -> bool:
        return self.doc is not None

    @property
    def date(self) -> str:
        return self.created[:10]


def measured_column(tag: str, path: Path, doc: ResultDoc) -> Column:
    """A file's cases as a column."""
    cells = {
        c.key: Cell(
            c, c.timing.median_ms if usable_time(c.timing) else None, c.tflops, c.peak_fraction
        )
        for c in doc.cases
    }
    spec = spec_of(doc.device, doc.spec)
    return Column(tag, doc.device.name, spec, doc.created, cells, path=path, doc=doc)


def _tf32(case: CaseResult) -> bool:
    return case.op in OPS and OPS[case.op].tf32


def project_cell(case: CaseResult, source: GpuSpec, target: GpuSpec) -> Cell | None:
    """A comparable case's projected time and roofline figures on target, or None when either
    GPU has no peak for its dtype."""
    if not usable(case):
        return None
    projected = projection(source, target, case.dtype, case.flops, case.bytes, _tf32(case))
    if projected is None:
        return None
    ms = case.timing.median_ms * projected.scale
    tflops = case.flops / (ms / 1e3) / 1e12
    peak = peak_tflops(target, case.dtype, _tf32(case))
    return Cell(case, ms, tflops, tflops / peak, bound=projected.bound)


def projected_column(tag: str, source: Column, target: GpuSpec) -> Column:
    cells = {}
    for key, cell in source.cells.items():
        projected = project_cell(cell.case, source.spec, target)
        if projected is not None:
            cells[key] = projected
    return Column(tag, target.name, target, source.created, cells, projected_from=source.tag)


# --- the comparison ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why a case with a usable time in A has none to judge in a later measured file."""

    word: str  # for the tables: "failed", "skipped", "missing", "bad time", ...
    reason: str  # for the gate's lines, e.g. "failed in B: CUDA error: out of memory"


@dataclass
class Row:
    """One case across all columns."""

    case: CaseResult  # the first record found, for op, implementation, dtype and shape
    cells: list[Cell | None]  # per column; None where the column lacks the case
    speedups: list[float | None]  # baseline time / this time, per column
    verdicts: list[Verdict | None]  # per column; None for A, projections, uncomparable cases
    problems: list[Problem | None] = field(default_factory=list)  # per column; see Problem

    @property
    def label(self) -> str:
        c = self.case
        return f"{c.op} {label(c.op, c.shape)} {c.dtype} {c.impl}"


@dataclass
class Comparison:
    columns: list[Column]
    rows: list[Row]
    threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)  # USD per GPU-hour by spec key

    def regressions(self) -> list[str]:
        """One line per case and column that the gate fails for being slower."""
        out = []
        for row in self.rows:
            for col, cell, v, up in zip(
                self.columns, row.cells, row.verdicts, row.speedups, strict=True
            ):
                if v is Verdict.REGRESSION:
                    why = _evidence(row.cells[0].case.timing, cell.case.timing)
                    out.append(f"{row.label}: {col.tag} is {fmt_slowdown(up)} than A{why}")
        return out

    def broken(self) -> list[str]:
        """One line per case with a usable time in A that a later measured file failed,
        skipped, lacks or has no usable time for: the gate fails these too."""
        return [f"{row.label}: {p.reason}" for row in self.rows for p in row.problems if p]

    def contended(self) -> list[str]:
        """One line per case and column not judged because either run was timed under CPU
        contention: the gate neither passes nor fails them, and says so."""
        out = []
        for row in self.rows:
            for col, cell, v in zip(self.columns, row.cells, row.verdicts, strict=True):
                if v is Verdict.CONTENDED:
                    pair = (("A", row.cells[0].case), (col.tag, cell.case))
                    where = "; ".join(
                        f"{tag}: {c.cpu_load.others:.1f} cores busy with other processes, "
                        f"{c.cpu_load.threads} threads on {c.cpu_load.cores:g} cores"
                        for tag, c in pair
                        if c.contended
                    )
                    out.append(f"{row.label}: {col.tag} not judged: CPU contention ({where})")
        return out

    def judged(self) -> int:
        """How many (case, column) pairs the gate judged by time (contended ones are not)."""
        return sum(
            v is not None and v is not Verdict.CONTENDED for row in self.rows for v in row.verdicts
        )

    def incomplete(self) -> list[Column]:
        """Later measured files whose run was interrupted (or is still running)."""
        return [c for c in self.columns[1:] if c.measured and not c.doc.complete]

    def partial(self) -> list[Row]:
        """Cases missing from at least one measured file."""
        measured = [i for i, c in enumerate(self.columns) if c.measured]
        return [r for r in self.rows if any(r.cells[i] is None for i in measured)]

    def geomeans(self) -> dict[str, list[tuple[float, int] | None]]:
        """Per op, per column: geometric mean of the speedup over the first column and its n."""
        out: dict[str, list[tuple[float, int] | None]] = {}
        for op in dict.fromkeys(r.case.op for r in self.rows):
            per_column: list[tuple[float, int] | None] = []
            for i in range(len(self.columns)):
                ups = [r.speedups[i] for r in self.rows if r.case.op == op and r.speedups[i]]
                per_column.append(_geomean(ups) if ups and i > 0 else None)
            out[op] = per_column
        return out


def _geomean(values: list[float]) -> tuple[float, int]:
    return math.exp(sum(map(math.log, values)) / len(values)), len(values)


def compare(
    paths: Sequence[str | Path],
    *,
    threshold: float | None = None,
    project: Sequence[str] = (),
    prices: dict[str, float] | None = None,
) -> Comparison:
    """Load the files, match their cases and add projected columns; the first file is the
    baseline. Raises BenchError for unreadable files and files with nothing in common."""
    if len(paths) < 2 and not project:
        raise BenchError("compare needs at least two result files, or one file and --project GPU")
    if len(paths) + len(project) > len(string.ascii_uppercase):
        raise BenchError(f"too many columns to compare (at most {len(string.ascii_uppercase)})")
    tags = iter(string.ascii_uppercase)
    columns = [measured_column(next(tags), Path(p), load_results(p)) for p in paths]
    _check_overlap(columns)
    columns += [projected_column(next(tags), *_projection(columns, gpu)) for gpu in project]
    rows = _rows(columns, threshold)
    notes = _notes(columns) + _noisy(columns, rows, threshold)
    comparison = Comparison(columns, rows, threshold, notes, prices or {})
    if threshold is not None and not comparison.judged() and not comparison.broken():
        contended = len(comparison.contended())
        raise BenchError(
            "nothing to gate: no case passed and was timed on hardware (not interpreted) "
            "in both the first file and another"
            + (f" without CPU contention ({contended} were contended)" if contended else "")
        )
    return comparison


def _check_overlap(columns: list[Column]) -> None:
    base = columns[0]
    for col in columns[1:]:
        if not base.cells.keys() & col.cells.keys():
            raise BenchError(
                f"{col.path} shares no case (op, implementation, shape, dtype) with "
                f"{base.path}; nothing to compare"
            )


def _projection(columns: list[Column], gpu: str) -> tuple[Column, GpuSpec]:
    """The measured column to project from (the first with a spec entry) and the target spec."""
    try:
        target = get_spec(gpu)
    except ValueError as e:
        raise BenchError(str(e)) from None
    for col in columns:
        if col.measured and col.spec is not None:
            return col, target
    raise BenchError(
        f"cannot project to {target.name}: no file was measured on a GPU in the spec table "
        "(a projection scales measured times by spec ratios)"
    )


def _problem(base: Cell | None, cell: Cell | None, col: Column) -> Problem | None:
    """Why a case usable in A cannot be judged in a later measured column, or None."""
    if not col.measured or base is None or not usable(base.case):
        return None
    if cell is None:
        return Problem("missing", f"missing from {col.tag}")
    c = cell.case
    if c.status != "ok":
        return Problem(c.status, f"{c.status} in {col.tag}" + (f": {c.error}" if c.error else ""))
    if c.timing is None:
        return Problem("untimed", f"not timed in {col.tag}")
    if c.interpreted:
        return Problem("interp.", f"run in Triton's interpreter in {col.tag}, not on hardware")
    if not usable_time(c.timing):
        t = c.timing
        return Problem(
            "bad time",
            f"non-finite or non-positive time in {col.tag} "
            f"(median {t.median_ms}, p20 {t.p20_ms}, p80 {t.p80_ms} ms)",
        )
    return None


def _rows(columns: list[Column], threshold: float | None) -> list[Row]:
    keys: dict[tuple, CaseResult] = {}
    for col in columns:
        for key, cell in col.cells.items():
            keys.setdefault(key, cell.case)
    rows = []
    for key, case in keys.items():
        cells = [col.cells.get(key) for col in columns]
        base = cells[0]
        speedups = [
            base.median_ms / c.median_ms if base and c and base.speed and c.speed else None
            for c in cells
        ]
        verdicts = [
            _judge(base.case, c.case, threshold)
            if i > 0 and col.measured and base and c and usable(base.case) and usable(c.case)
            else None
            for i, (col, c) in enumerate(zip(columns, cells, strict=True))
        ]
        problems = [
            _problem(base, c, col) if i > 0 else None
            for i, (col, c) in enumerate(zip(columns, cells, strict=True))
        ]
        rows.append(Row(case, cells, speedups, verdicts, problems))
    # Group by op, keeping first-seen order within each op.
    order = {op: i for i, op in enumerate(dict.fromkeys(r.case.op for r in rows))}
    return sorted(rows, key=lambda r: order[r.case.op])


def _judge(base: CaseResult, new: CaseResult, threshold: float | None) -> Verdict:
    """A verdict, unless either run was timed under CPU contention: its time says more about
    the other processes than about the code, so it is not judged (and the gate says so)."""
    if base.contended or new.contended:
        return Verdict.CONTENDED
    return verdict(base.timing, new.timing, threshold)


def _noisy(columns: list[Column], rows: list[Row], threshold: float | None) -> list[str]:
    """Per measured column, the judged cases whose noise floor (in either run) exceeds the
    gate's threshold: a change that small is one those runs cannot tell from noise."""
    notes = []
    for i, col in enumerate(columns[1:] if threshold is not None else (), start=1):
        floors = [
            max(c.case.timing.noise_floor or 0.0 for c in (row.cells[0], row.cells[i]))
            for row in rows
            if row.verdicts[i] not in (None, Verdict.CONTENDED)
        ]
        noisy = [f for f in floors if f > threshold]
        if noisy:
            notes.append(
                f"{col.tag}: {plural(len(noisy), 'case')} {'has' if len(noisy) == 1 else 'have'} "
                f"a noise floor above the {threshold:.0%} gate (up to {max(noisy):.0%}, in A or "
                f"{col.tag}); a slowdown that small cannot fail there"
            )
    return notes


def _notes(columns: list[Column]) -> list[str]:
    notes = []
    base = columns[0].doc.cpu if columns[0].measured else None
    for col in columns:
        cpu = col.doc.cpu if col.measured else None
        if base and cpu and cpu.threads != base.threads:
            notes.append(
                f"{col.tag} ran on {plural(cpu.threads, 'CPU thread')}, A on {base.threads}: "
                "their times differ by more than the code"
            )
        if col.measured and not col.doc.complete:
            notes.append(f"{col.tag} is an incomplete run: the sweep was interrupted or is running")
        if col.measured:
            bad = sum(c.comparable and not usable_time(c.timing) for c in col.doc.cases)
            if bad:
                notes.append(
                    f"{col.tag}: {bad} cases have a non-finite or non-positive time; "
                    "not compared (bad time)"
                )
        if col.projected_from:
            source = next(c for c in columns if c.tag == col.projected_from)
            skipped = sum(1 for c in source.cells.values() if usable(c.case)) - len(col.cells)
            if skipped:
                notes.append(
                    f"{col.tag}: {skipped} comparable cases of {source.tag} not projected "
                    f"({col.device} or {source.spec.name} has no peak for their dtype)"
                )
    return notes


# --- the ranks of one run ------------------------------------------------------------------------


@dataclass(frozen=True)
class RankSpread:
    """One case as every rank of a run measured it, on its own GPU: the slow-GPU hunt done
    before a deployment."""

    cases: list[CaseResult]  # in rank order

    @property
    def timed(self) -> list[CaseResult]:
        return sorted((c for c in self.cases if usable(c)), key=lambda c: c.timing.median_ms)

    @property
    def median(self) -> CaseResult:
        """The rank with the median time (the lower middle one), else the first rank."""
        timed = self.timed
        return timed[(len(timed) - 1) // 2] if timed else self.cases[0]

    @property
    def spread(self) -> float | None:
        """Slowest rank's median over the fastest's, less 1; None with fewer than two timed."""
        timed = self.timed
        if len(timed) < 2:
            return None
        return timed[-1].timing.median_ms / timed[0].timing.median_ms - 1

    def slow(self) -> list[CaseResult]:
        """The ranks slower than the median rank beyond noise: their [p20, p80] lies above its."""
        middle = self.median
        return [c for c in self.timed if c.timing.p20_ms > middle.timing.p80_ms]


def rank_spreads(cases: list[CaseResult]) -> list[RankSpread]:
    """Each (problem, implementation) measured on several ranks, in first-seen order."""
    groups: dict[tuple, list[CaseResult]] = {}
    for case in cases:
        groups.setdefault((*case.problem, case.impl), []).append(case)
    return [RankSpread(sorted(g, key=lambda c: c.rank)) for g in groups.values() if len(g) > 1]


# --- estimates -----------------------------------------------------------------------------------


def estimate_groups(comparison: Comparison) -> dict[tuple, list[tuple[Column, EstimateRecord]]]:
    """The measured files' saved estimates, grouped by their setup, in file order."""
    groups: dict[tuple, list[tuple[Column, EstimateRecord]]] = {}
    for col in comparison.columns:
        for e in col.doc.estimates if col.measured else ():
            groups.setdefault(e.setup, []).append((col, e))
    return groups


def tokens_per_watt(e: EstimateRecord) -> float | None:
    """Decode tokens/s per watt of the GPU's spec-sheet power (TDP), when the spec is known."""
    spec = SPECS.get(e.spec or "")
    return e.decode_tokens_per_s / spec.power_w if spec else None


def tokens_per_dollar(e: EstimateRecord, prices: dict[str, float]) -> float | None:
    """Output tokens per USD in the serving mix at a price per GPU-hour (fully utilised), when
    one was given for the GPU."""
    price = prices.get(e.spec or "")
    return e.serving_output_tokens_per_s * 3600 / price if price else None
