"""`tokbench validate PUBLISHED.csv`: the estimator against published per-GPU throughput.

Each row names a model, GPU, weight and KV-cache precision, tensor-parallel degree, request
lengths, a scenario and the published output tokens/s per GPU, with its source. The estimate
for a row is the simulated run `tokbench simulate` makes of the same set-up, from the GPU's spec
sheet (and any reference files' measured efficiencies): `throughput`/`offline` rows the offline
run (the throughput ceiling), `server` rows the highest Poisson rate meeting the row's `slo`;
the rate is the run's steady state. The estimator is built from first principles and
kernel measurements; nothing here is fitted to the rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.plan.capacity import parse_parallel
from bench.plan.models import Serving, get_model
from bench.plan.scenarios import run
from bench.plan.slo import parse_slo
from bench.plan.texts import read_text
from bench.plan.throughput import StepModel
from bench.plan.workloads import workload

COLUMNS = (
    "model", "gpu", "precision", "kv_precision", "tp", "isl", "osl", "scenario",
    "tokens_per_s_per_gpu", "source",
)  # fmt: skip
# "decode": a disaggregated decode pool's figure (prompts prefilled elsewhere), estimated as
# the decode steps' rate per GPU at the largest batch that fits, every sequence at the mean
# decode context (the estimate's steady-state formula; the KV transfer in is not charged).
SCENARIOS = ("throughput", "offline", "server", "decode")
# The published figures tokbench is checked against, shipped inside the package (docs/ links to
# it) so that an installed tool validates without a checkout.
PUBLISHED = Path(__file__).with_name("published.csv")


@dataclass(frozen=True)
class Row:
    """One published figure."""

    line: int
    model: str
    gpu: str
    precision: str
    kv_precision: str  # "auto", "fp8", or "unknown"
    tp: int
    isl: int
    osl: int
    scenario: str
    published: float  # output tokens/s per GPU
    source: str
    slo: str = ""
    dp: int = 1  # the `tp` column's layout beyond TP: attention DP groups and EP degree
    ep: int = 1


@dataclass(frozen=True)
class Check:
    """A row against its estimate: the ratio, or why there is none."""

    row: Row
    estimate: float | None = None  # output tokens/s per GPU
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.estimate is None else self.estimate / self.row.published


def read_published(path: Path) -> list[Row]:
    """The rows of a published-results CSV (UTF-8, a byte-order mark allowed); a bad file or row
    is a one-line error naming its line."""
    text = read_text(path, "published-results CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = _header(path, reader.fieldnames or [])
        rows = [_row(path, reader.line_num, raw, columns) for raw in reader]
    except csv.Error as e:  # the record that failed starts on the line after those read
        raise BenchError(
            f"{path}:{reader.line_num + 1}: not CSV ({e}); a field holding a comma or a line "
            'break is quoted whole, a quote inside it doubled ("")'
        ) from None
    if not rows:
        raise BenchError(f"{path}: no rows")
    return rows


def _header(path: Path, names: Sequence[str]) -> int:
    """The header's column count, once it names every column, each once."""
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise BenchError(
            f"{path}: missing column(s) {', '.join(missing)}; needs {', '.join(COLUMNS)}"
        )
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:
        raise BenchError(f"{path}: column(s) {', '.join(map(repr, twice))} named twice")
    return len(names)


def _row(path: Path, line: int, raw: dict, columns: int) -> Row:
    # csv.DictReader fills a short row's missing fields with None and keeps a long row's extra
    # ones under the key None.
    count = sum(v is not None for k, v in raw.items() if k is not None) + len(raw.get(None, ()))
    if count != columns:
        raise BenchError(
            f"{path}:{line}: {count} field(s) where the header has {columns}; quote a field "
            "that holds a comma"
        )

    def number(column: str, kind: Callable[[str], float]) -> float:
        try:
            value = kind(raw[column])
        except (TypeError, ValueError):
            raise BenchError(
                f"{path}:{line}: {column} must be a number, got {raw[column]!r}"
            ) from None
        if not 0 < value < math.inf:
            raise BenchError(
                f"{path}:{line}: {column} must be positive and finite, got {raw[column]!r}"
            )
        return value

    scenario = raw["scenario"].strip().lower()
    if scenario not in SCENARIOS:
        raise BenchError(
            f"{path}:{line}: scenario {raw['scenario']!r}; known: {', '.join(SCENARIOS)}"
        )
    try:
        layout = parse_parallel(raw["tp"] or "")
    except BenchError:
        raise BenchError(
            f"{path}:{line}: tp must be a number or a layout (NxD, Nep), got {raw['tp']!r}"
        ) from None
    return Row(
        line, raw["model"].strip(), raw["gpu"].strip(), raw["precision"].strip().lower(),
        raw["kv_precision"].strip().lower() or "unknown", layout.tp,
        int(number("isl", int)), int(number("osl", int)), scenario,
        number("tokens_per_s_per_gpu", float), raw["source"].strip(),
        (raw.get("slo") or "").strip(), layout.dp, layout.ep,
    )  # fmt: skip


def kv_for(row: Row) -> tuple[str, str]:
    """The KV-cache precision to estimate a row with, and a note when it was assumed: fp8
    beside fp8 or fp4 weights (serving engines' quantised checkpoints carry fp8 KV scales),
    else the activations' dtype."""
    if row.kv_precision in ("auto", "fp8"):
        return row.kv_precision, ""
    if row.kv_precision in ("bf16", "fp16"):
        return "auto", ""
    kv = "fp8" if row.precision in ("fp8", "fp4", "mxfp4") else "auto"
    return kv, f"KV cache not stated: {'fp8' if kv == 'fp8' else 'as the activations'} assumed"


def check_row(row: Row, step_model_of: Callable[[Serving, str], StepModel]) -> Check:
    """Estimate one row; an estimate that cannot be made says why."""
    kv, note = kv_for(row)
    try:
        setup = Serving(get_model(row.model), tp=row.tp, dp=row.dp, ep=row.ep,
                        precision=row.precision, kv_precision=kv, isl=row.isl,
                        osl=row.osl)  # fmt: skip
        step_model = step_model_of(setup, row.gpu)
        if row.scenario == "decode":
            batch = setup.decode_cap(step_model.target.memory_plan(setup))
            if batch < 1:
                raise BenchError(f"{setup.model.name} at {setup.layout}: no sequence fits")
            return Check(row, step_model.decode(batch).tokens_per_s, note)
        load = workload("fixed", 1, row.isl, row.osl, config=setup.model)
        if row.scenario == "server":
            if not row.slo:
                raise BenchError("a server row needs its SLO in the slo column")
            sim = run(step_model, load, slo=parse_slo(row.slo))
        else:
            sim = run(step_model, load)
    except BenchError as e:
        return Check(row, None, str(e))
    return Check(row, sim.output_tokens_per_s, note)


def geometric_mean(checks: list[Check]) -> float | None:
    ratios = [c.ratio for c in checks if c.ratio]
    if not ratios:
        return None
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def worst(checks: list[Check], n: int = 3) -> list[Check]:
    """The rows furthest from their published figure, either way."""
    rated = [c for c in checks if c.ratio]
    return sorted(rated, key=lambda c: -abs(math.log(c.ratio)))[:n]


def as_dicts(checks: list[Check]) -> dict[str, object]:
    """The checks as `validate --json` prints them."""
    rows = [
        {**{k: v for k, v in vars(c.row).items()}, "estimate": c.estimate, "ratio": c.ratio,
         "note": c.note}
        for c in checks
    ]  # fmt: skip
    return {"rows": rows, "geometric_mean": geometric_mean(checks)}
