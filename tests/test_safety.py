"""No result lost, no traceback: what tokbench does with existing files, concurrent writers,
hostile input and interruptions."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from console import COMMAND, ENV, invoke, tokbench
from resultdocs import case, doc, estimate, timing, write, write_json

from bench import BenchError
from bench.measure.suites import parse_shape
from bench.present import plots
from bench.record.results import FileLock, ResultWriter, load, write_atomic
from bench.record.schema import ResultDoc

FIXTURE = Path(__file__).parent / "fixtures" / "schema1-cpu.json"
TINY = ("--model", "tiny", "--precision", "fp32", "--isl", "32", "--osl", "16")
SMALL_RUN = ("run", "--impl", "torch", "--dtype", "fp32", "--shape", "M=8,N=8,K=8", "--no-ceilings")


def one_line(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2, one line on stderr holding every word, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# --- a run never destroys a file it did not write ---------------------------------------------


def test_run_refuses_an_existing_file_and_leaves_it_alone(tmp_path: Path) -> None:
    kept = write(tmp_path, "baseline.json", doc(case(64, 64, 64, 1.0)))
    before = kept.read_bytes()
    done = tokbench(*SMALL_RUN, "--out", str(kept))
    one_line(done, "exists", "--append", "--force")
    assert kept.read_bytes() == before


def test_an_early_error_with_force_keeps_the_old_file(tmp_path: Path) -> None:
    """--force replaces the file from the first case on: a run that measures nothing (a shape
    too big for memory) leaves it as it was."""
    kept = write(tmp_path, "baseline.json", doc(case(64, 64, 64, 1.0)))
    before = kept.read_bytes()
    done = tokbench(*SMALL_RUN[:-3], "--shape", "M=200000,N=200000,K=200000", "--no-ceilings",
                    "--force", "--out", str(kept))  # fmt: skip
    one_line(done, "GiB", "no case measured", "not written")
    assert kept.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]


def test_append_adds_the_cases_and_force_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    assert tokbench(*SMALL_RUN, "--out", str(path)).returncode == 0
    done = tokbench(*SMALL_RUN[:-3], "--shape", "M=16,N=8,K=8", "--no-ceilings", "--append",
                    "--out", str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    appended = load(path)
    assert [c.shape["M"] for c in appended.cases] == [8, 16] and appended.complete
    assert any(n.startswith("appended by `tokbench run") for n in appended.notes)
    assert tokbench(*SMALL_RUN, "--force", "--out", str(path)).returncode == 0
    assert [c.shape["M"] for c in load(path).cases] == [8]


def test_append_refuses_a_file_from_another_device(tmp_path: Path) -> None:
    other = write(tmp_path, "h100.json", doc(case(64, 64, 64, 1.0)))
    one_line(tokbench(*SMALL_RUN, "--append", "--out", str(other)), "was measured on NVIDIA H100")


def test_a_run_that_measures_nothing_writes_no_file(tmp_path: Path) -> None:
    doc_ = ResultDoc(dataclasses.replace(doc().device), {}, "test", "smoke")
    path = tmp_path / "results" / "r.json"
    with ResultWriter(doc_, path) as writer:
        writer.finish()
    assert not path.exists() and not list((tmp_path / "results").iterdir())


# --- one writer at a time -----------------------------------------------------------------------


def test_a_second_writer_is_refused_and_told_who_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    with FileLock(path):
        done = tokbench(*SMALL_RUN, "--out", str(path))
    one_line(done, f"{path} is being written by another tokbench (pid {os.getpid()}")
    assert not path.exists()
    assert tokbench(*SMALL_RUN, "--out", str(path)).returncode == 0  # released: free again
    assert not (tmp_path / ".r.json.lock").exists()


def test_an_estimate_is_not_saved_into_a_file_being_written(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.json"
    path.write_bytes(FIXTURE.read_bytes())
    with FileLock(path):
        done = invoke(capsys, "estimate", *TINY, "--results", str(path))
    one_line(done, "is being written by another tokbench")
    assert "serving mix" in done.stdout  # printed before the save was tried
    assert len(load(path).estimates) == 1  # the fixture's own


def test_taking_the_lock_sweeps_what_a_killed_writer_left(tmp_path: Path) -> None:
    path = write(tmp_path, "r.json", doc(case(64, 64, 64, 1.0)))
    stale = tmp_path / ".r.json.x1y2z3.tmp"
    stale.write_text('{"format": "tokbench.res')
    other = tmp_path / ".other.json.abc.tmp"
    other.write_text("")
    with FileLock(path):
        pass
    assert not stale.exists() and other.exists()


# --- other writes ---------------------------------------------------------------------------------


def test_export_never_writes_over_a_result(tmp_path: Path, capsys) -> None:
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    b = write(tmp_path, "b.json", doc(case(64, 64, 64, 1.0)))
    before = a.read_bytes(), b.read_bytes()
    one_line(invoke(capsys, "export", str(a), "--out", str(a)), "is an input of this command")
    one_line(invoke(capsys, "export", str(a), "--out", str(b)), "is a tokbench result file")
    one_line(invoke(capsys, "export", str(a), "--out", str(tmp_path)), "is a directory")
    assert (a.read_bytes(), b.read_bytes()) == before
    assert invoke(capsys, "export", str(a)).returncode == 0
    assert invoke(capsys, "export", str(a)).returncode == 0  # an earlier export is replaced
    exported = tmp_path / "a.pytest-benchmark.json"
    exported.chmod(0o444)
    one_line(invoke(capsys, "export", str(a)), "is read-only")


def test_plot_and_export_never_replace_what_tokbench_did_not_write(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Charts of files whose names differ only where a chart name cannot (a.json, A.json) stay
    apart; a file plot or export did not write is replaced only with --force."""
    monkeypatch.setattr(plots, "throughput", lambda *_: None)  # rooflines suffice (and are slow)
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    big_a = write(tmp_path, "A.json", doc(case(64, 64, 64, 2.0)))
    charts = tmp_path / "charts"
    assert invoke(capsys, "plot", str(a), str(big_a), "--out", str(charts)).returncode == 0
    assert len(list(charts.glob("*roofline*.png"))) == 2
    mine = charts / "a-roofline.png"
    assert plots._drawn_by_tokbench(mine)  # a later plot replaces it
    mine.write_text("my notes")
    one_line(invoke(capsys, "plot", str(a), "--out", str(charts)), str(mine), "--force")
    assert mine.read_text() == "my notes"
    assert invoke(capsys, "plot", str(a), "--out", str(charts), "--force").returncode == 0
    notes = tmp_path / "x.csv"
    notes.write_text("my notes")
    one_line(invoke(capsys, "export", str(a), "--out", str(notes)), "not a tokbench export")
    assert notes.read_text() == "my notes"
    assert invoke(capsys, "export", str(a), "--out", str(notes), "--force").returncode == 0
    assert invoke(capsys, "export", str(big_a), "--out", str(notes)).returncode == 0  # its own


