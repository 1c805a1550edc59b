"""The results schema: round trip, atomic incremental writes, and loading with clear errors."""

import dataclasses
import json
import os
import re
import signal
from pathlib import Path

import pytest

from bench import BenchError
from bench.measure.ops import load_results
from bench.record.results import ResultWriter, load
from bench.record.schema import SCHEMA_VERSION, CaseResult, DeviceInfo, ResultDoc, Telemetry, Timing

FIXTURE = Path(__file__).parent / "fixtures" / "schema1-cpu.json"


def _doc() -> ResultDoc:
    timing = Timing(1.0, 0.9, 1.1, 0.8, 1.3, 1.02, 0.05, 40, "cuda-events")
    case = CaseResult(
        op="matmul",
        impl="triton",
        dtype="bf16",
        shape={"M": 64, "N": 32, "K": 16},
        status="ok",
        flops=65536.0,
        bytes=7168.0,
        rel_error=1e-3,
        tolerance=2e-2,
        timing=timing,
        tflops=6.5e-5,
        telemetry=Telemetry(1980, 2619, 350.5, 61, ["sw_power_cap"]),
    )
    failed = CaseResult(
        op="matmul",
        impl="torch",
        dtype="bf16",
        shape={"M": 64, "N": 32, "K": 16},
        status="failed",
        flops=65536.0,
        bytes=7168.0,
        error="output has NaN or Inf",
    )
    device = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 85_000_000_000, 132, "9.0", 52428800)
    return ResultDoc(device, {"torch": "2.11"}, "tokbench run", "standard", cases=[case, failed])


def _written(doc: ResultDoc, path: Path) -> None:
    """doc as a run writes it: case by case, then complete."""
    cases, doc.cases = doc.cases, []
    with ResultWriter(doc, path) as writer:
        for case in cases:
            writer.add(case)
        writer.finish()


def test_round_trip(tmp_path: Path) -> None:
    doc = _doc()
    path = tmp_path / "r.json"
    _written(doc, path)
    loaded = load(path)
    assert loaded == doc
    assert loaded.complete
    assert loaded.cases[0].telemetry.throttled
    assert isinstance(loaded.cases[0].timing, Timing)


def test_a_result_file_saved_with_a_bom_still_loads(tmp_path: Path) -> None:
    doc = _doc()
    path = tmp_path / "r.json"
    path.write_bytes(b"\xef\xbb\xbf" + doc.to_json().encode())
    assert load(path) == doc


def test_writer_keeps_every_case_on_disk(tmp_path: Path) -> None:
    doc = _doc()
    cases, doc.cases = doc.cases, []
    path = tmp_path / "r.json"
    with ResultWriter(doc, path) as writer:
        for i, case in enumerate(cases, 1):
            writer.add(case)
            on_disk = load(path)
            assert len(on_disk.cases) == i and not on_disk.complete
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary or lock file left


