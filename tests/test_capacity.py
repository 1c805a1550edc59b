"""Fleet capacity, GPUs needed, cost, claim checks, the physical bound, deals and their market
checks: the arithmetic by hand, then the CLI."""

import json
from pathlib import Path

import pytest
from console import tokbench
from modeldocs import H100, at_half_roofline, model_doc
from typer.testing import CliRunner

from bench import BenchError
from bench.plan.bounds import output_bound
from bench.plan.capacity import (
    OPTIMISTIC,
    PLAUSIBLE,
    Asks,
    Fleet,
    Parallel,
    Part,
    PerGpu,
    Terms,
    check_claim,
    fleet_plan,
    given_rate,
    gpus_needed,
    parse_gpus,
    parse_parallel,
)
from bench.plan.deal import Deal, Ramp, linear_ramp, price_check, read_ramp
from bench.plan.models import Serving, get_model
from bench.plan.validate import kv_for, read_published
from bench.present.cli import app
from bench.record.hardware import SPECS
from bench.record.market import API_PRICES, GPU_PRICES
from bench.record.results import write_atomic
from bench.record.units import fmt_power, fmt_rate

ROOT = Path(__file__).parent.parent
# 1,000 output tok/s per GPU; 1,000 input + 250 output tokens per request: 4 requests/s.
GPU = PerGpu(output_tokens_per_s=1000.0, total_tokens_per_s=5000.0, requests_per_s=4.0,
             source="test")  # fmt: skip
SETUP = Serving(get_model("tiny"), isl=1000, osl=250)


def fleet(gpus: int = 8, tp: int = 1, utilization: float = 0.5, price: float | None = None):
    part = Part("GPU", None, gpus, Serving(get_model("tiny"), tp=tp), GPU)
    return Fleet((part,), utilization, price)


def test_fleet_tokens_requests_and_cost_per_day() -> None:
    f = fleet(price=2.0)
    assert f.per_day("output") == pytest.approx(1000 * 8 * 0.5 * 86_400)  # 345.6 M
    assert f.per_day("total") == pytest.approx(5000 * 8 * 0.5 * 86_400)
    assert f.per_day("requests") == pytest.approx(4 * 8 * 0.5 * 86_400)
    # $2 per GPU-hour buys 1000 × 0.5 × 3600 = 1.8 M output tokens: $1.11 per million.
    assert f.cost_per_million("output") == pytest.approx(2 / 1.8)
    assert f.cost_per_million("total") == pytest.approx(2 / 9)


def test_a_tp_group_is_the_unit_of_a_fleet_and_idle_gpus_are_paid() -> None:
    f = fleet(gpus=10, tp=4, utilization=1.0, price=1.0)
    assert f.serving_gpus == 8  # two copies of the model; 2 GPUs idle
    assert f.per_day("output") == pytest.approx(1000 * 8 * 86_400)
    assert f.cost_per_million("output") == pytest.approx(10 / (8 * 1000 * 3600) * 1e6)


@pytest.mark.parametrize(
    ("target", "tp", "expected"),
    [(10_000, 1, 20), (10_000, 2, 20), (10_001, 2, 22), (10_000, 8, 24), (1, 1, 1)],
)
def test_gpus_needed_for_a_target(target: float, tp: int, expected: int) -> None:
    # 1,000 tok/s per GPU at 50%: 500 tok/s each on average.
    assert gpus_needed(target, 1000.0, 0.5, tp) == expected


@pytest.mark.parametrize(
    ("claimed", "verdict"),
    [(6000, "plausible"), (10_000, "plausible"), (10_001, "optimistic"),
     (16_000, "optimistic"), (16_001, "implausible")],
)  # fmt: skip
def test_claim_verdicts_and_thresholds(claimed: float, verdict: str) -> None:
    claim = check_claim(claimed, fleet())
    assert claim.estimate == 8 * 1000 and claim.bound is None  # no GPU named: no bound
    assert claim.ratio == pytest.approx(claimed / 8000) and claim.verdict == verdict
    assert (PLAUSIBLE, OPTIMISTIC) == (1.25, 2.0)


