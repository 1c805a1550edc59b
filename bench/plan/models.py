"""LLM configs and what one forward step of a model is made of.

A config is a Llama-style decoder (RMSNorm, rotary attention with grouped KV heads, gated MLP;
optionally mixture-of-experts, sliding-window layers and attention sinks). From a config and how
it is served (`Serving`: tensor-parallel degree, precision, KV-cache precision, request lengths,
memory and scheduler limits), this module describes one GPU's forward step (`ModelStep`) and asks
every registered op which of its shapes that step runs (`Op.step_uses`: it names no op itself);
it adds the kernels no op measures (the MoE router's top-k), the weight and KV-cache bytes per
GPU, and the largest batch that fits memory. The model suite measures exactly these ops and the
estimate sums them, so the two always agree.

KV heads are replicated when TP exceeds their count; the embedding and LM head are split over
the vocabulary; how each op splits under TP is its module's to say.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError, ceil_div, check_range
from bench.measure.ops import OPS, get_op
from bench.measure.ops.step import ModelStep, OpUse, in_layer_order
from bench.measure.suites import CaseSpec
from bench.plan.texts import read_text
from bench.record.schema import DTYPE_BYTES, shape_key

# Weights' precisions: the GEMMs' and the MoE experts'. fp8 and fp4 (NVFP4) run on tensor cores
# of their own where a GPU has them; elsewhere, as mxfp4 (gpt-oss's MXFP4 experts), int8 and
# int4 (W8A16, W4A16) do everywhere, they are weight-only: read at their bits, dequantised into
# bf16 GEMMs (bench.plan.optime).
PRECISIONS = ("bf16", "fp16", "fp8", "fp4", "mxfp4", "int8", "int4", "fp32")
# Precisions whose activations, attention, router and LM head stay in bf16.
QUANTISED = ("fp8", "fp4", "mxfp4", "int8", "int4")
# The KV cache's precision: "auto" stores it in the activations' dtype; "fp8" as float8_e4m3fn
# with a scale per tensor, as serving engines' fp8 KV caches do (half the bytes of bf16).
KV_PRECISIONS = ("auto", "fp8")
# Who runs a step's all-reduces (bench.plan.network): NCCL, as frameworks and per-op profiles
# call it (the default); what vLLM picks (its custom kernel for small ones within an NVLink
# domain); or the custom kernel wherever it can run.
COLLECTIVES = ("nccl", "auto", "custom")
DEFAULT_ISL = 1024  # prompt tokens per request
DEFAULT_OSL = 256  # output tokens per request
DEFAULT_BATCHES = (1, 8, 32, 128)
DEFAULT_PAGE = 16  # KV-cache page size in tokens, vLLM's default block size
# What a serving engine keeps out of a GPU's memory, as vLLM sizes its KV cache: a share of the
# memory the driver reports (1 − gpu_memory_utilization, whose default is 0.92:
# vllm/config/cache.py; 0.9 before), then the CUDA context, the CUDA graphs and the activations'
# peak, then the weights.
DEFAULT_WORKSPACE = 0.08
# A CUDA context with PyTorch and lazy module loading: "around 400MB" (PyTorch maintainer,
# pytorch/pytorch#109888).
CUDA_CONTEXT_BYTES = 400e6
# Decode's CUDA graphs: vLLM's own estimate, "Estimated CUDA graph memory: 0.36 GiB total"
# (its log, quoted in gpustack/runner#251).
CUDA_GRAPH_BYTES = 0.36 * 2**30
# A serving engine bounds the tokens of one prefill step (vLLM's max_num_batched_tokens,
# SGLang's chunked prefill); prefill is estimated for batches within this budget.
DEFAULT_MAX_PREFILL_TOKENS = 16384
# Schedulers cap the sequences decoded together (vLLM's max_num_seqs is 256-1024); throughput at
# the largest batch that fits memory is estimated at most at this batch.
DEFAULT_MAX_BATCH = 1024


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder; for MoE, `intermediate` is per expert. `sliding_layers` of the
    layers attend within a window of `sliding_window` tokens (gpt-oss: every other layer, 128;
    Mistral-7B-v0.1: all, 4096); `sinks`: a learned sink logit per head (gpt-oss)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: int = 1
    top_k: int = 1
    tied_embeddings: bool = False
    sliding_window: int = 0
    sliding_layers: int = 0
    sinks: bool = False
    # Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): each token caches a `latent`
    # (kv_lora_rank) and a rotary key of `rope_dim` (qk_rope_head_dim); queries go through a
    # `q_lora` rank (0: none). `head_dim` is then the heads' no-rope key and value width.
    latent: int = 0
    rope_dim: int = 0
    q_lora: int = 0
    # A MoE whose first `dense_layers` layers have a dense MLP of `dense_intermediate`
    # (first_k_dense_replace, intermediate_size) and whose MoE layers add `shared_experts`
    # experts every token goes through (n_shared_experts, each `intermediate` wide).
    dense_layers: int = 0
    dense_intermediate: int = 0
    shared_experts: int = 0
    params: float | None = None  # the published parameter count, for checking the derivation
    source: str = ""
    # The longest sequence (prompt + output) the model serves: config.json's
    # max_position_embeddings; 0 where a config file does not say (lengths then go unchecked).
    max_context: int = 0
    # Features of the architecture the step model leaves out; every estimate lists them.
    unmodelled: tuple[str, ...] = ()
    # A feature too large to leave out: no estimate is made rather than a guess.
    unsupported: str = ""

    @property
    def moe(self) -> bool:
        return self.experts > 1


# gpt-oss's checkpoints store the experts in MXFP4 (--precision mxfp4); the rest is bf16.
GPT_OSS_UNMODELLED = ("attention and expert biases", "the clamped SwiGLU (as SiLU·mul)")

# DeepSeek-V3/R1: https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json (R1's
# is the same architecture), 671B parameters + a 14B MTP module, 37B active (DeepSeek-V3 tech
# report, arXiv:2412.19437). Kimi-K2:
# https://huggingface.co/moonshotai/Kimi-K2-Instruct/blob/main/config.json ("1T" total, 32B
# active: its model card). Their figures were checked against copies of these configs in public
# repositories (Kimi-K2.5's text_config repeats K2's shapes); the configs themselves were not
# reachable from here.
# DeepSeek-V3/R1 and Kimi-K2 leave these out of the step model: the router's sigmoid scoring
# and group-limited top-k (the router GEMM and a top-k are modelled), the multi-token-prediction
# module (speculative decoding's), and YaRN rotary scaling (only the cos/sin table changes).
DEEPSEEK_UNMODELLED = ("sigmoid, group-limited routing (as softmax top-k)", "the MTP module")

# The fields of latent attention, first dense layers and shared experts: 0 where a model has none.
MLA_FIELDS = (
    "latent", "rope_dim", "q_lora", "dense_layers", "dense_intermediate", "shared_experts",
)  # fmt: skip

# Qwen3's configs (dense and MoE) give max_position_embeddings 40960: 32,768 tokens native plus
# room for output; Qwen's model cards extend it to 131,072 with YaRN rotary scaling, which a
# deployment must switch on (and which changes the model's quality). The native figure is kept.
QWEN3_CONTEXT = 40960
# The tiny configs are made up; their context is made up too, as Llama-3.1's.
TINY_CONTEXT = 131072

# fmt: off
MODELS: dict[str, ModelConfig] = {
    m.name.lower(): m
    for m in (
        ModelConfig(
            name="Llama-3.1-8B", hidden=4096, layers=32, heads=32, kv_heads=8,
            head_dim=128, intermediate=14336, vocab=128256,
            params=8.03e9,
            max_context=131072,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-8B config.json",
        ),
        ModelConfig(
            name="Llama-3.1-70B", hidden=8192, layers=80, heads=64, kv_heads=8,
            head_dim=128, intermediate=28672, vocab=128256,
            params=70.6e9,
            max_context=131072,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-70B config.json",
        ),
        ModelConfig(
            name="Llama-3.1-405B", hidden=16384, layers=126, heads=128, kv_heads=8,
            head_dim=128, intermediate=53248, vocab=128256,
            params=405.9e9,
            max_context=131072,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-405B config.json",
        ),
        ModelConfig(
            name="Llama-3.3-70B", hidden=8192, layers=80, heads=64, kv_heads=8,
            head_dim=128, intermediate=28672, vocab=128256,
            params=70.6e9,
            max_context=131072,
            source="HF meta-llama/Llama-3.3-70B-Instruct config.json (Llama-3.1-70B's shapes)",
        ),
        ModelConfig(
            name="Llama-2-70B", hidden=8192, layers=80, heads=64, kv_heads=8,
            head_dim=128, intermediate=28672, vocab=32000,
            params=69e9,
            max_context=4096,
            source="HF meta-llama/Llama-2-70b-hf config.json",
        ),
        ModelConfig(
            name="Mixtral-8x7B", hidden=4096, layers=32, heads=32, kv_heads=8,
            head_dim=128, intermediate=14336, vocab=32000,
            experts=8, top_k=2,
            params=46.7e9,
            max_context=32768,
            source="HF mistralai/Mixtral-8x7B-v0.1 config.json (46.7B total, 12.9B active)",
        ),
        ModelConfig(
            name="Qwen3-8B", hidden=4096, layers=36, heads=32, kv_heads=8,
            head_dim=128, intermediate=12288, vocab=151936,
            params=8.2e9,
            unmodelled=("per-head QK RMSNorm",), max_context=QWEN3_CONTEXT,
            source="HF Qwen/Qwen3-8B config.json (8.2B)",
        ),
        ModelConfig(
            name="Qwen3-32B", hidden=5120, layers=64, heads=64, kv_heads=8,
            head_dim=128, intermediate=25600, vocab=151936,
            params=32.8e9,
            unmodelled=("per-head QK RMSNorm",), max_context=QWEN3_CONTEXT,
            source="HF Qwen/Qwen3-32B config.json (32.8B)",
        ),
        ModelConfig(
            name="Qwen3-235B-A22B", hidden=4096, layers=94, heads=64, kv_heads=4,
            head_dim=128, intermediate=1536, vocab=151936,
            experts=128, top_k=8,
            params=235e9, unmodelled=("per-head QK RMSNorm",),
            max_context=QWEN3_CONTEXT,
            source="HF Qwen/Qwen3-235B-A22B config.json (235B total, 22B active)",
        ),
        ModelConfig(
            name="Qwen3-30B-A3B", hidden=2048, layers=48, heads=32, kv_heads=4,
            head_dim=128, intermediate=768, vocab=151936,
            experts=128, top_k=8,
            params=30.5e9, unmodelled=("per-head QK RMSNorm",),
            max_context=QWEN3_CONTEXT,
            source="HF Qwen/Qwen3-30B-A3B config.json (30.5B total, 3.3B active)",
        ),
        ModelConfig(
            name="gpt-oss-120b", hidden=2880, layers=36, heads=64, kv_heads=8,
            head_dim=64, intermediate=2880, vocab=201088,
            experts=128, top_k=4,
            sliding_window=128, sliding_layers=18, sinks=True, params=116.8e9,
            unmodelled=GPT_OSS_UNMODELLED,
            max_context=131072,
            source="HF openai/gpt-oss-120b config.json; OpenAI gpt-oss model card (116.8B total)",
        ),
        ModelConfig(
            name="gpt-oss-20b", hidden=2880, layers=24, heads=64, kv_heads=8,
            head_dim=64, intermediate=2880, vocab=201088,
            experts=32, top_k=4,
            sliding_window=128, sliding_layers=12, sinks=True, params=20.9e9,
            unmodelled=GPT_OSS_UNMODELLED,
            max_context=131072,
            source="HF openai/gpt-oss-20b config.json; OpenAI gpt-oss model card (20.9B total)",
        ),
        *(
            ModelConfig(
                name=name, hidden=7168, layers=61, heads=128, kv_heads=128,
                head_dim=128, intermediate=2048, vocab=129280,
                experts=256, top_k=8, latent=512, rope_dim=64, q_lora=1536,
                dense_layers=3, dense_intermediate=18432, shared_experts=1,
                params=671e9, unmodelled=DEEPSEEK_UNMODELLED,
                max_context=163840,
                source=f"HF deepseek-ai/{name} config.json (671B + 14B MTP; 37B active)",
            )
            for name in ("DeepSeek-V3", "DeepSeek-R1")
        ),
        ModelConfig(
            name="Kimi-K2", hidden=7168, layers=61, heads=64, kv_heads=64,
            head_dim=128, intermediate=2048, vocab=163840,
            experts=384, top_k=8, latent=512, rope_dim=64, q_lora=1536,
            dense_layers=1, dense_intermediate=18432, shared_experts=1,
            unmodelled=DEEPSEEK_UNMODELLED,  # its card's "1T total" is too round to check
            max_context=131072,
            source="HF moonshotai/Kimi-K2-Instruct config.json (1T total, 32B active)",
        ),
        ModelConfig(
            name="tiny", hidden=256, layers=2, heads=4, kv_heads=2,
            head_dim=64, intermediate=512, vocab=2048,
            max_context=TINY_CONTEXT,
            source="tokbench: a made-up Llama-style config sized for CPU runs, not a real model",
        ),
        ModelConfig(
            name="tiny-moe", hidden=256, layers=2, heads=4, kv_heads=2,
            head_dim=64, intermediate=256, vocab=2048,
            experts=4, top_k=2,
            max_context=TINY_CONTEXT,
            source="tokbench: a made-up Mixtral-style config sized for CPU runs, not a real model",
        ),
        ModelConfig(
            name="tiny-oss", hidden=256, layers=2, heads=4, kv_heads=2,
            head_dim=64, intermediate=256, vocab=2048,
            experts=8, top_k=2,
            sliding_window=16, sliding_layers=1, sinks=True,
            max_context=TINY_CONTEXT,
            source="tokbench: a made-up gpt-oss-style config (MoE, a windowed layer, sinks) "
            "sized for CPU runs, not a real model",
        ),
    )
}
# fmt: on

# Hugging Face model types that are Llama-style decoders with a gated MLP (Mixtral, Qwen3-MoE,
# gpt-oss: with MoE; gpt-oss also with sliding-window layers and attention sinks).
HF_MODEL_TYPES = (
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gpt_oss", "deepseek_v2",
    "deepseek_v3", "kimi_k2",
)  # fmt: skip


def model_names() -> list[str]:
    return [m.name for m in MODELS.values()]


def get_model(name_or_path: str) -> ModelConfig:
    """A built-in config by name (case-insensitive), else a config file read from disk."""
    known = MODELS.get(name_or_path.strip().lower())
    if known is not None:
        return known
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return load_config(path)
    raise BenchError(
        f"unknown model '{name_or_path}'; known: {', '.join(model_names())}; "
        "or give a config file (tokbench JSON or a Hugging Face config.json)"
    )


def load_config(path: Path) -> ModelConfig:
    """Read tokbench's own JSON (ModelConfig's fields) or a Hugging Face config.json."""
    text = read_text(path, "model config")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (RecursionError, ValueError):  # nested too deep; an integer too long to read
        raise BenchError(
            f"{path}: not a model config (JSON nested too deeply, or a number too long)"
        ) from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: a model config must be a JSON object")
    if "hidden_size" in data:
        config = _from_hf(data, path)
    elif "hidden" in data:
        config = _from_own(data, path)
    else:
        raise BenchError(
            f"{path}: not a model config: expected 'hidden' (tokbench format) or "
            "'hidden_size' (Hugging Face config.json)"
        )
    check_config(config, str(path))
    return config


def _from_own(data: dict[str, Any], path: Path) -> ModelConfig:
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BenchError(f"{path}: unknown field '{unknown[0]}'; fields: {', '.join(fields)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n != "name"]
    missing = [n for n in required if n not in data]
    if missing:
        raise BenchError(f"{path}: field '{missing[0]}' is missing")
    values = {"name": path.stem, "source": str(path), **data}
    for name in [*required, "experts", "top_k"]:
        _check_int(values.get(name, 1), name, path)
    for name in ("sliding_window", "sliding_layers", "max_context", *MLA_FIELDS):
        if values.get(name, 0):
            _check_int(values[name], name, path)
    for name, value in data.items():
        _check_json_type(value, name, str(fields[name].type), path)
    values["unmodelled"] = tuple(values.get("unmodelled", ()))
    return ModelConfig(**values)


# The JSON type of each field of a tokbench config, by the field's annotation: what isinstance
# accepts, and its name in the error (sizes are then _check_int's: positive).
_JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "float | None": ((int, float, type(None)), "a number or null"),
    "tuple[str, ...]": ((list,), "a list of strings"),
}


def _check_json_type(value: Any, key: str, annotation: str, path: Path) -> None:
    """A field of a tokbench config of the JSON type its annotation names (a boolean is no
    number, though Python's bool is an int)."""
    kinds, words = _JSON_TYPES.get(annotation, ((object,), ""))
    wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    if wrong or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
        raise BenchError(f"{path}: field '{key}' must be {words}, got {value!r}")


def _from_hf(data: dict[str, Any], path: Path) -> ModelConfig:
    kind = data.get("model_type")
    if kind not in HF_MODEL_TYPES:
        raise BenchError(
            f"{path}: model_type {kind!r} is not supported (a Llama-style decoder with a gated "
            f"MLP is assumed); supported: {', '.join(HF_MODEL_TYPES)}"
        )

    def get(key: str, default: Any = None) -> Any:
        value = data.get(key, default)
        if value is None:
            raise BenchError(f"{path}: field '{key}' is missing")
        return _check_int(value, key, path)

    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    layers = get("num_hidden_layers")
    experts = get("num_local_experts", data.get("num_experts", data.get("n_routed_experts", 1)))
    mlp = "moe_intermediate_size" if experts > 1 and "moe_intermediate_size" in data else None
    window, sliding = _hf_window(data, layers, path)
    return ModelConfig(
        name=str(data.get("_name_or_path") or path.parent.name or path.stem).split("/")[-1],
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=get("num_key_value_heads", heads),
        head_dim=(
            get("qk_nope_head_dim")
            if "kv_lora_rank" in data
            else get("head_dim", hidden // heads if heads else 0)
        ),
        intermediate=get(mlp or "intermediate_size"),
        vocab=get("vocab_size"),
        experts=experts,
        top_k=get("num_experts_per_tok", data.get("experts_per_token", 1)),
        tied_embeddings=bool(data.get("tie_word_embeddings", False)),
        sliding_window=window,
        sliding_layers=sliding,
        sinks=kind == "gpt_oss",
        source=f"Hugging Face config.json read from {path}",
        unmodelled=_hf_unmodelled(data),
        **_hf_mla(data, path),
        max_context=get("max_position_embeddings") if "max_position_embeddings" in data else 0,
    )


def _hf_mla(data: dict[str, Any], path: Path) -> dict[str, int]:
    """DeepSeek-V2/V3's and Kimi-K2's fields of a config.json: latent attention (kv_lora_rank,
    qk_rope_head_dim, q_lora_rank: null where queries skip it), the first dense layers
    (first_k_dense_replace, intermediate_size) and the shared experts (n_shared_experts)."""
    fields: dict[str, int] = {}
    if "kv_lora_rank" in data:
        if data.get("v_head_dim", data.get("qk_nope_head_dim")) != data.get("qk_nope_head_dim"):
            raise BenchError(
                f"{path}: v_head_dim {data.get('v_head_dim')} differs from qk_nope_head_dim "
                f"{data.get('qk_nope_head_dim')}; latent attention is modelled with them equal"
            )
        fields["latent"] = _check_int(data["kv_lora_rank"], "kv_lora_rank", path)
        fields["rope_dim"] = _check_int(data.get("qk_rope_head_dim"), "qk_rope_head_dim", path)
        if data.get("q_lora_rank") is not None:
            fields["q_lora"] = _check_int(data["q_lora_rank"], "q_lora_rank", path)
    if data.get("first_k_dense_replace"):
        fields["dense_layers"] = _check_int(
            data["first_k_dense_replace"], "first_k_dense_replace", path
        )
        fields["dense_intermediate"] = _check_int(
            data.get("intermediate_size"), "intermediate_size", path
        )
    if data.get("n_shared_experts"):
        fields["shared_experts"] = _check_int(data["n_shared_experts"], "n_shared_experts", path)
    return fields


# Model types whose layers alternate sliding and full attention, from the first layer, when
# the config.json has no layer_types (transformers' configuration_gpt_oss.py and
# configuration_gemma2.py default).
ALTERNATING_TYPES = ("gpt_oss", "gemma2")
LAYER_TYPES = ("full_attention", "sliding_attention")


def _hf_window(data: dict[str, Any], layers: int, path: Path) -> tuple[int, int]:
    """(window, layers using it) of a config.json: `layer_types` names each layer's attention
    (gpt-oss alternates, and does so by default); without it a `sliding_window` applies to
    every layer, unless `use_sliding_window` is false (Qwen's configs carry an unused window)."""
    types = data.get("layer_types")
    if types is not None:
        _check_layer_types(types, layers, path)
    window = data.get("sliding_window")
    if window is None or data.get("use_sliding_window", True) is False:
        if types is not None and "sliding_attention" in types:
            raise BenchError(f"{path}: layer_types names sliding_attention layers but the config "
                             "sets no sliding_window")  # fmt: skip
        return 0, 0
    window = _check_int(window, "sliding_window", path)
    if types is not None:
        return window, types.count("sliding_attention")
    if data.get("model_type") in ALTERNATING_TYPES:
        return window, (layers + 1) // 2
    return window, layers


def _check_layer_types(types: object, layers: int, path: Path) -> None:
    """layer_types: one known attention kind per layer."""
    if not isinstance(types, list) or len(types) != layers:
        count = f"{len(types)} entries" if isinstance(types, list) else type(types).__name__
        raise BenchError(f"{path}: layer_types must list one entry per layer ({layers}), got "
                         f"{count}")  # fmt: skip
    if unknown := sorted({str(t) for t in types} - set(LAYER_TYPES)):
        raise BenchError(f"{path}: layer_types entry '{unknown[0]}' is not modelled; known: "
                         f"{', '.join(LAYER_TYPES)}")  # fmt: skip


def _hf_unmodelled(data: dict[str, Any]) -> tuple[str, ...]:
    """The features of a config.json that cost time and the step model leaves out, named for the
    estimate (rotary scaling only changes the cached cos/sin table, so it costs nothing)."""
    missing = []
    if data.get("attention_bias"):
        missing.append("attention biases")
    if data.get("shared_expert_intermediate_size"):
        missing.append("shared experts")
    return tuple(missing)


def _check_int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{path}: field '{key}' must be a positive integer, got {value!r}")
    return value


def check_config(config: ModelConfig, where: str) -> None:
    """Raise a one-line BenchError for a config no decoder could have."""
    if config.heads % config.kv_heads:
        raise BenchError(
            f"{where}: kv_heads {config.kv_heads} must divide heads {config.heads} (GQA groups)"
        )
    if config.top_k > config.experts:
        raise BenchError(f"{where}: top_k {config.top_k} exceeds experts {config.experts}")
    if not 0 <= config.sliding_layers <= config.layers:
        raise BenchError(
            f"{where}: sliding_layers {config.sliding_layers} must be within 0..{config.layers}"
        )
    if config.sliding_layers and config.sliding_window < 1:
        raise BenchError(f"{where}: sliding_layers {config.sliding_layers} needs a sliding_window")


def check_context(config: ModelConfig, prompt: int, output: int, where: str = "") -> None:
    """Raise a one-line BenchError when a request is longer than the model's context."""
    if config.max_context and prompt + output > config.max_context:
        what = where or f"--isl {prompt:,} + --osl {output:,}"
        raise BenchError(
            f"{what} = {prompt + output:,} tokens exceed {config.name}'s context of "
            f"{config.max_context:,} tokens (max_position_embeddings)"
        )


# --- one forward step ---------------------------------------------------------------------------


def part(use: OpUse) -> str:
    """The part of a step a use's time counts to: its op's (Op.part); the LM head, run once a
    step rather than once a layer, on its own."""
    return "lm_head" if use.role == "lm_head" else get_op(use.op).part


def decode_context(isl: int, osl: int) -> int:
    """Mean context of the decode steps of a request: attention time is linear in the context,
    so the mean step is the step at the mean context."""
    return isl + osl // 2


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BenchError(f"unknown precision '{precision}'; known: {', '.join(PRECISIONS)}")


def act_dtype(precision: str) -> str:
    """Activations, attention, KV cache, router and LM head: quantised models keep these in
    bf16."""
    return "bf16" if precision in QUANTISED else precision


@dataclass(frozen=True)
class MemoryPlan:
    """How one GPU's memory divides between what the engine keeps, the weights and KV cache."""

    memory: float  # bytes of device memory, as the driver reports them
    workspace_fraction: float  # kept out first (1 − vLLM's gpu_memory_utilization)
    reserved: float  # bytes then kept: CUDA context, CUDA graphs, the activations' peak
    weights: float
    kv_per_token: float  # KV bytes per token of one sequence at its longest (windows held)
    seq_tokens: int  # tokens one sequence holds at its longest: input + output
    max_batch: int  # sequences whose KV cache fits beside the weights; 0 when none

    @property
    def usable(self) -> float:
        """Bytes for the weights and the KV cache."""
        return self.memory * (1 - self.workspace_fraction) - self.reserved

    @property
    def kv_budget(self) -> float:
        return self.usable - self.weights

    @property
    def seq_bytes(self) -> float:
        """KV bytes one sequence holds at its longest."""
        return self.kv_per_token * self.seq_tokens


@dataclass(frozen=True)
class Serving:
    """How a model is served: the settings every model suite, estimate and fleet plan shares.

    Tensor parallelism follows Megatron/vLLM: QKV and gate/up split by output columns, O and
    down by input rows, one all-reduce after each; KV heads are replicated when TP exceeds their
    count; the embedding and LM head are split over the vocabulary. Constructing one checks
    every setting and names the flag of the first that no estimate can use.
    """

    model: ModelConfig
    tp: int = 1
    precision: str = "bf16"  # the GEMMs'; activations and attention in act_dtype
    kv_precision: str = "auto"  # a KV_PRECISIONS entry
    isl: int = DEFAULT_ISL  # prompt tokens per request
    osl: int = DEFAULT_OSL  # output tokens per request
    workspace: float = DEFAULT_WORKSPACE  # fraction of memory kept out of weights + KV cache
    max_batch: int = DEFAULT_MAX_BATCH  # scheduler cap on sequences decoded together
    page: int = DEFAULT_PAGE  # KV-cache page, tokens
    prefill_budget: int = DEFAULT_MAX_PREFILL_TOKENS  # tokens one prefill step may hold
    collectives: str = "nccl"  # the all-reduce engine: nccl, auto (vLLM's choice), custom
    # Attention data parallelism and expert parallelism (SGLang's --enable-dp-attention with
    # --ep, TensorRT-LLM's enable_attention_dp): `dp` groups of `tp` GPUs each attend to their
    # own sequences; a MoE's experts spread over all `ep` = tp × dp of them (1: every GPU holds
    # a TP shard of every expert). `redundant` expert replicas balance the load (EPLB);
    # `router_skew`: the router's Zipf exponent in hundredths (0: uniform).
    dp: int = 1
    ep: int = 1
    redundant: int = 0
    router_skew: int = 0

    def __post_init__(self) -> None:
        if self.model.unsupported:
            raise BenchError(
                f"{self.model.name}: {self.model.unsupported} are not modelled here; tokbench "
                "gives no estimate rather than a guess"
            )
        if self.tp < 1:
            raise BenchError(f"tensor-parallel degree must be at least 1, got {self.tp}")
        _check_tp(self.model, self.tp)
        _check_ep(self)
        check_precision(self.precision)
        if self.kv_precision not in KV_PRECISIONS:
            raise BenchError(
                f"unknown KV-cache precision '{self.kv_precision}'; known: auto (the "
                "activations' dtype), fp8"
            )
        if self.isl < 1 or self.osl < 1:
            raise BenchError(f"--isl and --osl must be at least 1, got {self.isl} and {self.osl}")
        check_context(self.model, self.isl, self.osl)
        check_range(
            "--workspace", self.workspace, 0, 1, closed="low",
            what=" is the fraction of GPU memory kept free and",
        )  # fmt: skip
        if self.max_batch < 1:
            raise BenchError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.prefill_budget < 1:
            raise BenchError(f"--max-tokens must be at least 1, got {self.prefill_budget}")
        if self.collectives not in COLLECTIVES:
            raise BenchError(
                f"unknown --collectives '{self.collectives}'; known: {', '.join(COLLECTIVES)}"
            )

    @property
    def act(self) -> str:
        return act_dtype(self.precision)

    @property
    def fp8_kv(self) -> bool:
        """Whether the KV cache is fp8 (the activations never are: act_dtype)."""
        return self.kv_precision == "fp8"

    @property
    def kv_dtype(self) -> str:
        return "fp8" if self.fp8_kv else self.act

    @property
    def context(self) -> int:
        """The mean decode context of a request."""
        return decode_context(self.isl, self.osl)

    @property
    def kv_heads(self) -> int:
        """KV heads each GPU holds: split while TP ≤ kv_heads, then replicated (one per GPU)."""
        return max(1, self.model.kv_heads // self.tp)

    # --- one forward step -----------------------------------------------------------------------

    @property
    def gpus(self) -> int:
        """GPUs one copy of the model spans: `dp` attention groups of `tp`."""
        return self.tp * self.dp

    @property
    def layout(self) -> str:
        return layout_label(self.tp, self.dp, self.ep)

    def step(self, phase: str, batch: int, seq: int, context: int) -> ModelStep:
        """One GPU's view of a forward step of `batch` sequences of `seq` new tokens each (per
        attention-DP group), attending to `context` tokens (their new ones included), as op
        modules read it. Under EP a routed expert is whole on its GPU; otherwise split by TP."""
        c, tp = self.model, self.tp
        return ModelStep(
            hidden=c.hidden, layers=c.layers, heads=c.heads // tp, kv_heads=self.kv_heads,
            head_dim=c.head_dim, intermediate=c.intermediate // (1 if self.ep > 1 else tp),
            vocab=ceil_div(c.vocab, tp), experts=c.experts, top_k=c.top_k,
            window=c.sliding_window, sliding_layers=c.sliding_layers, sinks=c.sinks,
            latent=c.latent, rope_dim=c.rope_dim, q_lora=c.q_lora, dense_layers=c.dense_layers,
            dense_intermediate=c.dense_intermediate // tp,
            shared=c.shared_experts * c.intermediate // tp, tp=tp, dp=self.dp, ep=self.ep,
            redundant=self.redundant, skew=self.router_skew,
            weights=self.precision, act=self.act, fp8_kv=self.fp8_kv, page=self.page,
            phase=phase, batch=batch, seq=seq, context=context,
        )  # fmt: skip

    def uses(self, step: ModelStep) -> list[OpUse]:
        """Every registry op the step runs on one GPU, in the order a layer runs them: each op
        module says which of its shapes a step runs (Op.step_uses)."""
        return in_layer_order([u for op in OPS.values() for u in op.step_uses(step)])

    def prefill_step(self, batch: int, isl: int | None = None) -> list[OpUse]:
        """Every registry op of a prefill of `batch` prompts of `isl` tokens, on one GPU."""
        isl = isl or self.isl
        return self.uses(self.step("prefill", batch, isl, isl))

    def chunk_step(self, chunk: int, past: int) -> list[OpUse]:
        """A prefill chunk of one prompt: `chunk` tokens after `past` cached ones."""
        return self.uses(self.step("prefill", 1, chunk, past + chunk))

    def decode_step(self, batch: int, context: int | None = None) -> list[OpUse]:
        """Every registry op of one decode step: one new token for each of `batch` sequences."""
        return self.uses(self.step("decode", batch, 1, context or self.context))

    def modelled_kernels(self, tokens: int) -> list[tuple[str, float]]:
        """(name, minimum bytes) of each kernel of one layer that no registry op measures, run
        once per MoE layer: a MoE router's softmax and top-k (the logits read, each token's k
        weights and ids written)."""
        c = self.model
        if not c.moe:
            return []
        per_token = c.experts * DTYPE_BYTES[self.act] + c.top_k * (4 + 8)
        return [("router softmax + top-k", float(per_token * tokens))]

    # --- memory ----------------------------------------------------------------------------------

    def weight_bytes(self) -> float:
        """Bytes of the weights one GPU holds."""
        return float(sum(n * DTYPE_BYTES[dtype] for n, dtype in _weights(self)))

    def kv_bytes_per_token(self) -> float:
        """KV cache one GPU holds per token of a sequence in every layer: 2 (K and V) · layers ·
        KV heads · head_dim · bytes; latent attention's one latent + rope row a layer, whatever
        the heads (every GPU of a TP group holds it whole)."""
        c = self.model
        if c.latent:
            return float(c.layers * (c.latent + c.rope_dim) * DTYPE_BYTES[self.kv_dtype])
        return float(2 * c.layers * self.kv_heads * c.head_dim * DTYPE_BYTES[self.kv_dtype])

    def kv_tokens(self, context: float) -> float:
        """The KV cache a sequence at `context` tokens holds, in tokens of every layer: a
        sliding-window layer keeps only its window (vLLM's hybrid KV-cache manager frees what
        slides out; gpt-oss alternates 128-token windows with full layers)."""
        c = self.model
        if not c.sliding_layers:
            return float(context)
        held = (c.layers - c.sliding_layers) * context
        held += c.sliding_layers * min(context, c.sliding_window)
        return held / c.layers

    def context_held(self, kv_tokens: float) -> float:
        """The longest context whose KV cache fits `kv_tokens` tokens of every layer: the
        inverse of kv_tokens (unbounded when every layer is windowed and the window fits)."""
        c = self.model
        full = c.layers - c.sliding_layers
        if not c.sliding_layers or kv_tokens <= c.sliding_window:
            return float(kv_tokens)
        if not full:
            return float("inf")
        return (kv_tokens * c.layers - c.sliding_layers * c.sliding_window) / full

    def reserved_bytes(self) -> float:
        """What a serving engine on a GPU keeps beside the weights and KV cache: the CUDA
        context and graphs, and the activations' peak, met in a forward of the prefill token
        budget as vLLM's profile run meets it (assumption: a layer's gate/up output, its
        activation and two hidden-state buffers live at once, and fp32 logits for up to
        --max-batch sequences)."""
        c, act = self.model, DTYPE_BYTES[self.act]
        width = c.intermediate // self.tp * (c.top_k if c.moe else 1)
        per_token = (3 * width + 2 * c.hidden) * act
        logits = min(self.max_batch, self.prefill_budget) * ceil_div(c.vocab, self.tp) * 4
        return CUDA_CONTEXT_BYTES + CUDA_GRAPH_BYTES + self.prefill_budget * per_token + logits

    def memory_plan(self, memory: float, cuda: bool = True) -> MemoryPlan:
        """Weights + KV cache for as many sequences of isl + osl tokens as fit what is left of
        `memory` after the engine's share, and on a GPU (`cuda`) its reserve."""
        weights, seq_tokens = self.weight_bytes(), self.isl + self.osl
        per_token = self.kv_bytes_per_token() * self.kv_tokens(seq_tokens) / seq_tokens
        reserved = self.reserved_bytes() if cuda else 0.0
        budget = memory * (1 - self.workspace) - reserved - weights
        max_batch = max(0, int(budget // (per_token * seq_tokens)))
        return MemoryPlan(
            memory, self.workspace, reserved, weights, per_token, seq_tokens, max_batch
        )

    def decode_cap(self, plan: MemoryPlan) -> int:
        """The largest decode batch estimated: what fits memory, at most the scheduler cap."""
        return min(plan.max_batch, self.max_batch)

    def budget_batch(self, cap: int) -> int:
        """Prompts one prefill step at the token budget holds: as many as the budget takes, at
        most the decode cap (a scheduler admits no more sequences than it decodes), at least
        one."""
        return max(1, min(self.prefill_budget // self.isl, cap))

    def prefill_batches(self, batches: Iterable[int]) -> list[int]:
        """Batches whose prefill fits one step's token budget; a single prompt always does."""
        return sorted({1, *(b for b in batches if b * self.isl <= self.prefill_budget)})


def _check_tp(config: ModelConfig, tp: int) -> None:
    """Raise a BenchError unless `tp` shards this model's heads and MLP evenly."""
    if config.heads % tp:
        raise BenchError(f"TP {tp} does not divide {config.name}'s {config.heads} attention heads")
    if config.kv_heads % tp and tp % config.kv_heads:
        raise BenchError(
            f"TP {tp} neither divides {config.name}'s {config.kv_heads} KV heads nor is a "
            "multiple of them (KV heads can only be split or replicated)"
        )
    if config.intermediate % tp:
        raise BenchError(f"TP {tp} does not divide {config.name}'s MLP width {config.intermediate}")


def layout_label(tp: int, dp: int, ep: int) -> str:
    """A layout in words: "TP 8", "TP 1 × DP 8, EP 8", "TP 8, EP 8"."""
    words = f"TP {tp}" + (f" × DP {dp}" if dp > 1 else "")
    return words + (f", EP {ep}" if ep > 1 else "")


def _check_ep(setup: Serving) -> None:
    """Raise a BenchError unless the DP × EP layout is one the step model has: no DP or EP, or
    experts over the whole group (ep = tp × dp) of a MoE."""
    dp, ep, c = setup.dp, setup.ep, setup.model
    if dp < 1 or ep < 1 or setup.redundant < 0 or setup.router_skew < 0:
        raise BenchError(
            f"a layout's DP and EP must be at least 1 and --redundant-experts and --router-skew "
            f"at least 0, got {dp}, {ep}, {setup.redundant} and {setup.router_skew}"
        )
    if ep == 1 and dp == 1 and not setup.redundant:
        return
    if ep == 1:
        raise BenchError(
            "attention DP and --redundant-experts need expert parallelism: a --tp layout NxD or Nep"
        )
    if not c.moe:
        raise BenchError(
            f"attention DP, EP and --redundant-experts need a MoE; {c.name} is dense (give --tp N)"
        )
    if ep != setup.tp * dp:
        raise BenchError(
            f"EP {ep} must be TP × DP = {setup.tp * dp}: experts spread over every GPU of the "
            "group (attention DP needs expert parallelism here)"
        )
    if ep > c.experts + setup.redundant:
        raise BenchError(
            f"EP {ep} exceeds {c.name}'s {c.experts} experts + {setup.redundant} redundant"
        )


def _weights(setup: Serving) -> list[tuple[float, str]]:
    """(elements, dtype) of every weight one GPU holds: what each op of a layer holds (every
    expert of a MoE, whatever a step activates; op modules say, Op.weight_elements), the
    embeddings, the LM head and the final norm, these three in the activation dtype (fp8
    checkpoints keep them in bf16)."""
    c = setup.model
    weights = [
        (get_op(u.op).weight_elements(u.shape) * u.count, u.dtype)
        for u in setup.decode_step(1)
        if u.role != "lm_head"
    ]
    vocab_shard = ceil_div(c.vocab, setup.tp) * c.hidden
    weights.append((vocab_shard * (1 if c.tied_embeddings else 2), setup.act))
    weights.append((c.hidden, setup.act))
    return weights


def param_count(config: ModelConfig) -> float:
    """Parameters of the whole model, derived from its shapes (checked against `params`); the
    published count for a model whose architecture is not modelled."""
    if config.unsupported:
        return config.params or 0.0
    return sum(elements for elements, _ in _weights(Serving(config)))


def suite_cases(
    setups: Iterable[Serving], batches: Iterable[int], memory: float, cuda: bool = True
) -> list[CaseSpec]:
    """Unique cases a model needs measured: every step the estimate takes for the same settings.

    Decode at each batch and at the largest batch that fits `memory` (of a GPU, with `cuda`;
    capped at max_batch), where
    an estimate reports its best decode throughput; prefill at each of those within the step's
    token budget, and at the budget itself (the serving mix's prefill)."""
    unique: dict[tuple, CaseSpec] = {}
    for setup in setups:
        decode_batches = set(batches)
        prefill = set(batches)
        plan = setup.memory_plan(memory, cuda)
        if plan.max_batch >= 1:
            cap = setup.decode_cap(plan)
            decode_batches.add(cap)
            prefill |= {cap, setup.budget_batch(cap)}
        uses = [u for b in setup.prefill_batches(prefill) for u in setup.prefill_step(b)]
        uses += [u for b in sorted(decode_batches) for u in setup.decode_step(b)]
        for u in uses:
            unique[(u.op, u.dtype, shape_key(u.shape))] = CaseSpec(u.op, u.shape, u.dtype)
    return list(unique.values())