def test_report_replaces_only_its_own_pages(tmp_path: Path, capsys) -> None:
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    for name in ("mine.html", "notes.txt"):
        mine = tmp_path / name
        mine.write_text("my notes")
        refused = invoke(capsys, "report", str(a), "--out", str(mine))
        one_line(refused, str(mine), "not a tokbench report", "another --out", "--force")
        assert mine.read_text() == "my notes"
        assert invoke(capsys, "report", str(a), "--out", str(mine), "--force").returncode == 0
        assert "<!DOCTYPE html>" in mine.read_text()
        assert invoke(capsys, "report", str(a), "--out", str(mine)).returncode == 0  # its own
    one_line(invoke(capsys, "report", str(a), "--out", str(a), "--force"), "an input")


@pytest.mark.parametrize(
    "command",
    [("step", "--model", "tiny", "--gpu", "h100-sxm"),
     ("simulate", "--model", "tiny", "--gpu", "h100-sxm", "--concurrency", "1",
      "--requests", "50")],
    ids=lambda command: command[0],
)  # fmt: skip
def test_step_and_simulate_plots_never_replace_what_tokbench_did_not_draw(
    command: tuple[str, ...], tmp_path: Path, capsys
) -> None:
    """As `plot`: a --plot file tokbench did not draw is refused before any work and kept,
    replaced with --force; a chart tokbench drew is replaced."""
    pytest.importorskip("matplotlib")
    chart = tmp_path / "keep.png"
    chart.write_text("notpng")
    refused = invoke(capsys, *command, "--plot", str(chart))
    one_line(refused, str(chart), "not drawn by tokbench", "another --plot file", "--force")
    assert chart.read_text() == "notpng" and refused.stdout == ""
    assert invoke(capsys, *command, "--plot", str(chart), "--force").returncode == 0
    assert plots._drawn_by_tokbench(chart)
    assert invoke(capsys, *command, "--plot", str(chart)).returncode == 0


