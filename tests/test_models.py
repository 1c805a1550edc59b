"""Model configs and the shapes, FLOPs, weight and KV-cache bytes derived from them, by hand."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from bench import BenchError
from bench.measure.ops import get_op
from bench.plan.models import (
    MODELS,
    ModelConfig,
    Serving,
    get_model,
    param_count,
    suite_cases,
)
from bench.record.hardware import SPECS

LLAMA_8B = get_model("llama-3.1-8b")


@pytest.mark.parametrize("name", [m.name for m in MODELS.values() if m.params])
def test_derived_parameter_counts_match_the_published_ones(name: str) -> None:
    config = get_model(name)
    assert param_count(config) == pytest.approx(config.params, rel=2e-3)


def test_llama_8b_weight_bytes_by_hand() -> None:
    # Per layer: QKV 4096·(32+2·8)·128 + O 4096² + gate/up/down 3·4096·14336 = 218,103,808.
    gemm = 218_103_808 * 32
    embeddings = 2 * 128_256 * 4096  # untied input embedding and LM head
    norms = (2 * 32 + 1) * 4096
    assert param_count(LLAMA_8B) == gemm + embeddings + norms == 8_030_261_248
    assert Serving(LLAMA_8B).weight_bytes() == 2 * 8_030_261_248
    # fp8 checkpoints: GEMM weights in one byte, embeddings, LM head and norms stay bf16.
    assert Serving(LLAMA_8B, precision="fp8").weight_bytes() == gemm + 2 * (embeddings + norms)
    # TP 2 halves every matrix and the vocabulary; the norms are replicated.
    tp2 = Serving(LLAMA_8B, tp=2).weight_bytes()
    assert tp2 == 2 * (gemm // 2 + embeddings // 2 + norms)


@pytest.mark.parametrize(
    ("name", "tp", "precision", "expected"),
    [
        ("llama-3.1-8b", 1, "bf16", 131_072),  # 2 · 32 layers · 8 KV heads · 128 · 2 bytes
        ("llama-3.1-8b", 1, "fp8", 131_072),  # the KV cache stays bf16
        ("llama-3.1-8b", 1, "fp32", 262_144),
        ("llama-3.1-70b", 1, "bf16", 327_680),  # 2 · 80 · 8 · 128 · 2
        ("llama-3.1-70b", 8, "bf16", 40_960),  # one KV head per GPU
        ("llama-3.1-405b", 16, "bf16", 64_512),  # 8 KV heads replicated over 16 GPUs: 1 each
        ("mixtral-8x7b", 1, "bf16", 131_072),
    ],
)
def test_kv_bytes_per_token_with_gqa(name: str, tp: int, precision: str, expected: int) -> None:
    setup = Serving(get_model(name), tp=tp, precision=precision)
    assert setup.kv_bytes_per_token() == expected


def _gemms(setup: Serving, tokens: int) -> list:
    """A decode step's per-layer GEMMs at `tokens` sequences (the LM head apart)."""
    return [u for u in setup.decode_step(tokens) if u.op == "matmul" and u.role != "lm_head"]


def test_llama_8b_gemm_shapes_per_gpu() -> None:
    shapes = {u.role: (u.shape["N"], u.shape["K"]) for u in _gemms(Serving(LLAMA_8B), 7)}
    assert shapes == {
        "qkv": (6144, 4096),
        "o": (4096, 4096),
        "gate_up": (28672, 4096),
        "down": (4096, 14336),
    }
    gemms = _gemms(Serving(LLAMA_8B, tp=4), 7)
    tp4 = {u.role: (u.shape["N"], u.shape["K"]) for u in gemms}
    assert tp4 == {
        "qkv": (1536, 4096),
        "o": (4096, 1024),
        "gate_up": (7168, 4096),
        "down": (4096, 3584),
    }
    assert all(u.shape["M"] == 7 and u.count == 32 for u in gemms)


