"""moe: a mixture-of-experts layer's expert MLP, T tokens each sent to k of E experts of hidden
H and intermediate I; Triton's fused grouped GEMM (SiLU·mul fused, routing weights applied)
against torch._grouped_mm and Hugging Face's loop over the experts.

The router's output is made untimed (uniform, or Zipf-skewed toward a few hot experts, as real
routers skew); what is timed is the expert MLP: sorting the (token, expert) pairs, both grouped
GEMMs, SiLU·mul and the weighted sum. fp8 is weight-only (W8A16): fp8 weights with a scale per
expert, bf16 activations, as serving engines run fp8 MoE checkpoints.

FLOPs 6·T·k·H·I (gate, up and down per pair); minimum bytes: the weights of the experts that
get a token (the expected number under the router) read once, x read and the output written
once, and the routing (a float32 weight and an int64 id per pair).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench import ceil_div
from bench.measure.ops.base import (
    Gemm,
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    Unsupported,
    quantize_fp8,
    torch_dtype,
    triton_impl,
)
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch


def moe_shape(t: int, h: int, i: int, e: int, k: int, skew: int = 0) -> Shape:
    return {"T": t, "H": h, "I": i, "E": e, "k": k, "skew": skew}


# (H, I, E, k) of MoE layers whose experts fit one GPU: Mixtral-8x7B, Qwen3-30B-A3B, gpt-oss-120b.
MOE_LAYERS = ((4096, 14336, 8, 2), (2048, 768, 128, 8), (2880, 2880, 128, 4))
MOE_TOKENS = (1, 16, 64, 256, 1024, 4096, 8192)
# Zipf's law (in the skew key's hundredths): a few hot experts take most tokens.
ZIPF = 100


class MoE(Op):
    name = "moe"
    description = (
        "MoE expert MLP, (T tokens × H → top-k of E experts of I): routing, gate/up, SiLU·mul, "
        "down, weighted sum; fp8: fp8 weights, bf16 activations"
    )
    keys = (
        Key("T", "tokens"),
        Key("H", "hidden size"),
        Key("I", "each expert's intermediate size (its share under tensor parallelism)"),
        Key("E", "experts"),
        Key("k", "experts per token (top-k, at most E)"),
        Key(
            "skew",
            "router skew, a Zipf exponent in hundredths: 0 uniform routing, 100 Zipf's law "
            "(expert e drawn ∝ 1/(e+1))",
            least=0,
            default=0,
        ),
    )
    dtypes = ("fp32", "fp16", "bf16", "fp8")
    baseline = "grouped_mm"
    part = "moe"
    efficiency = "moe"
    axes = (("T",),)
    smoke = (
        moe_shape(37, 64, 48, 4, 2),  # sizes off the kernel's blocks
        moe_shape(1, 128, 64, 8, 2),  # decode: one token
        moe_shape(32, 64, 32, 16, 4, skew=ZIPF),
    )
    standard = (
        *(moe_shape(t, h, i, e, k) for h, i, e, k in MOE_LAYERS for t in MOE_TOKENS),
        *(moe_shape(t, h, i, e, k, skew=ZIPF) for h, i, e, k in MOE_LAYERS for t in (64, 1024)),
    )

    def rule(self, shape: Shape) -> str | None:
        if shape["k"] > shape["E"]:
            return f"k ({shape['k']}) must be at most E ({shape['E']})"
        return None

    def flops(self, shape: Shape) -> float:
        return 6.0 * shape["T"] * shape["k"] * shape["H"] * shape["I"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        t, h = shape["T"], shape["H"]
        weights = active_experts(shape) * 3 * h * shape["I"] * DTYPE_BYTES[dtype]
        activations = 2 * t * h * DTYPE_BYTES[_activation(dtype)]
        return weights + activations + 12 * t * shape["k"]

    def footprint(self, shape: Shape, dtype: str) -> float:
        t, h, i, k = shape["T"], shape["H"], shape["I"], shape["k"]
        weights = shape["E"] * 3 * h * i * DTYPE_BYTES[dtype]
        # Per pair: the gate/up rows of the baselines and the kernel's h and output rows; the
        # float64 reference's copies of x and the output and one expert's weights.
        pairs = t * k * (2 * i + h) * DTYPE_BYTES[_activation(dtype)] * 2
        return weights + pairs + 8 * (2 * t * h + 3 * h * i)

    def label(self, shape: Shape) -> str:
        skew = f" skew {shape['skew'] / 100:.2f}" if shape["skew"] else ""
        t, h, i, e, k = (shape[key] for key in ("T", "H", "I", "E", "k"))
        return f"{t}×{h}×{i} top-{k} of {e}{skew}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """A MoE layer's routed experts on one GPU. Without expert parallelism every token
        goes to its top-k of all experts (uniform routing). With it, this GPU holds
        (experts + redundant) / EP of them and gets the pairs of the busiest GPU: its mean
        share of every DP group's tokens × k, times the router's load imbalance
        (`busiest_load`); written as that many tokens to one expert each over its experts."""
        if not step.moe:
            return []
        s = step
        if s.ep == 1:
            shape = moe_shape(s.tokens, s.hidden, s.intermediate, s.experts, s.top_k)
        else:
            here = ceil_div(s.experts + s.redundant, s.ep)
            pairs = busiest_load(s) * s.group_tokens * s.top_k / s.ep
            shape = moe_shape(max(1, round(pairs)), s.hidden, s.intermediate, here, 1)
        return [self.use("experts", shape, s.weights, s.moe_layers)]

    def gemms(self, shape: Shape) -> list[Gemm]:
        """Each expert that gets tokens runs gate/up then down on its share of the pairs."""
        active = active_experts(shape)
        rows = ceil_div(shape["T"] * shape["k"], max(1, round(active)))
        h, i = shape["H"], shape["I"]
        return [Gemm(rows, 2 * i, h, active), Gemm(rows, h, i, active)]

    def weight_elements(self, shape: Shape) -> int:
        return shape["E"] * 3 * shape["H"] * shape["I"]

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        t, h, i, e, k = (shape[key] for key in ("T", "H", "I", "E", "k"))
        act = torch_dtype(_activation(dtype))

        def weight(rows: int, fan_in: int) -> torch.Tensor:
            # Scaled as initialised, so sums over thousands of products stay within fp16.
            w = torch.randn((e, rows, fan_in), generator=gen, device=device) * fan_in**-0.5
            return w if dtype == "fp8" else w.to(act)

        inputs = {"x": torch.randn((t, h), generator=gen, device=device).to(act)}
        inputs["w_gate_up"], inputs["w_down"] = weight(2 * i, h), weight(h, i)
        if dtype == "fp8":
            (inputs["w_gate_up"], up_scale), (inputs["w_down"], down_scale) = (
                quantize_fp8(inputs["w_gate_up"], per_first_dim=True),
                quantize_fp8(inputs["w_down"], per_first_dim=True),
            )
            inputs["w_scales"] = (up_scale, down_scale)
        router = torch.Generator(device=device).manual_seed(
            int(torch.randint(2**31, (1,), generator=gen, device=device))
        )
        weights, ids = route(t, e, k, skew=shape["skew"] / 100, generator=router)
        inputs["topk_weights"], inputs["topk_ids"] = weights, ids
        return inputs

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.reference import fused_moe_ref

        return fused_moe_ref(*_args(inputs), w_scales=inputs.get("w_scales"))

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """(h, router logits) -> the experts' weighted sum; the router's softmax and top-k
        renormalised, as Mixtral and Qwen3-MoE route."""
        import torch

        run = prepare(inputs)

        def call(h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            weights, ids = torch.topk(torch.softmax(logits.float(), dim=-1), step.top_k)
            inputs["x"].copy_(h)
            inputs["topk_weights"].copy_(weights / weights.sum(dim=-1, keepdim=True))
            inputs["topk_ids"].copy_(ids)
            return run()

        return call

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops, tuning=_tuning),
            Impl("grouped_mm", _grouped_mm, unsupported=_no_fp8_path),
            Impl("loop", _loop, unsupported=_no_fp8_path),
        )


def zipf_loads(experts: int, skew: float) -> list[float]:
    """Each expert's share of the pairs under the router's Zipf skew (0: uniform)."""
    weights = [(j + 1) ** -skew for j in range(experts)]
    total = sum(weights)
    return [w / total for w in weights]


def busiest_load(step: ModelStep) -> float:
    """The busiest EP rank's pairs over the mean rank's in a step (≥ 1): the expected loads of
    the router's Zipf skew placed on the ranks (`rank_imbalance`), plus the spread of the
    step's finite draw: a rank expecting m pairs gets at most about m + sqrt(2·m·ln ranks)
    (the largest of `ranks` Poisson counts)."""
    ranks = step.ep
    mean_pairs = step.group_tokens * step.top_k / ranks
    skewed = rank_imbalance(step.experts, ranks, step.redundant, step.skew) * mean_pairs
    return (skewed + math.sqrt(2 * skewed * math.log(ranks))) / mean_pairs


@functools.cache
def rank_imbalance(experts: int, ranks: int, redundant: int, skew: int) -> float:
    """The busiest rank's expected share of the pairs over the mean rank's, the experts'
    loads from the router's Zipf skew (in hundredths).

    Without redundant experts, expert ids are dealt to ranks in blocks as engines place them,
    the hot ones in a fixed shuffled order (a router's hot experts have no reason to sit
    together: assumption). With `redundant` replicas, DeepSeek's EPLB idea
    (github.com/deepseek-ai/EPLB): replicate the hottest experts, splitting their load, then
    deal replicas hottest first to the least-loaded rank with a free slot."""
    loads = zipf_loads(experts, skew / 100)
    slots = ceil_div(experts + redundant, ranks)
    rank_loads = [0.0] * ranks
    if not redundant:
        order = list(range(experts))
        random.Random(0).shuffle(order)
        for slot, e in enumerate(order):
            rank_loads[slot // slots] += loads[e]
        return max(rank_loads) * ranks
    copies = [1] * experts
    for _ in range(redundant):
        copies[max(range(experts), key=lambda e: loads[e] / copies[e])] += 1
    each = [loads[e] / copies[e] for e in range(experts)]
    replicas = sorted((each[e] for e in range(experts) for _ in range(copies[e])), reverse=True)
    held = [0] * ranks
    for load in replicas:
        r = min((r for r in range(ranks) if held[r] < slots), key=lambda r: rank_loads[r])
        rank_loads[r], held[r] = rank_loads[r] + load, held[r] + 1
    return max(rank_loads) * ranks


def active_experts(shape: Shape) -> float:
    """The expected number of experts that get at least one of the T tokens: each token takes
    expert e with probability about min(1, k·p_e), p_e ∝ 1/(e+1)^skew (exact for k = 1 and
    for uniform routing; the draw without replacement lifts cold experts a little more)."""
    t, k = shape["T"], shape["k"]
    return sum(1 - (1 - min(1.0, k * p)) ** t for p in zipf_loads(shape["E"], shape["skew"] / 100))


def _tuning(shape: Shape, dtype: str) -> int:
    from kernels.moe import tuning_configs

    sizes = (shape[key] for key in ("T", "H", "I", "E", "k"))
    a_bytes, w_bytes = int(DTYPE_BYTES[_activation(dtype)]), int(DTYPE_BYTES[dtype])
    return len(tuning_configs(*sizes, a_bytes, w_bytes))


def _activation(dtype: str) -> str:
    """The activations' dtype: a MoE with 8-bit or narrower weights keeps them in bf16."""
    return "bf16" if DTYPE_BYTES[dtype] < 2 else dtype


