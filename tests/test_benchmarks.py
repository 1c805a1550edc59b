"""CPU smoke benchmarks through pytest-benchmark, so CI can track the harness with its own flags
(the commands' start-up time among them):

    pytest tests/test_benchmarks.py --benchmark-autosave
    pytest tests/test_benchmarks.py --benchmark-compare --benchmark-compare-fail=median:10%

Each is capped at a fraction of a second; `--benchmark-disable` runs them once as plain tests.
"""

from __future__ import annotations

import os
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


def _spec_step_model(model: str, gpu: str, **serving):
    from bench.plan.lookup import Measurements
    from bench.plan.models import Serving, get_model
    from bench.plan.throughput import StepModel, resolve_target

    setup = Serving(get_model(model), **serving)
    target = resolve_target([], [], gpu)
    return StepModel(setup, Measurements([], target=target.spec), target)


def test_simulate_10k_requests(benchmark) -> None:
    """The serving simulator on 10,000 Poisson requests of lognormal lengths (Llama-3.1-8B on
    an H100 from its spec sheet): one round, recorded, not asserted on (docs/simulate.md)."""
    from bench.plan.simulate import StepCost, kv_pages, simulate
    from bench.plan.workloads import arrivals, lognormal_lengths

    model = _spec_step_model("llama-3.1-8b", "h100-sxm", isl=1024, osl=256)
    lengths = lognormal_lengths(10_000, 1024, 256, seed=0)
    cost = StepCost(model, max(i + o for i, o in lengths))
    requests = arrivals(lengths, rate=20.0, seed=0)
    pages = kv_pages(model.setup, model.target.memory)
    result = benchmark.pedantic(simulate, (requests, cost, pages), rounds=1, iterations=1)
    assert result.requests == 10_000 and result.output_tokens == sum(o for _, o in lengths)


def test_slo_search_one_layout(benchmark) -> None:
    """Issue 23's speed target: an SLO search of one layout under 20 s on one core of the
    project's 2-core CPU machine (Llama-3.1-405B fp4 on GB200 TP 4, 1000 + 1000 tokens, p99
    TTFT ≤ 2 s and TPOT ≤ 50 ms, the default requests): one round, recorded, not asserted on
    (docs/simulate.md)."""
    from bench.plan import scenarios
    from bench.plan.slo import parse_slo
    from bench.plan.workloads import workload

    model = _spec_step_model("llama-3.1-405b", "gb200", tp=4, precision="fp4", isl=1000,
                             osl=1000)  # fmt: skip
    load = workload("fixed", 1, 1000, 1000, config=model.setup.model)

    def search() -> scenarios.Simulation:
        return scenarios.run(model, load, slo=parse_slo("ttft=2s,tpot=50ms"))

    sim = benchmark.pedantic(search, rounds=1, iterations=1)
    assert sim.slo.met(sim.result) and sim.search.interval[0] == sim.rate


@pytest.mark.skipif(
    not os.environ.get("TOKBENCH_SLOW_BENCHMARKS"),
    reason="a minute of CPU: set TOKBENCH_SLOW_BENCHMARKS=1 to record it",
)
def test_capacity_tp_auto_under_an_slo(benchmark) -> None:
    """Issue 23's speed target: `capacity --tp auto --slo` under 2 minutes on one core
    (Llama-3.3-70B fp8 on H100, TP 1, 2, 4, 8 each searched): one round, recorded
    (docs/simulate.md)."""
    args = ("capacity", "--model", "llama-3.3-70b", "--gpu", "h100-sxm", "--precision", "fp8",
            "--tp", "auto", "--slo", "ttft=2s,tpot=50ms", "--gpus", "1000", "--json")  # fmt: skip

    def command() -> subprocess.CompletedProcess:
        return subprocess.run([*COMMAND, *args], capture_output=True, env=ENV, check=False)

    done = benchmark.pedantic(command, rounds=1, iterations=1)
    assert done.returncode == 0, done.stderr
