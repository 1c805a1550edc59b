"""The serving simulator: closed-form answers where they exist (one request alone, a saturated
offline run), the scheduler's rules (chunked prefill, KV paging and preemption, the caps), the
SLO search, workloads, and the `simulate` command."""

import itertools
import json
import math
from pathlib import Path

import pytest
from console import tokbench

from bench import BenchError
from bench.plan.lookup import Measurements
from bench.plan.models import Serving, get_model
from bench.plan.simulate import (
    Request,
    StepCost,
    arrivals,
    fixed_lengths,
    grid_exact,
    highest_rate,
    kv_pages,
    lognormal_lengths,
    parse_slo,
    read_trace,
    simulate,
)
from bench.plan.throughput import StepModel, resolve_target

LLAMA_8B = get_model("llama-3.1-8b")


def spec_step_model(setup: Serving, gpu: str = "h100-sxm") -> StepModel:
    """Op times from the GPU's spec sheet and the default efficiencies: no file needed."""
    target = resolve_target([], [], gpu)
    return StepModel(setup, Measurements([], target=target.spec), target)


def run(setup: Serving, requests: list[Request], pages: int | None = None):
    model = spec_step_model(setup)
    longest = max(r.prompt + r.output for r in requests)
    lengths = [(r.prompt, r.output) for r in requests]
    cost = StepCost(model, longest, grid_exact(lengths))
    return simulate(requests, cost, pages or kv_pages(setup, model.target.memory)), model


def test_one_request_alone_takes_the_prefill_then_the_decode_steps() -> None:
    setup = Serving(LLAMA_8B, isl=1000, osl=200)
    result, model = run(setup, [Request(0.0, 1000, 200)])
    # TTFT is the prefill step of the prompt; every later token a decode step of batch 1.
    assert result.ttft == [pytest.approx(model.prefill(1, 1000).seconds, rel=1e-9)]
    # Decode attention grows linearly with the context: the mean step is the one at the mean
    # context (1000 + 100), up to the interpolation between grid points.
    assert result.tpot == [pytest.approx(model.decode(1, 1100).seconds, rel=2e-3)]
    assert result.steps == 200 and result.preemptions == 0
    assert result.output_tokens_per_s == pytest.approx(200 / result.seconds)


def test_a_saturated_offline_run_holds_the_batch_cap() -> None:
    """Memory to spare, 8 sequences at most: the steady state decodes 8 at a time, so the
    output rate is 8 tokens per decode step (prefill steps aside)."""
    setup = Serving(LLAMA_8B, isl=64, osl=512, max_batch=8)
    result, model = run(setup, arrivals(fixed_lengths(64, 64, 512), None))
    assert max(n for _, n in result.occupancy) == 8
    assert result.mean_occupancy > 7.5
    step = model.decode(8, 64 + 256).seconds
    assert result.output_tokens_per_s == pytest.approx(8 / step, rel=0.05)


def test_a_full_kv_cache_preempts_and_every_request_still_finishes() -> None:
    setup = Serving(LLAMA_8B, isl=512, osl=512)
    pages = 200  # 3,200 tokens of cache: three sequences at their longest
    requests = arrivals(fixed_lengths(12, 512, 512), None)
    result, _ = run(setup, requests, pages)
    assert result.requests == 12 and result.output_tokens == 12 * 512
    assert result.preemptions > 0
    assert max(n for _, n in result.occupancy) <= 6  # what fits at the live context


def test_a_request_that_can_never_fit_is_one_line() -> None:
    setup = Serving(LLAMA_8B, isl=512, osl=512)
    with pytest.raises(BenchError, match=r"needs 64 KV pages of 16 tokens but 10 fit"):
        run(setup, [Request(0.0, 512, 512)], pages=10)


def test_chunked_prefill_keeps_steps_within_the_token_budget() -> None:
    """A 5,000-token prompt with a 2,048-token budget takes three steps to its first token."""
    setup = Serving(LLAMA_8B, isl=5000, osl=4, prefill_budget=2048)
    result, model = run(setup, [Request(0.0, 5000, 4)])
    assert result.steps == 3 + 3  # three prefill chunks, then three decode steps
    alone = model.prefill(1, 5000).seconds
    assert result.ttft[0] > alone  # chunks re-read the cache and run the weights three times


def test_light_poisson_load_is_close_to_the_request_alone() -> None:
    setup = Serving(LLAMA_8B, isl=256, osl=64)
    requests = arrivals(fixed_lengths(50, 256, 64), rate=0.5, seed=1)  # one every 2 s
    result, model = run(setup, requests)
    alone = model.prefill(1, 256).seconds
    assert result.percentile("ttft", 50) == pytest.approx(alone, rel=0.05)


