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
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.plan.models import Serving, get_model
from bench.plan.scenarios import run
from bench.plan.slo import parse_slo
from bench.plan.throughput import StepModel
from bench.plan.workloads import workload

COLUMNS = (
    "model", "gpu", "precision", "kv_precision", "tp", "isl", "osl", "scenario",
    "tokens_per_s_per_gpu", "source",
)  # fmt: skip
SCENARIOS = ("throughput", "offline", "server")
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
    """The rows of a published-results CSV; a bad row is a one-line error naming its line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BenchError(f"{path}: cannot read ({e.strerror})") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(
            f"{path}: missing column(s) {', '.join(missing)}; needs {', '.join(COLUMNS)}"
        )
    rows = [_row(path, number, raw) for number, raw in enumerate(reader, 2)]
    if not rows:
        raise BenchError(f"{path}: no rows")
    return rows


def _row(path: Path, line: int, raw: dict[str, str]) -> Row:
    def number(column: str, kind: Callable[[str], float]) -> float:
        try:
            value = kind(raw[column])
        except (TypeError, ValueError):
            raise BenchError(
                f"{path}:{line}: {column} must be a number, got {raw[column]!r}"
            ) from None
        if not value > 0:
            raise BenchError(f"{path}:{line}: {column} must be positive, got {raw[column]!r}")
        return value

    scenario = raw["scenario"].strip().lower()
    if scenario not in SCENARIOS:
        raise BenchError(
            f"{path}:{line}: scenario {raw['scenario']!r}; known: {', '.join(SCENARIOS)}"
        )
    return Row(
        line, raw["model"].strip(), raw["gpu"].strip(), raw["precision"].strip().lower(),
        raw["kv_precision"].strip().lower() or "unknown", int(number("tp", int)),
        int(number("isl", int)), int(number("osl", int)), scenario,
        number("tokens_per_s_per_gpu", float), raw["source"].strip(),
        (raw.get("slo") or "").strip(),
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
        setup = Serving(get_model(row.model), tp=row.tp, precision=row.precision,
                        kv_precision=kv, isl=row.isl, osl=row.osl)  # fmt: skip
        step_model = step_model_of(setup, row.gpu)
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