def test_compare_plot_refusal_names_the_flags_compare_has(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(plots, "throughput", lambda *_: None)  # rooflines suffice
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    b = write(tmp_path, "b.json", doc(case(64, 64, 64, 2.0)))
    charts = tmp_path / "charts"
    charts.mkdir()
    mine = charts / "a-roofline.png"
    mine.write_text("my notes")
    refused = invoke(capsys, "compare", str(a), str(b), "--plot", str(charts))
    one_line(refused, str(mine), "another --plot directory", "--force")
    assert "--out" not in refused.stderr and mine.read_text() == "my notes"
    forced = invoke(capsys, "compare", str(a), str(b), "--plot", str(charts), "--force")
    assert forced.returncode == 0, forced.stderr
    assert plots._drawn_by_tokbench(mine)


def test_writes_into_places_that_cannot_take_them_are_one_line(tmp_path: Path, capsys) -> None:
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    one_line(invoke(capsys, "export", str(a), "--out", str(blocker / "x.json")), "cannot write")
    one_line(invoke(capsys, "plot", str(a), "--out", str(blocker)), "is a file")
    one_line(invoke(capsys, "plot", str(a), "--out", str(blocker / "sub")), "cannot write")
    one_line(invoke(capsys, "compare", str(a), str(a), "--plot", str(blocker)), "is a file")
    one_line(tokbench(*SMALL_RUN, "--out", str(blocker / "r.json")), "cannot lock")
    one_line(tokbench(*SMALL_RUN, "--out", str(tmp_path)), "is a directory")


def test_a_read_only_result_file_is_not_replaced(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.json"
    path.write_bytes(FIXTURE.read_bytes())
    path.chmod(0o444)
    done = invoke(capsys, "estimate", *TINY, "--results", str(path))
    one_line(done, "is read-only")
    assert "serving mix" in done.stdout
    one_line(tokbench(*SMALL_RUN, "--force", "--out", str(path)), "is read-only")
    assert path.read_bytes() == FIXTURE.read_bytes()


# --- hostile input: one line, never a traceback -------------------------------------------------


def _hostile_files(directory: Path) -> dict[str, Path]:
    files = {}
    deep = directory / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    files["nested too deeply"] = deep
    latin = directory / "latin1.json"
    latin.write_bytes(b'{"format": "tokbench.results", "name": "caf\xe9"}')
    files["not UTF-8"] = latin
    digits = directory / "digits.json"
    digits.write_text('{"format": "tokbench.results", "schema_version": ' + "9" * 5000 + "}")
    files["not a tokbench result"] = digits
    huge = directory / "huge.json"
    with huge.open("wb") as f:  # sparse: no disk space used
        f.truncate(300 * 2**20)
    files["tokbench reads up to 256 MiB"] = huge
    return files


def test_the_loader_names_what_is_wrong_with_hostile_files(tmp_path: Path, capsys) -> None:
    good = write(tmp_path, "good.json", doc(case(64, 64, 64, 1.0)))
    for words, path in _hostile_files(tmp_path).items():
        with pytest.raises(BenchError, match=words):
            load(path)
        one_line(invoke(capsys, "compare", str(good), str(path)), words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("M=--5,N=1,K=1", "M=--5 is neither an integer"),
        ("M=²,N=1,K=1", "M=² is neither an integer"),
        (f"M={'9' * 5000},N=1,K=1", "M=99999999999999999... is neither an integer"),
        ("M=8,M=16,N=1,K=1", "M is given twice"),
        ("M=1e3,N=1,K=1", "M=1e3 is neither"),
    ],
)
def test_bad_shapes_are_one_clear_line(text: str, words: str) -> None:
    with pytest.raises(BenchError, match=words) as raised:
        parse_shape(text)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    "flags",
    [
        ("--tokens-per-gpu", "nan"),
        ("--tokens-per-gpu", "inf"),
        ("--tokens-per-gpu", "2000", "--price", "nan"),
        ("--tokens-per-gpu", "2000", "--price", "-inf"),
        ("--tokens-per-gpu", "2000", "--utilization", "inf"),
        ("--tokens-per-gpu", "2000", "--target-tokens-s", "inf"),
        ("--tokens-per-gpu", "2000", "--target-tokens-day", "nan"),
        ("--tokens-per-gpu", "2000", "--claim-tokens-s", "-1"),
        ("--tokens-per-gpu", "2000", "--workspace", "nan"),
        ("--tokens-per-gpu", "2000", "--gpus", "abc"),
        ("--tokens-per-gpu", "2000", "--bogus"),
    ],
)
def test_capacity_numbers_must_be_finite_and_in_range(capsys, flags: tuple[str, ...]) -> None:
    args = [
        "capacity",
        "--model",
        "llama-3.1-8b",
        *(["--gpus", "8"] if "--gpus" not in flags else []),
    ]
    done = invoke(capsys, *args, *flags)
    one_line(done, flags[-2] if flags[-2].startswith("--") else flags[-1])
    assert "╭" not in done.stderr  # no boxed usage panel


