"""`tokbench export --format pytest-benchmark`, read back by pytest-benchmark's own compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from resultdocs import case, doc, write
from typer.testing import CliRunner

from bench import BenchError
from bench.present.cli import app
from bench.present.export import ExportFormat, export, to_pytest_benchmark


def pytest_benchmark_cli() -> str:
    """The management command: `pytest-benchmark` (3.4+) or `py.test-benchmark` (older)."""
    for name in ("pytest-benchmark", "py.test-benchmark"):
        path = Path(sys.executable).parent / name
        if path.exists():
            return str(path)
    pytest.skip("pytest-benchmark's command is not installed")


def run_doc(ms: float):
    return doc(
        case(1024, 1024, 1024, ms),
        case(1, 4096, 4096, 0.012, impl="triton"),
        case(64, 64, 64, 9.0, impl="triton", interpreted=True),  # not a speed figure
        case(64, 64, 64, None, status="failed"),
    )


def test_stats_are_in_seconds_and_only_comparable_cases_go_out() -> None:
    data = to_pytest_benchmark(run_doc(0.5))
    assert [b["name"] for b in data["benchmarks"]] == [
        "matmul[torch-bf16-1024×1024×1024]",
        "matmul[triton-bf16-1×4096×4096]",
    ]
    first = data["benchmarks"][0]
    assert first["group"] == "matmul" and first["params"]["M"] == 1024
    stats = first["stats"]
    assert stats["median"] == pytest.approx(0.5e-3)
    assert stats["ops"] == pytest.approx(1 / 0.5e-3)
    assert stats["rounds"] == 100 and stats["iterations"] == 1
    # q1/q3 carry p20/p80, and extra_info says so.
    assert stats["q1"] == pytest.approx(0.495e-3) and stats["q3"] == pytest.approx(0.505e-3)
    assert "p20/p80" in first["extra_info"]["quantiles"]


def test_pytest_benchmark_compare_reads_the_export(tmp_path: Path) -> None:
    a, _ = export(write(tmp_path, "a.json", run_doc(0.5)), ExportFormat.pytest_benchmark)
    b, _ = export(write(tmp_path, "b.json", run_doc(0.6)), ExportFormat.pytest_benchmark)
    assert a.name == "a.pytest-benchmark.json"
    done = subprocess.run(
        [pytest_benchmark_cli(), "compare", str(a), str(b), "--columns", "min,median,max"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # its compare imports ./conftest.py when there is one
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if "torch-bf16-1024×1024×1024" in line]
    # One row per file, each with its median in µs as pytest-benchmark scales it.
    assert len(rows) == 2
    assert "/a.pytest-ben" in rows[0] and "500.0000" in rows[0]
    assert "/b.pytest-ben" in rows[1] and "600.0000" in rows[1]


def test_export_command(tmp_path: Path) -> None:
    source = write(tmp_path, "run.json", run_doc(0.5))
    out = tmp_path / "out" / "0001_run.json"
    done = CliRunner().invoke(app, ["export", str(source), "--format", "pytest-benchmark",
                                    "--out", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert len(json.loads(out.read_text())["benchmarks"]) == 2
    assert CliRunner().invoke(app, ["export", str(source), "--format", "csv"]).exit_code == 2


def test_nothing_comparable_is_a_clear_error(tmp_path: Path) -> None:
    interp = write(tmp_path, "i.json", doc(case(8, 8, 8, 1.0, impl="triton", interpreted=True)))
    with pytest.raises(BenchError, match="nothing to export"):
        export(interp, ExportFormat.pytest_benchmark)
