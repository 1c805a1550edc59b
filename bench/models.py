"""LLM configs and what one forward step of a model is made of.

A config is a Llama-style decoder (RMSNorm, rotary attention with grouped KV heads, gated MLP;
optionally mixture-of-experts). From a config, a tensor-parallel degree and a precision, this
module derives every GEMM, prefill-attention and decode-attention shape a GPU runs in one
forward step, the weight and KV-cache bytes per GPU, and the largest batch that fits memory.
The model suite measures exactly these shapes and the estimate sums them, so the two always agree.

Tensor parallelism follows Megatron/vLLM: QKV and gate/up split by output columns, O and down by
input rows, one all-reduce after each; KV heads are replicated when TP exceeds their count; the
embedding and LM head are split over the vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.ops import ELEMENT_BYTES, Shape

PRECISIONS = ("bf16", "fp16", "fp8", "fp32")
DEFAULT_ISL = 1024  # prompt tokens per request
DEFAULT_OSL = 256  # output tokens per request
DEFAULT_BATCHES = (1, 8, 32, 128)
DEFAULT_PAGE = 16  # KV-cache page size in tokens, vLLM's default block size
# Fraction of device memory kept out of the weights + KV-cache budget for activations, the
# allocator and CUDA graphs (vLLM's default gpu_memory_utilization of 0.9 keeps the same 10%).
DEFAULT_WORKSPACE = 0.10
# A serving engine bounds the tokens of one prefill step (vLLM's max_num_batched_tokens,
# SGLang's chunked prefill); prefill is estimated for batches within this budget.
DEFAULT_MAX_PREFILL_TOKENS = 16384
# Schedulers cap the sequences decoded together (vLLM's max_num_seqs is 256-1024); throughput at
# the largest batch that fits memory is estimated at most at this batch.
DEFAULT_MAX_BATCH = 1024


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder; for MoE, `intermediate` is per expert."""

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
    params: float | None = None  # the published parameter count, for checking the derivation
    source: str = ""

    @property
    def moe(self) -> bool:
        return self.experts > 1


# fmt: off
MODELS: dict[str, ModelConfig] = {
    m.name.lower(): m
    for m in (
        ModelConfig(
            "Llama-3.1-8B", 4096, 32, 32, 8, 128, 14336, 128256, params=8.03e9,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-8B config.json",
        ),
        ModelConfig(
            "Llama-3.1-70B", 8192, 80, 64, 8, 128, 28672, 128256, params=70.6e9,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-70B config.json",
        ),
        ModelConfig(
            "Llama-3.1-405B", 16384, 126, 128, 8, 128, 53248, 128256, params=405.9e9,
            source="meta-llama/llama-models sku_list; HF meta-llama/Llama-3.1-405B config.json",
        ),
        ModelConfig(
            "Llama-2-70B", 8192, 80, 64, 8, 128, 28672, 32000, params=69e9,
            source="HF meta-llama/Llama-2-70b-hf config.json",
        ),
        ModelConfig(
            "Mixtral-8x7B", 4096, 32, 32, 8, 128, 14336, 32000, experts=8, top_k=2,
            params=46.7e9,
            source="HF mistralai/Mixtral-8x7B-v0.1 config.json (46.7B total, 12.9B active)",
        ),
        ModelConfig(
            "tiny", 256, 2, 4, 2, 64, 512, 2048,
            source="tokbench: a made-up Llama-style config sized for CPU runs, not a real model",
        ),
        ModelConfig(
            "tiny-moe", 256, 2, 4, 2, 64, 256, 2048, experts=4, top_k=2,
            source="tokbench: a made-up Mixtral-style config sized for CPU runs, not a real model",
        ),
    )
}
# fmt: on

