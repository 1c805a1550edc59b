"""Charts: written as non-empty PNGs, one per kind, and a clear error without matplotlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from resultdocs import CPU, case, doc, estimate, timing, write
from typer.testing import CliRunner

from bench import BenchError
from bench.measure.ops import get_op
from bench.present import plots
from bench.present.cli import app
from bench.record.schema import CaseResult

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


# --- charts that fit their op ---------------------------------------------------------------------


def kv_write_doc():
    """KV-cache writes (no FLOPs, memory-bound) at three sizes, with a measured copy bandwidth."""
    op, cases = get_op("kv_write"), []
    for tokens in (16, 256, 4096):
        shape = {"tokens": tokens, "Hkv": 8, "D": 128, "page": 16, "fp8kv": False}
        nbytes = op.bytes(shape, "bf16")
        ms = nbytes / 2000e9 * 1e3  # 2 TB/s
        cases.append(
            CaseResult(
                op="kv_write", impl="triton", dtype="bf16", shape=shape, status="ok",
                flops=op.flops(shape), bytes=nbytes, rel_error=0.0, timing=timing(ms),
                tflops=0.0, gbps=2000.0,
            )
        )  # fmt: skip
    d = doc(*cases)
    d.measured_peaks["copy_gbs"] = 2500.0
    return d


def test_a_memory_bound_op_charts_gb_s_and_its_share_of_copy(tmp_path: Path) -> None:
    fig = plots.throughput_figure(kv_write_doc(), "kv_write")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "achieved GB/s" and "MB moved" in ax.get_xlabel()
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [2000.0]
    right = [a for a in ax.child_axes if "copy" in a.get_ylabel()]
    assert right and "2,500 GB/s" in right[0].get_ylabel()
    assert plots.roofline_figure(kv_write_doc()) is None  # no FLOPs: no place on a roofline
    names = [p.name for p in plots.write_plots([("run", kv_write_doc())], tmp_path)]
    assert names == ["run-kv-write-gbs.png"]


def test_every_line_has_its_own_style() -> None:
    twelve = doc(*[case(s, s, s, 0.01 * s / 256, impl=f"impl{i}") for i in range(12)
                   for s in (256, 1024)])  # fmt: skip
    lines = plots.throughput_figure(twelve, "matmul").axes[0].get_lines()
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(lines) == len(styles) == 12
    for n in (12, 41, 321, 8192):
        drawn = plots._styles(n)
        assert len({tuple(sorted(map(str, s.values()))) for s in drawn}) == n


@pytest.mark.parametrize("figure", ["roofline", "throughput"])
def test_the_legend_stays_outside_the_data(figure: str) -> None:
    d = h100_doc()
    fig = plots.roofline_figure(d) if figure == "roofline" else plots.throughput_figure(d, "matmul")
    fig.draw_without_rendering()
    (legend,) = fig.legends
    assert not legend.get_window_extent().overlaps(fig.axes[0].get_window_extent())
