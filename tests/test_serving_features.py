"""Speculative decoding, prefix caching, disaggregated prefill/decode pools and the parallel
sweep: closed-form answers for one request, the pool ratio's arithmetic, the KV transfer's
fabric, the same sweep whatever runs it, and one-line refusals."""

import json
import re

import pytest
from console import tokbench
from test_simulate import LLAMA_8B, spec_step_model

from bench import BenchError
from bench.plan import capacity, disagg, plans, sweep
from bench.plan.capacity import Parallel
from bench.plan.models import Serving
from bench.plan.planner import ServingOptions, TimeSources
from bench.plan.simulate import Features, StepCost, kv_pages, simulate
from bench.plan.speculative import cached_prefix, mtp, parse_spec
from bench.plan.workloads import Request
from bench.record.hardware import get_spec


def test_tokens_per_step_follow_the_acceptance_products() -> None:
    spec = parse_spec("k=3,accept=0.8,0.6,0.4")
    assert spec.tokens_per_step == pytest.approx(1 + 0.8 + 0.8 * 0.6 + 0.8 * 0.6 * 0.4)
    assert spec.width == 4
    # MTP's per-position rates give back the published acceptance lengths.
    assert [mtp(k).tokens_per_step for k in (1, 2, 3)] == pytest.approx([1.92, 2.58, 2.82])
    assert parse_spec("eagle3:k=2,accept=0.7").accept == (0.7, 0.7)


def _serve(setup: Serving, requests: list[Request], features: Features, pages: int = 0):
    model = spec_step_model(setup)
    longest = max(r.prompt + r.output for r in requests)
    cost = StepCost(model, longest, [requests[0].prompt], features)
    return simulate(requests, cost, pages or kv_pages(setup, model.target.memory))


def _alone(setup: Serving, features: Features):
    return _serve(setup, [Request(0.0, setup.isl, setup.osl)], features)


def test_drafts_all_accepted_make_k_plus_one_tokens_a_step() -> None:
    """One request, every draft accepted: its 200 tokens after the first take 200 / 4 = 50
    verification steps, each dearer than a plain decode step (4 tokens through the model and
    3 draft passes) but far fewer."""
    setup = Serving(LLAMA_8B, isl=1000, osl=201)
    plain = _alone(setup, Features())
    spec = _alone(setup, Features(parse_spec("k=3,accept=1")))
    assert plain.steps == 1 + 200 and spec.steps == 1 + 50
    assert spec.made[-1] == pytest.approx(201)  # no token made past the output
    assert plain.values("tpot")[0] < 4 * spec.values("tpot")[0]  # a step costs more ...
    assert spec.values("tpot")[0] < plain.values("tpot")[0]  # ... but makes 4 tokens


def test_prefix_hits_skip_prefill_compute_but_hold_their_pages() -> None:
    setup = Serving(LLAMA_8B, isl=1000, osl=2)
    full, half = _alone(setup, Features()), _alone(setup, Features(prefix_hit=0.5))
    assert half.values("ttft")[0] < 0.6 * full.values("ttft")[0]
    assert cached_prefix(1000, 0.5) == 500 and cached_prefix(10, 0.99) == 9
    # Pages are reserved for the whole prompt either way: 200 pages hold 3 requests at once.
    requests = [Request(0.0, 512, 512)] * 12
    for features in (Features(), Features(prefix_hit=0.9)):
        result = _serve(Serving(LLAMA_8B, isl=512, osl=512), requests, features, pages=200)
        assert max(result.running) == 3, features


def test_pools_are_sized_to_the_slower_phase_per_gpu() -> None:
    # A prefill instance serves 4× a decode instance: 1 : 4 balances them.
    assert disagg.size_pools(10.0, 2.5, 1, 1) == disagg.Pools(1, 4)
    # Within 4 GPUs the best is 1 : 3 (7.5 requests/s over 4 GPUs).
    assert disagg.size_pools(10.0, 2.5, 1, 1, most=4) == disagg.Pools(1, 3)
    assert disagg.parse_pools("auto") is None and disagg.parse_pools("2:5") == disagg.Pools(2, 5)


def test_kv_transfer_stays_on_nvlink_within_the_domain_and_crosses_the_network_beyond() -> None:
    setup, h100 = Serving(LLAMA_8B), get_spec("h100-sxm")
    size = setup.kv_bytes_per_token() * 1024  # 128 KiB a token: 32 layers × 8 heads × 128 × 2 × 2
    inside, outside = (disagg.kv_transfer(setup, h100, 1024, g) for g in (8, 16))
    assert inside.bytes_per_gpu == size == 128 * 2**20
    assert "nvlink" in inside.fabric and "network" in outside.fabric
    assert outside.seconds > 5 * inside.seconds  # a NIC's 50 GB/s against NVLink's 450


