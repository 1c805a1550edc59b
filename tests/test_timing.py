"""Timer statistics against workloads of known duration."""

import time

import pytest

from bench.measure.timing import TimerConfig, summarize, time_cpu


def test_summarize_known_samples() -> None:
    t = summarize([float(x) for x in range(1, 101)], "cpu")
    assert t.n == 100
    assert t.min_ms == 1 and t.max_ms == 100
    assert t.median_ms == pytest.approx(50.5)
    assert t.mean_ms == pytest.approx(50.5)
    assert t.p20_ms == pytest.approx(20.8) and t.p80_ms == pytest.approx(80.2)
    assert t.cv == pytest.approx(28.866 / 50.5, rel=1e-3)


def test_cpu_timer_measures_a_known_sleep() -> None:
    config = TimerConfig(noise=0.02, max_time_s=0.5, min_reps=5)
    t = time_cpu(lambda: time.sleep(0.004), config)
    assert 4.0 <= t.median_ms < 6.0  # sleep never returns early; scheduling adds a little
    assert t.min_ms <= t.p20_ms <= t.median_ms <= t.p80_ms <= t.max_ms
    assert t.mode == "cpu" and t.n >= 5


def test_cpu_timer_stops_at_the_time_cap() -> None:
    config = TimerConfig(noise=0.0, max_time_s=0.1, min_reps=1000)  # never converges
    start = time.perf_counter()
    t = time_cpu(lambda: time.sleep(0.002), config)
    assert time.perf_counter() - start < 0.5
    assert 10 <= t.n < 1000


def test_cpu_timer_stops_when_the_median_is_known() -> None:
    # A steady workload converges after min_reps, long before the cap.
    t = time_cpu(lambda: sum(range(2000)), TimerConfig(noise=0.05, max_time_s=10, min_reps=20))
    assert 20 <= t.n <= 200


@pytest.mark.gpu
def test_cuda_timer_measures_a_known_spin() -> None:
    import torch

    from bench.measure.timing import time_cuda

    # torch.cuda._sleep spins for a number of GPU clock cycles: about 1 ms at 1-2 GHz.
    def spin() -> None:
        torch.cuda._sleep(1_500_000)

    config = TimerConfig(noise=0.02, max_time_s=0.5, min_reps=5)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    events = time_cuda(spin, config, l2_bytes=l2)
    graphed = time_cuda(spin, config, l2_bytes=l2, cuda_graph=True)
    assert 0.3 < events.median_ms < 5.0 and events.mode == "cuda-events"
    assert graphed.mode == "cuda-graph"
    assert graphed.median_ms == pytest.approx(events.median_ms, rel=0.2)
