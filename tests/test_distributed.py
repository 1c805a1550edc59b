"""Runs under torchrun on this machine's CPU (gloo): one result file for every rank, collectives
checked and timed as nccl-tests does, a failing rank named, a killed rank's run kept."""

from __future__ import annotations

import json
import os
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


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory) -> Path:
    """Every collective at the smoke sizes, and a GEMM, on 4 ranks."""
    path = tmp_path_factory.mktemp("four") / "r.json"
    ops = [a for name in (*COLLECTIVES, "matmul") for a in ("--op", name)]
    done = run_ranks(4, *ops, "--dtype", "fp32", "--impl", "torch", "--no-ceilings",
                     "--max-time", "0.05", "--out", str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return path


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


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the workers through /proc")
def test_a_killed_rank_ends_the_run_clearly_and_keeps_what_was_measured(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    args = ("-m", "bench", "run", "--op", "matmul", "--op", "rmsnorm", "--no-ceilings")
    proc = subprocess.Popen(
        torchrun(2, *args, "--out", str(path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and load(path).cases) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert path.exists(), "no case was measured in time"
        workers = sorted(_children(proc.pid))
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)  # the later-started worker: rank 1
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode != 0
    mine = [line for line in err.splitlines() if "error: " in line]  # torchrun adds "[rank0]:"
    assert mine and ("another rank ended first" in mine[0] or "lost the other ranks" in mine[0])
    assert "measured so far kept in" in mine[0]
    kept = load(path)
    assert kept.cases and not kept.complete
