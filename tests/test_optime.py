"""The op-time model and the collectives' model: their terms by hand, and the model's form held
to public GEMM sweeps (none of its parameters comes from them)."""

import math

import pytest

from bench.measure.ops import get_op
from bench.plan import network, optime
from bench.plan.layer_times import layer_times
from bench.plan.models import Serving, get_model
from bench.plan.throughput import step_model_for
from bench.record.hardware import SPECS

H100, A100, B200 = SPECS["h100-sxm"], SPECS["a100-sxm"], SPECS["b200"]
MATMUL = get_op("matmul")

# cuBLAS bf16 through torch.mm on an H100, TFLOP/s by M, from vLLM's GEMM benchmark tables:
# pull requests #17126 (N 6144, K 4096), #23280 (2112, 7168) and #49363 (12288 and 43008, 5376).
PUBLIC_H100_SWEEPS = {
    (6144, 4096): {1: 2.51, 16: 39.1, 64: 160.6, 128: 307.9, 256: 544.3},
    (2112, 7168): {
        1: 3.06, 16: 49.6, 64: 163.5, 128: 275.7, 256: 401.9, 512: 566.3, 1024: 619.8,
        2048: 648.2, 4096: 715.8, 8192: 666.4,
    },
    (12288, 5376): {1: 2.87, 16: 46.5, 64: 182.6, 128: 352.6},
    (43008, 5376): {1: 3.07, 16: 48.3, 64: 188.0, 128: 364.7, 256: 593.3},
}  # fmt: skip


def gemm(m: int, n: int, k: int, dtype: str = "bf16", spec=H100) -> optime.Modelled:
    return optime.op_time(MATMUL, {"M": m, "N": n, "K": k}, dtype, spec)


def test_the_gemm_model_follows_public_cublas_sweeps() -> None:
    ratios = [
        gemm(m, n, k).seconds / (2 * m * n * k / (tflops * 1e12))
        for (n, k), sweep in PUBLIC_H100_SWEEPS.items()
        for m, tflops in sweep.items()
    ]
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    assert 0.9 < mean < 1.1
    assert sum(abs(math.log(r)) < math.log(1.15) for r in ratios) >= 0.85 * len(ratios)
    assert all(0.7 < r < 1.3 for r in ratios)


def test_a_wave_part_filled_costs_a_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one tile shape and no split: 132 tiles of 256×128 fill the H100's 132 SMs once; a
    product one row larger needs a second wave of the same length. With every tile shape and
    split-K the model takes the one that ends soonest."""
    monkeypatch.setattr(optime, "GEMM_TILES", ((256, 128),))
    monkeypatch.setattr(optime, "SPLIT_K_MAX", 1)
    k = 16384
    one, two = gemm(256 * 12, 128 * 11, k), gemm(256 * 12 + 1, 128 * 11, k)
    assert one.bound == two.bound == "compute"
    assert two.seconds / one.seconds == pytest.approx(2, rel=0.05)
    monkeypatch.undo()
    assert gemm(256 * 12 + 1, 128 * 11, k).seconds < 1.2 * one.seconds


def test_a_decode_gemm_streams_its_weights_at_copy_bandwidth() -> None:
    m = gemm(1, 28672, 8192)
    weights = 28672 * 8192 * 2
    assert m.bound == "memory"
    assert m.seconds == pytest.approx(weights / (0.90 * 3350e9), rel=0.01)


def test_every_kernel_takes_at_least_the_floor() -> None:
    tiny = gemm(1, 128, 128)
    assert tiny.seconds == optime.KERNEL_FLOOR_S and tiny.bound == "latency"
    norm = optime.op_time(get_op("rmsnorm"), {"tokens": 1, "hidden": 4096}, "bf16", H100)
    assert norm.seconds == optime.KERNEL_FLOOR_S and norm.bound == "latency"


def test_memory_bound_kernels_at_the_share_fused_kernels_reach() -> None:
    shape = {"tokens": 16384, "hidden": 8192}
    op = get_op("rmsnorm")
    modelled = optime.op_time(op, shape, "bf16", H100)
    assert modelled.bound == "memory"
    assert modelled.seconds == pytest.approx(op.bytes(shape, "bf16") / (0.55 * 3350e9))


def test_too_few_pieces_of_work_leave_bandwidth_unused() -> None:
    """66 tokens keep half an H100's SMs busy: the same bytes in 132 tokens' rows are faster."""
    op = get_op("silu_mul")
    half = optime.op_time(op, {"tokens": 66, "I": 2 * 28672}, "bf16", H100)
    full = optime.op_time(op, {"tokens": 132, "I": 28672}, "bf16", H100)
    assert half.seconds == pytest.approx(2 * full.seconds, rel=0.01)


def test_fp8_gemms_quantise_their_activations_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass reads M × K bf16 activations and writes them in fp8, at the fused kernels'
    share of the bandwidth, on top of the GEMM."""
    with_pass = gemm(8192, 8192, 8192, "fp8")
    monkeypatch.setattr(optime, "QUANTISED_ACTIVATIONS", ())
    without = gemm(8192, 8192, 8192, "fp8")
    assert with_pass.seconds - without.seconds == pytest.approx(8192 * 8192 * 3 / (0.55 * 3350e9))
    assert "quantised first" in with_pass.detail and "quantised" not in without.detail


