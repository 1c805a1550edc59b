"""Timer statistics against workloads of known duration; a CPU run's threads, load and
contention."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

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
    assert 10 * 20 <= t.n <= 10 * 100  # 10 rounds of at least min_reps


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


# --- honest CPU numbers: threads, load and contention -------------------------------------------


@pytest.fixture
def machine(monkeypatch):
    """A 2-core CPU whose other processes keep `busy` cores busy, as /proc/stat would say; the
    torch thread count is restored afterwards."""
    from bench.measure import device as dev

    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dev, "LOAD_WINDOW_S", 0.0)
    monkeypatch.setattr(dev, "cpu_budget", lambda: 2.0)

    def load(busy: float) -> None:
        clock = iter([(0.0, 100.0, 5.0), (1.0, 100.0 + busy + 0.5, 5.5)] * 100)
        monkeypatch.setattr(dev, "_counters", lambda: next(clock))  # our 0.5 s is not theirs

    yield dev, load
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("busy", "threads", "contended"), [(0.0, 2, False), (1.0, 1, False),
                                                             (1.9, 1, True)])  # fmt: skip
def test_a_cpu_run_takes_the_cores_other_processes_leave(machine, busy, threads, contended):
    dev, load = machine
    load(busy)
    before = dev.prepare_cpu(dev.detect())
    assert torch.get_num_threads() == threads == before.threads
    assert before.others == pytest.approx(busy) and before.contended is contended


def test_an_explicit_thread_count_is_kept(machine, monkeypatch) -> None:
    dev, load = machine
    load(1.9)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert dev.prepare_cpu(dev.detect()).threads == 2


def test_a_contended_case_is_flagged_in_the_file_the_table_and_its_line(
    machine, tmp_path: Path
) -> None:
    from bench.measure.ops import get_op
    from bench.measure.runner import RunConfig, run_one
    from bench.measure.suites import CaseSpec
    from bench.present.tables.runs import case_line, provenance_table, results_tables
    from bench.record.results import ResultWriter, load
    from bench.record.schema import ResultDoc

    dev, busy = machine
    busy(1.9)
    cpu = dev.detect()
    op, case = get_op("rmsnorm"), CaseSpec("rmsnorm", {"tokens": 4, "hidden": 64}, "fp32")
    inputs = op.inputs(case.shape, case.dtype, torch.device("cpu"), torch.Generator())
    config = RunConfig(timer=TimerConfig(max_time_s=0.01, min_reps=1))
    record = run_one(op, op.impl("torch"), case, inputs, op.reference(inputs), cpu, None, config)
    assert record.contended and record.cpu_load.others == pytest.approx(1.9)
    doc = ResultDoc(cpu, {}, "test", "smoke", cpu=dev.prepare_cpu(cpu))
    with ResultWriter(doc, tmp_path / "r.json") as writer:
        writer.add(record)
        writer.finish()
    kept = load(tmp_path / "r.json")
    assert kept.cases[0].contended and kept.cpu.threads == 1
    assert "contended: 1.9 cores busy" in case_line(kept.cases[0])
    console = Console(width=200, record=True)
    console.print(provenance_table(kept, tmp_path / "r.json"), *results_tables(kept))
    shown = console.export_text()
    assert "✓" in shown and "contended" in shown and "1 case timed under contention" in shown


def test_a_timing_records_its_rounds_and_noise_floor() -> None:
    t = time_cpu(lambda: sum(range(200)), TimerConfig(noise=0.05, max_time_s=0.05))
    assert len(t.rounds_ms) == 10 and t.noise_floor is not None
    q25, middle, q75 = np.percentile(t.rounds_ms, [25, 50, 75])
    assert t.noise_floor == pytest.approx((q75 - q25) / middle)