def test_a_claim_above_the_physical_bound_is_impossible() -> None:
    setup = Serving(get_model("llama-3.1-8b"), precision="fp8", isl=1000, osl=1000)
    bound = output_bound(setup, SPECS["h100-sxm"])
    part = Part("H100 SXM", "h100-sxm", 8, setup, GPU, bound)
    claim = check_claim(8 * bound.tokens_per_s * 1.01, Fleet((part,), 0.6))
    assert claim.bound == pytest.approx(8 * bound.tokens_per_s) and claim.verdict == "impossible"


def test_the_physical_bound_caps_simulation_and_publication() -> None:
    """No published figure (TensorRT-LLM, vLLM) exceeds the bound of its set-up, and the
    issue's two cases sit where the issue put them: KV reads cap Llama-3.1-8B at 8000/8000 on
    an H100 near 3.7k tok/s; prefill FLOPs cap 405B fp4 on GB200 TP4 far below 11,000."""
    for row in read_published(ROOT / "docs" / "published.csv"):
        if row.scenario == "decode":  # a decode pool's: its prompts' prefill ran elsewhere
            continue
        setup = Serving(get_model(row.model), tp=row.tp, dp=row.dp, ep=row.ep,
                        precision=row.precision, kv_precision=kv_for(row)[0], isl=row.isl,
                        osl=row.osl)  # fmt: skip
        assert row.published < output_bound(setup, SPECS[row.gpu]).tokens_per_s, row
    long = Serving(get_model("llama-3.1-8b"), precision="fp8", kv_precision="fp8", isl=8000,
                   osl=8000)  # fmt: skip
    assert output_bound(long, SPECS["h100-sxm"]).tokens_per_s == pytest.approx(3700, rel=0.05)
    big = Serving(get_model("llama-3.1-405b"), tp=4, precision="fp4", isl=1000, osl=1000)
    assert output_bound(big, SPECS["gb200"]).tokens_per_s < 11_000 / 1.8


@pytest.mark.parametrize(
    ("model", "kwargs", "rate"),
    [("llama-3.1-8b", {"precision": "fp8", "kv_precision": "fp8", "isl": 8000, "osl": 8000},
      "100000"),
     ("llama-3.1-405b", {"tp": 4, "precision": "fp4", "isl": 1000, "osl": 1000}, "11000")],
)  # fmt: skip
def test_a_given_rate_above_the_bound_is_refused(model: str, kwargs: dict, rate: str) -> None:
    setup = Serving(get_model(model), **kwargs)
    gpu = "gb200" if "405" in model else "h100-sxm"
    with pytest.raises(BenchError, match=r"exceeds what a .* can make of .*: at most"):
        given_rate(setup, float(rate), gpu)
    ok = output_bound(setup, SPECS[gpu]).tokens_per_s * 0.9
    assert given_rate(setup, ok, gpu)[0].output_tokens_per_s == ok
    with pytest.raises(BenchError, match=r"^--tokens-per-gpu 1e\+300 exceeds"):
        given_rate(setup, 1e300, gpu)
    with pytest.raises(BenchError, match=r"Llama-3.1-405B at TP 1 in fp8 does not fit H100"):
        given_rate(Serving(get_model("llama-3.1-405b"), precision="fp8"), 10, "h100-sxm")


def test_a_deal_with_a_ramp_and_a_share_that_is_not_gpu_time() -> None:
    whole = Deal(38e9, 7, non_gpu_share=0.0)
    assert whole.price_per_gpu_hour(300_000) == pytest.approx(38e9 / (300_000 * 7 * 8766))
    ramped = Deal(38e9, 7, 0.2, linear_ramp(14))  # half the first 14 months' GPU-hours lost
    assert ramped.online_share == pytest.approx(1 - 7 / 84)
    assert ramped.price_per_gpu_hour(300_000) == pytest.approx(
        0.8 * 38e9 / (300_000 * 7 * 8766 * (1 - 7 / 84))
    )
    assert Ramp(((0, 0.5), (12, 1.0))).mean_share(24) == pytest.approx(0.875)


