"""A decoder layer actually run, to check the estimate's op sum against the real thing.

The layer is a Llama-style block with random weights at the model's per-GPU shapes: add +
RMSNorm, fused QKV GEMM, rotary embedding, KV-cache write, prefill or decode attention, O GEMM,
add + RMSNorm, fused gate/up GEMM, SiLU·mul, down GEMM (MoE: router GEMM, top-k softmax weights,
tokens split evenly over the experts a step activates, expert GEMMs, weighted sum). Every
registry op (GEMMs, attention, add + RMSNorm) goes through the same implementation
(`Impl.prepare`) whose measured time the estimate used, on inputs made by the op's own
`inputs` (weights, KV cache), with the layer's activations copied in. With TP > 1 it runs one
GPU's shard without the all-reduces, which the estimate models separately.

`measure_layer` times the layer and divides by the estimate's time for one layer (every part but
the LM head and the all-reduces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench import device as dev
from bench.models import OpUse, Serving, moe_routing
from bench.ops import get_op
from bench.ops.base import torch_dtype
from bench.schema import DeviceInfo
from bench.throughput import StepModel, Validation
from bench.timing import TimerConfig, time_on


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
        setup: Serving,
        uses: list[OpUse],
        impls: dict[str, str],
        device: torch.device,
        seed: int = 0,
    ) -> None:
        """`uses`: the step's ops (Serving.prefill_step/decode_step; the LM head is ignored);
        `impls`: implementation name per role, as the estimate's times came from."""
        self.config, self.device = setup.model, device
        self.act = torch_dtype(setup.act)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.calls: dict[str, _Call] = {}
        for use in uses:
            op = get_op(use.op)
            if use.role == "lm_head" or op.part == "communication":
                continue
            inputs = op.inputs(use.shape, use.dtype, device, gen)
            if use.op == "matmul":
                _scale_weight(inputs, use.shape["K"])
            if use.op == "rmsnorm":
                inputs["weight"].fill_(1.0)
            self.calls[use.role] = _Call(inputs, op.impl(impls[use.role]).prepare(inputs))
        self.attention = next(u for u in uses if u.role == "attention")
        self.heads, self.kv_heads = self.attention.shape["H"], self.attention.shape["Hkv"]
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

    def _gemm(self, role: str, a: torch.Tensor | None = None) -> torch.Tensor:
        """Run a GEMM on `a`, or on what is already in its input buffer when `a` is None."""
        call = self.calls[role]
        if a is not None:
            call.inputs["a"].copy_(a)
        out = call.run()
        return out if out.dtype == self.act else out.to(self.act)

    def _add_norm(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(RMSNorm(x + residual), x + residual) through the add + RMSNorm op."""
        call = self.calls["add_rmsnorm"]
        call.inputs["x"].copy_(x)
        call.inputs["residual"].copy_(residual)
        return call.run()

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: the previous layer's output and residual: its residual stream, (tokens, hidden)
        in the activation dtype; returns this layer's (output, residual), as vLLM's layers do."""
        d = self.config.head_dim
        h, residual = self._add_norm(x, residual)
        qkv = self._gemm("qkv", h)
        q_and_k = qkv[:, : (self.heads + self.kv_heads) * d].view(qkv.shape[0], -1, d)
        q_and_k = _rotary(q_and_k, self.cos, self.sin)
        q, k = q_and_k[:, : self.heads], q_and_k[:, self.heads :]
        v = qkv[:, (self.heads + self.kv_heads) * d :].view(-1, self.kv_heads, d)
        h, residual = self._add_norm(self._gemm("o", self._attend(q, k, v)), residual)
        return (self._moe(h) if self.config.moe else self._mlp(h, "gate_up", "down")), residual

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over (tokens, heads, head_dim) q, k, v; returns (tokens, heads·head_dim)."""
        call = self.calls["attention"]
        if self.attention.op == "decode":
            _write_last_token(call.inputs, k, v)
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


def _write_last_token(inputs: dict, k: torch.Tensor, v: torch.Tensor) -> None:
    """The KV-cache write: each sequence's new (kv_heads, head_dim) key and value go to its last
    position, in every copy of the cache the decode op's inputs hold (the paged or contiguous
    cache the Triton kernel reads, and the unpaged copy SDPA and eager read)."""
    last = inputs["k_sdpa"].shape[2] - 1
    inputs["k_sdpa"][:, :, last] = k
    inputs["v_sdpa"][:, :, last] = v
    table = inputs.get("block_table")
    if table is None:  # contiguous (batch, L, kv_heads, head_dim)
        inputs["k_cache"][:, last] = k
        inputs["v_cache"][:, last] = v
        return
    page = inputs["k_cache"].shape[1]
    blocks = table[:, last // page].long()
    inputs["k_cache"][blocks, last % page] = k
    inputs["v_cache"][blocks, last % page] = v


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


def run_layer(
    setup: Serving,
    uses: list[OpUse],
    impls: dict[str, str],
    device: DeviceInfo,
    timer: TimerConfig,
) -> float:
    """Median seconds of one forward pass of the layer on `device`."""
    tdev = dev.torch_device(device)
    layer = DecoderLayer(setup, uses, impls, tdev)
    tokens = next(u for u in uses if u.role == "qkv").shape["M"]
    shape = layer.attention.shape
    if layer.attention.op == "decode":
        layer.set_positions(torch.full((tokens,), shape["L"] - 1, device=tdev))
    else:
        layer.set_positions(torch.arange(shape["Sq"], device=tdev).repeat(shape["B"]))
    gen = torch.Generator(device=tdev).manual_seed(1)
    x, residual = (
        torch.randn(tokens, setup.model.hidden, generator=gen, device=tdev).to(layer.act)
        for _ in range(2)
    )
    with torch.no_grad():
        timing = time_on(device, lambda: layer.forward(x, residual), timer)
    return timing.median_ms / 1e3


def measure_layer(
    step_model: StepModel,
    phase: str,
    batch: int,
    seq: int,
    device: DeviceInfo,
    timer: TimerConfig | None = None,
) -> Validation:
    """Time the layer of `step_model`'s served model at one step on `device` against the estimate
    for one layer of that step."""
    setup = step_model.setup
    if phase == "prefill":
        step, uses = step_model.prefill(batch, seq), setup.prefill_step(batch, seq)
    else:
        step, uses = step_model.decode(batch, seq), setup.decode_step(batch, seq)
    per_layer = step.seconds - step.parts.get("lm_head", 0.0) - step.parts.get("communication", 0.0)
    impls = {
        u.role: step_model.op_time(u).impl or get_op(u.op).baseline
        for u in uses
        if u.role != "lm_head"
    }
    measured = run_layer(setup, uses, impls, device, timer or TimerConfig())
    return Validation(phase, batch, seq, measured, per_layer / setup.model.layers)
