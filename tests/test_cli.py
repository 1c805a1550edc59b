"""`tokbench info` and `tokbench run` end to end through the console script."""

import json
from pathlib import Path

import pytest
from console import tokbench

from bench.results import load


def test_info_shows_the_device_and_versions() -> None:
    done = tokbench("info")
    assert done.returncode == 0, done.stderr
    for word in ("device", "memory", "torch", "triton", "tokbench"):
        assert word in done.stdout
    as_json = json.loads(tokbench("info", "--json").stdout)
    assert as_json["device"]["kind"] in ("cpu", "cuda")
    assert "torch" in as_json["software"]


def test_run_writes_a_result_file_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = tokbench("run", "--op", "matmul", "--dtype", "fp16", "--shape", "M=17,N=33,K=9",
                    "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "17×33×9" in done.stdout and "triton" in done.stdout
    doc = load(out)
    assert doc.complete and doc.command.startswith("tokbench run")
    assert {c.impl for c in doc.cases} == {"triton", "torch"}
    assert all(c.status == "ok" for c in doc.cases)


def test_run_json_prints_the_document(tmp_path: Path) -> None:
    done = tokbench("run", "--op", "matmul", "--impl", "torch", "--dtype", "fp32", "--shape",
                    "M=8,N=8,K=8", "--out", str(tmp_path / "r.json"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cases"][0]["status"] == "ok"


def test_run_writes_into_results_by_default(tmp_path: Path) -> None:
    done = tokbench("run", "--impl", "torch", "--shape", "M=8,N=8,K=8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (written,) = (tmp_path / "results").glob("*.json")
    assert load(written).complete


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--op", "conv3d"], "unknown op 'conv3d'; known: matmul"),
        (["--dtype", "int4"], "unknown dtype 'int4'"),
        (["--suite", "huge"], "unknown suite 'huge'"),
        (["--impl", "cutlass"], "unknown implementation 'cutlass'"),
        (["--shape", "M=8,N"], "bad shape 'M=8,N'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = tokbench("run", *args, "--out", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_dtype_the_device_lacks_is_refused(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU lacks fp8; a GPU may have it")
    done = tokbench("run", "--dtype", "fp8", "--out", str(tmp_path / "r.json"))
    assert done.returncode == 2 and "fp8 needs" in done.stderr


def test_a_case_too_big_for_memory_stops_the_run_and_keeps_what_was_measured(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    done = tokbench("run", "--impl", "torch", "--dtype", "fp32", "--shape", "M=8,N=8,K=8",
                    "--shape", "M=200000,N=200000,K=200000", "--out", str(out))  # fmt: skip
    assert done.returncode == 2
    assert "needs" in done.stderr and "GiB" in done.stderr and "1 cases" in done.stderr
    kept = load(out)
    assert len(kept.cases) == 1 and kept.cases[0].status == "ok" and not kept.complete
