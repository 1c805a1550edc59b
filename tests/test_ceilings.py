"""Measured ceilings: copy bandwidth and a large GEMM, on whatever device is here."""

from bench.measure import ceilings
from bench.measure import device as dev
from bench.measure.timing import TimerConfig


def test_ceilings_are_measured_and_plausible() -> None:
    device = dev.detect()
    peaks = ceilings.measure(device, TimerConfig(max_time_s=0.05, min_reps=3))
    n, dtype = ceilings.GPU_MATMUL if device.kind == "cuda" else ceilings.CPU_MATMUL
    assert set(peaks) == {"copy_gbs", f"matmul_{dtype}_{n}_tflops"}
    # Any machine copies faster than 0.1 GB/s and slower than 100 TB/s.
    assert 0.1 < peaks["copy_gbs"] < 1e5
    assert 1e-4 < peaks[f"matmul_{dtype}_{n}_tflops"] < 1e4
