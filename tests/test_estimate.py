"""Per-GPU throughput estimates: the arithmetic by hand on synthetic result files, provenance,
projections and bad inputs; then end to end through `tokbench run --suite model` and
`tokbench estimate` on this machine."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from console import tokbench
from modeldocs import (
    CPU,
    H100,
    H200,
    at_fraction,
    at_half_roofline,
    model_doc,
    record,
    roofline_seconds,
)

from bench import BenchError
from bench.measure.ops import load_results
from bench.plan.lookup import Measurements, model_time
from bench.plan.models import Serving, get_model, suite_cases
from bench.plan.network import NCCL_LATENCY_S
from bench.plan.throughput import estimate_throughput, save, serving_mix
from bench.record.hardware import SPECS
from bench.record.results import load, write_atomic

TINY = get_model("tiny")
SETTINGS = ("tp", "precision", "kv_precision", "isl", "osl", "workspace", "max_batch")


MEMORY_OPS = ("rmsnorm", "rotary", "kv_write", "silu_mul")


def flat(op: str, shape: dict, dtype: str) -> float:
    """Every GEMM 1 ms, every prefill attention and MoE 2 ms, every decode attention and
    memory-bound op (add + RMSNorm, rotary, KV-cache write, SiLU·mul) 0.5 ms."""
    return {"matmul": 1e-3, "attention": 2e-3, "moe": 2e-3, "decode": 0.5e-3}.get(op, 0.5e-3)


def run_estimate(docs, **kwargs):
    """estimate_throughput on files f0.json, f1.json, … of tiny at 32 + 16 tokens by default."""
    kwargs = {"isl": 32, "osl": 16, **kwargs}
    settings = {k: kwargs.pop(k) for k in SETTINGS if k in kwargs}
    setup = Serving(kwargs.pop("config", TINY), **settings)
    return estimate_throughput(setup, docs, [f"f{i}.json" for i in range(len(docs))], **kwargs)


# --- the arithmetic, by hand ----------------------------------------------------------------------


def test_steps_are_the_sum_of_their_parts() -> None:
    doc = model_doc(TINY, flat, gbps=10.0)
    result = run_estimate([doc], batches=[1])
    # prefill at batch 1 and at the step budget: 16,384 tokens / 32 = 512 prompts
    prefill, budget = result.prefill
    assert (prefill.batch, budget.batch, result.budget_batch) == (1, 512, 512)
    decode = result.decode[0]
    layers = 2
    # Per layer: 2 add + RMSNorms, rotary, the KV-cache write and SiLU·mul at 0.5 ms each.
    memory = layers * 5 * 0.5e-3
    # decode: 4 GEMMs and one decode attention per layer, the LM head once.
    assert decode.seconds == pytest.approx(layers * (4 * 1e-3 + 0.5e-3) + memory + 1e-3)
    assert decode.seconds == pytest.approx(15e-3)
    assert decode.tokens_per_s == pytest.approx(1 / 15e-3)
    assert prefill.seconds == pytest.approx(layers * (4 * 1e-3 + 2e-3) + memory + 1e-3)
    assert prefill.tokens_per_s == pytest.approx(32 / 18e-3)
    # A dense model's every kernel is an op: nothing is modelled.
    assert decode.sources == pytest.approx({"measured": 15e-3})
    assert decode.parts == pytest.approx(
        {"gemm": 8e-3, "attention": 1e-3, "memory": memory, "lm_head": 1e-3}
    )
    # The largest batch that fits 16 GiB of a CPU less 8%: beyond the scheduler cap of 1024.
    plan = Serving(TINY, isl=32, osl=16).memory_plan(CPU.memory_bytes, cuda=False)
    assert result.record.max_batch == plan.max_batch > 1024
    assert [s.batch for s in result.decode] == [1, 1024] and result.capped
    # every op takes the same time whatever the shape
    assert budget.sources == pytest.approx({"measured": 18e-3})
    rps = 1 / (32 / (512 * 32 / budget.seconds) + 16 / (1024 / 15e-3))
    assert result.record.requests_per_s == pytest.approx(rps)
    assert result.record.decode_tokens_per_s == pytest.approx(1024 / 15e-3)


def test_a_moe_step_measures_its_experts_and_models_only_the_router_top_k() -> None:
    tiny_moe = get_model("tiny-moe")
    doc = model_doc(tiny_moe, flat, gbps=0.001)  # 1 MB/s: bandwidth-bound, far above the floor
    step = run_estimate([doc], config=tiny_moe, batches=[1]).decode[0]
    layers = 2
    # Per layer: qkv, o and router GEMMs, decode attention, the fused MoE, 4 memory-bound ops.
    measured = layers * (3 * 1e-3 + 0.5e-3 + 2e-3 + 4 * 0.5e-3) + 1e-3
    kernels = Serving(tiny_moe).modelled_kernels(1)
    assert [name for name, _ in kernels] == ["router softmax + top-k"]
    # The router's few bytes take less than the floor: the shortest measured case, 0.5 ms.
    assert step.sources == pytest.approx({"measured": measured, "modelled": layers * 0.5e-3})
    assert step.parts["moe"] == pytest.approx(layers * 2e-3)


def test_serving_mix() -> None:
    doc = model_doc(TINY, flat, gbps=10.0)
    result = run_estimate([doc], batches=[1, 4])
    budget = result.prefill[-1]
    assert budget.batch == result.budget_batch == 512
    rps, latency = serving_mix(budget, result.decode[-1], 32, 16, result.prefill[0])
    assert rps == pytest.approx(
        1 / (32 / budget.tokens_per_s + 16 / result.decode[-1].tokens_per_s)
    )
    assert latency == pytest.approx(result.prefill[0].seconds + 16 * result.decode[-1].seconds)
    serving = result.record.rows[-1]
    assert serving.phase == "serving" and serving.tokens_per_s == pytest.approx(rps * 16)
    assert result.record.requests_per_s == pytest.approx(rps)


def test_serving_mix_does_not_depend_on_the_displayed_batches() -> None:
    doc = model_doc(TINY, flat, gbps=10.0, batches=(1, 2, 4))
    mixes = {
        run_estimate([doc], batches=b).record.requests_per_s for b in ([1], [2], [1, 2, 4], None)
    }
    assert len(mixes) == 1


def test_max_batch_caps_every_headline_figure() -> None:
    """--max-batch below the memory fit: no decode row above it, the cap row at it, and the
    decode rate, serving mix and prefill budget taken there."""
    doc = model_doc(TINY, flat, gbps=10.0)  # measured decode at 1, 4 and 1024
    result = run_estimate([doc], max_batch=64)
    assert [s.batch for s in result.decode] == [1, 4, 64] and result.capped
    assert result.decode_cap == 64 and result.budget_batch == 64
    assert result.record.decode_tokens_per_s == pytest.approx(result.decode[-1].tokens_per_s)
    assert result.record.rows[-1].batch == 64
    with pytest.raises(BenchError, match="--batch 128 exceeds --max-batch 64"):
        run_estimate([doc], max_batch=64, batches=[128])


def test_tensor_parallel_all_reduces_over_the_spec_interconnect() -> None:
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm", tps=(2,))
    step = run_estimate([doc], tp=2, batches=[4]).decode[0]
    message = 4 * 256 * 2  # tokens × hidden × bf16
    ring = 2 * (2 - 1) / 2 * message / 370e9  # NCCL's measured bus bandwidth on an H100 board
    assert step.parts["communication"] == pytest.approx(2 * 2 * (ring + NCCL_LATENCY_S))
    assert step.tokens_per_s == pytest.approx(4 / step.seconds / 2)


def test_a_measured_all_reduce_replaces_the_spec_model() -> None:
    """A file with the all_reduce measured on 2 ranks (a run under torchrun) at sizes around
    the step's message: the estimate interpolates it, and says so."""
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm", tps=(2,))
    for nbytes, ms in ((1024, 0.01), (1 << 20, 0.03)):
        case = record("all_reduce", {"bytes": nbytes, "world": 2}, "bf16", ms / 1e3)
        doc.cases.append(case)
    result = run_estimate([doc], tp=2, batches=[4])
    message = 4 * 256 * 2  # tokens × hidden × bf16
    one = (0.01 + (0.03 - 0.01) * (message - 1024) / ((1 << 20) - 1024)) / 1e3
    assert result.decode[0].parts["communication"] == pytest.approx(2 * 2 * one)
    assert "all_reduce: from the one measured on 2 ranks (interpolated)" in result.record.notes
    assert "interpolated" in result.record.rows[-2].source  # the decode row at the largest batch


