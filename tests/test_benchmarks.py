"""CPU smoke benchmarks through pytest-benchmark, so CI can track the harness with its own flags
(the commands' start-up time among them):

    pytest tests/test_benchmarks.py --benchmark-autosave
    pytest tests/test_benchmarks.py --benchmark-compare --benchmark-compare-fail=median:10%

Each is capped at a fraction of a second; `--benchmark-disable` runs them once as plain tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from console import COMMAND, ENV

from bench.measure.ops import get_op
from bench.measure.timing import TimerConfig, summarize, time_cpu

FIXTURE = Path(__file__).parent / "fixtures" / "schema1-cpu.json"

pytestmark = pytest.mark.benchmark(group="cpu-smoke", max_time=0.3, min_rounds=5)

# A fixed, tiny timer so that its own cost, not a convergence loop, is what gets measured.
TEN_REPS = TimerConfig(max_time_s=1.0, min_reps=10, max_reps=10, warmup_ms=0.0)
NO_OP_MS = 0.05  # a no-op's call and timing overhead is far below this on any machine


def test_torch_matmul_baseline_small(benchmark) -> None:
    """The matmul op's torch baseline at 128×128×128 fp32, prepared as the runner prepares it."""
    op = get_op("matmul")
    shape = {"M": 128, "N": 128, "K": 128}
    inputs = op.inputs(shape, "fp32", torch.device("cpu"), torch.Generator().manual_seed(0))
    fn = op.impl("torch").prepare(inputs)
    out = benchmark(fn)
    assert torch.allclose(out.double(), op.reference(inputs), rtol=1e-4, atol=1e-4)


def test_cpu_timer_overhead(benchmark) -> None:
    """The harness's own cost to time 10 reps of a no-op and summarise them."""
    timing = benchmark(time_cpu, lambda: None, TEN_REPS)
    assert timing.mode == "cpu" and 0 < timing.min_ms <= timing.median_ms < NO_OP_MS


def test_summarize_1000_samples(benchmark) -> None:
    samples = list(np.random.default_rng(0).lognormal(0.0, 0.1, 1000))
    timing = benchmark(summarize, samples, "cpu")
    assert timing.p20_ms <= timing.median_ms <= timing.p80_ms


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("models",),
        ("ops",),
        ("capacity", "--model", "llama-3.1-8b", "--gpus", "8", "--tokens-per-gpu", "2000"),
        ("export", str(FIXTURE), "--out", "-"),
        ("compare", str(FIXTURE), str(FIXTURE)),
    ],
    ids=lambda a: a[0],
)
def test_start_up(benchmark, args: tuple[str, ...], tmp_path) -> None:
    """Wall time of a command that does not measure, from process start to exit: these import
    neither torch nor Triton (tests/test_architecture.py holds that), so they start at once."""
    args = tuple(str(tmp_path / "out.json") if a == "-" else a for a in args)

    def command() -> subprocess.CompletedProcess:
        return subprocess.run([*COMMAND, *args], capture_output=True, env=ENV, check=False)

    done = benchmark.pedantic(command, rounds=3, iterations=1)
    assert done.returncode == 0, done.stderr


def test_simulate_10k_requests(benchmark) -> None:
    """The serving simulator on 10,000 Poisson requests of lognormal lengths (Llama-3.1-8B on
    an H100 from its spec sheet): one round, recorded, not asserted on (docs/simulate.md)."""
    from bench.plan.lookup import Measurements
    from bench.plan.models import Serving, get_model
    from bench.plan.simulate import StepCost, arrivals, kv_pages, lognormal_lengths, simulate
    from bench.plan.throughput import StepModel, resolve_target

    setup = Serving(get_model("llama-3.1-8b"), isl=1024, osl=256)
    target = resolve_target([], [], "h100-sxm")
    model = StepModel(setup, Measurements([], target=target.spec), target)
    lengths = lognormal_lengths(10_000, 1024, 256, seed=0)
    cost = StepCost(model, max(i + o for i, o in lengths))
    requests = arrivals(lengths, rate=20.0, seed=0)
    pages = kv_pages(setup, target.memory)
    result = benchmark.pedantic(simulate, (requests, cost, pages), rounds=1, iterations=1)
    assert result.requests == 10_000 and result.output_tokens == sum(o for _, o in lengths)
