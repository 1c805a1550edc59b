"""Timers: CUDA events with an L2 flush between reps (optionally CUDA graphs), and a CPU timer.

Both time in rounds, each repeating until its median is known to a noise target or its share of
a time cap is reached, and report the same statistics, with each round's median and the noise
floor they show. The noise target is the half-width of the median's ~95% confidence interval,
1.57·IQR/√n (McGill, Tukey & Larsen's notch), relative to the median.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from bench.record.schema import DeviceInfo, Timing


@dataclass(frozen=True)
class TimerConfig:
    noise: float = 0.01  # stop when the median's relative CI half-width is below this
    max_time_s: float = 1.0  # cap on the time spent in timed reps
    min_reps: int = 10
    max_reps: int = 10_000
    warmup_ms: float = 25.0
    # Timed rounds per case, each with its share of the time cap. Their medians are what the
    # regression gate tests (bench.plan.compare): reps within a round are not independent of
    # each other (one clock state, one cache state), rounds are more nearly so. 10 is a choice
    # from simulated runs with this project's CPU noise (rounds_run in tests/test_compare.py),
    # gated at 5%: 5 rounds fail identical code in 1.3% of cases and a 1.1× slowdown in 29%,
    # 10 rounds in 0.2% and 49%, 20 in 0.03% and 64% with a round of 5 ms on a CPU.
    rounds: int = 10


def summarize(samples_ms: list[float], mode: str, rounds_ms: list[float] | None = None) -> Timing:
    """The statistics of samples; with the medians of the rounds they were timed in, those and
    their noise floor."""
    s = np.asarray(samples_ms, dtype=np.float64)
    p20, median, p80 = np.percentile(s, [20, 50, 80])
    mean = float(s.mean())
    rounds = [float(r) for r in rounds_ms or ()]
    return Timing(
        median_ms=float(median),
        p20_ms=float(p20),
        p80_ms=float(p80),
        min_ms=float(s.min()),
        max_ms=float(s.max()),
        mean_ms=mean,
        cv=float(s.std() / mean) if mean > 0 else 0.0,
        n=len(s),
        mode=mode,
        rounds_ms=rounds,
        noise_floor=noise_floor(rounds),
    )


def noise_floor(rounds_ms: list[float]) -> float | None:
    """The interquartile range of the round medians relative to their median: the spread of
    the run's own noise, robust to one or two rounds a neighbour slowed. None with fewer than
    two rounds."""
    if len(rounds_ms) < 2:
        return None
    q25, middle, q75 = np.percentile(rounds_ms, [25, 50, 75])
    return float((q75 - q25) / middle) if middle > 0 else None


def _converged(samples_ms: list[float], config: TimerConfig) -> bool:
    if len(samples_ms) < config.min_reps:
        return False
    q25, median, q75 = np.percentile(samples_ms, [25, 50, 75])
    return median > 0 and 1.57 * (q75 - q25) / np.sqrt(len(samples_ms)) <= config.noise * median


def _adaptive(sample_batch: Callable[[int], list[float]], config: TimerConfig, mode: str) -> Timing:
    """Collect samples in config.rounds rounds, one after another, each with its share of the
    time cap and reps; each round's noise target is √rounds looser, so that the pooled median
    meets config.noise."""
    rounds = max(config.rounds, 1)
    share = replace(
        config,
        noise=config.noise * np.sqrt(rounds),
        max_time_s=config.max_time_s / rounds,
        max_reps=max(config.max_reps // rounds, 1),
    )
    samples: list[float] = []
    medians: list[float] = []
    for _ in range(rounds):
        got = _round(sample_batch, share)
        samples += got
        medians.append(float(np.median(got)))
    return summarize(samples, mode, medians)


def _round(sample_batch: Callable[[int], list[float]], config: TimerConfig) -> list[float]:
    """Samples in growing batches until converged, the time cap or max_reps."""
    samples: list[float] = []
    start = time.perf_counter()
    batch = 1
    while True:
        samples += sample_batch(min(batch, config.max_reps - len(samples)))
        spent = time.perf_counter() - start
        if (
            _converged(samples, config)
            or spent >= config.max_time_s
            or len(samples) >= config.max_reps
        ):
            return samples
        batch = min(batch * 2, 64)


def time_cpu(fn: Callable[[], object], config: TimerConfig, mode: str = "cpu") -> Timing:
    """Wall-clock time of fn on the CPU (also used for kernels run by Triton's interpreter).

    Warm-up runs fn at least once and until warmup_ms has passed: first calls pay for
    allocation and the interpreter's set-up, and caches and thread pools need to settle.
    """
    start = time.perf_counter()
    fn()
    while (time.perf_counter() - start) * 1e3 < config.warmup_ms:
        fn()

    def sample_batch(k: int) -> list[float]:
        out = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    return _adaptive(sample_batch, config, mode)


def time_cuda(
    fn: Callable[[], object],
    config: TimerConfig,
    *,
    l2_bytes: int,
    cuda_graph: bool = False,
) -> Timing:
    """GPU time of fn between CUDA events, with L2 flushed before every rep.

    The flush buffer is twice the L2 size, so that writing it evicts every line the previous rep
    left behind; the flush itself is outside the events. With cuda_graph, fn is captured once and
    replayed, which removes the CPU launch overhead from small kernels.
    """
    flush = torch.empty(max(2 * l2_bytes, 1 << 20), dtype=torch.int8, device="cuda")
    fn()  # compiles and autotunes outside the measurement
    torch.cuda.synchronize()
    run = _graph(fn) if cuda_graph else fn
    _warm_up(run, config.warmup_ms)

    def sample_batch(k: int) -> list[float]:
        events = []
        for _ in range(k):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            flush.zero_()
            start.record()
            run()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]

    return _adaptive(sample_batch, config, "cuda-graph" if cuda_graph else "cuda-events")


def _graph(fn: Callable[[], object]) -> Callable[[], object]:
    """Capture fn in a CUDA graph on a side stream, as capture requires; replay runs on the
    current stream. A failed capture leaves the current stream as it was."""
    current = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(current)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(stream):
            fn()  # allocations made before capture, on the capture stream
        with torch.cuda.graph(graph, stream=stream):
            fn()
    finally:
        torch.cuda.set_stream(current)
    current.wait_stream(stream)
    return graph.replay


def _warm_up(run: Callable[[], object], warmup_ms: float) -> None:
    """Run until warmup_ms of GPU time has passed, so clocks and caches settle."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    torch.cuda.synchronize()
    once = max(start.elapsed_time(end), 1e-3)
    for _ in range(min(int(warmup_ms / once), 1000)):
        run()
    torch.cuda.synchronize()


def time_on(
    device: DeviceInfo, fn: Callable[[], object], config: TimerConfig, cuda_graph: bool = False
) -> Timing:
    """fn timed on the device: CUDA events with the L2 flushed on a GPU, else the CPU timer."""
    if device.kind == "cuda":
        return time_cuda(fn, config, l2_bytes=device.l2_bytes or 0, cuda_graph=cuda_graph)
    return time_cpu(fn, config)