def test_the_model_suite_at_tp_2_measures_its_all_reduces() -> None:
    cases = suite_cases([Serving(TINY, tp=2, isl=32, osl=16)], [4], 1e9)
    sizes = {c.shape["bytes"] for c in cases if c.op == "all_reduce"}
    assert 4 * 256 * 2 in sizes and {c.shape["world"] for c in cases if c.op == "all_reduce"} == {2}


# --- where each number comes from -----------------------------------------------------------------


def test_interpolation_between_measured_token_counts() -> None:
    doc = model_doc(TINY, lambda op, s, dt: 1e-3 * s.get("M", 1), batches=(1, 8))
    meas = Measurements([doc])
    timed = meas.time("matmul", {"M": 4, "N": 512, "K": 256}, "bf16")
    assert timed.source == "interpolated"
    assert timed.seconds == pytest.approx(4e-3)  # linear in FLOPs, i.e. in M
    assert "between" in timed.detail


def test_the_model_scaled_by_a_measured_case_where_a_shape_is_missing() -> None:
    """Beyond every measured M: the op-time model at that shape, times how the most similar
    measured case compared with the model at its own shape."""
    spec = SPECS["h100-sxm"]
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm")
    wanted = {"M": 30000, "N": 512, "K": 256}  # beyond every measured M: no bracket
    meas = Measurements([doc])
    timed = meas.time("matmul", wanted, "bf16")
    assert timed.source == "scaled" and timed.bound == "memory"
    similar = max((p for p in meas._same_op("matmul", "bf16") if p.shape["N"] == 512),
                  key=lambda p: p.shape["M"])  # fmt: skip
    ratio = similar.seconds / model_time("matmul", similar.shape, "bf16", spec).seconds
    assert timed.seconds == pytest.approx(
        model_time("matmul", wanted, "bf16", spec).seconds * ratio
    )
    assert f"the model × {ratio:.2f}, as measured at" in timed.detail