def test_the_slo_search_finds_a_rate_that_meets_it_and_a_looser_slo_allows_more() -> None:
    setup = Serving(LLAMA_8B, isl=512, osl=128)
    model = spec_step_model(setup)
    lengths = fixed_lengths(300, 512, 128)
    cost = StepCost(model, 640, grid_exact(lengths))
    pages = kv_pages(setup, model.target.memory)
    tight = highest_rate(lengths, cost, pages, parse_slo("ttft=100ms,tpot=20ms", 90))
    loose = highest_rate(lengths, cost, pages, parse_slo("ttft=1s,tpot=40ms", 90))
    assert tight.result is not None and tight.result.percentile("tpot", 90) <= 0.020
    assert tight.result.percentile("ttft", 90) <= 0.100
    assert 0 < tight.rate < loose.rate <= tight.offline.requests / tight.offline.seconds


def test_slo_text_and_its_errors() -> None:
    slo = parse_slo("ttft=2s,tpot=200ms", 99)
    assert (slo.ttft, slo.tpot, slo.percentile) == (2.0, 0.2, 99)
    assert parse_slo("tpot=150us").tpot == pytest.approx(150e-6)
    for bad in ("ttft=fast", "latency=2s", "ttft=-1s", "ttft", "ttft=2", "ttft=1s,ttft=2s"):
        with pytest.raises(BenchError, match=r"^bad --slo"):
            parse_slo(bad)


def test_lognormal_lengths_have_the_means_asked_for() -> None:
    lengths = lognormal_lengths(20_000, 1000, 200, sigma=0.8, seed=3)
    assert sum(i for i, _ in lengths) / len(lengths) == pytest.approx(1000, rel=0.03)
    assert sum(o for _, o in lengths) / len(lengths) == pytest.approx(200, rel=0.03)
    assert min(min(i, o) for i, o in lengths) >= 1


def test_poisson_arrivals_have_the_rate_asked_for() -> None:
    requests = arrivals(fixed_lengths(5000, 10, 10), rate=20.0, seed=0)
    assert requests[-1].arrival == pytest.approx(5000 / 20.0, rel=0.05)
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(requests))


def test_a_trace_and_its_errors(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"arrival": 1.5, "input": 100, "output": 20}\n\n{"input": 7, "output": 3}\n')
    assert read_trace(trace) == [Request(0.0, 7, 3), Request(1.5, 100, 20)]
    trace.write_text('{"arrival": 0, "input": 100}\n')
    with pytest.raises(BenchError, match=r"t\.jsonl:1: expected a JSON object with integer"):
        read_trace(trace)
    trace.write_text('{"input": 0, "output": 3}\n')
    with pytest.raises(BenchError, match=r"t\.jsonl:1: input and output must be at least 1"):
        read_trace(trace)


def test_simulate_command_from_the_spec_sheet_alone() -> None:
    done = tokbench(
        "simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision", "fp8",
        "--kv-precision", "fp8", "--isl", "512", "--osl", "128", "--requests", "200",
        "--slo", "ttft=2s,tpot=100ms", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tpot_p99_s"] <= 0.1 and out["ttft_p99_s"] <= 2
    assert out["kv_precision"] == "fp8" and out["output_tokens_s_per_gpu"] > 0
    assert any("default" not in n and "spec sheet" in n for n in out["notes"])
    assert math.isfinite(out["offline_output_tokens_s_per_gpu"])


def test_simulate_tp_auto_tries_each_degree() -> None:
    done = tokbench(
        "simulate", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--precision", "fp8",
        "--isl", "512", "--osl", "128", "--requests", "100", "--tp", "auto",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--tp auto: each degree tried" in text and "chosen" in text
    assert "does not fit H100 SXM" in text  # TP 1: 70 GB of fp8 weights beside 80 GB


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rate", "5", "--slo", "ttft=1s"), "--rate and --slo exclude each other"),
        (("--workload", "nope"), "unknown workload 'nope'; use fixed, lognormal or a JSONL"),
        (("--requests", "0"), "--requests must be at least 1"),
        (("--tp", "two"), "--tp must be a whole number of GPUs or auto, got 'two'"),
        (("--rate", "-1"), "--rate must be above 0 requests/s"),
        (("--workload", "lognormal", "--sigma", "-1"), "--sigma must be a finite number of at"),
        # Even one request alone waits longer than this for its first token.
        (("--slo", "ttft=1us"), "misses p99 TTFT ≤ 1 µs at every arrival rate tried"),
    ],
)
def test_bad_simulate_input_is_one_line(args: tuple, message: str) -> None:
    done = tokbench("simulate", "--model", "tiny", "--gpu", "h100-sxm", *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
