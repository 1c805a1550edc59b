"""`tokbench info` and `tokbench run` end to end through the console script."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from console import COMMAND, ENV, invoke, tokbench

from bench.record.results import load


def test_info_shows_the_device_and_versions() -> None:
    done = tokbench("info")
    assert done.returncode == 0, done.stderr
    for word in ("device", "memory", "torch", "triton", "tokbench"):
        assert word in done.stdout
    as_json = json.loads(tokbench("info", "--json").stdout)
    assert as_json["device"]["kind"] in ("cpu", "cuda")
    assert "torch" in as_json["software"]


def test_info_shows_readings_nvml_left_out() -> None:
    """A driver may leave power (or any reading) unreported: the table says n/a."""
    from resultdocs import H100
    from rich.console import Console

    from bench.present.tables.runs import info_table
    from bench.record.hardware import SPECS
    from bench.record.schema import Telemetry

    reading = Telemetry(sm_clock_mhz=1980, mem_clock_mhz=None, power_w=None, temperature_c=61)
    console = Console(record=True, width=120)
    console.print(info_table(H100, SPECS["h100-sxm"], {"torch": "2.11"}, reading))
    text = console.export_text()
    assert "SM 1980 MHz, memory n/a, power n/a, temperature 61 °C" in text


def test_run_writes_a_result_file_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = tokbench("run", "--op", "matmul", "--dtype", "fp16", "--shape", "M=17,N=33,K=9",
                    "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "17×33×9" in done.stdout and "triton" in done.stdout
    # Not a terminal: the ceilings, then one line per case instead of a progress bar.
    assert "measured ceilings: copy" in done.stderr and "GEMM 1024³" in done.stderr
    assert "] matmul 17×33×9 fp16 triton: ok" in done.stderr and "[2/2 " in done.stderr
    doc = load(out)
    assert doc.complete and doc.command.startswith("tokbench run")
    assert {c.impl for c in doc.cases} == {"triton", "torch"}
    assert all(c.status == "ok" for c in doc.cases)


def test_run_attention_and_decode_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = tokbench("run", "--op", "attention", "--op", "decode", "--dtype", "fp16",
                    "--shape", "B=1,H=4,Hkv=1,Sq=33,Skv=70,D=64,causal=true",
                    "--shape", "B=2,H=8,Hkv=2,D=64,L=45,page=16",
                    "--no-ceilings", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = load(out)
    triton = {c.op: c.status for c in doc.cases if c.impl == "triton"}
    assert triton == {"attention": "ok", "decode": "ok"}
    assert all(c.status != "failed" for c in doc.cases)
    assert "1×4/1×33×70×64 causal" in done.stdout and "2×8/2×45×64 page 16" in done.stdout


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
        (["--op", "conv3d"], "unknown op 'conv3d'; known: all_gather, all_reduce, all_to_all"),
        (["--dtype", "int4"], "unknown dtype 'int4'"),
        (["--dtype", "fp4"], "unknown dtype 'fp4'; known: fp32, fp16, bf16, fp8"),
        (["--suite", "huge"], "unknown suite 'huge'"),
        (["--impl", "cutlass"], "unknown implementation 'cutlass'"),
        (["--shape", "M=8,N"], "bad shape 'M=8,N'"),
        (["--shape", "M=-1,N=4,K=4"], "M must be an integer >= 1"),
        (["--shape", "M=64,N=128"], "match no selected op; the keys are: all_gather bytes,world"),
        (
            ["--shape", "B=1,H=4,Hkv=3,Sq=16,Skv=16,D=64,causal=true"],
            "H (4) must be a multiple of Hkv (3)",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = tokbench("run", *args, "--out", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_no_command_shows_the_help_and_no_empty_error() -> None:
    done = tokbench()
    assert done.returncode == 2 and "Commands" in done.stdout + done.stderr
    assert "error:" not in done.stderr, done.stderr


def test_help_joins_each_docstring_into_one_paragraph() -> None:
    """Command summaries wrap to the terminal, not at the docstring's line breaks."""

    def wide_help(*command: str) -> str:
        env = {**ENV, "COLUMNS": "250"}
        args = [*COMMAND, *command, "--help"]
        return subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout

    summary = "Compile the Triton kernels for a GPU that need not be here (Triton's bundled ptxas):"
    assert f"{summary} registers" in wide_help()
    # Square brackets are text, not markup: the Ray extra keeps its name.
    assert "tokbench[cluster]" in wide_help("simulate")


def test_a_dtype_the_device_lacks_is_refused(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU lacks fp8; a GPU may have it")
    done = tokbench("run", "--dtype", "fp8", "--out", str(tmp_path / "r.json"))
    assert done.returncode == 2 and "fp8 needs" in done.stderr


def test_dry_run_plans_a_gpu_run_here_and_measures_nothing(capsys, tmp_path: Path) -> None:
    """fp8 is listed though this CPU lacks it: a dry run plans for the GPU it prepares."""
    out = tmp_path / "r.json"
    shapes = ["--shape", "M=1,N=14336,K=4096", "--shape", "M=8192,N=8192,K=8192"]
    args = ["run", "--op", "matmul", "--dtype", "fp8", *shapes, "--dry-run", "--out", str(out)]
    done = invoke(capsys, *args)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "matmul" in line]
    assert [row.split("│")[-2].strip() for row in rows] == ["3", "11"]
    assert "2 cases, 4 runs" in done.stdout and "14 in all" in done.stdout
    assert not out.exists()


def test_a_case_too_big_for_memory_stops_the_run_and_keeps_what_was_measured(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    done = tokbench("run", "--impl", "torch", "--dtype", "fp32", "--shape", "M=8,N=8,K=8",
                    "--shape", "M=200000,N=200000,K=200000", "--out", str(out))  # fmt: skip
    assert done.returncode == 2
    assert "needs" in done.stderr and "GiB" in done.stderr and "1 case measured" in done.stderr
    kept = load(out)
    assert len(kept.cases) == 1 and kept.cases[0].status == "ok" and not kept.complete


def test_the_prepared_gpu_call_plans_every_phase_here(tmp_path: Path) -> None:
    """Each phase's cases build (shape keys, dtypes, impls as the script spells them) before a
    lent GPU's minutes are spent on them."""
    python_dir = str(Path(sys.executable).parent)
    env = {**ENV, "OUT": str(tmp_path), "PATH": f"{python_dir}:{os.environ['PATH']}"}
    script = Path(__file__).parents[1] / "bench" / "gpu_check.sh"
    done = subprocess.run(
        ["bash", str(script), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=script.parents[1],
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "tests collected" in done.stdout
    plans = re.findall(r"(\d+) cases?, (\d+) runs?", done.stdout)
    # matmul (7 shapes × bf16, fp8), attention, decode, MLA; then the model's (memory sets it).
    assert [int(cases) for cases, _ in plans][:4] == [14, 4, 6, 4], done.stdout
    assert len(plans) == 5 and int(plans[4][0]) > 0
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("rank", "status", "lines"), [("0", 2, 1), ("1", 0, 0)])
def test_under_torchrun_a_bad_flag_is_one_line_from_rank_0(
    capsys, monkeypatch: pytest.MonkeyPatch, rank: str, status: int, lines: int
) -> None:
    """Every rank parses the same bad flag; rank 0 alone says so, the others end quietly."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    done = invoke(capsys, "run", "--batch", "-3")
    assert done.returncode == status
    assert len(done.stderr.strip().splitlines()) == lines, done.stderr