def test_rows_say_where_their_time_comes_from() -> None:
    doc = model_doc(TINY, flat, gbps=10.0)
    rows = run_estimate([doc], batches=[1]).record.rows
    assert all(r.source == "measured" for r in rows)  # a dense model's every kernel is an op
    moe = get_model("tiny-moe")
    rows = run_estimate([model_doc(moe, flat, gbps=10.0)], config=moe, batches=[1]).record.rows
    # Decode at batch 1: 16 ms measured, the router's top-k at the 0.5 ms floor in 2 layers.
    assert rows[2].phase == "decode" and rows[2].source == "measured 94% · modelled 6%"


def test_fastest_correct_real_implementation_unless_one_is_forced() -> None:
    shape = {"M": 4, "N": 512, "K": 256}
    doc = model_doc(TINY, flat)
    doc.cases += [
        record("matmul", shape, "bf16", 0.5e-3, impl="triton"),
        record("matmul", shape, "bf16", 0.1e-3, impl="fast-but-interpreted", interpreted=True),
    ]
    failed = record("matmul", shape, "bf16", 0.01e-3, impl="wrong")
    failed.status = "failed"
    doc.cases.append(failed)
    assert Measurements([doc]).time("matmul", shape, "bf16").seconds == pytest.approx(0.5e-3)
    forced = Measurements([doc], impl="torch").time("matmul", shape, "bf16")
    assert forced.seconds == pytest.approx(1e-3) and forced.impl == "torch"


def test_default_batches_are_those_the_file_measured() -> None:
    doc = model_doc(TINY, flat, batches=(2, 16))
    assert [s.batch for s in run_estimate([doc]).decode] == [2, 16, 1024]