def test_decode_step_flops_are_twice_the_active_weights() -> None:
    step = Serving(LLAMA_8B).decode_step(batch=1, context=1000)
    gemm_flops = sum(get_op("matmul").flops(u.shape) * u.count for u in step if u.op == "matmul")
    # 2 FLOPs per weight per token: every GEMM weight and the LM head (not the input embedding).
    assert gemm_flops == 2 * (218_103_808 * 32 + 128_256 * 4096) == 15_009_316_864
    attention = next(u for u in step if u.role == "attention")
    assert attention.shape == {
        "B": 1, "H": 32, "Hkv": 8, "D": 128, "L": 1000, "page": 16,
        "window": 0, "sinks": False, "fp8kv": False,
    }  # fmt: skip
    assert get_op("decode").flops(attention.shape) == 4 * 32 * 1000 * 128
    norms = next(u for u in step if u.op == "rmsnorm")
    assert norms.shape == {"tokens": 1, "hidden": 4096} and norms.count == 2 * 32


def test_prefill_step_shapes() -> None:
    step = Serving(LLAMA_8B, tp=2, precision="fp8").prefill_step(batch=3, isl=100)
    by_role = {u.role: u for u in step}
    assert by_role["qkv"].shape["M"] == 300 and by_role["qkv"].dtype == "fp8"
    assert by_role["attention"].shape == {
        "B": 3,
        "H": 16,
        "Hkv": 4,
        "Sq": 100,
        "Skv": 100,
        "D": 128,
        "causal": True,
        "window": 0,
        "sinks": False,
    }
    assert by_role["attention"].dtype == "bf16"
    # Logits only for each prompt's last token, vocabulary split over TP, in bf16.
    assert by_role["lm_head"].shape == {"M": 3, "N": 64_128, "K": 4096}
    assert by_role["lm_head"].dtype == "bf16"
    assert by_role["norm"].shape == {"tokens": 300, "hidden": 4096}
    assert by_role["norm"].dtype == "bf16"


def test_mixtral_layer_runs_the_fused_moe_on_its_experts() -> None:
    uses = {u.role: u for u in Serving(get_model("mixtral-8x7b"), tp=2).decode_step(64)}
    assert uses["experts"].op == "moe" and uses["experts"].count == 32
    # Each expert's intermediate split over TP; every token to 2 of the 8 experts.
    assert uses["experts"].shape == {"T": 64, "H": 4096, "I": 7168, "E": 8, "k": 2, "skew": 0}
    assert uses["router"].shape == {"M": 64, "N": 8, "K": 4096}
    assert "gate_up" not in uses and "act" not in uses


def test_dense_layer_ops() -> None:
    uses = {u.role: u for u in Serving(LLAMA_8B, tp=2, kv_precision="fp8").prefill_step(2, 100)}
    assert uses["act"].op == "silu_mul" and uses["act"].shape == {"tokens": 200, "I": 7168}
    assert uses["rotary"].shape == {"tokens": 200, "H": 16, "Hkv": 4, "D": 128}
    assert uses["kv_write"].shape == {"tokens": 200, "Hkv": 4, "D": 128, "page": 16, "fp8kv": True}
    assert all(uses[r].count == 32 for r in ("act", "rotary", "kv_write"))


def test_gpt_oss_alternates_windowed_and_full_attention_with_sinks() -> None:
    setup = Serving(get_model("gpt-oss-120b"), kv_precision="fp8")
    decode = [u for u in setup.decode_step(8, context=4096) if u.op == "decode"]
    assert [(u.role, u.shape["window"], u.count) for u in decode] == [
        ("attention", 0, 18),
        ("attention", 128, 18),
    ]
    assert all(u.shape["sinks"] and u.shape["fp8kv"] for u in decode)
    # A window at least the prompt is no window: the same shape as the full layers'.
    prefill = [u for u in setup.prefill_step(1, isl=100) if u.op == "attention"]
    assert {u.shape["window"] for u in prefill} == {0}
    # fp8 halves the KV cache's bytes per token.
    assert setup.kv_bytes_per_token() == Serving(setup.model).kv_bytes_per_token() / 2


def test_unknown_kv_precision_is_one_line() -> None:
    with pytest.raises(BenchError, match=r"unknown KV-cache precision 'int4'; known: auto"):
        Serving(LLAMA_8B, kv_precision="int4")