@pytest.mark.parametrize(
    ("dtype", "spec", "native"),
    [("fp8", H100, True), ("fp8", A100, False), ("fp4", B200, True), ("fp4", H100, False),
     ("mxfp4", H100, False), ("int4", H100, False), ("int8", B200, False)],
)  # fmt: skip
def test_formats_without_tensor_cores_are_weight_only(dtype: str, spec, native: bool) -> None:
    compute, share, how = optime.gemm_rate(dtype, spec)
    if native:
        assert compute == optime.NATIVE_PEAK[dtype] and "weights dequantised" not in how
    else:
        bf16_share, _ = optime.gemm_share(spec, "bf16")
        assert compute == "bf16" and share == pytest.approx(bf16_share * 0.74)
        assert f"{dtype} weights dequantised into bf16 GEMMs" in how


def test_weight_only_decode_reads_the_weights_at_their_bits() -> None:
    """A 4.25-bit MXFP4 decode GEMM reads 16/4.25 fewer weight bytes than bf16, and on an
    H100, where bf16 tensor cores compute it, takes well under a third of the time."""
    shape = {"M": 1, "N": 28672, "K": 8192}
    assert MATMUL.bytes(shape, "mxfp4") / MATMUL.bytes(shape, "bf16") == pytest.approx(
        4.25 / 16, rel=0.01
    )
    assert gemm(1, 28672, 8192, "mxfp4").seconds < gemm(1, 28672, 8192, "bf16").seconds / 3


def test_a_spec_without_measurements_uses_the_defaults_and_says_so() -> None:
    assert optime.gemm_share(B200, "bf16") == (0.80, "the default for its dtype")
    assert optime.gemm_share(H100, "bf16") == (0.807, "measured on H100 SXM")
    assert optime.copy_share(B200) == optime.COPY_SHARE


ALL_REDUCE = get_op("all_reduce")


def test_nccl_is_latency_plus_bytes_over_its_bus_bandwidth() -> None:
    size, n = 64 * 2**20, 8
    modelled = network.collective_time(ALL_REDUCE, {"bytes": size, "world": n}, H100)
    factor = 2 * (n - 1) / n
    assert modelled.seconds == pytest.approx(network.NCCL_LATENCY_S + factor * size / 370e9)
    assert modelled.bound == "network" and "NCCL over nvlink" in modelled.detail
    # At 64 MiB that is ~78% of the link's 450 GB/s one way, as nccl-tests reach.
    assert 0.6 < factor * size / modelled.seconds / 450e9 < 0.85


def test_engines_run_small_all_reduces_with_their_own_kernel() -> None:
    small = {"bytes": 128 * 1024, "world": 8}
    nccl = network.collective_time(ALL_REDUCE, small, H100, "nccl")
    auto = network.collective_time(ALL_REDUCE, small, H100, "auto")
    assert auto.seconds < nccl.seconds and "custom all-reduce" in auto.detail
    # Beyond vLLM's limit for 8 Hopper GPUs (256 KiB), "auto" is NCCL; "custom" lifts it.
    big = {"bytes": 4 * 2**20, "world": 8}
    assert network.collective_time(ALL_REDUCE, big, H100, "auto") == (
        network.collective_time(ALL_REDUCE, big, H100, "nccl")
    )
    assert "custom" in network.collective_time(ALL_REDUCE, big, H100, "custom").detail
    # Other collectives have no engine kernel.
    gather = network.collective_time(get_op("all_gather"), small, H100, "auto")
    assert "NCCL" in gather.detail