def test_a_file_from_before_the_norm_op_models_the_norms_and_says_so() -> None:
    """The schema-1 fixture has no rmsnorm cases: the estimate still answers, from bytes."""
    doc = load_results(Path(__file__).parent / "fixtures" / "schema1-cpu.json")
    result = run_estimate([doc], precision="fp32")
    assert "rmsnorm not measured in the files: modelled from its bytes, as below" in (
        result.record.notes
    )
    measured = run_estimate([model_doc(TINY, flat)]).record.notes
    assert not any(n.startswith("rmsnorm") for n in measured)


# --- projections ----------------------------------------------------------------------------------


def test_projection_scales_each_op_by_the_spec_rooflines() -> None:
    h100, b200 = SPECS["h100-sxm"], SPECS["b200"]
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm")
    shape = {"M": 1, "N": 512, "K": 256}
    projected = Measurements([doc], target=b200).time("matmul", shape, "bf16")
    measured = roofline_seconds("matmul", shape, "bf16", h100) / 0.5
    ratio = roofline_seconds("matmul", shape, "bf16", b200) / roofline_seconds(
        "matmul", shape, "bf16", h100
    )
    assert projected.seconds == pytest.approx(measured * ratio)
    assert ratio == pytest.approx(3350 / 8000)  # a 1-token GEMM is bandwidth-bound

    result = run_estimate([doc], gpu="b200", batches=[1])
    assert result.target.projected and result.record.gpu == "B200"
    assert result.record.memory_bytes == 183359 * 2**20  # as its driver reports it
    assert all(r.source.startswith("projection to B200 (spec sheets)") for r in result.record.rows)
    assert any("measured on NVIDIA H100 80GB HBM3" in n for n in result.record.notes)


def test_naming_the_measured_gpu_is_not_a_projection() -> None:
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm")
    result = run_estimate([doc], gpu="h100-sxm", batches=[1])
    assert not result.target.projected and result.record.memory_bytes == H100.memory_bytes


def test_files_from_two_gpus_combine_only_projected_onto_one() -> None:
    a = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm")
    b = model_doc(TINY, at_half_roofline("h200"), device=H200, spec="h200")
    result = run_estimate([a, b], gpu="b200", batches=[1])
    assert result.target.projected
    with pytest.raises(BenchError, match="result files from different devices"):
        run_estimate([a, b], batches=[1])


# --- bad inputs: one clear line each --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tp": 3}, "TP 3 does not divide tiny's 4 attention heads"),
        ({"batches": [10**7]}, "batch 10000000 does not fit"),
        ({"isl": 999}, "the results lack attention 1×4/2×999×999×64 causal bf16"),
        ({"gpu": "b200"}, "f0.json was measured on Test CPU, which has no spec-table entry"),
        ({"gpu": "tpu-v9"}, "unknown GPU 'tpu-v9'"),
        ({"tp": 2}, "the results lack"),
        ({"precision": "int3"}, "unknown precision 'int3'"),
        ({"osl": 0}, "at least 1"),
        ({"max_batch": 0}, "--max-batch must be at least 1, got 0"),
        ({"max_batch": -3}, "--max-batch must be at least 1, got -3"),
        ({"workspace": 1.0}, r"--workspace .* must be in \[0, 1\), got 1"),
        ({"workspace": -0.1}, r"--workspace .* must be in \[0, 1\), got -0.1"),
        ({"batches": [0]}, "--batch must be at least 1, got 0"),
        ({"impl": "nope"}, "--impl nope: no case in f0.json ran it; implementations there: torch"),
    ],
)
def test_bad_inputs(kwargs: dict, message: str) -> None:
    doc = model_doc(TINY, flat)
    with pytest.raises(BenchError, match=message) as raised:
        run_estimate([doc], **kwargs)
    assert "\n" not in str(raised.value)


def test_a_format_without_its_tensor_cores_is_labelled_weight_only() -> None:
    args = ("estimate", "--model", "tiny", "--precision", "fp4", "--gpu")
    assert "fp4 weights in bf16 GEMMs (weight-only" in tokbench(*args, "a100-sxm").stdout
    assert "fp4 GEMMs," in tokbench(*args, "b200").stdout