@pytest.mark.parametrize("when", ["before the rename", "after the rename", "disk full"])
def test_what_the_writer_counts_is_what_the_file_holds(tmp_path: Path, monkeypatch, when) -> None:
    """Ctrl-C or a full disk while the third case is written: the count the run reports (and
    the document it returns) match the file, whichever side of the rename the stop lands."""
    from bench.record import results

    real, calls = results.write_atomic, []

    def third_stops(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == 3 and when == "disk full":
            raise BenchError(f"cannot write {path}: No space left on device")
        if len(calls) == 3 and when == "before the rename":
            os.kill(os.getpid(), signal.SIGINT)
        real(path, text)
        if len(calls) == 3 and when == "after the rename":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(results, "write_atomic", third_stops)
    doc = _doc()
    doc.cases = [doc.cases[0]] * 4
    cases, doc.cases = doc.cases, []
    path = tmp_path / "r.json"
    with pytest.raises((KeyboardInterrupt, BenchError)), ResultWriter(doc, path) as writer:
        for case in cases:
            writer.add(case)
    assert writer.measured == len(load(path).cases) == len(writer.doc.cases)


def test_appending_to_an_unfinished_file_leaves_it_unfinished(tmp_path: Path) -> None:
    """A killed run's file stays incomplete after --append: complete means every run that
    wrote it finished."""
    doc = _doc()
    cases, doc.cases = doc.cases, []
    path = tmp_path / "r.json"
    with ResultWriter(doc, path) as writer:
        writer.add(cases[0])  # killed here: never finished
    with ResultWriter(dataclasses.replace(doc, cases=[]), path, "append") as writer:
        writer.add(cases[1])
        writer.finish()
    assert len(load(path).cases) == 2 and not load(path).complete
    with ResultWriter(dataclasses.replace(doc, cases=[]), path, "replace") as writer:
        writer.add(cases[1])
        writer.finish()
    with ResultWriter(dataclasses.replace(doc, cases=[]), path, "append") as writer:
        writer.add(cases[0])
        writer.finish()
    assert len(load(path).cases) == 2 and load(path).complete


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ('{"format": "tokbench.results", "schema_version": 1, "cas', "may be truncated"),
        ('{"format": "tokbench.results", "schema_version": 99}', "schema version 99"),
        ('{"name": "a package.json"}', "not a tokbench result file"),
        ("[1, 2, 3]", "not a tokbench result file"),
    ],
)
def test_loader_rejects_with_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        load(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["cases"][1].update(flops="many"), "cases[1].flops"),
        (lambda d: d["cases"][0]["timing"].pop("median_ms"), "cases[0].timing.median_ms"),
        (lambda d: d["device"].update(cores=True), "device.cores"),
        (lambda d: d["cases"][0]["shape"].update(M=[1]), "cases[0].shape.M"),
        (lambda d: d["cases"][0]["timing"].update(median_ms=-1.0), "cases[0].timing.median_ms"),
        (lambda d: d["cases"][0]["timing"].update(p80_ms=float("nan")), "cases[0].timing.p80_ms"),
    ],
)
def test_loader_names_the_wrong_field(tmp_path: Path, edit, field: str) -> None:
    data = json.loads(_doc().to_json())
    edit(data)
    with pytest.raises(BenchError, match=re.escape(f"field '{field}'")):
        load(_write(tmp_path, json.dumps(data)))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["cases"][1]["shape"].pop("K"), "cases[1].shape"),
        (lambda d: d["cases"][0]["shape"].update(M=0), "cases[0].shape"),
    ],
)
def test_a_known_op_with_a_shape_it_does_not_take_is_named(tmp_path: Path, edit, field) -> None:
    data = json.loads(_doc().to_json())
    edit(data)
    path = _write(tmp_path, json.dumps(data))
    load(path)  # the file itself is well formed: the loader knows no op
    with pytest.raises(BenchError, match=re.escape(f"field '{field}' is wrong: matmul shape")):
        load_results(path)


def test_an_op_this_version_does_not_know_is_kept(tmp_path: Path) -> None:
    data = json.loads(_doc().to_json())
    data["cases"][0].update(op="conv2d", shape={"N": 1, "C": 64, "kernel": 3, "layout": "nhwc"})
    doc = load_results(_write(tmp_path, json.dumps(data)))
    assert doc.cases[0].op == "conv2d" and doc.cases[0].shape["layout"] == "nhwc"


def test_a_schema_1_file_written_by_tokbench_0_1_stays_readable() -> None:
    """The fixture was written by `tokbench run --model tiny` and `estimate` at d29d9bd."""
    assert json.loads(FIXTURE.read_text())["schema_version"] == 1
    doc = load_results(FIXTURE)  # migrated: a run of one rank
    assert doc.schema_version == SCHEMA_VERSION == 2 and doc.complete and doc.device.kind == "cpu"
    assert [(r.rank, r.device) for r in doc.ranks] == [(0, doc.device)]
    assert {c.rank for c in doc.cases} == {0}
    assert {c.op for c in doc.cases} == {"matmul", "attention", "decode"}
    assert {c.status for c in doc.cases} >= {"ok"} and all(c.flops > 0 for c in doc.cases)
    (estimate,) = doc.estimates
    assert estimate.model == "tiny" and estimate.rows[-1].phase == "serving"


def test_result_files_are_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    _written(_doc(), path)
    assert path.stat().st_mode & 0o044 == 0o044  # group and others may read (umask 022)


def test_an_unwritable_result_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="cannot lock"):
        _written(_doc(), blocker / "r.json")