def test_beyond_the_nvlink_domain_collectives_cross_the_network() -> None:
    shape = {"bytes": 2**20, "world": 16}
    modelled = network.collective_time(ALL_REDUCE, shape, H100)
    assert "the network" in modelled.detail
    expected = network.NETWORK_LATENCY_S + 2 * 15 / 16 * 2**20 / (0.94 * 50e9)
    assert modelled.seconds == pytest.approx(expected)
    # An NVL72 rack keeps 16 GPUs on NVLink.
    assert "nvlink" in network.collective_time(ALL_REDUCE, shape, SPECS["gb200"]).detail


def test_a_layer_laid_bare() -> None:
    """Llama-3.1-8B at TP 2 on an H100, 512 prompt tokens: every op of one layer, norms and
    all-reduces twice, each with its source and bound, adding up to the layer."""
    setup = Serving(get_model("llama-3.1-8b"), tp=2)
    step_model = step_model_for(setup, [], [], gpu="h100-sxm", fit=False)
    layer = layer_times(step_model, tokens=512)
    roles = [row.role for row in layer.rows]
    assert roles == ["norm", "norm", "qkv", "rotary", "kv_write", "attention", "o", "gate_up",
                     "act", "down", "all_reduce", "all_reduce"]  # fmt: skip
    assert {row.source for row in layer.rows} == {"modelled"}
    assert {row.bound for row in layer.rows} <= {"compute", "memory", "latency", "network"}
    assert layer.layer_seconds == pytest.approx(sum(row.seconds for row in layer.rows))
    assert layer.step.phase == "prefill" and layer.step.tokens == 512
    decode = layer_times(step_model, tokens=8, batch=8, context=1000)
    assert decode.step.phase == "decode" and decode.step.context == 1001


def test_step_answers_for_a_config_json_on_any_spec_gpu(tmp_path) -> None:
    """`tokbench step --json` for a Hugging Face config.json, no result file: the roles the
    issue names, each with seconds, source and bound, and the layer's total; bad steps refused
    in one line."""
    import json

    from console import tokbench

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
        "num_attention_heads": 16, "num_key_value_heads": 4, "intermediate_size": 8192,
        "vocab_size": 32000,
    }))  # fmt: skip
    args = ("--gpu", "l40s", "--tp", "2", "--precision", "fp16", "--tokens", "64")
    done = tokbench("step", "--model", str(config), *args, "--context", "100", "--json")
    assert done.returncode == 0, done.stderr
    layer = json.loads(done.stdout)
    ops = layer["ops"]
    assert {o["role"] for o in ops} == {
        "norm", "qkv", "rotary", "kv_write", "attention", "o", "gate_up", "act", "down",
        "all_reduce",
    }  # fmt: skip
    assert all(o["seconds"] > 0 and o["source"] == "modelled" for o in ops)
    assert {o["bound"] for o in ops} <= {"compute", "memory", "latency", "network"}
    assert layer["layer_seconds"] == pytest.approx(sum(o["seconds"] for o in ops))
    refused = tokbench("step", "--model", "tiny", "--gpu", "h100-sxm", "--tokens", "5",
                       "--batch", "2")  # fmt: skip
    assert refused.returncode == 2 and "must split evenly over --batch 2" in refused.stderr


def test_step_plots_the_predicted_shares(tmp_path) -> None:
    from console import tokbench

    chart = tmp_path / "shares.png"
    done = tokbench("step", "--model", "llama-3.1-8b", "--gpu", "b200", "--plot", str(chart))
    assert done.returncode == 0, done.stderr
    assert chart.stat().st_size > 10_000


def test_latent_attention_decode_is_compute_bound_at_128_heads() -> None:
    """DeepSeek-V3's absorbed MLA decode: 128 heads over one 576-wide cache compute ~450 FLOPs
    per byte read, above an H100's ridge; grouped-query decode reads far more than it computes."""
    mla = optime.op_time(get_op("mla"), {"B": 64, "H": 128, "L": 4096, "latent": 512,
                         "rope": 64, "page": 64}, "bf16", H100)  # fmt: skip
    assert mla.bound == "compute"
    gqa = {"B": 64, "H": 64, "Hkv": 8, "D": 128, "L": 4096, "page": 16, "window": 0,
           "sinks": False, "fp8kv": False}  # fmt: skip
    assert optime.op_time(get_op("decode"), gqa, "bf16", H100).bound == "memory"