def test_impl_without_result_files_asks_for_them() -> None:
    done = tokbench("estimate", "--model", "tiny", "--gpu", "h100-sxm", "--impl", "triton")
    assert done.returncode == 2
    assert "--impl triton picks among the result files' implementations: give --results" in (
        done.stderr
    )


def test_a_missing_shape_says_what_the_file_has_and_how_to_measure_it() -> None:
    doc = model_doc(TINY, flat)
    with pytest.raises(BenchError) as raised:
        run_estimate([doc], isl=64, model_arg="configs/tiny.json")
    text = str(raised.value)
    assert "\n" not in text
    assert (
        "f0.json has for tiny: GEMM dtypes bf16; TP 1; prompt lengths (isl) 32 at prefill "
        "batches 1, 4, 512; decode contexts (isl + osl/2) 40 at batches 1, 4, 1024"
    ) in text
    assert "tokbench run --model configs/tiny.json --tp 1 --precision bf16 --isl 64" in text
    with pytest.raises(BenchError) as raised:
        run_estimate([doc], precision="fp8")
    text = str(raised.value)
    assert "fp8 needs a GPU of compute capability ≥ 8.9, which Test CPU is not" in text
    assert "measure them with" not in text


@pytest.mark.parametrize(
    "options",
    [
        {"batches": (1,), "isl": 16, "osl": 8},  # the README's run: prefill at the budget too
        {"batches": (1, 4), "isl": 32, "osl": 16},
        {"batches": (3, 100), "isl": 200, "osl": 7},  # a budget of 81 prompts
        {"batches": (2,), "isl": 20000, "osl": 1},  # a prompt beyond the budget
    ],
)
def test_what_the_suite_measures_is_what_the_estimate_needs(options: dict) -> None:
    """Run with options O, then estimate with O (no --batch: the file's), always works, from
    measured shapes alone."""
    doc = model_doc(TINY, flat, precision="fp32", **options)
    settings = {k: v for k, v in options.items() if k != "batches"}
    for batches in (None, list(options["batches"])):
        result = run_estimate([doc], precision="fp32", batches=batches, **settings)
        sources = " ".join(r.source for r in result.record.rows)
        assert "interpolated" not in sources and "roofline" not in sources, sources
        assert not any("not measured in the files" in n for n in result.record.notes)


def test_tp_without_a_collective_or_a_spec_is_refused() -> None:
    doc = model_doc(TINY, flat, tps=(2,))
    with pytest.raises(BenchError, match="TP 2 needs all_reduce times"):
        run_estimate([doc], tp=2, batches=[1])


def test_a_model_that_does_not_fit_is_refused() -> None:
    llama_70b = get_model("llama-3.1-70b")
    doc = model_doc(TINY, at_half_roofline("h100-sxm"), device=H100, spec="h100-sxm")
    with pytest.raises(BenchError, match=r"does not fit NVIDIA H100 80GB HBM3.*raise --tp"):
        run_estimate([doc], config=llama_70b)


def test_a_workspace_that_leaves_nothing_says_so() -> None:
    done = tokbench("estimate", "--model", "tiny", "--gpu", "h100-sxm", "--workspace", "0.9999999")
    assert done.returncode == 2
    assert "nothing is left for weights and KV cache" in done.stderr
    assert "usable" not in done.stderr, done.stderr


def test_estimates_are_saved_into_the_result_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_atomic(path, model_doc(TINY, flat).to_json())
    first = run_estimate([load(path)], batches=[1]).record
    save(str(path), first)
    save(str(path), first)  # the same settings again: replaced, not duplicated
    save(str(path), dataclasses.replace(first, osl=8))  # other settings: kept beside it
    saved = load(path).estimates
    assert [(e.model, e.osl) for e in saved] == [("tiny", 16), ("tiny", 8)]
    assert saved[0].rows[0].phase == "prefill" and saved[0].rows[-1].phase == "serving"


# --- end to end through the console script --------------------------------------------------------

