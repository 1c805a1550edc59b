"""Device detection (CUDA or the CPU fallback), software versions and NVML telemetry.

NVML is optional: without it (no NVIDIA driver, CPU-only machine) telemetry is simply absent.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

import bench
from bench.record.schema import CpuLoad, DeviceInfo, Telemetry

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but a bare checkout may lack it
    pynvml = None


# A case counts as contended when other processes and our threads wanted more than the cores
# there are by over a quarter of a core (assumption: a margin for the harness's own main thread
# and short system tasks, which an otherwise idle box shows at a few hundredths of a core).
CONTENTION_SLACK = 0.25
# How long the load is read before a run, to choose the thread count: 10 ticks of /proc/stat at
# Linux's usual USER_HZ of 100, so a busy core shows as 10 ticks, read to ±1 (assumption: enough
# to tell a busy core from an idle one, short enough not to slow every run).
LOAD_WINDOW_S = 0.1

# NVML's clock-event reason bits; bench.record.schema.THROTTLING says which mean throttling.
_REASON_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def detect(index: int = 0) -> DeviceInfo:
    """The CUDA device `index` when CUDA is available, else the CPU."""
    if not torch.cuda.is_available():
        return _cpu()
    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(
        kind="cuda",
        name=props.name,
        memory_bytes=props.total_memory,
        cores=props.multi_processor_count,
        compute_capability=f"{props.major}.{props.minor}",
        l2_bytes=getattr(props, "L2_cache_size", None),
        driver=_nvml_driver(),
        cuda=torch.version.cuda,
        index=index,
        rocm=torch.version.hip is not None,
    )


def _cpu() -> DeviceInfo:
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceInfo(kind="cpu", name=name, memory_bytes=memory, cores=os.cpu_count() or 1)


def cpu_budget() -> float:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota
    (a container's `--cpus`), which the kernel enforces without changing the mask."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0)
    cores = cores or float(os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(float(quota) / float(period), 1.0))
    return cores


def _busy_seconds() -> float | None:
    """CPU seconds the machine's CPUs in our affinity mask have spent busy (steal included:
    time the hypervisor gave to other guests), from /proc/stat; None off Linux."""
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and int(name[3:]) in mine:
            # user nice system idle iowait irq softirq steal (guest is inside user already)
            values = [int(v) for v in fields[:8]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")


def _counters() -> tuple[float, float | None, float]:
    """(wall seconds, the machine's busy CPU seconds or None, this process's CPU seconds)."""
    t = os.times()
    return time.perf_counter(), _busy_seconds(), t.user + t.system


class CpuProbe:
    """The CPU time other processes took while this process worked: the machine's busy time
    less this process's own (all its threads), over the same wall time."""

    def __init__(self) -> None:
        self._start = _counters()

    def finish(self) -> CpuLoad | None:
        """The load since the probe started; None where /proc/stat cannot be read."""
        (wall0, busy0, own0), (wall1, busy1, own1) = self._start, _counters()
        if busy0 is None or busy1 is None:
            return None
        others = max((busy1 - busy0) - (own1 - own0), 0.0) / max(wall1 - wall0, 1e-9)
        threads, cores = torch.get_num_threads(), cpu_budget()
        return CpuLoad(
            threads=threads,
            cores=cores,
            others=round(others, 3),
            loadavg=round(os.getloadavg()[0], 2),  # Linux has it, as it has /proc/stat
            contended=contended(others, threads, cores),
        )


def contended(others: float, threads: int, cores: float) -> bool:
    """Whether other processes and our threads wanted more cores than there are."""
    return others + threads > cores + CONTENTION_SLACK


def cpu_probe(device: DeviceInfo) -> CpuProbe | None:
    """A probe of the CPU's load around a timed loop; None on a GPU, whose timing it is not."""
    return CpuProbe() if device.kind == "cpu" else None


