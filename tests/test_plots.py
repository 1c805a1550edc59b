"""Charts: written as non-empty PNGs, one per kind, and a clear error without matplotlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from resultdocs import CPU, case, doc, estimate, write
from typer.testing import CliRunner

from bench import BenchError
from bench.present import plots
from bench.present.cli import app

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def h100_doc():
    cases = [case(s, s, s, 2 * s**3 / 500e9) for s in (256, 1024, 4096)]  # 500 TFLOP/s
    cases += [case(s, s, s, 2 * s**3 / 700e9, impl="triton") for s in (256, 1024, 4096)]
    cases += [case(1, 4096, 4096, 0.012), case(64, 64, 64, 9.0, impl="triton", interpreted=True)]
    return doc(*cases, estimates=(estimate("H100 SXM", "h100-sxm", 7000.0),))


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_every_chart_is_written(tmp_path: Path) -> None:
    b200 = doc(estimates=(estimate("B200", "b200", 16000.0, projected=True),))
    written = plots.write_plots([("h100-run", h100_doc()), ("b200-run", b200)], tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "h100-run-matmul-tflops.png",
        "h100-run-roofline.png",
        "tokens-llama-3-1-8b-1-bf16-1024-256.png",
    ]
    assert all(is_png(p) for p in written)


def test_a_cpu_run_has_a_roofline_without_roofs(tmp_path: Path) -> None:
    cpu = doc(case(64, 64, 64, 0.05, spec=None), device=CPU, spec=None)
    path = plots.roofline(cpu, tmp_path / "cpu.png")
    assert path is not None and is_png(path)


def test_interpreted_only_runs_draw_nothing(tmp_path: Path) -> None:
    interp = doc(case(64, 64, 64, 9.0, impl="triton", interpreted=True))
    assert plots.write_plots([("interp", interp)], tmp_path) == []


def test_plot_command_and_compare_plot_option(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", h100_doc())
    runner = CliRunner()
    done = runner.invoke(app, ["plot", str(a), "--out", str(tmp_path / "p")])
    assert done.exit_code == 0, done.output
    assert is_png(tmp_path / "p" / "a-roofline.png")
    b = write(tmp_path, "b.json", h100_doc())
    done = runner.invoke(app, ["compare", str(a), str(b), "--plot", str(tmp_path / "c")])
    assert done.exit_code == 0, done.output
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"a-roofline.png", "b-roofline.png"}


def test_missing_matplotlib_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(BenchError, match=r"pip install 'tokbench\[plot\]'"):
        plots.write_plots([("a", h100_doc())], tmp_path)


def test_matplotlib_stays_optional() -> None:
    """No bench module imports matplotlib at module level, so the CLI runs without it."""
    for source in Path(plots.__file__).parent.glob("*.py"):
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [getattr(node, "module", None) or ""] + [a.name for a in node.names]
                assert not any(n.startswith("matplotlib") for n in names), source.name