# One thread: the op times and the layer validation then do not depend on how busy the other
# core is. fp32: the CPU's native precision (bf16 elementwise ops are emulated, and slow).
MODEL_RUN = (
    "--model",
    "tiny",
    "--precision",
    "fp32",
    "--isl",
    "32",
    "--osl",
    "16",
    "--batch",
    "1",
    "--batch",
    "4",
    "--impl",
    "torch",
    "--impl",
    "sdpa-flash",
)
ESTIMATE = ("--model", "tiny", "--precision", "fp32", "--isl", "32", "--osl", "16")


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real result file: the tiny model's suite on this machine's CPU."""
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    done = tokbench("run", *MODEL_RUN, "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path


def test_model_suite_measures_every_shape_the_estimate_needs(cpu_results: Path) -> None:
    doc = load(cpu_results)
    assert doc.suite == "model" and doc.complete
    kernels = {"matmul", "attention", "decode", "rmsnorm", "rotary", "kv_write", "silu_mul"}
    assert {c.op for c in doc.cases} == kernels
    assert all(c.status == "ok" for c in doc.cases)
    result = run_estimate([doc], precision="fp32")
    assert all(row.source == "measured" for row in result.record.rows)
    assert not any("not measured in the files" in n for n in result.record.notes)


def test_estimate_prints_tables_and_saves(tmp_path: Path, cpu_results: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(cpu_results.read_text())
    done = tokbench("estimate", *ESTIMATE, "--results", str(path))
    assert done.returncode == 0, done.stderr
    for text in (
        "prefill",
        "TTFT",
        "TPOT",
        "largest batch that fits",
        "serving mix",
        "measured",
        "(cap)",
        "(measured)",
    ):
        assert text in done.stdout, text
    assert f"saved the estimate into {path}" in done.stderr
    (saved,) = load(path).estimates
    assert saved.model == "tiny" and saved.precision == "fp32" and saved.max_batch > 1024


def test_estimate_json(cpu_results: Path) -> None:
    done = tokbench(
        "estimate", *ESTIMATE, "--results", str(cpu_results), "--json", "--no-save", "--batch", "2"
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    phases = [(r["phase"], r["batch"]) for r in figures["rows"]]
    assert phases == [
        ("prefill", 1),
        ("prefill", 2),
        ("prefill", 512),  # the step budget: 16,384 tokens of 32-token prompts
        ("decode", 2),
        ("decode", 1024),
        ("serving", 1024),
    ]
    assert figures["max_batch_fits_memory"] > 1024 and "max_batch" not in figures
    assert figures["decode_batch_cap"] == 1024 and figures["prefill_budget_batch"] == 512
    # batch 2 lies between the measured 1 and 4: interpolated, and says so
    assert "interpolated" in figures["rows"][3]["source"]
    assert figures["kv_bytes_per_token"] == 2 * 2 * 2 * 64 * 4
    assert not load(cpu_results).estimates


def test_validation_runs_the_layer_at_both_ends(cpu_results: Path) -> None:
    """The layer runs at the smallest and largest prefill and decode steps, against the
    estimate's own per-layer time. Wall-clock ratios on a shared CPU vary with its load, so
    they are reported here, not held to a band."""
    done = tokbench(
        "estimate", *ESTIMATE, "--results", str(cpu_results), "--validate", "--json", "--no-save"
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    checks = figures["validation"]
    ends = ("prefill_batch1", "prefill_batch512", "decode_batch1", "decode_batch1024")
    assert {k.rsplit("_", 1)[0] for k in checks} == {f"{e}_measured" for e in ends} | {
        f"{e}_estimated" for e in ends
    } | set(ends)
    rows = {(r["phase"], r["batch"]): r["step_ms"] for r in figures["rows"]}
    for end in ends:
        assert checks[f"{end}_measured_ms"] > 0
        phase, batch = end.split("_batch")
        # The layer's estimate is the step's, less the LM head, over the layers: never more.
        assert 0 < checks[f"{end}_estimated_ms"] < rows[(phase, int(batch))] / TINY.layers
        ratio = checks[f"{end}_measured_ms"] / checks[f"{end}_estimated_ms"]
        assert checks[f"{end}_ratio"] == pytest.approx(ratio)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "gpt-5"), "unknown model 'gpt-5'"),
        (("--batch", "100000000"), "batch 100000000 does not fit"),
        (("--isl", "999"), "the results lack attention 1×4/2×999×999×64 causal fp32"),
        (("--gpu", "b200"), "which has no spec-table entry to project from"),
    ],
)
def test_bad_estimate_input_is_one_clear_line(cpu_results: Path, args: tuple, message: str):
    done = tokbench("estimate", *ESTIMATE, *args, "--results", str(cpu_results), "--no-save")
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_file_from_another_device_needs_gpu(tmp_path: Path, cpu_results: Path) -> None:
    other = tmp_path / "h100.json"
    write_atomic(other, model_doc(TINY, flat, device=H100, spec="h100-sxm").to_json())
    done = tokbench(
        "estimate", *ESTIMATE, "--results", str(cpu_results), "--results", str(other), "--no-save"
    )
    assert done.returncode == 2
    assert "result files from different devices" in done.stderr and "--gpu" in done.stderr
    validate = tokbench(
        "estimate",
        "--model",
        "tiny",
        "--isl",
        "32",
        "--osl",
        "16",
        "--results",
        str(other),
        "--validate",
        "--no-save",
    )
    assert validate.returncode == 2
    assert "--validate runs a layer on this machine" in validate.stderr


def test_moe_window_sinks_and_fp8_kv_layer_runs_from_the_same_ops() -> None:
    """tiny-oss (MoE, a windowed layer, sinks) with an fp8 KV cache through the runner
    in-process: every part of its step is measured, and its layers run from the same ops."""
    from bench.measure import device as dev
    from bench.measure.runner import RunConfig, run_cases
    from bench.measure.timing import TimerConfig
    from bench.plan.throughput import measure_layer
    from bench.record.results import ResultWriter
    from bench.record.schema import ResultDoc

    oss = get_model("tiny-oss")
    if dev.detect().kind == "cuda":
        pytest.skip("sized for the CPU")
    # 30 MB of "memory": about 10 sequences fit beside the 18 MB of weights, which keeps the
    # largest decode batch (and this test) small.
    device = dataclasses.replace(dev.detect(), memory_bytes=30_000_000)
    setup = Serving(oss, precision="fp32", kv_precision="fp8", isl=32, osl=8)
    cases = suite_cases([setup], [4], float(device.memory_bytes), cuda=False)
    doc = ResultDoc(device=device, software={}, command="test", suite="model")
    timer = TimerConfig(max_time_s=0.05, min_reps=3)
    config = RunConfig(timer=timer, impls=["torch", "sdpa-flash", "grouped_mm", "eager"])
    run_cases(cases, device, None, ResultWriter(doc, None), config)
    assert {c.op for c in doc.cases if c.status == "ok"} >= {"moe", "rotary", "kv_write"}
    result = run_estimate(
        [doc], config=oss, precision="fp32", kv_precision="fp8", isl=32, osl=8, batches=[4]
    )
    for step in (*result.prefill, *result.decode):
        assert {"gemm", "attention", "moe", "memory", "lm_head"} <= set(step.parts)
        assert step.sources["measured"] / step.seconds > 0.95  # the router's top-k is modelled
    decode_roles = {u.role for u in setup.decode_step(4)}
    assert {"experts", "router", "attention"} <= decode_roles
    windows = {u.shape["window"] for u in setup.decode_step(4) if u.role == "attention"}
    assert windows == {0, 16}  # a full layer and a windowed one
    check = measure_layer(result.step_model, "decode", 4, 36, device, timer)
    assert math.isfinite(check.ratio) and check.ratio > 0


@pytest.mark.parametrize(("name", "precision"), [("gpt-oss-120b", "fp8"), ("mixtral-8x7b", "bf16")])
def test_moe_models_estimate_every_part_from_measurements(name: str, precision: str) -> None:
    """Synthetic H200 files at half of each op's roofline: gpt-oss-120b's (fp8 weights and KV
    cache, windows, sinks) and Mixtral's every part, fused MoE included, is a measured case."""
    config, settings = get_model(name), {"precision": precision, "kv_precision": "fp8"}
    doc = model_doc(config, at_half_roofline("h200"), device=H200, spec="h200", **settings)
    result = run_estimate([doc], config=config, batches=[1, 4], **settings)
    for step in (*result.prefill, *result.decode):
        assert {"gemm", "attention", "moe", "memory", "lm_head"} <= set(step.parts)
        # The router's softmax and top-k, no op's, is one small kernel a layer.
        assert step.sources["measured"] / step.seconds > 0.9
    notes = " ".join(result.record.notes)
    assert ("not modelled: attention and expert biases" in notes) == (name == "gpt-oss-120b")


