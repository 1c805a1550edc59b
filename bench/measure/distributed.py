"""Runs under torchrun: joining the process group, gathering every rank's records to rank 0, and
timing a collective the way nccl-tests does.

torchrun (`torchrun --nproc-per-node N -m bench run …`, or `tokbench run` under it) starts one
process per GPU and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; each process
joins one process group (NCCL on GPUs, gloo on CPUs) and measures on its own device, cuda:
LOCAL_RANK. Every rank runs the same cases in the same order; after each case rank 0 gathers the
records and writes the one result file. A run without torchrun has no process group at all.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bench.measure.timing import TimerConfig, summarize
from bench.record.schema import DeviceInfo, Timing

# A rank that waits longer than this in a collective has lost its peers.
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


def start() -> Ranks | None:
    """Join the process group torchrun set up, or None when this is not a run of several
    ranks. Each rank's GPU is cuda:LOCAL_RANK."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        backend = "nccl"
    dist.init_process_group(backend, timeout=TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), local, socket.gethostname())


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
    objs = [None] * world() if rank() == 0 else None
    dist.gather_object(obj, objs, dst=0)
    return objs


def all_gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on every rank."""
    objs: list[Any] = [None] * world()
    dist.all_gather_object(objs, obj)
    return objs


def broadcast(obj: Any) -> Any:
    """Rank 0's obj, on every rank."""
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
