"""Export a result file in other tools' formats; today pytest-benchmark's saved-run JSON.

The layout follows pytest_benchmark's own writer (plugin.pytest_benchmark_generate_json and
stats.Metadata.as_dict): top-level machine_info, commit_info, benchmarks, datetime and version;
one benchmark per case with group, name, fullname, params, extra_info, options and stats in
seconds. `pytest-benchmark compare FILE` reads it, and so does `--benchmark-compare` once the file
is placed in pytest-benchmark's storage (.benchmarks/<machine>/NNNN_name.json).

tokbench records the 20th and 80th percentiles, not quartiles, and no raw samples. So that
pytest-benchmark's IQR column still shows the measured spread, q1/q3 carry p20/p80 (a range a
little wider than the IQR); extra_info says so and keeps the original figures. Outlier counts,
which tokbench does not record, are left out rather than made up.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.measure.ops import label, load_results
from bench.present import owned
from bench.record import results
from bench.record.schema import CaseResult, ResultDoc

# The saved-run layout read by pytest-benchmark 3.1 and later (3.1 added "ops").
PYTEST_BENCHMARK_VERSION = "5.1.0"


class ExportFormat(str, Enum):
    pytest_benchmark = "pytest-benchmark"


def benchmark_name(case: CaseResult) -> str:
    """pytest-style test id: op[impl-dtype-shape]."""
    return f"{case.op}[{case.impl}-{case.dtype}-{label(case.op, case.shape)}]"


def _stats(case: CaseResult) -> dict[str, Any]:
    t = case.timing
    s = 1e-3  # tokbench times are in milliseconds, pytest-benchmark's in seconds
    return {
        "min": t.min_ms * s,
        "max": t.max_ms * s,
        "mean": t.mean_ms * s,
        "stddev": t.cv * t.mean_ms * s,  # cv is the population std / mean
        "rounds": t.n,
        "median": t.median_ms * s,
        "q1": t.p20_ms * s,
        "q3": t.p80_ms * s,
        "iqr": (t.p80_ms - t.p20_ms) * s,
        "outliers": "n/a",
        "ops": 1 / (t.mean_ms * s),
        "total": t.mean_ms * s * t.n,
        "iterations": 1,
    }


def _benchmark(case: CaseResult, device: str) -> dict[str, Any]:
    name = benchmark_name(case)
    return {
        "group": case.op,
        "name": name,
        "fullname": f"tokbench::{name}",
        "params": {"impl": case.impl, "dtype": case.dtype, **case.shape},
        "param": name[len(case.op) + 1 : -1],
        "extra_info": {
            "device": device,
            "timing_mode": case.timing.mode,
            "p20_ms": case.timing.p20_ms,
            "p80_ms": case.timing.p80_ms,
            "quantiles": "q1/q3/iqr hold tokbench's p20/p80/(p80-p20); quartiles not recorded",
            "tflops": case.tflops,
            "gbps": case.gbps,
            "peak_fraction": case.peak_fraction,
            "rel_error": case.rel_error,
        },
        "options": {"timer": f"tokbench {case.timing.mode}"},
        "stats": _stats(case),
    }


def to_pytest_benchmark(doc: ResultDoc) -> dict[str, Any]:
    """The document as a pytest-benchmark saved run; only comparable cases are included,
    since interpreted, failed and skipped cases have no speed figure."""
    cases = [c for c in doc.cases if c.comparable]
    if not cases:
        raise BenchError("nothing to export: no case passed and was timed on hardware")
    return {
        # Where it was measured, not the machine exporting it.
        "machine_info": {
            "device": doc.device.name,
            "device_kind": doc.device.kind,
            "python_version": doc.software.get("python", ""),
            "software": doc.software,
        },
        "commit_info": {"project": "tokbench", "command": doc.command, "suite": doc.suite},
        "benchmarks": [_benchmark(c, doc.device.name) for c in cases],
        "datetime": doc.created,
        "version": PYTEST_BENCHMARK_VERSION,
    }


def default_output(source: Path, fmt: ExportFormat) -> Path:
    """results/run.json -> results/run.pytest-benchmark.json"""
    return source.with_name(f"{source.stem}.{fmt.value}.json")


def export(
    source: Path, fmt: ExportFormat, out: Path | None = None, force: bool = False
) -> tuple[Path, int]:
    """Write source in fmt; returns the path written and how many cases it holds. Never writes
    over the source or any other tokbench result file, and over another file only when it is an
    earlier export or `force` says so."""
    data = to_pytest_benchmark(load_results(source))
    path = out or default_output(source, fmt)
    results.check_output(path, inputs=[source])
    owned.refuse_foreign(path, _is_export, "is not a tokbench export", "another --out", force)
    results.write_atomic(path, json.dumps(data, indent=1, allow_nan=False))
    return path, len(data["benchmarks"])


def _is_export(path: Path) -> bool:
    """Whether path holds what `export` writes (its commit_info names tokbench)."""
    try:
        data = results.read_json(path)
    except BenchError:
        return False
    info = data.get("commit_info") if isinstance(data, dict) else None
    return isinstance(info, dict) and info.get("project") == "tokbench"