# --- without a result file: spec sheets, reference files, default efficiencies ------------------


def test_an_estimate_from_the_spec_sheet_alone_says_what_it_assumed() -> None:
    setup = Serving(get_model("llama-3.1-70b"), precision="fp8", kv_precision="fp8", isl=1000,
                    osl=1000)  # fmt: skip
    result = estimate_throughput(setup, [], [], gpu="h200")
    assert all(row.source == "modelled" for row in result.record.rows)
    notes = " ".join(result.record.notes)
    assert "matmul: GEMM: tiles of" in notes and "69.0% of the fp8 peak (measured on H200" in notes
    assert "decode: decode attention: the KV cache at 90% of 4800 GB/s" in notes
    assert "no result file" in notes
    # The memory fit comes from what the driver reports: 143,771 MiB.
    assert result.plan.memory == 143771 * 2**20 and result.record.kv_precision == "fp8"
    decode = result.decode[-1]
    assert decode.tokens_per_s > 0 and decode.sources == {"modelled": pytest.approx(decode.seconds)}


def test_a_reference_file_lends_how_it_compared_with_the_model() -> None:
    """GEMMs measured at 40% of an H100's roofline in a reference file: an H200 estimate with
    no file of its own scales the model by how the most similar of them compared with the model
    on the H100, and models the rest alone."""
    h100, h200 = SPECS["h100-sxm"], SPECS["h200"]
    reference = model_doc(TINY, at_fraction("h100-sxm", 0.4), device=H100, spec="h100-sxm")
    reference.cases = [c for c in reference.cases if c.op == "matmul"]
    meas = Measurements([], target=h200, references=[reference])
    shape = {"M": 777, "N": 512, "K": 256}
    timed = meas.time("matmul", shape, "bf16")
    assert (
        timed.source == "reference"
        and "on NVIDIA H100 80GB HBM3 (a reference file)" in timed.detail
    )
    # The ratio is one of the reference cases' against the model on the H100.
    ratios = {
        round(e.point.seconds / model_time("matmul", e.point.shape, "bf16", h100).seconds, 9)
        for e in meas.reference[("matmul", "bf16")]
    }
    modelled = model_time("matmul", shape, "bf16", h200).seconds
    assert round(timed.seconds / modelled, 9) in ratios
    assert meas.time("rmsnorm", {"tokens": 7, "hidden": 256}, "bf16").source == "modelled"


