"""A decoder layer actually run, to check the estimate's op sum against the real thing.

The layer is a Llama-style block with random weights at the model's per-GPU shapes, every
kernel a registry op: add + RMSNorm, fused QKV GEMM, rotary on q and k, KV-cache write, prefill
or decode attention (the layer's window and sinks), O GEMM, add + RMSNorm, then a dense MLP
(gate/up GEMM, SiLU·mul, down GEMM) or a MoE (router GEMM, softmax and top-k in torch, the fused
expert MLP on the router's choices). Each op goes through the same implementation
(`Impl.prepare`) whose measured time the estimate used, on inputs made by the op's own `inputs`
(weights, KV cache), with the layer's activations copied in. With TP > 1 it runs one GPU's shard
without the all-reduces, which the estimate models separately.

`measure_layer` times one layer of each attention kind the model has (full, sliding-window),
weights them by their layer counts, and divides by the estimate's time for one layer (every part
but the LM head and the all-reduces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench import device as dev
from bench.models import OpUse, Serving
from bench.ops import get_op
from bench.ops.base import torch_dtype
from bench.schema import DeviceInfo
from bench.throughput import StepModel, Validation
from bench.timing import TimerConfig, time_on

ATTENTION_ROLES = ("attention", "sliding_attention")


@dataclass
class _Call:
    """One registry op prepared once, as the harness times it: its input buffers (weights, KV
    cache, and the activation buffers the layer copies into) and the closure to run."""

    inputs: dict
    run: Callable[[], torch.Tensor]

    def __call__(self, **activations: torch.Tensor) -> torch.Tensor:
        """Copy the activations into their input buffers and run the op."""
        for name, value in activations.items():
            self.inputs[name].copy_(value)
        return self.run()


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
        """`uses`: the ops of one layer (Serving.prefill_step/decode_step, one attention use;
        the LM head and collectives are ignored); `impls`: implementation name per role, as the
        estimate's times came from."""
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
        self.attention = next(u for u in uses if u.role in ATTENTION_ROLES)
        self.heads, self.kv_heads = self.attention.shape["H"], self.attention.shape["Hkv"]

    def set_positions(self, positions: torch.Tensor) -> None:
        """The tokens' positions, which the rotary op reads (within its cos/sin table)."""
        buffer = self.calls["rotary"].inputs["positions"]
        buffer.copy_(positions.clamp(max=self.calls["rotary"].inputs["cos_sin"].shape[0] - 1))

    def _gemm(self, role: str, a: torch.Tensor) -> torch.Tensor:
        out = self.calls[role](a=a)
        return out if out.dtype == self.act else out.to(self.act)  # fp8 GEMMs write bf16

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: the previous layer's output and residual: its residual stream, (tokens, hidden)
        in the activation dtype; returns this layer's (output, residual), as vLLM's layers do."""
        d, heads, kv_heads = self.config.head_dim, self.heads, self.kv_heads
        h, residual = self.calls["add_rmsnorm"](x=x, residual=residual)
        qkv = self._gemm("qkv", h).view(h.shape[0], -1, d)
        q, k = self.calls["rotary"](q=qkv[:, :heads], k=qkv[:, heads : heads + kv_heads])
        v = qkv[:, heads + kv_heads :]
        self.calls["kv_write"](k=k, v=v)
        h, residual = self.calls["add_rmsnorm"](
            x=self._gemm("o", self._attend(q, k, v)), residual=residual
        )
        return (self._moe(h) if self.config.moe else self._mlp(h)), residual

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over (tokens, heads, head_dim) q, k, v; returns (tokens, heads·head_dim).
        Decode reads its cache (the new token written by kv_write into the op's own pool)."""
        call = self.calls[self.attention.role]
        if self.attention.op == "decode":
            return call(q=q).reshape(q.shape[0], -1)
        b, s = self.attention.shape["B"], self.attention.shape["Sq"]
        q, k, v = (t.view(b, s, t.shape[1], -1).transpose(1, 2) for t in (q, k, v))
        return call(q=q, k=k, v=v).transpose(1, 2).reshape(b * s, -1)

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        gate_up = self._gemm("gate_up", h)
        return self._gemm("down", self.calls["silu_mul"](gate_up=gate_up))

    def _moe(self, h: torch.Tensor) -> torch.Tensor:
        """The router's top-k (renormalised, as Mixtral and Qwen3-MoE do) into the fused MoE."""
        logits = self._gemm("router", h)
        weights, ids = torch.topk(torch.softmax(logits.float(), dim=-1), self.config.top_k)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return self.calls["experts"](x=h, topk_weights=weights, topk_ids=ids)


def _scale_weight(inputs: dict, k: int) -> None:
    """Scale a GEMM's random weight by 1/√K so activations keep unit size through the layer
    (random N(0,1) weights would overflow fp16 after a few GEMMs)."""
    if "scale_b" in inputs:
        inputs["scale_b"] = inputs["scale_b"] * k**-0.5
    else:
        inputs["b"].mul_(k**-0.5)


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
    # One layer of each attention kind, weighted by how many layers have it.
    measured = 0.0
    for attention in (u for u in uses if u.role in ATTENTION_ROLES):
        layer = [u for u in uses if u.role not in ATTENTION_ROLES or u is attention]
        seconds = run_layer(setup, layer, impls, device, timer or TimerConfig())
        measured += seconds * attention.count / setup.model.layers
    return Validation(phase, batch, seq, measured, per_layer / setup.model.layers)
