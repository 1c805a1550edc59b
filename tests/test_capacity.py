"""Fleet capacity, GPUs needed, cost and claim checks: the arithmetic by hand, then the CLI."""

import json
from pathlib import Path

import pytest
from console import tokbench
from modeldocs import H100, at_half_roofline, model_doc
from typer.testing import CliRunner

from bench import BenchError
from bench.plan.capacity import (
    OPTIMISTIC,
    PLAUSIBLE,
    Claim,
    Fleet,
    PerGpu,
    check_claim,
    check_fleet,
    check_given_rate,
    cost_per_million,
    deal_price,
    figures,
    gpus_needed,
    per_gpu,
    roofline_rate,
)
from bench.plan.models import Serving, get_model
from bench.present.cli import app
from bench.record.hardware import SPECS
from bench.record.results import write_atomic
from bench.record.units import fmt_rate

# 1,000 output tok/s per GPU; 1,000 input + 250 output tokens per request: 4 requests/s.
GPU = PerGpu(
    output_tokens_per_s=1000.0,
    total_tokens_per_s=5000.0,
    requests_per_s=4.0,
    peak_output_tokens_per_s=1500.0,
    source="test",
)


def test_fleet_tokens_and_requests_per_day() -> None:
    fleet = Fleet(gpus=8, tp=1, utilization=0.5, per_gpu=GPU, price_per_gpu_hour=2.0)
    out = figures(fleet, None, None)
    assert out["output_tokens_day"] == pytest.approx(1000 * 8 * 0.5 * 86_400)  # 345.6 M
    assert out["total_tokens_day"] == pytest.approx(5000 * 8 * 0.5 * 86_400)
    assert out["requests_day"] == pytest.approx(4 * 8 * 0.5 * 86_400)  # 1.3824 M
    # $2 per GPU-hour buys 1000 × 0.5 × 3600 = 1.8 M output tokens: $1.11 per million.
    assert out["usd_per_million_output_tokens"] == pytest.approx(2 / 1.8)
    assert out["usd_per_million_total_tokens"] == pytest.approx(2 / 9)


def test_cost_per_million_tokens() -> None:
    assert cost_per_million(3.0, 2500.0, 1.0) == pytest.approx(3.0 / (2500 * 3600) * 1e6)
    assert cost_per_million(3.0, 2500.0, 0.5) == pytest.approx(2 * cost_per_million(3, 2500, 1))


def test_a_tp_group_is_the_unit_of_a_fleet() -> None:
    fleet = Fleet(gpus=10, tp=4, utilization=1.0, per_gpu=GPU)
    assert fleet.serving_gpus == 8  # two copies of the model; 2 GPUs idle
    assert figures(fleet, None, None)["output_tokens_day"] == pytest.approx(1000 * 8 * 86_400)


@pytest.mark.parametrize(
    ("target", "tp", "expected"),
    [(10_000, 1, 20), (10_000, 2, 20), (10_001, 2, 22), (10_000, 8, 24), (1, 1, 1)],
)
def test_gpus_needed_for_a_target(target: float, tp: int, expected: int) -> None:
    # 1,000 tok/s per GPU at 50%: 500 tok/s each on average.
    assert gpus_needed(target, 1000.0, 0.5, tp) == expected


def test_gpus_needed_for_a_daily_target() -> None:
    fleet = Fleet(gpus=1, tp=1, utilization=0.5, per_gpu=GPU)
    out = figures(fleet, None, 500 * 86_400 * 7)  # a week's output of one GPU at 50%, per day
    assert out["gpus_for_target_tokens_day"] == 7


@pytest.mark.parametrize(
    ("claimed", "verdict"),
    [
        (6000, "plausible"),
        (10_000, "plausible"),  # exactly 1.25
        (10_001, "optimistic"),
        (16_000, "optimistic"),
        (16_001, "implausible"),
    ],
)
def test_claim_verdicts_and_thresholds(claimed: float, verdict: str) -> None:
    claim = check_claim(claimed, gpus=8, tp=1, per_gpu=GPU)
    # All 8 busy at the serving rate, not decoding alone at its 1,500 tok/s peak: a claim
    # judged against the peak would read plausible at 1.5× what the GPUs serve.
    assert claim.estimate == 8 * 1000
    assert claim.ratio == pytest.approx(claimed / 8000)
    assert claim.verdict == verdict
    assert (PLAUSIBLE, OPTIMISTIC) == (1.25, 2.0)