def test_a_ramp_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "ramp.csv"
    path.write_text("month,online\n0,0.1\n6,0.5\n12,1\n")
    assert read_ramp(path).mean_share(12) == pytest.approx((0.3 * 6 + 0.75 * 6) / 12)
    for text, message in (("month,online\n0,2\n", r"ramp\.csv:2: online must be within 0\.\.1"),
                          ("when,share\n0,1\n", r"ramp\.csv:2: a ramp has the columns"),
                          ("month,online\n3,0.5\n1,0.6\n", r"months rise from 0"),
                          ("month,online\n", r"the ramp has no rows")):  # fmt: skip
        path.write_text(text)
        with pytest.raises(BenchError, match=message):
            read_ramp(path)


def test_market_tables_are_dated_and_sourced() -> None:
    for row in (*GPU_PRICES, *API_PRICES):
        assert row.source and (row.date == "" or row.date[:4] in ("2025", "2026")), row
    assert {r.gpu for r in GPU_PRICES} <= set(SPECS)
    gb300 = price_check("gb300", 2.0)
    assert gb300.stand_in == "b300" and gb300.lowest.usd == 7.40
    assert gb300.committed_floor == pytest.approx(7.40 * 0.4)


def test_a_mixed_fleet_plan_with_its_market_checks_and_assumptions() -> None:
    setup = Serving(get_model("gpt-oss-120b"), precision="mxfp4", isl=1000, osl=1000)
    parts = tuple(Part(SPECS[k].name, k, 150_000, setup, GPU) for k in ("gb200", "gb300"))
    terms = Terms(parse_gpus("gb200=150000,gb300=150000", None), 0.6,
                  deal=Deal(38e9, 7, 0.2, linear_ramp(14)))  # fmt: skip
    plan = fleet_plan(parts, terms, Asks(), "1000 + 1000 tokens (given)")
    out = plan.figures
    assert out["gpus"] == 300_000 and len(out["parts"]) == 2
    assert out["usd_per_gpu_hour"] == pytest.approx(terms.deal.price_per_gpu_hour(300_000))
    prices = {p["gpu"]: p for p in out["market_gpu_prices"]}
    assert prices["gb300"]["stand_in"] == "b300" and prices["gb200"]["lowest_usd"] == 10.50
    assert out["market_api_prices"][0]["seller"] == "DeepInfra"  # cheapest first
    assert out["megawatts"] == pytest.approx(150_000 * (120 / 72 + 142 / 72) * 1.15 / 1e3)
    said = " ".join(out["assumptions"])
    for words in (
        "20% of the deal",
        "--ramp-months",
        "utilization 60%",
        "PUE 1.15",
        "B300 (standing in for GB300)",
    ):
        assert words.lower() in said.lower(), words


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tp", "3"), "TP 3 does not divide Llama-3.1-70B's 64 attention heads"),
        (("--gpu", "nope"), "unknown GPU 'nope'"),
        (("--results", "x.json"), "--tokens-per-gpu is the rate to plan with: it excludes"),
        (("--target-tokens-day", "-5"), "--target-tokens-day must be positive, got -5"),
        (("--target-tokens-s", "0"), "--target-tokens-s must be positive, got 0"),
        (("--utilization", "2"), "--utilization must be in (0, 1], got 2"),
        (("--price", "-1"), "--price (USD per GPU-hour) must be in (0, 1e+06], got -1"),
        (("--price", "1e308"), "--price (USD per GPU-hour) must be in (0, 1e+06], got 1e+308"),
        (("--deal-usd", "1e300", "--years", "7"), "--deal-usd (USD for the whole deal) must be in"),
        (("--deal-usd", "1e9"), "a deal needs --deal-usd and --years together"),
        (("--deal-usd", "1e9", "--years", "3", "--price", "2"), "--price and --deal-usd exclude"),
        (("--deal-usd", "1e9", "--years", "3", "--non-gpu-share", "1"), "--non-gpu-share must"),
        (
            (
                "--ramp-months",
                "12",
            ),
            "--ramp-months and --ramp spread a deal: they need",
        ),
        (
            (
                "--pue",
                "0.9",
            ),
            "--pue (facility power over IT power) must be at least 1",
        ),
        (("--isl", "130000", "--osl", "2000"), "132,000 tokens exceed Llama-3.1-70B's context"),
    ],
)
def test_bad_capacity_input_names_the_flag(args: tuple, message: str) -> None:
    """In-process: each a one-line BenchError before any estimate."""
    common = ("--model", "llama-3.1-70b", "--gpus", "8", "--tokens-per-gpu", "600")
    done = CliRunner().invoke(app, ["capacity", *common, *args])
    assert isinstance(done.exception, BenchError), done.output
    assert message in str(done.exception) and "\n" not in str(done.exception)