def test_simulate_pools_prints_each_pool_and_the_rate_over_all_gpus() -> None:
    done = tokbench("simulate", "--model", "tiny", "--gpu", "h100-sxm", "--isl", "256", "--osl",
                    "64", "--requests", "50", "--pools", "1:2", "--spec", "k=2,accept=0.7",
                    "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["pools"] == "1:2" and figures["gpus"] == 3
    p, d = figures["prefill"], figures["decode"]
    rate = min(p["requests_s_per_instance"], 2 * d["requests_s_per_instance"])
    assert figures["output_tokens_s_per_gpu"] == pytest.approx(rate * 64 / 3)
    assert "offline" in p["serving_model"] and "speculative" in d["notes"][0]


def test_a_sweep_gives_the_same_rows_on_one_or_two_workers() -> None:
    serving = ServingOptions("tiny", tp="2")
    setups = sweep.setups(serving, ["h100-sxm", "b200"], [(128, 32)])
    one = sweep.sweep(serving, setups, requests=20, workers=1)
    assert one == sweep.sweep(serving, setups, requests=20, workers=2)
    assert all(r.rate and r.rate <= r.bound for r in one)


def test_a_sweep_skips_set_ups_whose_bound_is_below_the_best_simulated(monkeypatch) -> None:
    """Bounds 100, 90, .., 10 in one workload, each simulating at half its bound: the first
    round (ROUND set-ups) finds 50, and every set-up bounded below 50 is pruned unsimulated."""
    setups = [sweep.SetUp("h100-sxm", Parallel(tp), 128, 32) for tp in range(1, 11)]
    bounds = {s: 110.0 - 10 * s.layout.tp for s in setups}
    monkeypatch.setattr(sweep, "_bounded", lambda _, s: sweep.Row(s, bounds[s]))
    monkeypatch.setattr(sweep, "simulate_one", lambda job: (bounds[job[1]] / 2, ""))
    rows = sweep.sweep(ServingOptions("tiny"), setups)
    simulated = [r.bound for r in rows if r.rate]
    assert simulated == [100, 90, 80, 70, 60, 50]  # round one, then those bounded ≥ 50
    assert all(r.why.startswith("pruned") for r in rows if r.bound < 50)


def test_ray_runs_the_same_sweep_when_it_is_installed() -> None:
    pytest.importorskip("ray")
    serving = ServingOptions("tiny", tp="1")
    setups = sweep.setups(serving, ["h100-sxm"], [(128, 32)])
    local = sweep.sweep(serving, setups, requests=50)
    assert sweep.sweep(serving, setups, requests=50, engine="ray") == local


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k=x,accept=0.5", "drafts must be a whole number"),
        ("k=2,accept=0.5,0.4,0.3", "accept= needs 1 or 2 rates"),
        ("k=2,accept=1.5", "--spec acceptance must be"),
        ("eagle3:k=4", "give k= and accept="),
        ("mtp:5", "published MTP acceptance covers 1 to 3"),
        ("medusa:3", "bad --spec 'medusa:3'"),
    ],
)
def test_bad_spec_is_one_line(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        parse_spec(text)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pools": "0:1"}, "--pools takes auto or P:D"),
        ({"prefix_hit": 1.0}, "--prefix-hit"),
        ({"spec": "mtp:2"}, "tiny has no MTP modules"),
        ({"pools": "1:1", "rate": 5.0}, "--pools and --rate exclude each other"),
        ({"sweep": "128-32"}, "--sweep takes ISL/OSL pairs"),
        (
            {"sweep": "128/32,1024/0"},
            "lengths >= 1, comma-separated (e.g. 1024/256,8000/1000); got '1024/0'",
        ),
        ({"sweep": "0/32"}, "--sweep takes ISL/OSL pairs of lengths >= 1"),
        (
            {"gpus": ("h100-sxm", "b200", "H100 SXM"), "concurrency": (1,)},
            "--gpu names h100-sxm more than once",
        ),
        ({"pools": "1:1", "slo": "ttft=1us"}, "the KV transfer alone takes"),
    ],
)
def test_bad_serving_feature_input_is_one_line(options: dict, message: str) -> None:
    serving = ServingOptions("tiny", isl=128, osl=32)
    settings = plans.SimulateSettings(serving, TimeSources(gpu="h100-sxm"), requests=20, **options)
    with pytest.raises(BenchError, match=re.escape(message)) as error:
        plans.simulation(settings)
    assert "\n" not in str(error.value)


def test_capacity_plans_at_the_pools_rate_over_all_their_gpus() -> None:
    serving = ServingOptions("tiny", isl=128, osl=32)
    terms = capacity.Terms((("h100-sxm", 64),))
    settings = plans.CapacitySettings(serving, terms, requests=20, pools="1:2")
    part = plans.fleet(settings).fleet.parts[0]
    assert part.rate.source.startswith("disaggregated: 1 prefill (TP 1")
    assert "over all 3 GPUs" in part.rate.source
