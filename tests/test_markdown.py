"""Markdown for CI pages: `compare --format markdown`, `run --summary-md`, and the escaping
that keeps what a file names as text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from console import invoke, tokbench
from resultdocs import H100, case, doc, write

from bench.present import markdown as md

BIG = (4096, 4096, 4096)


def test_a_cell_is_text_whatever_a_file_holds() -> None:
    assert md.cell("<script>a|b</script>") == "\\<script\\>a\\|b\\</script\\>"
    assert md.cell("*x* [y](z) `c` ~d~ &amp;") == "\\*x\\* \\[y\\](z) \\`c\\` \\~d\\~ \\&amp;"
    assert md.cell("two\nlines") == "two lines"
    table = md.table(["a", "b"], [[1, 2]], right=[False, True])
    assert table == "| a | b |\n|---|---:|\n| 1 | 2 |\n"


def test_compare_as_markdown_gates_as_in_a_terminal(capsys, tmp_path: Path) -> None:
    device = dataclasses.replace(H100, name="GPU | <b>")
    a = write(tmp_path, "a.json", doc(case(*BIG, 1.0), case(64, 64, 64, 0.01)))
    b = write(tmp_path, "b.json", doc(case(*BIG, 1.5), case(64, 64, 64, 0.01), device=device))
    done = invoke(capsys, "compare", str(a), str(b), "--fail-on", "slower:5%", "--format",
                  "markdown")  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"- **B**: {b}: GPU \\| \\<b\\> (H100 SXM), 2025-06-01, suite standard" in lines
    assert "| shape | dtype | impl | A time | A TFLOP/s | A % peak | B time | B TFLOP/s | " \
           "B % peak | B vs A |" in lines  # fmt: skip
    assert "| 4096×4096×4096 | bf16 | torch | 1.00 ms | 137 | 14% | 1.50 ms | 91.6 | 9% | " \
           "0.67× regressed |" in lines  # fmt: skip
    assert lines[-1] == "- gate slower:5%: failed (1 regression, 0 broken cases; 2 comparisons)"
    assert "[" not in done.stdout.replace("\\[", "")  # no console markup left


def test_run_appends_its_tables_to_a_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# CI\n")
    done = tokbench("run", "--op", "matmul", "--impl", "torch", "--dtype", "fp32", "--shape",
                    "M=8,N=8,K=8", "--no-ceilings", "--out", str(tmp_path / "r.json"),
                    "--summary-md", str(summary))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert text.startswith("# CI\n\n**") and "- **command**: tokbench run --op matmul" in text
    assert "| 8×8×8 | fp32 | torch |" in text


def test_a_summary_that_cannot_be_written_is_found_before_the_run(tmp_path: Path) -> None:
    done = tokbench("run", "--shape", "M=8,N=8,K=8", "--summary-md", str(tmp_path))
    assert done.returncode == 2 and "is a directory" in done.stderr
