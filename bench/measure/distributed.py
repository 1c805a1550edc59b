"""Runs under torchrun: joining the process group, gathering every rank's records to rank 0, and
timing a collective the way nccl-tests does.

torchrun (`torchrun --nproc-per-node N -m bench run …`, or `tokbench run` under it) starts one
process per GPU and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; each process
joins one process group (NCCL on GPUs, gloo on CPUs) and measures on its own device, cuda:
LOCAL_RANK. Every rank runs the same cases in the same order; after each case rank 0 gathers the
records and writes the one result file. A run without torchrun has no process group at all.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bench import BenchError
from bench.measure.timing import TimerConfig, summarize
from bench.record.schema import DeviceInfo, Timing

# A rank that waits longer than this in a collective has lost its peers (`run --rank-timeout`).
TIMEOUT = timedelta(minutes=10)
# nccl-tests' defaults: 5 warm-up calls; here at least 5 and at most 1,000 timed ones.
WARMUP_CALLS, MIN_CALLS, MAX_CALLS = 5, 5, 1000


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run under torchrun."""

    rank: int
    world: int
    local_rank: int
    host: str

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes the result file and prints."""
        return self.rank == 0


# The gloo group whose monitored barrier watches every meeting of the ranks (the default group
# itself on CPUs; beside it on GPUs, since NCCL has no monitored barrier), and its timeout.
_watch: dict[str, Any] = {}


def start(timeout: timedelta = TIMEOUT) -> Ranks | None:
    """Join the process group torchrun set up, or None when this is not a run of several
    ranks. Each rank's GPU is cuda:LOCAL_RANK; a rank that does not answer within `timeout`
    ends the run (see _all_present)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        backend = "nccl"
    dist.init_process_group(backend, timeout=timeout)
    group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    _watch.update(group=group, timeout=timeout)
    return Ranks(dist.get_rank(), dist.get_world_size(), local, socket.gethostname())


def _all_present() -> None:
    """Before the ranks exchange anything, every rank answers rank 0 within the run's timeout,
    or a RuntimeError names the ranks that did not (a stopped or killed rank): the watchdog
    that keeps a run from waiting forever on one rank."""
    dist.monitored_barrier(_watch.get("group"), timeout=_watch.get("timeout"), wait_all_ranks=True)


def why_lost(e: Exception) -> str:
    """A lost-rank error in a few words: the ranks the watchdog found missing, else the
    backend's first line without gloo's source location."""
    found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier in (\d+) ms", str(e))
    if found:
        ranks, ms = found.groups()
        which = f"ranks {ranks.strip()}" if "," in ranks else f"rank {ranks.strip()}"
        return f"{which} did not answer within {int(ms) / 1e3:g} s"
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = re.sub(r"^\[[^\]]*\]:?\s*", "", text).split(". ")[0]  # its first sentence
    return text if len(text) <= 120 else f"{text[:119]}…"


def under_torchrun() -> bool:
    """Whether torchrun (or launch) started this process as one of its ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(nproc: int, args: list[str]) -> int:
    """Run `python -m bench ARGS` as nproc ranks of this machine, with torch's own launcher (as
    `torchrun --standalone --nproc-per-node N -m bench ARGS`), and return the status to exit
    with. Only rank 0 prints (the other ranks' output goes to files deleted at the end), and a
    failure ends with rank 0's one line and status instead of torchrun's report."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent logs each failure and each stop it sends, and gloo logs what the watchdog
    # found (TORCH_CPP_LOG_LEVEL, read by each rank as torch loads): rank 0's line says it.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    with tempfile.TemporaryDirectory(prefix="tokbench-ranks-") as logs:
        quiet = {r: Std.ALL for r in range(1, nproc)}
        # When a rank fails the agent sends the others SIGTERM and, after shutdown_timeout,
        # SIGKILL: rank 0 needs those seconds to finish its file and say what it kept, on a
        # busy machine too (2 s was seen to cut it off under a loaded CI run).
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
            rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=quiet), shutdown_timeout=15,
        )  # fmt: skip
        try:
            elastic_launch(config, sys.executable)("-m", "bench", *args)
        except ChildFailedError as e:
            return _failed(e.failures)
        except SignalException:  # Ctrl-C (or a stop) here; the ranks, told too, say what they kept
            return 130
    return 0


def _failed(failures: dict[int, Any]) -> int:
    """The status a failed launch exits with. Rank 0 has said why in one line (the others end
    quietly; a rank that ends first has the launcher stop rank 0 with SIGTERM, and rank 0 then
    says what it kept), unless something else killed it: then a BenchError says so."""
    mine = failures.get(0)
    if mine is None or mine.exitcode > 0 or mine.exitcode == -signal.SIGTERM:
        return mine.exitcode if mine and mine.exitcode > 0 else 2
    killer = {-s.value: s.name for s in signal.Signals}.get(mine.exitcode, "a signal")
    raise BenchError(f"rank 0 was killed by {killer}; its result file keeps what it wrote")


def world() -> int:
    """Ranks in the process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any) -> list[Any] | None:
    """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
    _all_present()
    objs = [None] * world() if rank() == 0 else None
    dist.gather_object(obj, objs, dst=0)
    return objs


def all_gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank."""
    _all_present()
    objs: list[Any] = [None] * world()
    dist.all_gather_object(objs, obj)
    return objs


def broadcast(obj: Any) -> Any:
    """Rank 0's obj, on every rank."""
    _all_present()
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def time_collective(
    fn: Callable[[], object], timer: TimerConfig, device: DeviceInfo
) -> tuple[Timing, int]:
    """(the slowest rank's timing of fn, that rank), as nccl-tests reports a collective.

    Every rank must make the same number of calls, so the count is decided once: rank 0 sizes it
    from the warm-up to fill timer.max_time_s, within [MIN_CALLS, MAX_CALLS], and broadcasts it.
    Each call is timed on its own (CUDA events on a GPU, perf_counter on a CPU); each rank's
    statistics are gathered and the rank with the slowest median is the collective's time.
    """
    gpu = device.kind == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    start = time.perf_counter()
    for _ in range(WARMUP_CALLS):
        fn()
    sync()
    per_call = (time.perf_counter() - start) / WARMUP_CALLS
    calls = broadcast(min(MAX_CALLS, max(MIN_CALLS, int(timer.max_time_s / max(per_call, 1e-9)))))
    if gpu:
        events = [(torch.cuda.Event(True), torch.cuda.Event(True)) for _ in range(calls)]
        for begin, end in events:
            begin.record()
            fn()
            end.record()
        sync()
        samples = [begin.elapsed_time(end) for begin, end in events]
    else:
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    timings = all_gather(summarize(samples, "cuda-events" if gpu else "cpu"))
    slowest = max(range(len(timings)), key=lambda r: timings[r].median_ms)
    return timings[slowest], slowest