def test_fp4_weights_are_weight_only_without_fp4_tensor_cores() -> None:
    """NVFP4 on an H200 is read at 4.5 bits and computed in bf16 (as engines run such
    checkpoints on Hopper); on a B200 it runs on fp4 tensor cores."""
    setup = Serving(get_model("llama-3.1-70b"), precision="fp4")
    hopper = estimate_throughput(setup, [], [], gpu="h200")
    assert "fp4 weights dequantised into bf16 GEMMs" in " ".join(hopper.record.notes)
    fp4 = estimate_throughput(setup, [], [], gpu="b200")
    fp8 = estimate_throughput(dataclasses.replace(setup, precision="fp8"), [], [], gpu="b200")
    assert "of the fp4 peak" in " ".join(fp4.record.notes)
    # Half the weight bytes and twice the peak: more sequences fit and each step is faster.
    assert fp4.record.weights_bytes < 0.6 * fp8.record.weights_bytes
    assert fp4.record.decode_tokens_per_s > fp8.record.decode_tokens_per_s


def test_estimate_tp_auto_picks_the_best_degree() -> None:
    done = tokbench("estimate", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--precision",
                    "fp8", "--tp", "auto", "--isl", "512", "--osl", "128")  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--tp auto: each layout tried" in text and "chosen" in text