def test_memory_fit_by_hand() -> None:
    """vLLM's rule: 92% of what the driver reports, less the CUDA context (400 MB) and graphs
    (0.36 GiB), the activations at the 16,384-token prefill budget and fp32 logits for the
    1,024-sequence cap; the rest after the weights is KV cache."""
    plan = Serving(LLAMA_8B, isl=1024, osl=256).memory_plan(80e9)
    activations = 16384 * (3 * 14336 + 2 * 4096) * 2 + 1024 * 128256 * 4
    reserved = 400e6 + 0.36 * 2**30 + activations
    assert plan.reserved == pytest.approx(reserved)
    assert plan.kv_budget == pytest.approx(0.92 * 80e9 - reserved - 16_060_522_496)
    assert plan.max_batch == int(plan.kv_budget // (1280 * 131_072)) == 325
    # A CPU keeps no CUDA reserve.
    assert Serving(LLAMA_8B).memory_plan(80e9, cuda=False).reserved == 0
    llama_70b = get_model("llama-3.1-70b")
    assert Serving(llama_70b).memory_plan(80e9).max_batch == 0
    assert Serving(llama_70b, tp=2, precision="fp8").memory_plan(80e9).max_batch > 0


def test_70b_in_fp8_fits_one_h100_as_its_driver_counts_memory() -> None:
    """An H100 reports 81,559 MiB (85.5 GB, not 80 GB): 70B fp8 weights (67.7 GiB) leave room
    for a few sequences of 2,000 tokens of fp8 KV cache."""
    h100 = SPECS["h100-sxm"]
    setup = Serving(get_model("llama-3.1-70b"), precision="fp8", kv_precision="fp8", isl=1000,
                    osl=1000)  # fmt: skip
    assert h100.memory_bytes == 81559 * 2**20
    assert setup.memory_plan(h100.memory_bytes).max_batch >= 1


def test_windowed_layers_hold_only_their_window() -> None:
    """gpt-oss-120b: 18 of 36 layers attend within 128 tokens, so a 2,000-token sequence holds
    (18 · 2000 + 18 · 128) / 36 tokens of every layer's cache."""
    setup = Serving(get_model("gpt-oss-120b"), precision="mxfp4", isl=1000, osl=1000)
    assert setup.kv_tokens(2000) == (18 * 2000 + 18 * 128) / 36
    assert setup.kv_tokens(100) == 100  # within the window every layer holds it all
    assert setup.context_held(setup.kv_tokens(2000)) == pytest.approx(2000)
    plan = setup.memory_plan(SPECS["h200"].memory_bytes)
    assert plan.kv_per_token == pytest.approx(setup.kv_bytes_per_token() * 1064 / 2000)


@pytest.mark.parametrize(
    ("name", "tp", "message"),
    [
        ("llama-3.1-8b", 3, "TP 3 does not divide Llama-3.1-8B's 32 attention heads"),
        ("llama-3.1-8b", 64, "TP 64 does not divide"),
        ("llama-3.1-8b", 0, "at least 1"),
        ("odd", 4, "TP 4 neither divides odd's 6 KV heads nor is a multiple"),
    ],
)
def test_tp_that_does_not_shard_the_model_is_refused(name: str, tp: int, message: str) -> None:
    odd = ModelConfig(
        "odd",
        hidden=1536,
        layers=2,
        heads=24,
        kv_heads=6,
        head_dim=64,
        intermediate=4096,
        vocab=1000,
    )
    with pytest.raises(BenchError, match=message):
        Serving(odd if name == "odd" else get_model(name), tp=tp)


def test_tp_beyond_kv_heads_replicates_them() -> None:
    assert Serving(LLAMA_8B, tp=16).kv_heads == 1  # 8 KV heads, one copy per pair of GPUs


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"precision": "int3"}, "unknown precision 'int3'"),
        ({"isl": 0}, "--isl and --osl must be at least 1, got 0 and 256"),
        ({"workspace": 1.0}, r"--workspace .* must be in \[0, 1\), got 1"),
        ({"max_batch": 0}, "--max-batch must be at least 1, got 0"),
    ],
)
def test_a_serving_setting_no_estimate_can_use_is_named(settings: dict, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        Serving(LLAMA_8B, **settings)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(BenchError, match=r"unknown model 'gpt-5'; known: Llama-3\.1-8B"):
        get_model("gpt-5")


def test_names_are_case_insensitive() -> None:
    assert get_model("LLAMA-3.1-70B") is get_model("llama-3.1-70b")


HF_LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "rope_theta": 500000.0,
}


