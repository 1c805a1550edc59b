"""What an op is: the base class every op module fills in, and its implementations.

An op is everything the harness needs about one operation, as in tritonbench's operators: its
shape keys and their rules, FLOPs and minimum bytes, the memory a case needs, its label, the
shapes of the smoke and standard suites, the axes an estimate may interpolate along, its inputs,
its float64 reference and its implementations — and how it appears in a model step (bench.measure
.ops.step): the part of the step it is, how the op-time model treats it, which of its shapes a
step runs, the weights it holds, and how a decoder layer calls it. The runner, suites, lookups,
models, estimate, simulator, decoder-layer check and tables read all of it from here and never
know which op they hold.

Describing an op needs no torch: op modules import torch and the kernels only inside the methods
that measure (inputs, reference, implementations), so planning and presenting read shapes, FLOPs
and bytes without importing torch or Triton.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import kernels
from bench import BenchError
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DeviceInfo, Shape

if TYPE_CHECKING:
    import torch

Inputs = dict[str, Any]
# An implementation's preparation: a case's inputs in, the closure to time out.
Prepare = Callable[[Inputs], Callable[[], Any]]

# Relative error ‖out − ref‖ / ‖ref‖ allowed per dtype: a few units of the output's rounding
# (fp16 2^-11, bf16 2^-8) plus fp32-accumulation error over long reductions.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2, "fp8": 2e-2}
# The attention kernels' fp32 tl.dot runs as tf32 on GPUs (10-bit mantissa).
TF32_TOLERANCE = {**TOLERANCE, "fp32": 5e-3}

# What part of a model step an op is, with its column name in the estimate's tables.
PARTS = {
    "gemm": "GEMM",
    "attention": "attn",
    "moe": "MoE",
    "memory": "mem.-bound",
    "communication": "comm.",
}

# Triton's interpreter runs a kernel in numpy, program by program: fine for checking small
# shapes, hopeless for large ones.
INTERPRETER_MAX_FLOPS = 2e8


@dataclass(frozen=True)
class Key:
    """One shape key: a size, an integer from `least` up, or a switch (true or false). A key
    with a default may be left out of a shape (keys added to an op later have one, so that
    files written before still read)."""

    name: str
    help: str
    least: int = 1
    switch: bool = False
    default: int | bool | None = None

    def problem(self, value: object) -> str | None:
        """What is wrong with a value for this key, or None."""
        if self.switch:
            return None if isinstance(value, bool) else f"{self.name} must be true or false"
        if isinstance(value, bool) or not isinstance(value, int) or value < self.least:
            return f"{self.name} must be an integer >= {self.least}"
        return None


@dataclass(frozen=True)
class Gemm:
    """A matrix product a kernel computes, (m × k)·(k × n), `groups` of them in one launch (a
    MoE's experts): the geometry the op-time model tiles over a GPU's SMs."""

    m: int
    n: int
    k: int
    groups: float = 1.0


def no_workspace(shape: Shape, dtype: str) -> float:
    return 0.0


def _runs_anywhere(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return None


@dataclass(frozen=True)
class Impl:
    """One implementation of an op.

    `prepare` takes a case's inputs and returns the closure to time, so input preparation
    (layouts, scales, gathers) stays out of the timed region.
    """

    name: str
    prepare: Callable[[Inputs], Callable[[], Any]]
    triton: bool = False  # a tokbench Triton kernel (interpreted without a GPU)
    # Memory it needs beyond the case's inputs and reference: when that is not free, it is
    # skipped (materialised attention scores at 16k tokens outgrow an 80 GB GPU).
    workspace: Callable[[Shape, str], float] = no_workspace
    # Why this implementation cannot run a case here, or None when it can.
    unsupported: Callable[[Shape, str, DeviceInfo], str | None] = _runs_anywhere
    # The configs its autotuner compiles and times on a Hopper GPU at a case, or None when it
    # is not autotuned: what `tokbench run --dry-run` sizes a GPU run by.
    tuning: Callable[[Shape, str], int] | None = None


class Unsupported(Exception):
    """Raised by an implementation's prepare when it finds it cannot run a case here."""


class Op:
    """A benchmarkable operation. Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    description: ClassVar[str]
    keys: ClassVar[tuple[Key, ...]]
    dtypes: ClassVar[tuple[str, ...]]
    baseline: ClassVar[str]  # the implementation speedups are measured against
    part: ClassVar[str]  # a PARTS key: what part of a model step it is
    # Shape keys an estimate interpolates the op's time along, linear in its `work`; keys grouped
    # in a tuple move together (a prefill's query and key lengths are the same prompt).
    axes: ClassVar[tuple[tuple[str, ...], ...]] = ()
    smoke: ClassVar[tuple[Shape, ...]] = ()  # CPU-sized: torch on the CPU, Triton interpreted
    standard: ClassVar[tuple[Shape, ...]] = ()  # the GPU sweep
    tolerance: ClassVar[dict[str, float]] = TOLERANCE
    # fp32 peak to judge it against: "tf32" where its kernels' fp32 dots run as tf32 on GPUs.
    fp32_peak: ClassVar[str] = "fp32"
    # True for ops bound by memory traffic at every size (judged by their GB/s against the
    # measured copy bandwidth), False where the FLOPs can bind.
    memory_bound: ClassVar[bool] = False
    # An EFFICIENCY_CLASSES entry: how the op-time model treats it where nothing measured it.
    efficiency: ClassVar[str]

    # --- describing a case (no torch) ----------------------------------------------------------

    def rule(self, shape: Shape) -> str | None:
        """What an op-specific rule says is wrong with a shape of valid keys, or None."""
        return None

    def flops(self, shape: Shape) -> float:
        raise NotImplementedError

    def bytes(self, shape: Shape, dtype: str) -> float:
        """Minimum traffic: every input read and every output written once."""
        raise NotImplementedError

    def footprint(self, shape: Shape, dtype: str) -> float:
        """Device memory a case needs: inputs, outputs and the float64 reference."""
        raise NotImplementedError

    def label(self, shape: Shape) -> str:
        raise NotImplementedError

    def work(self, shape: Shape) -> float:
        """What its time grows with, for interpolating between measured shapes: FLOPs."""
        return self.flops(shape)

    def suite_shapes(self, suite: str, world: int) -> tuple[Shape, ...]:
        """The shapes of the `smoke` or `standard` suite for a run of `world` ranks."""
        return self.smoke if suite == "smoke" else self.standard

    # --- in a model step (no torch) --------------------------------------------------------------

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """The uses of this op in one forward step, each with its role and count over all
        layers; none for an op no decoder step runs."""
        return []

    def use(self, role: str, shape: Shape, dtype: str, count: int) -> OpUse:
        return OpUse(role, self.name, shape, dtype, count)

    def weight_elements(self, shape: Shape) -> int:
        """Elements of the weights behind one use at this shape (a GEMM's matrix, every expert
        of a MoE however many a step routes to), for the memory a model's weights take."""
        return 0

    def gemms(self, shape: Shape) -> list[Gemm]:
        """The matrix products of a shape, for ops the op-time model times as GEMMs (the
        "gemm" and "moe" efficiency classes)."""
        return []

    def programs(self, shape: Shape) -> float | None:
        """How many independent pieces of work (thread blocks) a kernel for this shape spreads
        over the GPU's SMs, where so few could leave SMs idle (a decode step's rows); None:
        always enough to fill a GPU."""
        return None

    def step_of(self, shape: Shape) -> tuple[str, int, int, int] | None:
        """(phase, batch, new tokens per sequence, context) of the step a shape of this op was
        taken from, for ops whose shape carries them (attention), else None: how planning
        reads which steps of a model a result file measured."""
        return None

    # --- measuring a case (torch and the kernels, imported by each method) ---------------------

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        raise NotImplementedError

    def reference(self, inputs: Inputs) -> torch.Tensor:
        """The float64 result an implementation's output is checked against."""
        raise NotImplementedError

    def check_view(self, out: Any, inputs: Inputs) -> torch.Tensor:
        """The part of an implementation's output the reference covers, as one tensor."""
        return out

    def implementations(self) -> tuple[Impl, ...]:
        raise NotImplementedError

    def layer_call(self, inputs: Inputs, prepare: Prepare, step: ModelStep) -> Callable:
        """How the decoder-layer check (bench.measure.decoder_check) runs this op in a layer:
        the case's `inputs` made fit for a layer where needed, an implementation's `prepare`d
        closure, and a function of the layer's activations in its role's form (token-major;
        decoder_check names each role's form) that copies them into `inputs`, runs the closure
        and returns the result. Every op with step uses defines it."""
        raise NotImplementedError(f"{self.name} does not say how a decoder layer runs it")

    # --- derived ---------------------------------------------------------------------------------

    def inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        """A case's inputs: the first step of measuring it, so the step that chooses how Triton
        runs, before any kernel module is imported (kernels.use_interpreter_without_gpu)."""
        kernels.use_interpreter_without_gpu()
        return self.make_inputs(shape, dtype, device, gen)

    @cached_property
    def impls(self) -> tuple[Impl, ...]:
        return self.implementations()

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    @property
    def required(self) -> tuple[str, ...]:
        """The keys a shape must give: those without a default."""
        return tuple(k.name for k in self.keys if k.default is None)

    def takes(self, keys: set[str]) -> bool:
        """Whether a shape with these keys is one of this op's (defaults may be left out)."""
        return set(self.required) <= keys <= set(self.key_names)

    def complete(self, shape: Shape) -> Shape:
        """The shape with every key, in the op's order, defaults filled in."""
        return {k.name: shape.get(k.name, k.default) for k in self.keys}

    def check_shape(self, shape: Shape) -> None:
        """Raise a BenchError naming what is wrong with a shape and what is allowed."""
        if not self.takes(set(shape)):
            optional = [k for k in self.key_names if k not in self.required]
            also = f" (and optionally {','.join(optional)})" if optional else ""
            raise BenchError(
                f"{self.name} shape {shape_text(shape)} needs the keys "
                f"{','.join(self.required)}{also}"
            )
        shape = self.complete(shape)
        for key in self.keys:
            if problem := key.problem(shape[key.name]):
                raise BenchError(f"{self.name} shape {shape_text(shape)}: {problem}")
        if problem := self.rule(shape):
            raise BenchError(f"{self.name} shape {shape_text(shape)}: {problem}")

    @property
    def tf32(self) -> bool:
        """Whether its fp32 cases are judged against the TF32 tensor-core peak."""
        return self.fp32_peak == "tf32"

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        known = ", ".join(i.name for i in self.impls)
        raise BenchError(f"unknown implementation '{name}' for {self.name}; known: {known}")


def feeding(inputs: Inputs, run: Callable[[], Any], *names: str) -> Callable[..., Any]:
    """A layer call that copies its positional activations into the named inputs, then runs."""

    def call(*activations: torch.Tensor) -> Any:
        for name, value in zip(names, activations, strict=True):
            inputs[name].copy_(value)
        return run()

    return call


def shape_text(shape: Shape) -> str:
    """A shape as --shape takes it: M=64,N=128,K=256 (switches as true/false)."""
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in shape.items())


