"""Measured ceilings: what this device's memory and tensor units actually deliver.

Spec sheets give peaks no kernel reaches; a device-to-device copy and a large cuBLAS GEMM on
random data give the practical ceilings that decode (memory-bound) and prefill (compute-bound)
kernels are judged against. They are stored in each result file's `measured_peaks`.
"""

from __future__ import annotations

import torch

from bench import device as dev
from bench.device import DeviceInfo
from bench.timing import TimerConfig, Timing, time_cpu, time_cuda

# GPU: a 1 GiB copy and bf16 8192³ (the sizes where H100-class parts plateau); CPU: sizes that
# take milliseconds, not minutes.
GPU_COPY_BYTES, GPU_MATMUL = 1 << 30, (8192, "bf16")
CPU_COPY_BYTES, CPU_MATMUL = 1 << 28, (1024, "fp32")
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def measure(device: DeviceInfo, timer: TimerConfig) -> dict[str, float]:
    """{"copy_gbs": …, "matmul_<dtype>_<n>_tflops": …}; copy bandwidth counts read + write."""
    tdev = dev.torch_device(device)
    gpu = device.kind == "cuda"
    copy_bytes = GPU_COPY_BYTES if gpu else CPU_COPY_BYTES
    n, dtype = GPU_MATMUL if gpu else CPU_MATMUL

    src = torch.randn(copy_bytes // 4, device=tdev)
    dst = torch.empty_like(src)
    copy = _time(lambda: dst.copy_(src), device, timer)
    del src, dst

    a = torch.randn(n, n, device=tdev, dtype=_TORCH_DTYPES[dtype])
    b = torch.randn(n, n, device=tdev, dtype=_TORCH_DTYPES[dtype])
    mm = _time(lambda: a @ b, device, timer)
    return {
        "copy_gbs": 2 * copy_bytes / (copy.median_ms / 1e3) / 1e9,
        f"matmul_{dtype}_{n}_tflops": 2 * n**3 / (mm.median_ms / 1e3) / 1e12,
    }


def _time(fn, device: DeviceInfo, timer: TimerConfig) -> Timing:
    if device.kind == "cuda":
        return time_cuda(fn, timer, l2_bytes=device.l2_bytes or 0)
    return time_cpu(fn, timer)