@pytest.mark.parametrize(
    ("gpus", "gpu", "message"),
    [("-8", None, "--gpus must be at least 1, got -8"), ("eight", None, "--gpus takes a number"),
     ("h100-sxm=4", "b200", "names its GPU kinds: drop --gpu b200"),
     ("h100-sxm=4,h100-sxm=4", None, "names a GPU kind twice"),
     ("tpu=4", None, "unknown GPU 'tpu'")],
)  # fmt: skip
def test_bad_fleets(gpus: str, gpu: str | None, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_gpus(gpus, gpu)
    with pytest.raises(BenchError, match=r"2 GPUs cannot hold one copy of the model at TP 4"):
        Terms(((None, 2),)).check(Parallel(4))


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
        "capacity", "--model", "llama-3.1-70b", "--tp", "4", "--gpus", "8", "--tokens-per-gpu",
        "1200", "--isl", "1000", "--osl", "200", "--utilization", "0.5", "--price", "3",
        "--target-tokens-s", "10000", "--claim-tokens-s", "30000", "--json",
    )  # fmt: skip
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
    doc = model_doc(config, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm",
                    batches=(1, 8), isl=1024, osl=256)  # fmt: skip
    write_atomic(path, doc.to_json())
    done = tokbench(
        "capacity", "--model", "llama-3.1-8b", "--results", str(path), "--gpus", "16",
        "--price", "2.5", "--claim-tokens-s", "1e6", "--gpu", "b200",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    flat = " ".join(done.stdout.split())  # captions wrap anywhere
    for text in (
        "16 × B200",
        "output tokens",
        "cost at $2.50/GPU-hour",
        "claim check",
        "impossible",
        "beside public prices of B200",
        "as h100.json measured them",
    ):
        assert text in flat, text  # fmt: skip


def test_capacity_without_a_rate_is_a_clear_error() -> None:
    done = tokbench("capacity", "--model", "tiny", "--gpus", "4")
    assert done.returncode == 2
    assert "name a GPU (--gpu KEY" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_capacity_under_an_slo_plans_at_the_rate_the_run_served() -> None:
    """Issue 23: capacity once turned the SLO's rate into more tok/s per GPU than the same
    run served; now it plans at exactly what simulate's re-simulation at that rate serves."""
    same = ("--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision", "fp8", "--isl",
            "256", "--osl", "32", "--slo", "ttft=2s,tpot=50ms", "--requests", "300",
            "--json")  # fmt: skip
    done = tokbench("capacity", *same, "--gpus", "64", "--deal-usd", "10e6", "--years", "3",
                    "--claim-tokens-s", "1e7")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    sim = json.loads(tokbench("simulate", *same).stdout)
    assert out["per_gpu_output_tokens_s"] == pytest.approx(sim["output_tokens_s_per_gpu"])
    assert out["usd_per_gpu_hour"] == pytest.approx(0.8 * 10e6 / (64 * 3 * 365.25 * 24))
    assert out["source"].startswith("simulated scheduler at the highest Poisson rate")
    assert out["claim_verdict"] == "impossible"
    assert (out["model"], out["gpu"], out["tp"], out["kv_precision"]) == (
        "Llama-3.1-8B", "H100 SXM", 1, "bf16")  # fmt: skip


def test_capacity_at_an_interactivity() -> None:
    done = tokbench(
        "capacity", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision", "fp8",
        "--isl", "256", "--osl", "32", "--gpus", "8", "--interactivity", "60", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "closed loop" in out["source"] and out["per_gpu_output_tokens_s"] > 0


def test_estimate_and_capacity_read_the_lengths_a_result_file_measured() -> None:
    """Issue 23: `estimate --results F` once ignored the lengths F was measured at."""
    fixture = str(ROOT / "tests" / "fixtures" / "schema1-cpu.json")
    common = ("--model", "tiny", "--precision", "fp32", "--results", fixture)
    estimate = json.loads(tokbench("estimate", *common, "--no-save", "--json").stdout)
    assert (estimate["isl"], estimate["osl"]) == (32, 16)
    plan = tokbench("capacity", *common, "--gpus", "8", "--json")
    assert plan.returncode == 0, plan.stderr
    out = json.loads(plan.stdout)
    assert (out["isl"], out["osl"]) == (32, 16)
    assert "as schema1-cpu.json measured them" in out["assumptions"][0]
    assert out["source"].startswith("the estimate's serving mix")


@pytest.mark.parametrize(
    ("text", "layout"),
    [("8", Parallel(8)), ("8ep", Parallel(8, 1, 8)), ("1x8", Parallel(1, 8, 8)),
     ("2X36", Parallel(2, 36, 72))],
)  # fmt: skip
def test_tp_names_a_layout(text: str, layout: Parallel) -> None:
    assert parse_parallel(text) == layout


def test_a_bad_layout_is_one_clear_line() -> None:
    with pytest.raises(BenchError, match="a whole number of GPUs or auto, got 'eight'"):
        parse_parallel("eight")
    for zero in ("2x0", "0", "0ep"):
        with pytest.raises(BenchError, match=f"--tp {zero}: every degree of a layout must be"):
            parse_parallel(zero)


@pytest.mark.parametrize("gpu", ["h200", "gb200"])
def test_the_layout_search_serves_deepseek_r1_with_expert_parallelism(gpu: str) -> None:
    """SGLang and NVIDIA serve DeepSeek-R1 with DP attention and EP on an 8-GPU board and on
    an NVL72 rack (lmsys.org/blog/2025-05-05-large-scale-ep, 2025-06-16-gb200-part-1)."""
    from bench.plan import planner

    serving = planner.ServingOptions("deepseek-r1", "auto", "fp8", isl=1000, osl=1000)
    sources = planner.TimeSources(gpu=gpu)
    answer = planner.estimate(planner.EstimateSettings(serving, sources, [64]))
    assert answer.throughput.setup.ep > 1
    tried = {layout.label for layout in answer.layouts}
    assert {"TP 8", "TP 1 × DP 8, EP 8"} <= tried
    assert ("TP 1 × DP 72, EP 72" in tried) == (gpu == "gb200")


@pytest.mark.parametrize(
    ("megawatts", "text"), [(628.3, "628 MW"), (2.345, "2.35 MW"), (0.01173, "11.7 kW")]
)
def test_power_keeps_a_small_fleet_visible(megawatts: float, text: str) -> None:
    assert fmt_power(megawatts) == text
