"""Measured ceilings: what this device's memory and tensor units actually deliver.

Spec sheets give peaks no kernel reaches; a device-to-device copy and a large cuBLAS GEMM on
random data give the practical ceilings that decode (memory-bound) and prefill (compute-bound)
kernels are judged against. They are stored in each result file's `measured_peaks`.
"""

from __future__ import annotations

import torch

from bench.measure import device as dev
from bench.measure.ops.base import torch_dtype
from bench.measure.timing import TimerConfig, time_on
from bench.record.schema import DeviceInfo

# GPU: a 1 GiB copy and bf16 8192³ (the sizes where H100-class parts plateau); CPU: sizes that
# take milliseconds, not minutes.
GPU_COPY_BYTES, GPU_MATMUL = 1 << 30, (8192, "bf16")
CPU_COPY_BYTES, CPU_MATMUL = 1 << 28, (1024, "fp32")


def measure(device: DeviceInfo, timer: TimerConfig) -> dict[str, float]:
    """{"copy_gbs": …, "matmul_<dtype>_<n>_tflops": …}; copy bandwidth counts read + write."""
    gpu = device.kind == "cuda"
    n, dtype = GPU_MATMUL if gpu else CPU_MATMUL
    return {
        "copy_gbs": _copy_gbs(device, GPU_COPY_BYTES if gpu else CPU_COPY_BYTES, timer),
        f"matmul_{dtype}_{n}_tflops": _matmul_tflops(device, n, dtype, timer),
    }


def _copy_gbs(device: DeviceInfo, nbytes: int, timer: TimerConfig) -> float:
    src = torch.randn(nbytes // 4, device=dev.torch_device(device))
    dst = torch.empty_like(src)
    t = time_on(device, lambda: dst.copy_(src), timer)
    return 2 * nbytes / (t.median_ms / 1e3) / 1e9


def _matmul_tflops(device: DeviceInfo, n: int, dtype: str, timer: TimerConfig) -> float:
    tdev, tdtype = dev.torch_device(device), torch_dtype(dtype)
    a = torch.randn(n, n, device=tdev, dtype=tdtype)  # random data: zeros overstate the peak
    b = torch.randn(n, n, device=tdev, dtype=tdtype)
    t = time_on(device, lambda: a @ b, timer)
    return 2 * n**3 / (t.median_ms / 1e3) / 1e12
