"""A decoder layer actually run, to check the estimate's op sum against the real thing.

The layer is a Llama-style block with random weights at the model's per-GPU shapes: RMSNorm,
fused QKV GEMM, rotary embedding, prefill or decode attention, O GEMM, residual, RMSNorm, fused
gate/up GEMM, SiLU·mul, down GEMM, residual (MoE: router GEMM, top-k softmax weights, tokens split
evenly over the experts a step activates, expert GEMMs, weighted sum). Every GEMM and attention
call goes through the same registry implementation (`Impl.prepare`) whose measured time the
estimate used, on inputs made by the op's own `make_inputs` (weights, KV cache), with the layer's
activations substituted. With TP > 1 it runs one GPU's shard without the all-reduces, which the
estimate models separately.

`validate` times the layer and divides by the estimate's time for one layer (GEMMs, attention
and the memory-bound rest; no LM head, no all-reduce).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.table import Table

from bench import device as dev
from bench.device import DeviceInfo
from bench.models import ModelConfig, OpUse, act_dtype, decode_step, moe_routing, prefill_step
from bench.ops import DTYPES, get_op
from bench.report import fmt_ms, new_table
from bench.timing import TimerConfig, time_cpu, time_cuda

# The band the CPU test holds measured / estimated layer time within, at the throughput end (the
# largest prefill and decode steps, which capacity and cost rest on). A real layer runs slower
# than the op sum: the estimate models the memory-bound work as the 5 fused kernels of a serving
# engine, while an eager PyTorch layer dispatches ~30 small ops; and the layer is timed now, the
# ops when the file was made. At the latency end (batch 1) on a CPU that dispatch dominates and
# the ratio is reported, not held.
VALIDATION_BAND = (0.5, 3.0)


@dataclass(frozen=True)
class Validation:
    """Measured against estimated time of one decoder layer at one step."""

    phase: str
    batch: int
    context: int
    measured_s: float
    estimated_s: float

    @property
    def ratio(self) -> float:
        return self.measured_s / self.estimated_s


@dataclass
class _Call:
    """One registry op prepared once, as the harness times it: its input buffers (weights, KV
    cache, and the activation buffers the layer copies into) and the closure to run."""

    inputs: dict
    run: Callable[[], torch.Tensor]


class DecoderLayer:
    """One GPU's shard of a decoder layer, run from the registry's implementations."""

    def __init__(
        self,
        config: ModelConfig,
        uses: list[OpUse],
        impls: dict[str, str],
        precision: str,
        device: torch.device,
        seed: int = 0,
    ) -> None:
        """`uses`: the step's ops (bench.models.prefill_step/decode_step; the LM head is
        ignored); `impls`: implementation name per part, as the estimate's times came from."""
        self.config, self.device = config, device
        self.act = DTYPES[act_dtype(precision)]
        gen = torch.Generator(device=device).manual_seed(seed)
        self.calls: dict[str, _Call] = {}
        for use in uses:
            if use.part == "lm_head":
                continue
            op = get_op(use.op)
            inputs = op.make_inputs(use.shape, use.dtype, device, gen)
            if use.op == "matmul":
                _scale_weight(inputs, use.shape["K"])
            self.calls[use.part] = _Call(inputs, op.impl(impls[use.part]).prepare(inputs))
        self.attention = next(u for u in uses if u.part == "attention")
        self.heads, self.kv_heads = self.attention.shape["H"], self.attention.shape["Hkv"]
        self.norm1 = torch.ones(config.hidden, dtype=self.act, device=device)
        self.norm2 = torch.ones(config.hidden, dtype=self.act, device=device)
        self.cos = self.sin = torch.empty(0)

    def set_positions(self, positions: torch.Tensor) -> None:
        """Rotary tables for the tokens' positions, computed once as engines cache them, in the
        rotate-half form: out = x·cos + swap_halves(x)·sin with the sign folded into sin."""
        half = self.config.head_dim // 2
        freqs = 10000.0 ** (-torch.arange(half, device=self.device, dtype=torch.float32) / half)
        angles = positions.float()[:, None, None] * freqs[None, None, :]
        cos, sin = angles.cos(), angles.sin()
        self.cos = torch.cat([cos, cos], dim=-1).to(self.act)
        self.sin = torch.cat([-sin, sin], dim=-1).to(self.act)

    def _gemm(self, part: str, a: torch.Tensor | None = None) -> torch.Tensor:
        """Run a GEMM on `a`, or on what is already in its input buffer when `a` is None."""
        call = self.calls[part]
        if a is not None:
            call.inputs["a"].copy_(a)
        out = call.run()
        return out if out.dtype == self.act else out.to(self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (tokens, hidden) in the activation dtype; returns the layer's output."""
        d, hidden = self.config.head_dim, (self.config.hidden,)
        qkv = self._gemm("qkv", F.rms_norm(x, hidden, self.norm1))
        q_and_k = qkv[:, : (self.heads + self.kv_heads) * d].view(qkv.shape[0], -1, d)
        q_and_k = _rotary(q_and_k, self.cos, self.sin)
        q, k = q_and_k[:, : self.heads], q_and_k[:, self.heads :]
        v = qkv[:, (self.heads + self.kv_heads) * d :].view(-1, self.kv_heads, d)
        x = x + self._gemm("o", self._attend(q, k, v))
        h = F.rms_norm(x, hidden, self.norm2)
        return x + (self._moe(h) if self.config.moe else self._mlp(h, "gate_up", "down"))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over (tokens, heads, head_dim) q, k, v; returns (tokens, heads·head_dim)."""
        call = self.calls["attention"]
        if self.attention.op == "decode":
            # The new token's K and V go into the cache (a row each), then one query per
            # sequence attends over the cache the op's inputs hold.
            _cache_rows(call.inputs["k_cache"], k)
            _cache_rows(call.inputs["v_cache"], v)
            call.inputs["q"].copy_(q)
            return call.run().reshape(q.shape[0], -1)
        b, s = self.attention.shape["B"], self.attention.shape["Sq"]
        for name, t in (("q", q), ("k", k), ("v", v)):
            call.inputs[name].copy_(t.view(b, s, t.shape[1], -1).transpose(1, 2))
        return call.run().transpose(1, 2).reshape(b * s, -1)

    def _mlp(self, h: torch.Tensor, gate_up: str, down: str) -> torch.Tensor:
        gate, up = self._gemm(gate_up, h).chunk(2, dim=-1)
        buffer = self.calls[down].inputs["a"]
        if buffer.dtype != self.act:  # fp8: the product is quantized on the way in
            return self._gemm(down, F.silu(gate) * up)
        torch.mul(F.silu(gate), up, out=buffer)  # straight into the down GEMM's input
        return self._gemm(down)

    def _moe(self, h: torch.Tensor) -> torch.Tensor:
        """Top-k routing with the tokens spread evenly over the experts a step activates, as
        the estimate assumes (bench.models.moe_routing); the last expert may get fewer."""
        tokens, top_k = h.shape[0], self.config.top_k
        logits = self._gemm("router", h)
        weights, _ = torch.topk(torch.softmax(logits.float(), dim=-1), top_k, dim=-1)
        active, per_expert = moe_routing(self.config, tokens)
        outs = []
        for chunk in h.repeat_interleave(top_k, dim=0).split(per_expert)[:active]:
            padded = torch.zeros(per_expert, h.shape[1], dtype=h.dtype, device=h.device)
            padded[: chunk.shape[0]] = chunk
            outs.append(self._mlp(padded, "expert_gate_up", "expert_down")[: chunk.shape[0]])
        routed = torch.cat(outs).view(tokens, top_k, -1)
        return (routed * weights.to(self.act).unsqueeze(-1)).sum(dim=1)


def _cache_rows(cache: torch.Tensor, new: torch.Tensor) -> None:
    """Write one new (kv_heads, head_dim) row per sequence into the first rows of a cache."""
    cache.view(-1, *cache.shape[2:])[: new.shape[0]] = new


def _scale_weight(inputs: dict, k: int) -> None:
    """Scale a GEMM's random weight by 1/√K so activations keep unit size through the layer
    (random N(0,1) weights would overflow fp16 after a few GEMMs)."""
    if "scale_b" in inputs:
        inputs["scale_b"] = inputs["scale_b"] * k**-0.5
    else:
        inputs["b"].mul_(k**-0.5)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on (tokens, heads, head_dim) with set_positions' tables."""
    a, b = x.chunk(2, dim=-1)
    return torch.addcmul(x * cos, torch.cat([b, a], dim=-1), sin)


def layer_uses(config: ModelConfig, tp: int, precision: str, phase: str, batch: int, seq: int):
    """The ops of one step, as bench.models derives them for the estimate."""
    if phase == "prefill":
        return prefill_step(config, tp, precision, batch, seq)
    return decode_step(config, tp, precision, batch, seq)


def run_layer(
    config: ModelConfig,
    uses: list[OpUse],
    impls: dict[str, str],
    precision: str,
    device: DeviceInfo,
    timer: TimerConfig,
) -> float:
    """Median seconds of one forward pass of the layer on `device`."""
    tdev = dev.torch_device(device)
    layer = DecoderLayer(config, uses, impls, precision, tdev)
    tokens = next(u for u in uses if u.part == "qkv").shape["M"]
    shape = layer.attention.shape
    if layer.attention.op == "decode":
        layer.set_positions(torch.full((tokens,), shape["L"] - 1, device=tdev))
    else:
        layer.set_positions(torch.arange(shape["Sq"], device=tdev).repeat(shape["B"]))
    gen = torch.Generator(device=tdev).manual_seed(1)
    x = torch.randn(tokens, config.hidden, generator=gen, device=tdev).to(layer.act)
    with torch.no_grad():
        if device.kind == "cuda":
            timing = time_cuda(lambda: layer.forward(x), timer, l2_bytes=device.l2_bytes or 0)
        else:
            timing = time_cpu(lambda: layer.forward(x), timer)
    return timing.median_ms / 1e3


def validate(
    estimator,
    phase: str,
    batch: int,
    seq: int,
    device: DeviceInfo,
    timer: TimerConfig | None = None,
) -> Validation:
    """Time the layer of `estimator`'s model at one step on `device` against the estimate for
    one layer of that step (`estimator` is a bench.estimate.Estimator)."""
    config, tp, precision = estimator.config, estimator.tp, estimator.precision
    step = estimator.prefill(batch, seq) if phase == "prefill" else estimator.decode(batch, seq)
    per_layer = sum(step.parts.get(p, 0.0) for p in ("gemm", "attention", "other"))
    uses = layer_uses(config, tp, precision, phase, batch, seq)
    impls = {u.part: estimator.op_time(u).impl for u in uses if u.part != "lm_head"}
    measured = run_layer(config, uses, impls, precision, device, timer or TimerConfig())
    return Validation(phase, batch, seq, measured, per_layer / config.layers)


def validation_table(checks: list[Validation]) -> Table:
    """Measured against estimated layer time, with the band the tests hold."""
    table = new_table(
        "validation: one decoder layer run here against the op sum",
        ("step", "batch", "context", "measured", "estimated", "measured / estimated"),
        left={"step"},
    )
    low, high = VALIDATION_BAND
    for c in checks:
        colour = "green" if low <= c.ratio <= high else "red"
        table.add_row(
            c.phase,
            str(c.batch),
            str(c.context),
            fmt_ms(c.measured_s * 1e3),
            fmt_ms(c.estimated_s * 1e3),
            f"[{colour}]{c.ratio:.2f}[/{colour}]",
        )
    table.caption = (
        f"one layer, without the LM head and all-reduces; the CPU test holds the largest "
        f"steps within [{low}, {high}]"
    )
    return table
