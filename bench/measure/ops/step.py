"""How ops appear in a model's forward step: the step an op module reads, and one use of an op.

Planning (models, the step-time model, the simulator) and the decoder-layer check never name an
op. They describe a step (`ModelStep`: one GPU's shard of the model, how it is served, and the
step's sequences, new tokens and context) and ask every registered op which of its shapes that
step runs (`Op.step_uses`). Putting an op into a model step is therefore a change to its own
module only. Plain Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.record.schema import Shape

# What an op does in a decoder step, in the order a layer runs them; the LM head ends the step.
# `norm` is the residual add fused with RMSNorm (twice a layer); `act` the MLP's activation;
# `experts` a MoE layer's expert MLP; the collectives are tensor parallelism's. An op may bring a
# role of its own: it runs after these and before the LM head.
ROLES = (
    "norm",
    "qkv",
    "rotary",
    "kv_write",
    "attention",
    "o",
    "gate_up",
    "act",
    "down",
    "router",
    "experts",
    "all_reduce",
    "all_gather",
    "all_to_all",
    "lm_head",
)

# How the op-time model treats an op (bench.plan.optime): tensor-core GEMMs, prefill and
# decode attention, a MoE's grouped GEMMs, memory-bound kernels, collectives.
EFFICIENCY_CLASSES = (
    "gemm",
    "prefill_attention",
    "decode_attention",
    "moe",
    "memory",
    "collective",
)

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class ModelStep:
    """One forward step of a model on one GPU of its tensor-parallel group, as op modules read
    it. Model sizes are this GPU's shard: `heads`, `kv_heads` (replicated once TP exceeds the
    model's), `intermediate` (per expert in a MoE) and `vocab` (the LM head's columns)."""

    # The model, one GPU's shard of it.
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: int = 1
    top_k: int = 1
    window: int = 0  # the sliding window of the windowed layers, in tokens (0: none)
    sliding_layers: int = 0  # layers attending within `window`
    sinks: bool = False  # a learned sink logit per head (gpt-oss)
    # Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): the latent each token caches
    # (kv_lora_rank) and its rotary key's width; 0 for attention with per-head keys and values.
    latent: int = 0
    rope_dim: int = 0
    # MLA's query down-projection (q_lora_rank; 0: queries projected from the hidden state).
    # MLA's per-head no-rope key and value widths are `head_dim` (DeepSeek-V3, Kimi-K2: 128).
    q_lora: int = 0
    # A MoE's first `dense_layers` layers run a dense MLP of `dense_intermediate` (this GPU's
    # shard); its MoE layers also run shared experts of `shared` total width (this GPU's shard).
    dense_layers: int = 0
    dense_intermediate: int = 0
    shared: int = 0
    # How it is served.
    tp: int = 1
    # Attention data parallelism: `dp` groups of `tp` GPUs, each with its own `batch`; expert
    # parallelism: a MoE's experts (plus `redundant` replicas) spread over `ep` GPUs (1: every
    # GPU holds every expert's TP shard), the router's skew a Zipf exponent in hundredths.
    dp: int = 1
    ep: int = 1
    redundant: int = 0
    skew: int = 0
    weights: str = "bf16"  # the GEMMs' and experts' weights
    act: str = "bf16"  # activations, attention, router, LM head
    fp8_kv: bool = False  # the KV cache in fp8 (else in `act`)
    page: int = 16  # KV-cache page, tokens
    # The step.
    phase: str = "decode"  # "prefill" or "decode"
    batch: int = 1  # sequences in the step
    seq: int = 1  # new tokens per sequence (a decode step: 1)
    context: int = 1  # tokens each sequence attends to, its new ones included

    @property
    def tokens(self) -> int:
        """Tokens the step computes: every sequence's new ones."""
        return self.batch * self.seq

    @property
    def moe(self) -> bool:
        return self.experts > 1

    @property
    def moe_layers(self) -> int:
        """Layers with a MoE (a MoE model's first dense layers have none)."""
        return self.layers - self.dense_layers if self.moe else 0

    def dense_mlps(self) -> list[tuple[int, int]]:
        """(width, layers) of the gated MLPs run as plain GEMMs: every layer's of a dense model;
        a MoE's first dense layers' and its shared experts'."""
        if not self.moe:
            return [(self.intermediate, self.layers)]
        groups = [(self.dense_intermediate, self.dense_layers), (self.shared, self.moe_layers)]
        return [g for g in groups if g[0] and g[1]]

    @property
    def group_tokens(self) -> int:
        """Tokens a MoE layer routes in the step: every attention-DP group's."""
        return self.tokens * self.dp

    def attention_groups(self) -> list[tuple[int, int]]:
        """(window, layers) of the layers' attention: full layers (window 0), then the windowed
        ones; a window that covers the whole context is no window."""
        window = self.window if self.window < self.context else 0
        groups = [(0, self.layers - self.sliding_layers), (window, self.sliding_layers)]
        return [g for g in groups if g[1]]


@dataclass(frozen=True)
class OpUse:
    """A registry op at one shape and dtype, as one forward step uses it `count` times (over
    all layers: a layer's op used once a layer counts `layers`)."""

    role: str  # a ROLES entry: what it is in the model
    op: str
    shape: Shape
    dtype: str
    count: int


def in_layer_order(uses: list[OpUse]) -> list[OpUse]:
    """Uses in the order a layer runs their roles (stable within a role), roles of an op's own
    after the known layer roles, the LM head last."""
    last = ROLES.index("lm_head")
    return sorted(uses, key=lambda u: ROLES.index(u.role) if u.role in ROLES else last - 0.5)