def test_a_hugging_face_config_reads_like_the_built_in(tmp_path: Path) -> None:
    path = tmp_path / "Llama-3.1-8B" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(HF_LLAMA_8B))
    config = get_model(str(path))
    assert config.name == "Llama-3.1-8B"
    assert param_count(config) == param_count(LLAMA_8B)
    assert (config.head_dim, config.kv_heads, config.experts) == (128, 8, 1)


def test_a_hugging_face_mixtral_config_is_moe(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    hf = {
        **HF_LLAMA_8B,
        "model_type": "mixtral",
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    }
    path.write_text(json.dumps(hf))
    config = get_model(str(path))
    assert (config.experts, config.top_k) == (8, 2)
    assert param_count(config) == param_count(get_model("mixtral-8x7b"))


def test_hugging_face_gpt_oss_and_qwen3_moe_configs_read_like_the_built_ins(
    tmp_path: Path,
) -> None:
    """The fields of openai/gpt-oss-120b's and Qwen/Qwen3-30B-A3B's config.json that matter."""
    gpt_oss = {
        "model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 36,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "intermediate_size": 2880, "vocab_size": 201088, "num_local_experts": 128,
        "experts_per_token": 4, "sliding_window": 128, "attention_bias": True,
        "layer_types": ["sliding_attention", "full_attention"] * 18,
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0},
    }  # fmt: skip
    qwen3_moe = {
        "model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
        "num_experts_per_tok": 8, "vocab_size": 151936, "use_sliding_window": False,
        "sliding_window": None, "tie_word_embeddings": False,
    }  # fmt: skip
    for hf, built_in in ((gpt_oss, "gpt-oss-120b"), (qwen3_moe, "qwen3-30b-a3b")):
        path = tmp_path / hf["model_type"] / "config.json"
        path.parent.mkdir()
        path.write_text(json.dumps(hf))
        config, known = get_model(str(path)), get_model(built_in)
        shape = ("experts", "top_k", "intermediate", "sliding_window", "sliding_layers", "sinks")
        assert [getattr(config, f) for f in shape] == [getattr(known, f) for f in shape]
        assert param_count(config) == param_count(known)
    # Biases cost time and are not modelled; YaRN only changes the cached cos/sin table.
    assert get_model(str(tmp_path / "gpt_oss" / "config.json")).unmodelled == ("attention biases",)


def test_layer_types_hold_one_known_kind_per_layer(tmp_path: Path) -> None:
    base = {
        "model_type": "gpt_oss", "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
        "vocab_size": 1000, "sliding_window": 16,
    }  # fmt: skip
    path = tmp_path / "config.json"
    bad = {
        "one entry per layer (4), got 2 entries": {"layer_types": ["sliding_attention"] * 2},
        "entry 'foo' is not modelled; known: full_attention, sliding_attention": {
            "layer_types": ["foo"] * 4
        },
        "names sliding_attention layers but the config sets no sliding_window": {
            "layer_types": ["sliding_attention"] * 4,
            "sliding_window": None,
        },
    }
    for message, change in bad.items():
        path.write_text(json.dumps({**base, **change}))
        with pytest.raises(BenchError, match=re.escape(message)):
            get_model(str(path))
    # Without layer_types gpt-oss alternates from the first layer, as transformers' default.
    path.write_text(json.dumps(base))
    assert get_model(str(path)).sliding_layers == 2
    path.write_text(json.dumps({**base, "model_type": "mistral"}))
    assert get_model(str(path)).sliding_layers == 4