def dtype_unsupported(dtype: str, device: DeviceInfo) -> str | None:
    """Why this device cannot compute in dtype at all, or None."""
    if dtype != "fp8":
        return None
    return kernels.fp8_unsupported(device.kind, device.capability, rocm=device.rocm)


def triton_impl(
    prepare: Callable[[Inputs], Callable[[], Any]],
    size: Callable[[Shape], float],
    *,
    limit: float = INTERPRETER_MAX_FLOPS,
    unit: str = "FLOPs",
    dots: bool = True,
    refuses: Callable[[Shape, str, DeviceInfo], str | None] = _runs_anywhere,
    tuning: Callable[[Shape, str], int] | None = None,
) -> Impl:
    """An op's tokbench Triton kernel. Without a GPU it runs interpreted, for cases whose `size`
    (in `unit`) is within `limit`, and without bf16 if the kernel uses `tl.dot` (`dots`), which
    the interpreter does not emulate in bf16. `refuses` says why the kernel cannot take a shape
    its op allows, or None; `tuning` counts its autotuning configs (Impl.tuning)."""

    def unsupported(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
        if reason := dtype_unsupported(dtype, device) or refuses(shape, dtype, device):
            return reason
        if not kernels.interpreted():
            return None
        if problem := kernels.interpreter_problem():
            return problem
        if dots and dtype == "bf16":
            return "bf16 tl.dot is not emulated by Triton's interpreter; checked on GPU only"
        if size(shape) > limit:
            return f"too large for Triton's interpreter ({size(shape):.3g} {unit}); run on a GPU"
        return None

    return Impl("triton", prepare, triton=True, unsupported=unsupported, tuning=tuning)


def row_kernel_impl(
    prepare: Callable[[Inputs], Callable[[], Any]],
    refuses: Callable[[Shape, str, DeviceInfo], str | None] = _runs_anywhere,
) -> Impl:
    """The Triton kernel of a memory-bound op over a step's `tokens`, with no tl.dot (bf16 runs
    interpreted too). It runs a program or a few per token, so the interpreter's time grows
    with the tokens and 1,024 take seconds there: larger cases are left to a GPU."""
    return triton_impl(prepare, _tokens, limit=1024, unit="tokens", dots=False, refuses=refuses)


def _tokens(shape: Shape) -> int:
    return shape["tokens"]


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a harness dtype name."""
    import torch

    return {
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
        "fp8": torch.float8_e4m3fn,
    }[dtype]


def randn(
    shape: tuple[int, ...], dtype: str, device: torch.device, gen: torch.Generator
) -> torch.Tensor:
    """Random normal data in dtype (never zeros: zeros flatter tensor-core power and clocks)."""
    import torch

    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return x.to(torch_dtype(dtype))


def quantize_fp8(t: torch.Tensor, per_first_dim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """t as float8_e4m3fn with float32 scales (amax / 448, as serving engines calibrate), so that
    t ≈ fp8 · scale: one scale for the tensor (shape ()), or one per index of its first dim
    (an expert's weights: shape (t.shape[0],))."""
    import torch

    dims = tuple(range(1, t.dim())) if per_first_dim else tuple(range(t.dim()))
    amax = t.abs().amax(dim=dims, keepdim=True).float()
    scale = (amax / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
    fp8 = (t.float() / scale).to(torch.float8_e4m3fn)
    return fp8, scale.reshape(t.shape[0]) if per_first_dim else scale.reshape(())