def test_an_error_message_with_brackets_is_printed_as_it_is(tmp_path: Path, capsys) -> None:
    """Messages quote file names and library errors, which may hold what looks like markup."""
    odd = tmp_path / "[bold]r.json"  # rich would take [bold] for a style and drop it
    odd.write_text("{")
    one_line(invoke(capsys, "export", str(odd)), f"{odd}: not valid JSON")


def test_usage_errors_of_every_command_are_one_line(capsys) -> None:
    one_line(invoke(capsys, "compare"), "Missing argument")
    one_line(invoke(capsys, "estimate", "--model", "tiny", "--tp", "two"), "--tp")
    one_line(invoke(capsys, "nonsense"), "No such command")


def test_ctrl_c_while_torch_imports_exits_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*COMMAND, *SMALL_RUN, "--out", str(tmp_path / "r.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(0.5)  # the command is importing torch (about 3 s here)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()


# --- strict result files -----------------------------------------------------------------------


def _set(path: str, value):
    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("cases.0.timing.median_ms", 1e11), "cases[0].timing"),  # far above its p80
        (_set("cases.0.timing.min_ms", 5.0), "cases[0].timing"),
        (_set("cases.0.timing.max_ms", 0.5), "cases[0].timing"),
        (_set("cases.0.timing.n", 0), "cases[0].timing.n"),
        (_set("cases.0.timing.mode", "stopwatch"), "cases[0].timing.mode"),
        (_set("cases.0.status", "great"), "cases[0].status"),
        (_set("cases.0.dtype", "int3"), "cases[0].dtype"),
        (_set("cases.0.flops", -1.0), "cases[0].flops"),
        (_set("cases.0.bytes", 1e400), "cases[0].bytes"),  # infinity as JSON writes it
        (_set("device.memory_bytes", -80), "device.memory_bytes"),
        (_set("estimates.0.decode_tokens_per_s", 0.0), "estimates[0].decode_tokens_per_s"),
        (_set("cases.0.status", "failed"), "cases[0].timing"),  # a failed case is never timed
    ],
)
def test_a_file_whose_numbers_contradict_themselves_is_refused(tmp_path, edit, field) -> None:
    bad = write_json(tmp_path, "bad.json", doc(case(64, 64, 64, 1.0), estimates=(estimate(
        "H100 SXM", "h100-sxm", 7000.0),)), edit)  # fmt: skip
    with pytest.raises(BenchError, match=re.escape(f"field '{field}'")):
        load(bad)


def test_the_gate_never_passes_a_case_whose_statistics_contradict_themselves(
    tmp_path: Path, capsys
) -> None:
    a = write(tmp_path, "a.json", doc(case(64, 64, 64, 1.0)))
    slow = doc(case(64, 64, 64, 1.0))
    slow.cases[0].timing = dataclasses.replace(timing(1.0), median_ms=1e11)
    b = tmp_path / "b.json"
    b.write_text(json.dumps(dataclasses.asdict(slow)))
    done = invoke(capsys, "compare", str(a), str(b), "--fail-on", "slower:5%")
    one_line(done, "b.json", "min <= p20 <= median <= p80 <= max")


def test_write_atomic_errors_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="cannot write"):
        write_atomic(blocker / "r.json", "{}")
