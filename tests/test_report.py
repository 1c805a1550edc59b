"""`tokbench report`: what the page holds, read without a browser (tests/test_report_browser.py
opens it in one): sections per kind of file, escaping, the vendored scripts, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from console import invoke
from reportdocs import CPU_RUN, IMAGE, PLANNING, PLANS, SCRIPT, loaded, two_runs
from resultdocs import case, doc, write

from bench import BenchError
from bench.present.names import short_names
from bench.present.report import build, page, planning
from bench.present.report import write as write_report
from bench.present.report.inputs import Fields, read_inputs
from bench.present.report.page import render

VENDOR = Path(page.__file__).parent / "vendor"


def charts_of(html: str) -> list[dict]:
    found = re.search(r'<script type="application/json" id="tokbench-charts">(.*?)</script>', html)
    return json.loads(found.group(1))


def test_the_vendored_scripts_are_the_versions_named_and_cannot_end_their_element() -> None:
    for name, package in page.VENDOR.items():
        text = (VENDOR / name).read_text()
        assert package.split()[1] in text, name
        assert "</script" not in text.lower() and "<!--" not in text, name
    assert "BSD-3-Clause" in (VENDOR / "LICENSES.txt").read_text()


def test_a_report_of_a_cpu_run_holds_its_provenance_tables_and_charts(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    write_report([CPU_RUN], out)
    html = out.read_text()
    assert "AMD EPYC" in html and "git_commit d29d9bd" in html and "434 ms*" in html
    charts = charts_of(html)
    titles = [c["spec"]["title"] for c in charts]
    roofline = "Roofline: schema1-cpu, AMD EPYC, 2026-11-30 (no spec-table entry: the measured"
    assert any(t.startswith(roofline) for t in titles)
    assert any(t.startswith("matmul: TFLOP/s against size") for t in titles)
    assert any(t.startswith("decode: GB/s against size") for t in titles)  # memory-bound
    assert "http" not in html.replace("http://www.w3.org", "")[:3000]  # nothing fetched


def test_two_files_of_the_same_name_are_compared_by_their_folders(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path)
    sections = [s.title for s in build([a, b], project=["b200"]).sections]
    assert sections[0] == "Comparison: a/run vs b/run"
    assert sections[-2:] == [
        "Run a/run: NVIDIA H100 80GB HBM3 (H100 SXM), 2025-06-01",
        f"Run b/run: {SCRIPT} (H100 SXM), 2025-07-01",
    ]


def test_everything_taken_from_a_file_is_text_in_the_page(tmp_path: Path) -> None:
    a, b = two_runs(tmp_path)
    html = render(build([a, b]))
    assert SCRIPT not in html and IMAGE not in html
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html
    # In the charts' JSON too: it cannot close the script element it travels in.
    assert "\\u003cimg src=" in html


def test_files_with_nothing_in_common_still_make_a_report(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 0.01)))
    b = write(tmp_path, "b.json", doc(case(128, 128, 128, 0.02)))
    comparison = build([a, b]).sections[0]
    [why] = comparison.blocks[0].items
    assert (
        why == f"{b} shares no case (op, implementation, shape, dtype) with {a}; nothing to compare"
    )


def test_a_capacity_plan_with_what_it_rests_on() -> None:
    report = build(list(PLANS.values()))
    titles = [s.title for s in report.sections]
    assert titles[:2] == ["Capacity plan capacity: 300,000 × H200 SXM, Llama-3.1-70B",
                          "Throughput–interactivity frontier"]  # fmt: skip
    frontier = report.sections[1].blocks[0].spec
    steady, simulated = (layer["data"]["values"] for layer in frontier["layer"])
    decode = [r for r in loaded(PLANS["estimate"])["rows"] if r["phase"] == "decode"]
    assert [p["per_gpu"] for p in steady] == [r["tokens_per_s"] for r in decode]
    assert [p["per_user"] for p in steady] == [1e3 / r["step_ms"] for r in decode]
    assert len(simulated) == 2
    capacity = loaded(PLANS["capacity"])
    tables = {b.table.title: b.table for b in report.sections[0].blocks if b.kind == "table"}
    answer = dict(tables["the answer"].rows)
    assert answer["output tokens/s per GPU"] == f"{capacity['per_gpu_output_tokens_s']:,.0f}"
    assert tables["parts"].headers[:3] == ["gpu", "gpus", "tp"]  # a list of objects: a table
    assumptions = dict(tables["its assumptions"].rows)
    assert assumptions["deal, USD"] == "$38.00 B" and assumptions["deal term, years"] == "7"


def test_the_report_reads_what_the_planning_commands_print_today(tmp_path: Path) -> None:
    """Each fixture's command, run now: its JSON is still of the kind the report knows, with
    the fields the report reads (an adapter in bench.present.report.planning)."""
    from typer.testing import CliRunner

    from bench.present.cli import app

    paths = []
    for name, args in PLANNING.items():
        done = CliRunner().invoke(app, [*args, "--json"])
        assert done.exit_code == 0, (args, done.output[-2000:])
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(done.stdout)
    kinds = [s.title.split()[0] for s in build(paths).sections]
    assert kinds[:6] == ["Capacity", "Throughput–interactivity", "Estimate", "Simulation",
                         "Simulation", "Layer"]  # fmt: skip


def test_a_field_the_report_does_not_know_is_shown_as_it_is(tmp_path: Path) -> None:
    grown = loaded(PLANS["simulate"]) | {"frontier_points": [1, 2], "new_rate": 0.123456}
    path = tmp_path / "grown.json"
    path.write_text(json.dumps(grown))
    [item] = read_inputs([path], {k: kind.keys for k, kind in planning.KINDS.items()})
    rows = dict(planning.simulation_section(item).blocks[0].table.rows)
    assert rows["frontier_points"] == "[1, 2]" and rows["new_rate"] == "0.1235"


def test_a_mistyped_field_is_one_line_naming_it(tmp_path: Path) -> None:
    data = loaded(PLANS["estimate"])
    data["rows"][2]["step_ms"] = "fast"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"bad.json: field 'rows\[2\].step_ms' must be a number"):
        render(build([path]))
    with pytest.raises(BenchError, match="must be a number, got bool"):
        Fields({"x": True}, "f.json").number("x")


def test_bad_input_is_one_line(capsys, tmp_path: Path) -> None:
    other = tmp_path / "package.json"
    other.write_text('{"name": "a package"}')
    done = invoke(capsys, "report", str(other), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2
    assert "neither a tokbench result file nor what `estimate --json`" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = invoke(capsys, "report", str(CPU_RUN), "--out", str(CPU_RUN))
    assert done.returncode == 2 and "an input of this command" in done.stderr
    done = invoke(capsys, "report", str(CPU_RUN), "--project", "h900", "--out", "x.html")
    assert done.returncode == 2 and "h900" in done.stderr


def test_short_names_tell_files_apart_by_as_few_folders_as_it_takes() -> None:
    assert short_names([Path("a.json"), Path("b.json")]) == ["a", "b"]
    runs = [Path("x/h100/run.json"), Path("y/b200/run.json")]
    assert short_names(runs) == ["h100/run", "b200/run"]
    assert short_names([Path("run.json"), Path("run.json")]) == ["run (1)", "run (2)"]


def test_plots_of_files_of_the_same_name_do_not_overwrite(capsys, tmp_path: Path) -> None:
    a, b = two_runs(tmp_path)
    done = invoke(capsys, "plot", str(a), str(b), "--out", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    charts = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"a-run-roofline.png", "b-run-roofline.png"} <= charts