def prepare_cpu(device: DeviceInfo) -> CpuLoad | None:
    """On a CPU, choose torch's thread count and return the load found before the run.

    torch's default is one thread per core it sees; with other processes on those cores the
    threads wait on each other at every barrier, and small ops stick at the scheduler's time
    slices (rmsnorm 256×256: 40 ms against 102 µs single-threaded, issue 25). An explicit
    OMP_NUM_THREADS is kept; otherwise the threads are the cores left free by other processes,
    at least one. None on a GPU.
    """
    if device.kind != "cpu":
        return None
    probe = CpuProbe()
    time.sleep(LOAD_WINDOW_S)
    before = probe.finish()
    if "OMP_NUM_THREADS" not in os.environ:
        others = before.others if before else 0.0
        torch.set_num_threads(max(1, math.floor(cpu_budget() - others + CONTENTION_SLACK)))
    if before is None:
        return None
    # The reading was taken with the old thread count; judge it with the one the run uses.
    threads = torch.get_num_threads()
    busy = contended(before.others, threads, before.cores)
    return CpuLoad(threads, before.cores, before.others, before.loadavg, busy)


def free_memory_bytes(device: DeviceInfo) -> int:
    """Memory available for a benchmark's tensors right now."""
    if device.kind == "cuda":
        return torch.cuda.mem_get_info(device.index)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return device.memory_bytes


def torch_device(device: DeviceInfo) -> torch.device:
    return torch.device("cuda", device.index) if device.kind == "cuda" else torch.device("cpu")


def software() -> dict[str, str]:
    """Versions of everything that shapes a measurement."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tokbench": bench.__version__,
        # CPU timings depend on it: an oversubscribed thread pool waits on the scheduler.
        "torch_threads": str(torch.get_num_threads()),
    }
    # Read from the metadata: importing Triton would fix its interpreter choice too early. Some
    # torch builds ship it under another distribution name.
    versions["triton"] = "absent"
    for name in ("triton", "pytorch-triton", "pytorch-triton-rocm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions["triton"] = metadata.version(name)
            break
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    if torch.cuda.is_available() and torch.distributed.is_nccl_available():
        versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    commit = _git_commit()
    if commit:
        versions["git_commit"] = commit
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _nvml_handle(index: int):
    if pynvml is None:
        return None
    try:
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:
        return None


def _nvml_driver() -> str | None:
    if _nvml_handle(0) is None:
        return None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError:
        return None
    return driver.decode() if isinstance(driver, bytes) else driver


def nvlinks(device: DeviceInfo) -> int | None:
    """NVLink links NVML reports active on the GPU; None off NVIDIA GPUs or without NVML."""
    if device.kind != "cuda" or (handle := _nvml_handle(device.index)) is None:
        return None
    active = 0
    for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            active += pynvml.nvmlDeviceGetNvLinkState(handle, link) == pynvml.NVML_FEATURE_ENABLED
        except (pynvml.NVMLError, AttributeError):  # no such link, or no NVLink at all
            break
    return active


def telemetry(device: DeviceInfo) -> Telemetry | None:
    """Clocks, power, temperature and clock-event reasons now; None without NVML."""
    if device.kind != "cuda":
        return None
    handle = _nvml_handle(device.index)
    if handle is None:
        return None
    reading = Telemetry()
    readers = {
        "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "power_w": lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(
            handle, pynvml.NVML_TEMPERATURE_GPU
        ),
    }
    # A field this GPU or driver does not report, or a call this nvidia-ml-py no longer has,
    # leaves the field empty.
    missing = (pynvml.NVMLError, AttributeError)
    for name, read in readers.items():
        with contextlib.suppress(*missing):
            setattr(reading, name, read())
    with contextlib.suppress(*missing):
        # "Clocks event reasons" is the newer name of the same bit mask.
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        mask = (reasons or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)(handle)
        reading.throttle_reasons = [n for n, bit in _REASON_BITS.items() if mask & bit]
    return reading


def merge(before: Telemetry | None, after: Telemetry | None) -> Telemetry | None:
    """One record per case: readings from after the timed loop, reasons seen at either end."""
    if after is None:
        return before
    if before is not None:
        seen = before.throttle_reasons + after.throttle_reasons
        after.throttle_reasons = sorted(set(seen), key=seen.index)
    return after
