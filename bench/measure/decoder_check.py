"""The decoder-layer check: one GPU's shard of a real decoder layer, run from the registry's
implementations, to hold the estimate's op sum against the real thing (`estimate --validate`).

The layer is a Llama-style block with random weights at the model's per-GPU shapes. Its dataflow
is written by role, never by op: each use of a step (`Op.step_uses`) brings its op's inputs
(weights, KV cache), the implementation whose measured time the estimate used, and its op's
`layer_call`, a function of the layer's activations in the role's form:

    norm(x, residual) -> (h, residual)        the residual add fused with RMSNorm
    qkv, o, gate_up, down, router(a) -> out   GEMMs, out in the activations' dtype
    rotary(q, k) -> (q, k)                    q, k: (tokens, heads, head_dim)
    kv_write(k, v)                            into the op's own cache
    attention(q, k, v) -> (tokens, heads·head_dim)
    act(gate_up) -> h                         the MLP's activation
    experts(h, router logits) -> out          a MoE layer's expert MLP

An op with a role of its own (none of these) runs after them, as many times a layer as its count
says, on its own inputs: its call takes no activations. With TP > 1 the layer is one GPU's shard
without the collectives, which the estimate models apart; the LM head is not part of a layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.measure import device as dev
from bench.measure.ops import get_op
from bench.measure.ops.base import torch_dtype
from bench.measure.ops.step import ModelStep, OpUse
from bench.measure.timing import TimerConfig, time_on
from bench.record.schema import DeviceInfo

# Roles a decoder layer does not run: the LM head ends the step, the collectives join the
# shards.
OUTSIDE_A_LAYER = ("lm_head", "all_reduce", "all_gather", "all_to_all")
# The roles `DecoderLayer.forward` passes activations through.
DATAFLOW = {
    "norm", "qkv", "rotary", "kv_write", "attention", "o", "gate_up", "act", "down", "router",
    "experts",
}  # fmt: skip


class DecoderLayer:
    """One GPU's shard of a decoder layer, each role run by its op's chosen implementation."""

    def __init__(
        self,
        step: ModelStep,
        uses: list[OpUse],
        impls: dict[str, str],
        device: torch.device,
        seed: int = 0,
    ) -> None:
        """`uses`: one layer's ops (one use per role: a model with windowed layers has a layer
        of each attention kind); `impls`: the implementation name per role."""
        self.step = step
        gen = torch.Generator(device=device).manual_seed(seed)
        self.calls: dict[str, Callable] = {}
        self.extra: dict[str, int] = {}  # roles of an op's own, and their runs a layer
        for use in uses:
            if use.role in OUTSIDE_A_LAYER:
                continue
            op = get_op(use.op)
            inputs = op.inputs(use.shape, use.dtype, device, gen)
            prepare = op.impl(impls[use.role]).prepare
            self.calls[use.role] = op.layer_call(inputs, prepare, step)
            if use.role not in DATAFLOW:  # its uses a layer, over all layers' count
                self.extra[use.role] = max(1, round(use.count / step.layers))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: the previous layer's output and residual: its residual stream, (tokens, hidden)
        in the activation dtype; returns this layer's (output, residual), as vLLM's layers do."""
        f, s = self.calls, self.step
        h, residual = f["norm"](x, residual)
        qkv = f["qkv"](h).view(h.shape[0], -1, s.head_dim)
        q, k = f["rotary"](qkv[:, : s.heads], qkv[:, s.heads : s.heads + s.kv_heads])
        v = qkv[:, s.heads + s.kv_heads :]
        f["kv_write"](k, v)
        h, residual = f["norm"](f["o"](f["attention"](q, k, v)), residual)
        out = (
            f["experts"](h, f["router"](h))
            if "experts" in f
            else f["down"](f["act"](f["gate_up"](h)))
        )
        for role, runs in self.extra.items():
            for _ in range(runs):
                f[role]()
        return out, residual


def time_layer(
    step: ModelStep,
    uses: list[OpUse],
    impls: dict[str, str],
    device: DeviceInfo,
    timer: TimerConfig | None = None,
) -> float:
    """Median seconds of one forward pass of the layer on `device`."""
    tdev = dev.torch_device(device)
    layer = DecoderLayer(step, uses, impls, tdev)
    gen = torch.Generator(device=tdev).manual_seed(1)
    act = torch_dtype(step.act)
    x, residual = (
        torch.randn(step.tokens, step.hidden, generator=gen, device=tdev).to(act) for _ in range(2)
    )
    with torch.no_grad():
        timing = time_on(device, lambda: layer.forward(x, residual), timer or TimerConfig())
    return timing.median_ms / 1e3
