"""Runs under torchrun on this machine's CPU (gloo): one result file for every rank, collectives
checked and timed as nccl-tests does, a failing rank named, a killed rank's run kept."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.record.results import load

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")


def torchrun(ranks: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), *args]


def run_ranks(ranks: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun(ranks, "-m", "bench", "run", *args),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        check=False,
    )


def launch(ranks: int, *args: str) -> list[str]:
    """tokbench starting its ranks itself (torch's launcher, without torchrun's report)."""
    return [sys.executable, "-m", "bench", "run", "--nproc-per-node", str(ranks), *args]


@pytest.fixture(scope="module")
def four_ranks_run(tmp_path_factory) -> tuple[Path, str]:
    """Every collective at the smoke sizes, and a GEMM, on 4 ranks: the file and the log."""
    path = tmp_path_factory.mktemp("four") / "r.json"
    ops = [a for name in (*COLLECTIVES, "matmul") for a in ("--op", name)]
    done = run_ranks(4, *ops, "--dtype", "fp32", "--impl", "torch", "--no-ceilings",
                     "--max-time", "0.05", "--out", str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return path, done.stderr


@pytest.fixture(scope="module")
def four_ranks(four_ranks_run: tuple[Path, str]) -> Path:
    return four_ranks_run[0]


def test_progress_counts_cases_not_ranks_times_cases(four_ranks_run: tuple[Path, str]) -> None:
    """15 collective cases and 4 GEMM shapes: 19 steps, each counted once, not once a rank."""
    counts = re.findall(r"^\[(\d+)/(\d+) ", four_ranks_run[1], re.MULTILINE)
    assert counts and counts[-1] == ("19", "19"), counts
    assert all(int(done) <= int(total) for done, total in counts)


def test_one_file_holds_every_rank(four_ranks: Path) -> None:
    doc = load(four_ranks)
    assert doc.complete and [r.rank for r in doc.ranks] == [0, 1, 2, 3]
    assert all(r.host and r.device.kind == "cpu" for r in doc.ranks)
    gemms = [c for c in doc.cases if c.op == "matmul"]
    assert {c.rank for c in gemms} == {0, 1, 2, 3}  # every GEMM on every rank
    assert len(gemms) == 4 * 4  # 4 smoke shapes
    collectives = [c for c in doc.cases if c.op in COLLECTIVES]
    assert len(collectives) == 5 * 3  # one record per case: the slowest rank's
    assert all(c.status == "ok" and c.shape["world"] == 4 for c in collectives), [
        (c.op, c.error) for c in collectives if c.status != "ok"
    ]


def test_bus_bandwidth_is_the_nccl_tests_definition(four_ranks: Path) -> None:
    """algbw = S / time; busbw = algbw × 2(n−1)/n for all_reduce, (n−1)/n for all_gather,
    reduce_scatter and all_to_all, 1 for send/recv (nccl-tests' PERFORMANCE.md)."""
    factors = {"all_reduce": 1.5, "all_gather": 0.75, "reduce_scatter": 0.75,
               "all_to_all": 0.75, "send_recv": 1.0}  # fmt: skip
    for case in load(four_ranks).cases:
        if case.op in factors:
            algbw = case.shape["bytes"] / (case.timing.median_ms / 1e3) / 1e9
            assert case.gbps == pytest.approx(algbw)
            assert case.bus_gbps == pytest.approx(algbw * factors[case.op])


def test_two_ranks_and_the_spread_table(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    ops = ("--op", "all_reduce", "--op", "rmsnorm", "--dtype", "fp32", "--impl", "torch")
    done = run_ranks(2, *ops, "--no-ceilings", "--max-time", "0.05", "--out", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank spread" in done.stdout and "the median of the 2 ranks" in done.stdout
    assert "bus GB/s" in done.stdout and "64 B × 2 ranks" in done.stdout
    doc = load(path)
    assert len(doc.ranks) == 2 and {c.rank for c in doc.cases if c.op == "rmsnorm"} == {0, 1}


BROKEN_RANK = """
import json, torch
import kernels
kernels.use_interpreter_without_gpu()
from bench.measure import device as dev, distributed
from bench.measure.ops import get_op
from bench.measure.ops.base import Impl
from bench.measure.runner import RunConfig, run_one
from bench.measure.suites import CaseSpec
from bench.measure.timing import TimerConfig

ranks = distributed.start()
op = get_op("all_reduce")
shape = {"bytes": 4096, "world": ranks.world}
inputs = op.inputs(shape, "fp32", torch.device("cpu"), torch.Generator().manual_seed(0))
honest = op.impl("torch").prepare


def wrong_on_rank_1(inputs):
    fn = honest(inputs)
    return lambda: fn() + (ranks.rank == 1)


record = run_one(op, Impl("wrong", wrong_on_rank_1), CaseSpec("all_reduce", shape, "fp32"),
                 inputs, op.reference(inputs), dev.detect(), None,
                 RunConfig(timer=TimerConfig(max_time_s=0.05)))
if ranks.leader:
    timed = record.timing is not None
    print(json.dumps({"status": record.status, "error": record.error, "timed": timed}))
distributed.stop()
"""


def test_a_rank_whose_check_fails_is_named_and_the_case_not_timed(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(BROKEN_RANK)
    done = subprocess.run(torchrun(2, str(script)), capture_output=True, text=True, timeout=300,
                          env=ENV, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "failed" and not record["timed"]
    assert record["error"].startswith("rank 1: relative error")


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (torchrun's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int, within_s: float = 120) -> None:
    """Wait until process pid has ended (or is a zombie)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # reaped
            return
        if state == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs")


def one_error_line(done_err: str) -> str:
    """The run's one error line: no other rank's, no torchrun report or gloo log."""
    errors = [line for line in done_err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), done_err[-3000:]
    assert "Traceback" not in done_err and "[rank" not in done_err, done_err[-3000:]
    return errors[0]


def test_bad_input_is_one_line_from_rank_0_and_status_2() -> None:
    done = subprocess.run(launch(2, "--op", "nosuch"), capture_output=True, text=True,
                          timeout=300, env=ENV, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "unknown op 'nosuch'" in one_error_line(done.stderr)
    assert done.stderr.count("\n") == 1


LOST = [
    (signal.SIGKILL, ("another rank ended first", "lost the other ranks")),
    # The watchdog's barrier names the rank; a collective already waiting on it times out first
    # when the stop lands mid-exchange (gloo's "Timed out waiting 2000ms"): both end the run.
    (signal.SIGSTOP, ("rank 1 did not answer within 2 s", "lost the other ranks (Timed out")),
]


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the workers through /proc")
@pytest.mark.parametrize(("stop", "said"), LOST)
def test_a_lost_rank_ends_the_run_in_one_line_keeping_what_was_measured(
    tmp_path: Path, stop: signal.Signals, said: tuple[str, ...]
) -> None:
    """A killed rank, or one that stops answering (the watchdog's timeout), ends the run with
    rank 0's one line and status 2; the file keeps every case measured, marked incomplete."""
    path = tmp_path / "r.json"
    args = ("--op", "matmul", "--op", "rmsnorm", "--impl", "torch", "--dtype", "fp32",
            "--max-time", "0.5", "--no-ceilings", "--rank-timeout", "2")  # fmt: skip
    proc = subprocess.Popen(launch(2, *args, "--out", str(path)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and load(path).cases) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert path.exists(), "no case was measured in time"
        workers = sorted(_children(proc.pid))
        assert len(workers) == 2
        os.kill(workers[1], stop)  # the later-started worker: rank 1
        if stop == signal.SIGSTOP:
            _gone(workers[0])  # rank 0 ended the run on its own, after the timeout
            os.kill(workers[1], signal.SIGKILL)  # as torch's agent does, 30 s later
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
        for pid in workers:  # a stopped rank the launcher could not end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 2, err[-3000:]
    line = one_error_line(err)
    assert any(words in line for words in said) and "measured so far kept in" in line, line
    kept = load(path)
    assert kept.cases and not kept.complete