def _args(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    names = ("x", "w_gate_up", "w_down", "topk_weights", "topk_ids")
    return tuple(inputs[name] for name in names)


def _no_fp8_path(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return "no fp8-weight path in PyTorch's MoE" if dtype == "fp8" else None


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.moe import fused_moe

    args, scales = _args(inputs), inputs.get("w_scales")
    return lambda: fused_moe(*args, w_scales=scales)


def _grouped_mm(inputs: Inputs) -> Callable[[], torch.Tensor]:
    x = inputs["x"]
    if reason := grouped_mm_unsupported(x.device, x.dtype):
        raise Unsupported(reason)
    # torch._grouped_mm reads 16-byte aligned rows.
    if any(size * x.element_size() % 16 for size in (x.shape[1], inputs["w_down"].shape[2])):
        raise Unsupported("torch._grouped_mm needs H and I rows of a multiple of 16 bytes")
    args = _args(inputs)
    return lambda: moe_grouped_mm(*args)


def _loop(inputs: Inputs) -> Callable[[], torch.Tensor]:
    args = _args(inputs)
    return lambda: moe_loop(*args)


# -------------------------------------------------------------------------- baselines, routing


def moe_loop(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """Baseline: the MoE MLP as Hugging Face's MixtralSparseMoeBlock computes it, a Python loop
    over the experts that got tokens, each gathering its tokens (index_select), running two
    torch.matmul and adding its weighted rows back (index_add_, in x's dtype, as HF does).

    Same arguments as kernels.moe.fused_moe without fp8; any device, bfloat16 on a CPU too.
    Syncs with the device once per expert (torch.where), as the original does.
    """
    import torch

    tokens, hidden = x.shape
    inter = w_gate_up.shape[1] // 2
    out = torch.zeros((tokens, hidden), dtype=x.dtype, device=x.device)
    for expert in torch.unique(topk_ids).tolist():
        token, slot = torch.where(topk_ids == expert)
        rows = x.index_select(0, token)
        gate_up = torch.matmul(rows, w_gate_up[expert].t())
        h = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        y = torch.matmul(h, w_down[expert].t()) * topk_weights[token, slot, None].to(x.dtype)
        out.index_add_(0, token, y)
    return out


@functools.cache
def _grouped_mm_probe(device: str, dtype: torch.dtype) -> str | None:
    """Run a tiny torch._grouped_mm once per (device, dtype); its error's first line, or None."""
    import torch

    try:
        a = torch.ones((8, 16), dtype=dtype, device=device)
        b = torch.ones((2, 16, 16), dtype=dtype, device=device).transpose(1, 2)
        offs = torch.tensor([4, 8], dtype=torch.int32, device=device)
        out = torch._grouped_mm(a, b, offs=offs)
        if out.shape != (8, 16) or float(out[0, 0]) != 16.0:
            return "torch._grouped_mm returned a wrong result on a probe"
    except (RuntimeError, NotImplementedError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"torch._grouped_mm fails on {device} {dtype}: {first}"
    return None


def grouped_mm_unsupported(
    device: torch.device | str, dtype: torch.dtype | None = None
) -> str | None:
    """Why :func:`moe_grouped_mm` cannot run on ``device`` in ``dtype`` (default bfloat16), or
    None when it can.

    ``torch._grouped_mm`` appeared in torch 2.8 for bfloat16 on Hopper; since torch 2.9 it also
    runs on CUDA from compute capability 8.0 and on the CPU, every float dtype, through a
    per-group fallback. Only bfloat16 on Hopper/Blackwell runs the fused CUTLASS grouped GEMM:
    time it against the Triton kernel there. A tiny probe call settles the rest.
    """
    import torch

    from kernels.checks import FLOAT_DTYPES, dtype_names

    dtype = torch.bfloat16 if dtype is None else dtype
    if not hasattr(torch, "_grouped_mm"):
        return "torch has no _grouped_mm (it needs torch 2.8 or later)"
    device = torch.device(device)
    if dtype not in FLOAT_DTYPES:
        return f"dtype {dtype} unsupported; allowed: {dtype_names(FLOAT_DTYPES)}"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch._grouped_mm on CUDA needs a CUDA device; none is available"
        capability = torch.cuda.get_device_capability(device)
        if capability < (8, 0):
            have = ".".join(map(str, capability))
            return f"torch._grouped_mm needs compute capability >= 8.0; this device has {have}"
    elif device.type != "cpu":
        return f"torch._grouped_mm baseline runs on CUDA or CPU; got {device.type}"
    return _grouped_mm_probe(str(device), dtype)


def moe_grouped_mm(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
) -> torch.Tensor:
    """Baseline: the MoE MLP with ``torch._grouped_mm`` for both GEMMs (torch's own grouped
    GEMM, what recent Hugging Face and torchtitan MoE layers use): pairs sorted by expert,
    tokens gathered, gate_up grouped GEMM, SiLU·up, down grouped GEMM, weighted index_add_.

    Same arguments as :func:`moe_loop`, where :func:`grouped_mm_unsupported` gives no reason;
    torch._grouped_mm needs 16-byte aligned rows: H and I multiples of 8 (16-bit) or 4
    (float32) elements, weights with a unit last stride.
    """
    import torch

    tokens, hidden = x.shape
    experts, inter = w_gate_up.shape[0], w_gate_up.shape[1] // 2
    top_k = topk_ids.shape[1]
    flat = topk_ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = order // top_k
    counts = torch.zeros(experts, dtype=torch.int64, device=x.device)
    counts.scatter_add_(0, flat.to(torch.int64), torch.ones_like(order))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    rows = x.index_select(0, token)
    gate_up = torch._grouped_mm(rows, w_gate_up.transpose(1, 2), offs=offs)
    h = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    y = torch._grouped_mm(h, w_down.transpose(1, 2), offs=offs)
    y = y.float() * topk_weights.reshape(-1)[order, None].float()
    out = torch.zeros((tokens, hidden), dtype=torch.float32, device=x.device)
    return out.index_add_(0, token, y).to(x.dtype)


def route(
    num_tokens: int,
    num_experts: int,
    top_k: int,
    skew: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic router output for benchmarks: (topk_weights, topk_ids), each (T, top_k).

    Each token draws top_k distinct experts one after another without replacement, expert e
    with probability ∝ 1 / (e + 1)^skew among those not yet drawn: skew = 0 is uniform routing,
    skew = 1 Zipf's law (expert 0 the hottest), larger skews concentrate tokens on the first
    experts further. Distinctness caps the skew's effect: with top_k = E every token has every
    expert. The weights are a softmax of standard normal logits over the chosen experts (what
    Mixtral's router normalises), sorted in descending order, so they are positive and sum to 1.

    Args:
        num_tokens: T >= 0.
        num_experts: E >= 1.
        top_k: 1 <= top_k <= E.
        skew: Zipf exponent, finite and >= 0.
        generator: Seeds the draws; the tensors are made on its device (CPU when None).

    Returns:
        float32 weights and int64 ids, on the generator's device.
    """
    import torch

    for name, value, low in (("num_tokens", num_tokens, 0), ("num_experts", num_experts, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"route: {name} must be an int >= {low}, got {value!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
        raise ValueError(
            f"route: top_k {top_k!r} unsupported with {num_experts} experts; allowed: 1 to "
            f"{num_experts}"
        )
    if not isinstance(skew, (int, float)) or not 0 <= skew < float("inf"):
        raise ValueError(f"route: skew must be a finite number >= 0, got {skew!r}")
    device = torch.device("cpu") if generator is None else generator.device
    if num_tokens == 0:
        empty = torch.empty((0, top_k), device=device)
        return empty, empty.to(torch.int64)
    probs = (torch.arange(num_experts, dtype=torch.float64, device=device) + 1.0) ** -skew
    ids = torch.multinomial(
        probs.expand(num_tokens, num_experts), top_k, replacement=False, generator=generator
    )
    logits = torch.randn((num_tokens, top_k), generator=generator, device=device)
    weights, slot = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    return weights, ids.gather(1, slot)


OP = MoE()
