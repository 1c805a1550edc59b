"""matmul: C = A·B, the GEMMs of every linear layer; Triton against cuBLAS (torch.matmul).

FLOPs 2·M·N·K; minimum bytes: A and B read once, C written once (fp8 and fp4 GEMMs write bf16;
fp4 is estimated from spec peaks only: no implementation here runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.measure.ops.base import (
    Gemm,
    Impl,
    Inputs,
    Key,
    Op,
    Prepare,
    dtype_unsupported,
    randn,
    torch_dtype,
    triton_impl,
)
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape

if TYPE_CHECKING:
    import torch


def matmul_shape(m: int, n: int, k: int) -> Shape:
    return {"M": m, "N": n, "K": k}


# LLM-shaped GEMMs as N×K (weight) at token counts M: Llama-3-8B's MLP up/gate and down
# projections and its fused QKV projection.
LLM_NK = ((14336, 4096), (4096, 14336), (6144, 4096))
LLM_M = (1, 16, 64, 256, 1024, 4096, 8192)


class Matmul(Op):
    name = "matmul"
    description = "GEMM C = A·B (fp32 accumulation; fp32 inputs without tf32)"
    keys = (
        Key("M", "rows of A and C (tokens)"),
        Key("N", "columns of B and C"),
        Key("K", "the inner dimension"),
    )
    dtypes = ("fp32", "fp16", "bf16", "fp8")
    baseline = "torch"
    part = "gemm"
    efficiency = "gemm"
    axes = (("M",),)
    smoke = (
        matmul_shape(64, 64, 64),
        matmul_shape(128, 128, 128),
        matmul_shape(1, 256, 128),
        matmul_shape(100, 72, 136),
    )
    standard = (
        *(matmul_shape(s, s, s) for s in (256, 512, 1024, 2048, 4096, 8192)),
        *(matmul_shape(m, n, k) for n, k in LLM_NK for m in LLM_M),
    )

    def flops(self, shape: Shape) -> float:
        return 2.0 * shape["M"] * shape["N"] * shape["K"]

    def bytes(self, shape: Shape, dtype: str) -> float:
        """A and B read, C written: B in the weights' format; A in it too where tensor cores
        take that format (fp8, fp4), else in bf16 (the weight-only formats); C in the input
        dtype, or bf16 below 16 bits."""
        m, n, k = shape["M"], shape["N"], shape["K"]
        weights = DTYPE_BYTES[dtype]
        a = weights if dtype in ("fp32", "fp16", "bf16", "fp8", "fp4") else 2
        out = weights if weights >= 2 else 2
        return m * k * a + k * n * weights + m * n * out

    def footprint(self, shape: Shape, dtype: str) -> float:
        m, n, k = shape["M"], shape["N"], shape["K"]
        # Inputs and two outputs, plus the float64 reference with its upcast operands.
        return 2 * self.bytes(shape, dtype) + 8 * (m * n + m * k + k * n)

    def label(self, shape: Shape) -> str:
        return f"{shape['M']}×{shape['N']}×{shape['K']}"

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Every linear layer of a step, tensor-parallel as Megatron and vLLM split them: QKV
        and gate/up by output columns, O and down by input rows; a MoE layer's router (its
        experts are the moe op) and, where it has them, its shared experts; the LM head over
        this GPU's share of the vocabulary, for each sequence's last token only."""
        s, t = step, step.tokens
        uses = _latent_projections(self, s) if s.latent else _attention_projections(self, s)
        if s.moe:
            uses.append(
                self.use("router", matmul_shape(t, s.experts, s.hidden), s.act, s.moe_layers)
            )
        for width, layers in s.dense_mlps():
            uses.append(
                self.use("gate_up", matmul_shape(t, 2 * width, s.hidden), s.weights, layers)
            )
            uses.append(self.use("down", matmul_shape(t, s.hidden, width), s.weights, layers))
        uses.append(self.use("lm_head", matmul_shape(s.batch, s.vocab, s.hidden), s.act, 1))
        return uses

    def gemms(self, shape: Shape) -> list[Gemm]:
        return [Gemm(shape["M"], shape["N"], shape["K"])]

    def weight_elements(self, shape: Shape) -> int:
        return shape["N"] * shape["K"]

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        import torch

        m, n, k = shape["M"], shape["N"], shape["K"]
        a = randn((m, k), dtype, device, gen)
        if dtype != "fp8":
            return {"a": a, "b": randn((k, n), dtype, device, gen)}
        # fp8: B column-major (K-major), as torch._scaled_mm requires and tensor cores prefer.
        b = randn((n, k), dtype, device, gen).t()
        scale_a, scale_b = (torch.rand((), generator=gen, device=device) + 0.5 for _ in range(2))
        return {"a": a, "b": b, "scale_a": scale_a, "scale_b": scale_b}

    def reference(self, inputs: Inputs) -> torch.Tensor:
        from kernels.reference import matmul_ref

        out = matmul_ref(inputs["a"], inputs["b"])
        if "scale_a" in inputs:
            out = out * inputs["scale_a"].double() * inputs["scale_b"].double()
        return out

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """a -> a·B in the activations' dtype (fp8 GEMMs write bf16 already)."""
        # Random N(0,1) weights scaled by 1/√K keep the activations at unit size through the
        # layer (unscaled, fp16 overflows after a few GEMMs).
        k = inputs["a"].shape[1]
        if "scale_b" in inputs:
            inputs["scale_b"] = inputs["scale_b"] * k**-0.5
        else:
            inputs["b"].mul_(k**-0.5)
        run, act = prepare(inputs), torch_dtype(step.act)

        def call(a: torch.Tensor) -> torch.Tensor:
            inputs["a"].copy_(a)
            out = run()
            return out if out.dtype == act else out.to(act)

        return call

    def implementations(self) -> tuple[Impl, ...]:
        return (
            triton_impl(_triton, self.flops, tuning=_tuning),
            Impl("torch", _torch, unsupported=_dtype_here),
        )