# Hugging Face model types that are Llama-style decoders with a gated MLP (Mixtral: with MoE).
HF_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3")


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
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BenchError(f"{path}: cannot read model config ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
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
    validate(config, str(path))
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
    return ModelConfig(**values)


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
    return ModelConfig(
        name=str(data.get("_name_or_path") or path.parent.name or path.stem).split("/")[-1],
        hidden=hidden,
        layers=get("num_hidden_layers"),
        heads=heads,
        kv_heads=get("num_key_value_heads", heads),
        head_dim=get("head_dim", hidden // heads if heads else 0),
        intermediate=get("intermediate_size"),
        vocab=get("vocab_size"),
        experts=get("num_local_experts", 1),
        top_k=get("num_experts_per_tok", 1),
        tied_embeddings=bool(data.get("tie_word_embeddings", False)),
        source=f"Hugging Face config.json read from {path}",
    )


def _check_int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{path}: field '{key}' must be a positive integer, got {value!r}")
    return value


def validate(config: ModelConfig, where: str) -> None:
    """Raise a one-line BenchError for a config no decoder could have."""
    if config.heads % config.kv_heads:
        raise BenchError(
            f"{where}: kv_heads {config.kv_heads} must divide heads {config.heads} (GQA groups)"
        )
    if config.top_k > config.experts:
        raise BenchError(f"{where}: top_k {config.top_k} exceeds experts {config.experts}")


# --- tensor parallelism ------------------------------------------------------------------------


def check_tp(config: ModelConfig, tp: int) -> None:
    """Raise a BenchError unless `tp` shards this model's heads and MLP evenly."""
    if tp < 1:
        raise BenchError(f"tensor-parallel degree must be at least 1, got {tp}")
    if config.heads % tp:
        raise BenchError(f"TP {tp} does not divide {config.name}'s {config.heads} attention heads")
    if config.kv_heads % tp and tp % config.kv_heads:
        raise BenchError(
            f"TP {tp} neither divides {config.name}'s {config.kv_heads} KV heads nor is a "
            "multiple of them (KV heads can only be split or replicated)"
        )
    if config.intermediate % tp:
        raise BenchError(f"TP {tp} does not divide {config.name}'s MLP width {config.intermediate}")


def kv_heads_per_gpu(config: ModelConfig, tp: int) -> int:
    """KV heads each GPU holds: split while TP ≤ kv_heads, then replicated (one per GPU)."""
    return max(1, config.kv_heads // tp)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BenchError(f"unknown precision '{precision}'; known: {', '.join(PRECISIONS)}")


def act_dtype(precision: str) -> str:
    """Activations, attention, KV cache, router and LM head: fp8 models keep these in bf16."""
    return "bf16" if precision == "fp8" else precision


# --- one forward step ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpUse:
    """A registry op at one shape and dtype, as one forward step uses it `count` times."""

    part: str  # what it is in the model: "qkv", "o", "gate_up", "down", "attention", …
    op: str
    shape: Shape
    dtype: str
    count: int

    @property
    def weight_elements(self) -> int:
        """Elements of the weight matrix behind a GEMM (0 for attention)."""
        return self.shape["N"] * self.shape["K"] if self.op == "matmul" else 0


def _gemm(part: str, m: int, n: int, k: int, dtype: str, count: int) -> OpUse:
    return OpUse(part, "matmul", {"M": m, "N": n, "K": k}, dtype, count)


def moe_routing(config: ModelConfig, tokens: int) -> tuple[int, int]:
    """(experts that receive tokens, tokens each receives) for `tokens` routed top-k.

    With uniform random routing the expected number of distinct experts hit is
    E·(1 − (1 − k/E)^T); both figures are rounded up, so the expert GEMMs are never undercounted.
    """
    e, k = config.experts, config.top_k
    active = min(e, math.ceil(e * (1 - (1 - k / e) ** tokens) - 1e-9))
    return active, math.ceil(tokens * k / active)


def layer_gemms(config: ModelConfig, tp: int, tokens: int, precision: str) -> list[OpUse]:
    """The GEMMs of one decoder layer on one GPU, counted over all layers."""
    h, d, n_layers = config.hidden, config.head_dim, config.layers
    q_width = config.heads // tp * d
    kv_width = kv_heads_per_gpu(config, tp) * d
    mlp = config.intermediate // tp
    gemms = [
        _gemm("qkv", tokens, q_width + 2 * kv_width, h, precision, n_layers),
        _gemm("o", tokens, h, q_width, precision, n_layers),
    ]
    if not config.moe:
        gemms.append(_gemm("gate_up", tokens, 2 * mlp, h, precision, n_layers))
        gemms.append(_gemm("down", tokens, h, mlp, precision, n_layers))
        return gemms
    active, per_expert = moe_routing(config, tokens)
    gemms.append(_gemm("router", tokens, config.experts, h, act_dtype(precision), n_layers))
    gemms.append(_gemm("expert_gate_up", per_expert, 2 * mlp, h, precision, n_layers * active))
    gemms.append(_gemm("expert_down", per_expert, h, mlp, precision, n_layers * active))
    return gemms


def lm_head(config: ModelConfig, tp: int, rows: int, precision: str) -> OpUse:
    """Logits for `rows` tokens (prefill computes them only for each sequence's last token)."""
    vocab_shard = math.ceil(config.vocab / tp)
    return _gemm("lm_head", rows, vocab_shard, config.hidden, act_dtype(precision), 1)


def decode_context(isl: int, osl: int) -> int:
    """Mean context of the decode steps of a request: attention time is linear in the context,
    so the mean step is the step at the mean context."""
    return isl + osl // 2


def prefill_step(config: ModelConfig, tp: int, precision: str, batch: int, isl: int) -> list[OpUse]:
    """Every registry op of a prefill of `batch` prompts of `isl` tokens, on one GPU."""
    attention = {
        "B": batch,
        "H": config.heads // tp,
        "Hkv": kv_heads_per_gpu(config, tp),
        "Sq": isl,
        "Skv": isl,
        "D": config.head_dim,
        "causal": True,
    }
    return [
        *layer_gemms(config, tp, batch * isl, precision),
        OpUse("attention", "attention", attention, act_dtype(precision), config.layers),
        lm_head(config, tp, batch, precision),
    ]


def decode_step(
    config: ModelConfig,
    tp: int,
    precision: str,
    batch: int,
    context: int,
    page: int = DEFAULT_PAGE,
) -> list[OpUse]:
    """Every registry op of one decode step: one new token for each of `batch` sequences."""
    attention = {
        "B": batch,
        "H": config.heads // tp,
        "Hkv": kv_heads_per_gpu(config, tp),
        "D": config.head_dim,
        "L": context,
        "page": page,
    }
    return [
        *layer_gemms(config, tp, batch, precision),
        OpUse("attention", "decode", attention, act_dtype(precision), config.layers),
        lm_head(config, tp, batch, precision),
    ]


def memory_bound_kernels(
    config: ModelConfig, tp: int, tokens: int, precision: str
) -> list[tuple[str, float]]:
    """(name, minimum bytes) of each memory-bound kernel of one layer for `tokens` tokens, as a
    serving engine fuses them (vLLM: fused residual add + RMSNorm, rotary, KV-cache write,
    SiLU·mul; MoE: the gather and scatter of routed tokens). Run once per layer."""
    e = ELEMENT_BYTES[act_dtype(precision)]
    h, d = config.hidden, config.head_dim
    q, kv = config.heads // tp * d, kv_heads_per_gpu(config, tp) * d
    routed = config.top_k if config.moe else 1  # tokens each MLP row is computed for
    mlp = config.intermediate // tp
    kernels = [
        # add + RMSNorm: read the residual and the block's output, write both back.
        ("add + RMSNorm before attention", 4 * h),
        ("rotary on q and k", 2 * (q + kv)),
        ("KV-cache write", 2 * kv),
        ("add + RMSNorm before the MLP", 4 * h),
        ("SiLU·mul", 3 * mlp * routed),  # read gate and up, write their product
    ]
    if config.moe:
        kernels.append(("MoE gather + weighted scatter", 2 * 2 * h * routed))
    return [(name, float(per_token * tokens * e)) for name, per_token in kernels]


def allreduce_bytes(config: ModelConfig, tokens: int, precision: str) -> float:
    """Bytes of one TP all-reduce: the hidden state of every token of the step."""
    return float(tokens * config.hidden * ELEMENT_BYTES[act_dtype(precision)])


# --- parameters and memory ----------------------------------------------------------------------


def _weights(config: ModelConfig, tp: int, precision: str) -> list[tuple[int, str]]:
    """(elements, dtype) of every weight one GPU holds: its shards of every matrix (all experts,
    whatever a step activates), the embeddings, the LM head and the norms.

    GEMM weights are in the precision; the router, embeddings, LM head and norms stay in the
    activation dtype (fp8 checkpoints keep them in bf16).
    """
    weights = []
    for use in layer_gemms(config, tp, 1, precision):
        count = config.layers * config.experts if use.part.startswith("expert_") else use.count
        weights.append((use.weight_elements * count, use.dtype))
    vocab_shard = math.ceil(config.vocab / tp) * config.hidden
    weights.append((vocab_shard * (1 if config.tied_embeddings else 2), act_dtype(precision)))
    weights.append(((2 * config.layers + 1) * config.hidden, act_dtype(precision)))
    return weights


def param_count(config: ModelConfig) -> int:
    """Parameters of the whole model, derived from its shapes (checked against `params`)."""
    return sum(elements for elements, _ in _weights(config, 1, "bf16"))


def weight_bytes(config: ModelConfig, tp: int, precision: str) -> float:
    """Bytes of the weights one GPU holds at tensor-parallel degree `tp`."""
    return float(sum(n * ELEMENT_BYTES[dtype] for n, dtype in _weights(config, tp, precision)))


def kv_bytes_per_token(config: ModelConfig, tp: int, precision: str) -> float:
    """KV cache one GPU holds per token: 2 (K and V) · layers · KV heads · head_dim · bytes."""
    heads = kv_heads_per_gpu(config, tp)
    return float(2 * config.layers * heads * config.head_dim * ELEMENT_BYTES[act_dtype(precision)])


@dataclass(frozen=True)
class MemoryPlan:
    """How one GPU's memory divides between weights, workspace and KV cache."""

    memory: float  # bytes of device memory
    workspace_fraction: float
    weights: float
    kv_per_token: float
    seq_tokens: int  # tokens one sequence holds at its longest: input + output
    max_batch: int  # sequences whose KV cache fits beside the weights; 0 when none

    @property
    def usable(self) -> float:
        return self.memory * (1 - self.workspace_fraction)

    @property
    def kv_budget(self) -> float:
        return self.usable - self.weights


def memory_plan(
    config: ModelConfig,
    tp: int,
    precision: str,
    memory: float,
    seq_tokens: int,
    workspace_fraction: float = DEFAULT_WORKSPACE,
) -> MemoryPlan:
    """Weights/TP + KV cache for `max_batch` sequences of `seq_tokens` ≤ memory less workspace."""
    if not 0 <= workspace_fraction < 1:
        raise BenchError(f"workspace fraction must be in [0, 1), got {workspace_fraction}")
    weights = weight_bytes(config, tp, precision)
    kv = kv_bytes_per_token(config, tp, precision)
    budget = memory * (1 - workspace_fraction) - weights
    max_batch = max(0, int(budget // (kv * seq_tokens)))
    return MemoryPlan(memory, workspace_fraction, weights, kv, seq_tokens, max_batch)


def prefill_batches(batches: Iterable[int], isl: int, max_tokens: int) -> list[int]:
    """Batches whose prefill fits one step's token budget; a single prompt always does."""
    return sorted({1, *(b for b in batches if b * isl <= max_tokens)})


def decode_cap(plan: MemoryPlan, max_batch: int) -> int:
    """The largest decode batch estimated: what fits memory, at most the scheduler cap."""
    return min(plan.max_batch, max_batch)


def budget_batch(isl: int, max_tokens: int, cap: int) -> int:
    """Prompts one prefill step at the token budget holds: as many as the budget takes, at most
    the decode cap (a scheduler admits no more sequences than it decodes), at least one."""
    return max(1, min(max_tokens // isl, cap))


def suite_cases(
    config: ModelConfig,
    tp: int,
    precision: str,
    batches: Iterable[int],
    isl: int,
    osl: int,
    memory: float,
    page: int = DEFAULT_PAGE,
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH,
    workspace_fraction: float = DEFAULT_WORKSPACE,
) -> list[tuple[str, Shape, str]]:
    """Unique (op, shape, dtype) a model needs measured: every step `bench.estimate` takes for
    the same options. Decode at each batch and at the largest batch that fits `memory` (capped
    at `max_batch`), where an estimate reports its best decode throughput; prefill at each of
    those within the step's token budget, and at the budget itself (the serving mix's prefill)."""
    check_tp(config, tp)
    check_precision(precision)
    decode_batches = set(batches)
    prefill = set(batches)
    plan = memory_plan(config, tp, precision, memory, isl + osl, workspace_fraction)
    if plan.max_batch >= 1:
        cap = decode_cap(plan, max_batch)
        decode_batches.add(cap)
        prefill |= {cap, budget_batch(isl, max_prefill_tokens, cap)}
    context = decode_context(isl, osl)
    uses = [
        u
        for b in prefill_batches(prefill, isl, max_prefill_tokens)
        for u in prefill_step(config, tp, precision, b, isl)
    ]
    uses += [
        u
        for b in sorted(decode_batches)
        for u in decode_step(config, tp, precision, b, context, page)
    ]
    unique = {(u.op, tuple(sorted(u.shape.items())), u.dtype): u for u in uses}
    return [(u.op, u.shape, u.dtype) for u in unique.values()]