def test_own_json_config(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    fields = {
        "hidden": 512,
        "layers": 4,
        "heads": 8,
        "kv_heads": 2,
        "head_dim": 64,
        "intermediate": 1024,
        "vocab": 1000,
    }
    path.write_text(json.dumps(fields))
    assert get_model(str(path)) == ModelConfig(name="mine", source=str(path), **fields)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"n_embd": 768}', "not a model config"),
        ('{"hidden": 8, "layers": 1}', "field 'heads' is missing"),
        (
            '{"hidden": 8, "layers": 1, "heads": 2, "kv_heads": 2, "head_dim": 4, '
            '"intermediate": 8, "vocab": 8, "hiden": 3}',
            "unknown field 'hiden'",
        ),
        (
            '{"hidden": 8, "layers": 0, "heads": 2, "kv_heads": 2, "head_dim": 4, '
            '"intermediate": 8, "vocab": 8}',
            "field 'layers' must be a positive integer",
        ),
        (
            '{"hidden": 8, "layers": 1, "heads": 4, "kv_heads": 3, "head_dim": 2, '
            '"intermediate": 8, "vocab": 8}',
            "kv_heads 3 must divide heads 4",
        ),
        ('{"model_type": "gpt2", "hidden_size": 768}', "model_type 'gpt2' is not supported"),
        ('{"model_type": "llama", "hidden_size": 768}', "field 'num_attention_heads' is missing"),
        (
            json.dumps({**HF_LLAMA_8B, "num_local_experts": 2, "num_experts_per_tok": 4}),
            "top_k 4 exceeds experts 2",
        ),
    ],
)
def test_bad_config_files_are_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchError, match=message) as raised:
        get_model(str(path))
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read model config"):
        get_model(str(tmp_path / "absent.json"))


def test_prefill_batches_fit_the_step_budget() -> None:
    assert Serving(LLAMA_8B, isl=1024).prefill_batches([1, 4, 16, 64]) == [1, 4, 16]
    assert Serving(LLAMA_8B, isl=100_000).prefill_batches([8]) == [1]  # one prompt always


def test_suite_cases_are_unique_and_include_the_largest_batch_that_fits() -> None:
    setup = Serving(get_model("tiny"), isl=32, osl=16)
    cases = suite_cases([setup], [1, 4], memory=1e9)
    keys = [(c.op, tuple(sorted(c.shape.items())), c.dtype) for c in cases]
    assert len(keys) == len(set(keys))
    decode_batches = sorted(c.shape["B"] for c in cases if c.op == "decode")
    fit = setup.memory_plan(1e9).max_batch
    assert decode_batches == [1, 4, min(fit, 1024)]
    assert {c.shape["L"] for c in cases if c.op == "decode"} == {32 + 16 // 2}
    assert {c.shape["Sq"] for c in cases if c.op == "attention"} == {32}
    assert {c.shape["tokens"] for c in cases if c.op == "rmsnorm"} >= {1, 4, 32, 4 * 32}


def test_models_table_keeps_sources_whole_at_120_columns() -> None:
    from rich.console import Console

    from bench.present.tables.catalog import models_table

    console = Console(width=120, record=True)
    console.print(models_table(list(MODELS.values())))
    text = console.export_text()
    assert "…" not in text
    for config in MODELS.values():
        assert config.source in text, config.source


# --- latent attention and expert parallelism (DeepSeek-V3/R1, Kimi-K2) --------------------------

DEEPSEEK_R1 = get_model("deepseek-r1")
HF_DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False,
}  # fmt: skip


def _by_op(uses: list) -> dict[str, list]:
    found: dict[str, list] = {}
    for u in uses:
        found.setdefault(u.op, []).append(u)
    return found


def test_latent_attention_caches_one_latent_and_rope_row_a_token_whatever_the_tp() -> None:
    for tp in (1, 8):
        setup = Serving(DEEPSEEK_R1, tp=tp, precision="fp8")
        assert setup.kv_bytes_per_token() == 61 * (512 + 64) * 2  # bf16, every layer
    assert Serving(DEEPSEEK_R1, kv_precision="fp8").kv_bytes_per_token() == 61 * 576