def _dtype_here(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return dtype_unsupported(dtype, device)


def _tuning(shape: Shape, dtype: str) -> int:
    from kernels.matmul import tuning_configs

    return len(tuning_configs(shape["M"], shape["N"], shape["K"], int(DTYPE_BYTES[dtype])))


def _triton(inputs: Inputs) -> Callable[[], torch.Tensor]:
    from kernels.matmul import matmul, matmul_fp8

    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: matmul_fp8(a, b, sa, sb)
    return lambda: matmul(a, b)


def _torch(inputs: Inputs) -> Callable[[], torch.Tensor]:
    import torch

    a, b = inputs["a"], inputs["b"]
    if "scale_a" in inputs:
        sa, sb = inputs["scale_a"], inputs["scale_b"]
        return lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    return lambda: torch.matmul(a, b)


OP = Matmul()


def _attention_projections(op: Op, s: ModelStep) -> list[OpUse]:
    """QKV (queries and grouped keys and values in one GEMM) and O."""
    t, q_width, kv_width = s.tokens, s.heads * s.head_dim, s.kv_heads * s.head_dim
    return [
        op.use("qkv", matmul_shape(t, q_width + 2 * kv_width, s.hidden), s.weights, s.layers),
        op.use("o", matmul_shape(t, s.hidden, q_width), s.weights, s.layers),
    ]


def _latent_projections(op: Op, s: ModelStep) -> list[OpUse]:
    """Multi-head latent attention's projections (DeepSeek-V3 tech report §2.1.1,
    arXiv:2412.19437): q_a (hidden → q_lora) and kv_a (hidden → latent + rope), replicated on
    every GPU as vLLM and SGLang run them; q_b (q_lora → heads × (nope + rope)) split by heads;
    kv_b (latent → heads × (nope + v)) and O split by heads. Prefill runs kv_b on every token
    (un-absorbed); decode absorbs its key half into the queries (heads × nope → heads × latent)
    and its value half after attention (heads × latent → heads × v), a batched GEMM per head
    written as one GEMM of the same FLOPs and weight bytes."""
    t, h, nope, rope, latent = s.tokens, s.heads, s.head_dim, s.rope_dim, s.latent
    q_in = s.q_lora or s.hidden
    uses = [op.use("qkv", matmul_shape(t, latent + rope, s.hidden), s.weights, s.layers)]
    if s.q_lora:
        uses.append(op.use("qkv", matmul_shape(t, s.q_lora, s.hidden), s.weights, s.layers))
    uses.append(op.use("qkv", matmul_shape(t, h * (nope + rope), q_in), s.weights, s.layers))
    if s.phase == "prefill":
        kv_b = [("qkv", matmul_shape(t, h * 2 * nope, latent))]
    else:
        kv_b = [
            ("qkv", matmul_shape(t, h * latent, nope)),
            ("o", matmul_shape(t, h * nope, latent)),
        ]
    uses += [op.use(role, shape, s.weights, s.layers) for role, shape in kv_b]
    uses.append(op.use("o", matmul_shape(t, s.hidden, h * nope), s.weights, s.layers))
    return uses