def test_claim_on_whole_tp_groups() -> None:
    assert check_claim(1000, gpus=6, tp=4, per_gpu=GPU) == Claim(1000, 6, 4 * 1000)


def test_per_gpu_from_an_estimate() -> None:
    from test_estimate import run_estimate

    config = get_model("llama-3.1-8b")
    doc = model_doc(
        config, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm", isl=1024, osl=256
    )
    record = run_estimate([doc], config=config, isl=1024, osl=256).record
    rate = per_gpu(record)
    assert rate.output_tokens_per_s == pytest.approx(record.requests_per_s * 256)
    assert rate.total_tokens_per_s == pytest.approx(record.requests_per_s * 1280)
    assert rate.peak_output_tokens_per_s == record.decode_tokens_per_s
    assert rate.peak_output_tokens_per_s > rate.output_tokens_per_s  # prefill shares the GPU


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 4, 0.5, None), "2 GPUs cannot hold one copy of the model at TP 4"),
        ((-8, 1, 0.5, None), "--gpus must be at least 1, got -8"),
        ((8, 1, 0.0, None), "--utilization must be in (0, 1]"),
        ((8, 1, 1.5, None), "--utilization must be in (0, 1]"),
        ((8, 1, 0.5, -1.0), "--price (USD per GPU-hour) must be positive"),
    ],
)
def test_bad_fleets(args: tuple, message: str) -> None:
    with pytest.raises(BenchError) as raised:
        check_fleet(*args)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tp", "3"), "TP 3 does not divide Llama-3.1-70B's 64 attention heads"),
        (("--gpu", "nope"), "unknown GPU 'nope'"),
        (
            ("--results", "x.json"),
            "--tokens-per-gpu is the rate to plan with: it excludes --results",
        ),
        (("--target-tokens-day", "-5"), "--target-tokens-day must be positive, got -5"),
        (("--target-tokens-s", "0"), "--target-tokens-s must be positive, got 0"),
        (("--utilization", "2"), "--utilization must be in (0, 1], got 2"),
    ],
)
def test_bad_capacity_input_names_the_flag(args: tuple, message: str) -> None:
    """In-process: each a one-line BenchError before any estimate."""
    common = ("--model", "llama-3.1-70b", "--gpus", "8", "--tokens-per-gpu", "600")
    done = CliRunner().invoke(app, ["capacity", *common, *args])
    assert isinstance(done.exception, BenchError), done.output
    assert message in str(done.exception) and "\n" not in str(done.exception)


def test_capacity_text_is_singular_for_one_gpu_and_keeps_small_rates() -> None:
    args = ["capacity", "--model", "tiny", "--gpus", "1", "--tokens-per-gpu", "0.05"]
    args += ["--target-tokens-s", "0.01", "--utilization", "0.5"]
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["utilization"] == 0.5 and "utilisation" not in done.stdout
    text = CliRunner().invoke(app, args, env={"COLUMNS": "120"}).stdout
    flat = " ".join(text.split())
    assert "1 GPU at 50%" in flat and "needs 1 GPU at 50% utilization" in flat
    assert "0.05 output tok/s" in flat and "utilisation" not in flat
    assert (fmt_rate(0.0123), fmt_rate(12.345), fmt_rate(1234.5)) == ("0.0123", "12.3", "1,234")