def test_deepseek_decodes_absorbed_and_prefills_unabsorbed_with_dense_and_shared_mlps() -> None:
    setup = Serving(DEEPSEEK_R1, tp=8, precision="fp8")
    decode = _by_op(setup.decode_step(4, 1000))
    (mla,) = decode["mla"]
    assert (mla.shape["H"], mla.shape["latent"], mla.shape["rope"]) == (16, 512, 64)
    assert "decode" not in decode and "attention" not in decode
    gemms = {(u.shape["N"], u.shape["K"], u.count) for u in decode["matmul"]}
    # kv_a and q_a replicated, q_b split by heads, kv_b absorbed: K into q, V after attention.
    assert {(576, 7168, 61), (1536, 7168, 61), (16 * 192, 1536, 61)} <= gemms
    assert {(16 * 512, 128, 61), (16 * 128, 512, 61), (7168, 16 * 128, 61)} <= gemms
    # Three dense layers' MLP and the 58 MoE layers' shared expert, split by TP.
    assert {(2 * 18432 // 8, 7168, 3), (2 * 2048 // 8, 7168, 58)} <= gemms
    assert decode["moe"][0].count == 58
    (prefill,) = _by_op(setup.prefill_step(1, 1000))["attention"]
    assert (prefill.shape["H"], prefill.shape["Hkv"], prefill.shape["D"]) == (16, 16, 160)


def test_a_deepseek_config_json_reads_like_the_built_in(tmp_path: Path) -> None:
    path = tmp_path / "DeepSeek-V3" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(HF_DEEPSEEK_V3))
    config = get_model(str(path))
    assert (config.latent, config.rope_dim, config.q_lora, config.head_dim) == (512, 64, 1536, 128)
    assert (config.dense_layers, config.dense_intermediate, config.shared_experts) == (3, 18432, 1)
    assert param_count(config) == param_count(get_model("deepseek-v3"))


def test_expert_parallelism_spreads_the_experts_and_adds_dispatch_and_combine() -> None:
    setup = Serving(DEEPSEEK_R1, tp=1, dp=8, ep=8, precision="fp8")
    uses = _by_op(setup.decode_step(64, 1000))
    (moe,) = uses["moe"]
    assert (moe.shape["E"], moe.shape["I"], moe.shape["k"]) == (32, 2048, 1)
    # 64 tokens in each of 8 DP groups, 8 experts each, over 8 ranks: ≥ 512 pairs a rank.
    assert 512 < moe.shape["T"] < 1.3 * 512
    dispatch, combine = uses["all_to_all"]
    assert dispatch.shape["world"] == 8 and dispatch.count == combine.count == 58
    assert combine.shape["bytes"] == pytest.approx(2 * dispatch.shape["bytes"], rel=1e-3)
    assert "all_reduce" not in uses  # TP 1: nothing to reduce
    # Each GPU holds all of TP 1's weights but 224 of each MoE layer's 256 experts (fp8).
    whole = Serving(DEEPSEEK_R1, tp=1, precision="fp8").weight_bytes()
    assert setup.weight_bytes() == whole - 58 * 224 * 3 * 7168 * 2048


@pytest.mark.parametrize(
    ("model", "tp", "dp", "ep", "message"),
    [("llama-3.1-8b", 1, 8, 8, "need a MoE"),
     ("deepseek-r1", 1, 8, 4, "EP 4 must be TP × DP = 8"),
     ("deepseek-r1", 1, 8, 1, "need expert parallelism")],
)  # fmt: skip
def test_layouts_the_step_model_lacks_are_one_clear_line(
    model: str, tp: int, dp: int, ep: int, message: str
) -> None:
    with pytest.raises(BenchError, match=message):
        Serving(get_model(model), tp=tp, dp=dp, ep=ep)


def test_redundant_experts_even_out_a_skewed_router() -> None:
    from bench.measure.ops.moe import rank_imbalance

    assert rank_imbalance(256, 8, 0, 0) == pytest.approx(1.0)
    skewed, balanced = rank_imbalance(256, 8, 0, 100), rank_imbalance(256, 8, 32, 100)
    assert skewed > 1.5 and balanced < 1.1


def test_tp_attention_with_expert_parallel_experts_reduces_only_what_tp_splits() -> None:
    setup = Serving(DEEPSEEK_R1, tp=8, ep=8, precision="fp8")
    uses = _by_op(setup.decode_step(64, 1000))
    (reduce,) = uses["all_reduce"]
    assert reduce.count == 61 + 3 + 58  # after attention, the dense MLPs, the shared experts
    no_shared = dataclasses.replace(DEEPSEEK_R1, shared_experts=0)
    (reduce,) = _by_op(Serving(no_shared, tp=8, ep=8).decode_step(64, 1000))["all_reduce"]
    assert reduce.count == 61 + 3
    assert uses["moe"][0].shape["E"] == 32 and uses["moe"][0].shape["I"] == 2048