def test_capacity_from_a_given_rate() -> None:
    done = tokbench(
        "capacity",
        "--model",
        "llama-3.1-70b",
        "--tp",
        "4",
        "--gpus",
        "8",
        "--tokens-per-gpu",
        "1200",
        "--isl",
        "1000",
        "--osl",
        "200",
        "--utilization",
        "0.5",
        "--price",
        "3",
        "--target-tokens-s",
        "10000",
        "--claim-tokens-s",
        "30000",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["output_tokens_day"] == pytest.approx(1200 * 8 * 0.5 * 86_400)
    assert out["requests_day"] == pytest.approx(1200 / 200 * 8 * 0.5 * 86_400)
    assert out["usd_per_million_output_tokens"] == pytest.approx(3 / (1200 * 0.5 * 3600) * 1e6)
    assert out["gpus_for_target_tokens_s"] == 20  # 10000 / 600 = 16.7 → 5 groups of 4
    assert out["claim_verdict"] == "implausible" and out["claim_ratio"] == pytest.approx(30 / 9.6)


def test_capacity_and_claim_from_a_result_file(tmp_path: Path) -> None:
    config = get_model("llama-3.1-8b")
    path = tmp_path / "h100.json"
    doc = model_doc(
        config,
        at_half_roofline("h100-sxm"),
        device=H100,
        spec="h100-sxm",
        batches=(1, 8),
        isl=1024,
        osl=256,
    )
    write_atomic(path, doc.to_json())
    done = tokbench(
        "capacity",
        "--model",
        "llama-3.1-8b",
        "--results",
        str(path),
        "--gpus",
        "16",
        "--price",
        "2.5",
        "--claim-tokens-s",
        "1e6",
        "--gpu",
        "b200",
    )
    assert done.returncode == 0, done.stderr
    for text in (
        "16 × B200",
        "output tokens",
        "cost at $2.5/GPU-hour",
        "claim check",
        "implausible",
        "projection to B200 (spec sheets)",
    ):
        assert text in " ".join(done.stdout.split()), text  # captions wrap anywhere


def test_capacity_without_a_rate_is_a_clear_error() -> None:
    done = tokbench("capacity", "--model", "tiny", "--gpus", "4")
    assert done.returncode == 2
    assert "name a GPU (--gpu KEY" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_deal_sets_the_price_per_gpu_hour() -> None:
    # $38 B for 300,000 GPUs over 7 years: 300,000 × 7 × 8,766 GPU-hours.
    assert deal_price(38e9, 7, 300_000) == pytest.approx(38e9 / (300_000 * 7 * 365.25 * 24))
    with pytest.raises(BenchError, match=r"--years must be positive"):
        deal_price(38e9, 0, 8)


def test_a_given_rate_beyond_the_gpus_roofline_is_refused() -> None:
    setup = Serving(get_model("llama-3.1-8b"), precision="fp8")
    bound = roofline_rate(setup, SPECS["h100-sxm"])
    # fp8 peak over two FLOPs per weight of every token, the embedding table aside (a lookup):
    # 1,978.9 TFLOP/s / (2 × (8.03 B − 128,256 × 4,096)).
    assert bound == pytest.approx(1978.9e12 / (2 * (8.03e9 - 128_256 * 4096)), rel=0.01)
    check_given_rate(setup, bound * 0.9, "h100-sxm")
    with pytest.raises(BenchError, match=r"exceeds what a H100 SXM can make of Llama-3.1-8B"):
        check_given_rate(setup, bound * 1.1, "h100-sxm")
    with pytest.raises(BenchError, match=r"Llama-3.1-405B at TP 1 in fp8 does not fit H100"):
        check_given_rate(Serving(get_model("llama-3.1-405b"), precision="fp8"), 10, "h100-sxm")


def test_capacity_under_an_slo_from_the_spec_sheet_with_a_deal() -> None:
    done = tokbench(
        "capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision", "fp8",
        "--gpus", "64", "--deal-usd", "10e6", "--years", "3", "--isl", "512", "--osl", "128",
        "--slo", "ttft=2s,tpot=50ms", "--requests", "200", "--claim-tokens-s", "1e7", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["usd_per_gpu_hour"] == pytest.approx(10e6 / (64 * 3 * 365.25 * 24))
    assert out["source"].startswith("simulated at p99 TTFT ≤ 2 s and TPOT ≤ 50 ms")
    assert out["claim_verdict"] == "implausible"
    assert (out["model"], out["gpu"], out["tp"], out["kv_precision"]) == (
        "Llama-3.1-8B",
        "H100 SXM",
        1,
        "bf16",
    )
