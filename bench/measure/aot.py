"""Kernels compiled ahead of time for GPUs that are not here: every autotune config of every
Triton kernel, at the shapes of the op suites and at the kernels' limits, compiled by Triton for
Hopper (sm_90) or Blackwell (sm_100) with its bundled ptxas, on any machine, a CPU-only one
included. Each build reports the registers a thread uses, what it spills, the shared memory a
block needs and the occupancy (warps per SM) those leave, so that a config that spills or does
not fit is found before a GPU is lent.

How: a problem builds its inputs as meta tensors (shapes and strides, no memory) and calls its
kernel family's own launch function, whose launches are recorded rather than run; the
autotuned ones keep the configs their own pruning keeps on the target
(kernels.autotune.TUNINGS); each distinct (kernel, specialisation, config) is compiled once
with ``JITFunction.warmup`` against a stand-in driver that names the target, and cuobjdump
(bundled with Triton) reads the cubin's resource usage. Triton caches what it compiled (in
``TRITON_CACHE_DIR``), so a second report is quick.

The compiles run in fresh subprocesses, spread over the CPUs: the kernels must be imported
without Triton's interpreter (TRITON_INTERPRET, which the tests and a CPU-only run set), and the
stand-in driver must not replace a real one in the caller. Triton is imported only there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import BenchError, ceil_div
from bench.measure.ops import get_op
from bench.record.schema import Shape

# Bytes of per-thread stack frame (where ptxas spills registers) a build may have. The ptxas of
# Triton 3.9 (CUDA 13, run with --regAllocOptLevel=2 to work around a ptxas bug) spills a word or
# four well below 255 registers (8 to 16 bytes at 72 to 168 registers in this module's sweeps);
# a tile that does not fit in registers spills a hundred bytes or more.
SPILL_LIMIT = 16
# Compiling processes at most, one a CPU below that: each holds torch and Triton, about half a GB
# (an assumption about what a machine spares, not measured).
_MOST_WORKERS = 16


@dataclass(frozen=True)
class Target:
    """A GPU architecture, with the limits that set occupancy: CUDA C++ Programming Guide,
    "Technical Specifications per Compute Capability" (9.0 and 10.0 alike) and the CUDA
    Occupancy Calculator's allocation units."""

    name: str
    capability: int
    # SMs of the GPU a decode step's split count is chosen for: H100 SXM 132, B200 148.
    sms: int
    smem_per_block: int = 227 * 1024
    smem_per_sm: int = 228 * 1024
    # Shared memory the system reserves per block, and the unit blocks get it in.
    smem_reserved: int = 1024
    smem_unit: int = 128
    registers_per_sm: int = 65536
    # Registers are handed to warps 256 at a time.
    register_unit: int = 256
    warps_per_sm: int = 64
    blocks_per_sm: int = 32

    def occupancy(self, warps: int, registers: int, shared: int) -> int:
        """Warps per SM that fit at once, by registers, shared memory, warps and blocks; 0 when
        a block does not fit at all."""
        if shared > self.smem_per_block:
            return 0
        per_warp = math.ceil(registers * 32 / self.register_unit) * self.register_unit
        by_registers = self.registers_per_sm // max(per_warp, 1) // warps
        block_smem = math.ceil(shared / self.smem_unit) * self.smem_unit + self.smem_reserved
        by_smem = self.smem_per_sm // block_smem
        blocks = min(by_registers, by_smem, self.warps_per_sm // warps, self.blocks_per_sm)
        return blocks * warps


TARGETS = {"sm_90": Target("sm_90", 90, sms=132), "sm_100": Target("sm_100", 100, sms=148)}


@dataclass(frozen=True)
class KernelBuild:
    """One config of one kernel compiled for one target.

    Attributes:
        kernel: The Triton kernel: matmul, flash_attention, decode_split, decode_merge,
            mla_split, moe_gemm, add_rmsnorm, silu_mul, rotary, write_kv.
        config: Its autotune config (block sizes, warps, stages), or the launch's own.
        target: "sm_90" or "sm_100".
        registers: 32-bit registers a thread uses.
        spill_bytes: Bytes of stack frame a thread uses, where ptxas spills registers.
        shared_memory: Bytes of shared memory a block uses (dynamic and static).
        occupancy: Warps per SM the registers and shared memory leave room for (the target
            allows 64); 0 when a block does not fit.
        problem: The first problem (op, dtype, shape) that compiles this build; others whose
            launch specialises alike share it.
        error: Why it did not compile, or None.
    """

    kernel: str
    config: str
    target: str
    registers: int
    spill_bytes: int
    shared_memory: int
    occupancy: int
    problem: str
    error: str | None = None

    def problems(self, target: Target) -> list[str]:
        """What is wrong with this build on its target: over the shared memory a block may
        use, spills past SPILL_LIMIT, a compile error."""
        found = [self.error] if self.error else []
        if self.shared_memory > target.smem_per_block:
            found.append(f"{self.shared_memory} B of shared memory > {target.smem_per_block} B")
        if self.spill_bytes > SPILL_LIMIT:
            found.append(f"spills {self.spill_bytes} B a thread")
        return found


def check_request(target: str, kernels: list[str] | None) -> list[str]:
    """The ops whose kernels a compile_report of `target` would build, or a BenchError naming
    an unknown target or op."""
    if target not in TARGETS:
        raise BenchError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")
    wanted = list(PROBLEMS) if kernels is None else kernels
    if unknown := [k for k in wanted if k not in PROBLEMS]:
        raise BenchError(f"no Triton kernel for '{unknown[0]}'; known: {', '.join(PROBLEMS)}")
    return wanted


def compile_report(
    target: str, kernels: list[str] | None = None, *, sample: bool = False
) -> list[KernelBuild]:
    """Compile every autotune config of the Triton kernels, at the problems their ops' standard
    suites and the kernels' limits give, for `target`, ahead of time on this machine.

    Args:
        target: "sm_90" (Hopper) or "sm_100" (Blackwell).
        kernels: The ops whose kernels to compile (matmul, attention, decode, mla, moe,
            rmsnorm, silu_mul, rotary, kv_write); None for all.
        sample: Compile only each op's worst problems (its widest heads, fp8 and fp32, the
            most splits), and there only the heaviest config (the most tile elements a thread,
            then the most pipeline stages): a quick check, about a dozen builds.

    Returns:
        One KernelBuild per distinct build, sorted by kernel, problem and config.

    Raises:
        BenchError: an unknown target or op, or a compiling process that failed.
    """
    wanted = check_request(target, kernels)
    workers = max(1, min(os.cpu_count() or 1, _MOST_WORKERS))
    scope = "sample" if sample else "all"
    command = [sys.executable, "-m", "bench.measure.aot", target, ",".join(wanted), scope]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    builds = []
    # Files, not pipes: a process that fills a pipe nobody reads yet would wait forever.
    with contextlib.ExitStack() as files:
        outputs = [
            (
                files.enter_context(tempfile.TemporaryFile("w+")),
                files.enter_context(tempfile.TemporaryFile("w+")),
            )
            for _ in range(workers)
        ]
        runs = [
            subprocess.Popen([*command, str(i), str(workers)], stdout=out, stderr=err, env=env)
            for i, (out, err) in enumerate(outputs)
        ]
        # An error (or Ctrl-C) here ends the processes still compiling.
        files.callback(lambda: [run.kill() for run in runs if run.poll() is None])
        for run, (out, err) in zip(runs, outputs, strict=True):
            run.wait()
            out.seek(0)
            err.seek(0)
            if run.returncode:
                last = (err.read().strip().splitlines() or ["no output"])[-1]
                raise BenchError(f"compiling for {target} failed: {last}")
            marked = (line.removeprefix(_MARK) for line in out if line.startswith(_MARK))
            builds += [KernelBuild(**json.loads(line)) for line in marked]
    return sorted(builds, key=lambda b: (b.kernel, b.problem, b.config))


# ---------------------------------------------------------------- problems, on meta tensors


def _meta(shape: tuple[int, ...], dtype: str) -> Any:
    """A tensor of a harness dtype (or an index dtype, "int32" or "int64") with a shape and no
    memory."""
    import torch

    from bench.measure.ops.base import torch_dtype

    kind = getattr(torch, dtype) if dtype.startswith("int") else torch_dtype(dtype)
    return torch.empty(shape, dtype=kind, device="meta")


def _matmul(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import matmul

    m, n, k = shape["M"], shape["N"], shape["K"]
    if dtype != "fp8":
        a, b, c = _meta((m, k), dtype), _meta((k, n), dtype), _meta((m, n), dtype)
        matmul._launch(a, b, c, precision="ieee" if dtype == "fp32" else "tf32")
        return
    # B column-major, as the op has it for torch._scaled_mm; C in bf16.
    a, b, c = _meta((m, k), dtype), _meta((n, k), dtype).t(), _meta((m, n), "bf16")
    scale = _meta((), "fp32")
    matmul._launch(a, b, c, precision=None, scale_a=scale, scale_b=scale)


def _attention(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import attention

    b, h, hkv, sq, skv, d = (shape[k] for k in ("B", "H", "Hkv", "Sq", "Skv", "D"))
    q, k, v = (
        _meta((b, h, sq, d), dtype),
        _meta((b, hkv, skv, d), dtype),
        _meta((b, hkv, skv, d), dtype),
    )
    sinks = _meta((h,), "fp32") if shape["sinks"] else None
    window = shape["window"] or None
    # Hopper takes the tensor-descriptor path where it can (attention._want_tma), else both.
    tma = target.capability == 90 and dtype != "fp32" and d in attention._TMA_HEAD_DIMS
    for use_tma in (False, True) if tma else (False,):
        attention._launch(q, k, v, shape["causal"], 1.0, True, use_tma, window=window, sinks=sinks)


def _decode(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import decode

    if shape["fp8kv"] and dtype == "fp32":
        return  # the op refuses it: fp8 caches are read with 16-bit queries
    b, h, hkv, length, d, page = (shape[k] for k in ("B", "H", "Hkv", "L", "D", "page"))
    cache = "fp8" if shape["fp8kv"] else dtype
    span = min(length, shape["window"]) if shape["window"] else length
    splits = shape.get("splits") or decode.choose_num_splits(b, hkv, span, target.sms)
    table = None
    if page:
        table = _meta((b, ceil_div(length, page)), "int32")
        k = _meta((b * table.shape[1], page, hkv, d), cache)
    else:
        k = _meta((b, length, hkv, d), cache)
    scale = _meta((), "fp32") if shape["fp8kv"] else None
    decode._launch(
        _meta((b, h, d), dtype), k, k, _meta((b,), "int32"), _meta((b, h, d), dtype),
        block_table=table, scale=1.0, span=span, num_splits=splits,
        window=shape["window"] or None, sinks=_meta((h,), "fp32") if shape["sinks"] else None,
        k_scale=scale, v_scale=scale,
    )  # fmt: skip


def _mla(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import decode, mla

    b, h, length, latent, rope, page = (shape[k] for k in ("B", "H", "L", "latent", "rope", "page"))
    table = _meta((b, ceil_div(length, page)), "int32")
    cache = _meta((b * table.shape[1], page, latent + rope), dtype)
    # As mla_decode chooses: its head blocks stand in for decode's kv heads.
    blocks = ceil_div(h, mla._HEAD_BLOCK)
    splits = shape.get("splits") or decode.choose_num_splits(b, blocks, length, target.sms)
    out = _meta((b, h, latent), dtype)
    mla._launch(out, _meta((b, h, rope), dtype), cache, _meta((b,), "int32"), table, out,
                softmax_scale=1.0, num_splits=splits, longest=length)  # fmt: skip


def _moe(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import moe

    t, h, i, e, k = (shape[key] for key in ("T", "H", "I", "E", "k"))
    act = "bf16" if dtype == "fp8" else dtype  # fp8 MoE is weight-only
    block_m = moe._gpu_block_m(t * k, e)
    blocks = moe.max_blocks_of(t * k, e, block_m)
    aligned = _meta((blocks * block_m,), "int32"), _meta((blocks,), "int32"), block_m
    scale = _meta((e,), "fp32") if dtype == "fp8" else None
    hidden = _meta((t * k, i), act)
    moe._launch(_meta((t, h), act), k, _meta((e, 2 * i, h), dtype), hidden, *aligned, top_k=k,
                gated=True, routing=None, scale=scale)  # fmt: skip
    moe._launch(hidden, 1, _meta((e, h, i), dtype), _meta((t * k, h), act), *aligned, top_k=k,
                gated=False, routing=_meta((t, k), "fp32"), scale=scale)  # fmt: skip


def _rmsnorm(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import rmsnorm

    x = _meta((shape["tokens"], shape["hidden"]), dtype)
    rmsnorm._launch(x, x, _meta((shape["hidden"],), dtype), x, x, 1e-5)


def _silu_mul(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import activation

    tokens, inter = shape["tokens"], shape["I"]
    activation._launch(_meta((tokens, 2 * inter), dtype), _meta((tokens, inter), dtype))


def _rotary(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import rotary

    t, h, hkv, d = (shape[k] for k in ("tokens", "H", "Hkv", "D"))
    q, k = _meta((t, h, d), dtype), _meta((t, hkv, d), dtype)
    rotary._launch(q, k, _meta((t,), "int32"), _meta((32768, d), "fp32"), q, k)


def _kv_write(shape: Shape, dtype: str, target: Target) -> None:
    from kernels import kvcache

    t, hkv, d, page = (shape[k] for k in ("tokens", "Hkv", "D", "page"))
    k = _meta((t, hkv, d), dtype)
    pool = _meta((ceil_div(2 * t, page), page, hkv, d), "fp8" if shape["fp8kv"] else dtype)
    scale = _meta((1,), "fp32") if shape["fp8kv"] else None
    kvcache._launch(k, k, pool, pool, _meta((t,), "int64"), scale, scale)


def _attention_limits() -> tuple[Shape, ...]:
    from bench.measure.ops.attention import attention_shape

    # The head dims the kernel pads (Phi's 80, MLA prefill's 192) and its largest.
    return tuple(attention_shape(1, 8, 8, 4096, 4096, d, True) for d in (80, 192, 256))


def _decode_limits() -> tuple[Shape, ...]:
    from bench.measure.ops.decode import decode_shape
    from kernels.decode import MAX_USER_SPLITS

    # The largest head dim, 16-bit and fp8, and a caller's most splits there (the merge).
    widest = [decode_shape(1, 32, 8, 32768, 256, sinks=True, fp8kv=f) for f in (False, True)]
    return (*widest, {**widest[0], "splits": MAX_USER_SPLITS})


def _mla_limits() -> tuple[Shape, ...]:
    from bench.measure.ops.mla import mla_shape
    from kernels.decode import MAX_USER_SPLITS

    # DeepSeek-V3's 128 heads at a long context, split as much as a caller may (the merge of
    # 512-wide latents).
    return ({**mla_shape(1, 128, 32768), "splits": MAX_USER_SPLITS},)


def _rmsnorm_limits() -> tuple[Shape, ...]:
    from bench.measure.ops.rmsnorm import rmsnorm_shape

    # Rows past one block (read back in blocks), up to 65,536 wide.
    return tuple(rmsnorm_shape(1, hidden) for hidden in (16384, 32768, 65536))


def _no_limits() -> tuple[Shape, ...]:
    return ()


def _matmul_sample() -> tuple[tuple[Shape, str], ...]:
    from bench.measure.ops.matmul import matmul_shape

    # The largest square GEMM: fp8's two accumulators, fp32's FMA operands.
    return (matmul_shape(8192, 8192, 8192), "fp8"), (matmul_shape(8192, 8192, 8192), "fp32")


def _attention_sample() -> tuple[tuple[Shape, str], ...]:
    from bench.measure.ops.attention import attention_shape

    # The widest head, and fp32 with gpt-oss's window and sinks.
    gpt_oss = attention_shape(32, 64, 8, 512, 512, 64, True, 128, True)
    return (_attention_limits()[-1], "fp16"), (gpt_oss, "fp32")


def _decode_sample() -> tuple[tuple[Shape, str], ...]:
    # The widest head with an fp8 cache, and the most splits there (the merge).
    return tuple((shape, "fp16") for shape in _decode_limits()[1:])


def _mla_sample() -> tuple[tuple[Shape, str], ...]:
    from bench.measure.ops.mla import mla_shape

    # fp32 (the most registers, the largest tiles) at DeepSeek-V3's shape, split in four there
    # (the merge too); the most splits, whose merge is light, are left to the whole report.
    return ((mla_shape(16, 128, 32768), "fp32"),)


def _moe_sample() -> tuple[tuple[Shape, str], ...]:
    from bench.measure.ops.moe import moe_shape

    # Mixtral's layer at 8,192 tokens with fp8 weights: both grouped GEMMs.
    return ((moe_shape(8192, 4096, 14336, 8, 2), "fp8"),)


def _widest(op: str) -> Callable[[], tuple[tuple[Shape, str], ...]]:
    """A sample of a kernel whose config is its launch's own: its op's last standard shape (or
    limit) in fp32. Its blocks hold about as many elements at any shape, and fp32 takes the
    most registers."""

    def sample() -> tuple[tuple[Shape, str], ...]:
        return (((*get_op(op).standard, *PROBLEMS[op].limits())[-1], "fp32"),)

    return sample


@dataclass(frozen=True)
class _Kernels:
    """An op's kernels to compile: how a problem launches them on meta tensors, in which
    dtypes, at which shapes beyond the op's standard suite, and the (shape, dtype) problems a
    sample compiles (the heaviest config there)."""

    launch: Callable[[Shape, str, Target], None]
    dtypes: tuple[str, ...]
    limits: Callable[[], tuple[Shape, ...]]
    sample: Callable[[], tuple[tuple[Shape, str], ...]]


_FLOATS = ("fp16", "bf16", "fp32")
PROBLEMS = {
    "matmul": _Kernels(_matmul, (*_FLOATS, "fp8"), _no_limits, _matmul_sample),
    "attention": _Kernels(_attention, _FLOATS, _attention_limits, _attention_sample),
    "decode": _Kernels(_decode, _FLOATS, _decode_limits, _decode_sample),
    "mla": _Kernels(_mla, _FLOATS, _mla_limits, _mla_sample),
    "moe": _Kernels(_moe, ("fp16", "bf16", "fp8"), _no_limits, _moe_sample),
    "rmsnorm": _Kernels(_rmsnorm, _FLOATS, _rmsnorm_limits, _widest("rmsnorm")),
    "silu_mul": _Kernels(_silu_mul, _FLOATS, _no_limits, _widest("silu_mul")),
    "rotary": _Kernels(_rotary, _FLOATS, _no_limits, _widest("rotary")),
    "kv_write": _Kernels(_kv_write, _FLOATS, _no_limits, _widest("kv_write")),
}


def _problems(op: str, sample: bool) -> tuple[tuple[Shape, str], ...]:
    """The (shape, dtype) problems of an op's kernels: all, or the sample's."""
    kernels = PROBLEMS[op]
    if sample:
        return kernels.sample()
    shapes = (*get_op(op).standard, *kernels.limits())
    return tuple((shape, dtype) for shape in shapes for dtype in kernels.dtypes)


# ------------------------------------------------------- compiling (in a fresh subprocess)

# Marks the lines a compiling process reports on: Triton prints to stdout too.
_MARK = "tokbench-aot "


@dataclass(frozen=True)
class _Build:
    """One compile to make: a kernel's launch arguments and the config to add to them."""

    jit: Any
    kwargs: dict
    options: dict
    config: str
    problem: str


def _name(jit: Any) -> str:
    """_decode_split_kernel -> decode_split."""
    return jit.fn.__name__.strip("_").removesuffix("_kernel")


def _describe(options: dict) -> str:
    blocks = " ".join(f"{k}={v}" for k, v in options.items() if k.isupper())
    return f"{blocks} warps={options.get('num_warps', 4)} stages={options.get('num_stages', 3)}"


def _weight(config: Any) -> tuple[float, int]:
    """How heavy a config is: tile elements a thread, then pipeline stages."""
    elements = math.prod(v for v in config.kwargs.values() if isinstance(v, int))
    return elements / config.num_warps, config.num_stages


def _specialisation(jit: Any, kwargs: dict) -> tuple:
    """What of the launch arguments Triton compiles for: constexprs as they are, tensors by
    dtype (and None), ints by whether they are 1 or multiples of 16 (pointers here are all
    16-byte aligned)."""
    constexprs = {p.name for p in jit.params if p.is_constexpr}

    def spec(name: str, v: Any) -> Any:
        if name in constexprs or v is None:
            return repr(v)
        if hasattr(v, "dtype"):
            return str(v.dtype)
        if isinstance(v, int) and not isinstance(v, bool):
            return "1" if v == 1 else "16n" if v % 16 == 0 else "int"
        return type(v).__name__

    return tuple((k, spec(k, v)) for k, v in sorted(kwargs.items()))


def _builds(target: Target, ops: list[str], sample: bool) -> list[_Build]:
    """Every distinct compile the problems of these ops ask for, in a fixed order."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    launches: list[tuple[Any, dict]] = []

    def record(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        launches.append((self, kwargs))

    builds: dict[tuple, _Build] = {}
    with contextlib.ExitStack() as undo:
        for cls in (Autotuner, JITFunction):
            undo.callback(setattr, cls, "run", cls.run)
            cls.run = record
        for op in ops:
            for shape, dtype in _problems(op, sample):
                launches.clear()
                PROBLEMS[op].launch(shape, dtype, target)
                problem = f"{op} {dtype} {get_op(op).label(shape)}"
                if "splits" in shape:
                    problem += f", {shape['splits']} splits"
                for kernel, kwargs in launches:
                    for build in _configs(kernel, kwargs, problem, target, sample):
                        key = (_name(build.jit), build.config, _specialisation(build.jit, kwargs))
                        builds.setdefault(key, build)
    return [builds[key] for key in sorted(builds)]


def _configs(kernel: Any, kwargs: dict, problem: str, target: Target, sample: bool) -> list[_Build]:
    """A recorded launch's compiles: each config its autotuner keeps on the target (a sample:
    the heaviest), or the launch's own."""
    from kernels.autotune import TUNINGS

    if kernel not in TUNINGS:
        own = {k: v for k, v in kwargs.items() if k.isupper() or k == "num_warps"}
        return [_Build(kernel, kwargs, {}, _describe(own), problem)]
    tuning = TUNINGS[kernel]
    kept = tuning.select(tuning.gpu, kwargs, target.smem_per_block)
    kept = sorted(kept, key=_weight, reverse=True)[: 1 if sample else None]
    return [
        _Build(kernel.fn, kwargs, c.all_kwargs(), _describe(c.all_kwargs()), problem) for c in kept
    ]


class _Driver:
    """Stands in for Triton's GPU driver: names the target, so that warmup compiles for it."""

    def __init__(self, target: Target) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", target.capability, 32)

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


def _compile(build: _Build, target: Target) -> KernelBuild:
    """Compile one build and read its resources off the cubin with cuobjdump."""
    import re

    import triton

    try:
        compiled = build.jit.warmup(grid=(1,), **build.kwargs, **build.options)
    except Exception as error:  # a compile error is reported, not raised
        message = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
        return KernelBuild(_name(build.jit), build.config, target.name, 0, 0, 0, 0,
                           build.problem, message)  # fmt: skip
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        tool = triton.knobs.nvidia.cuobjdump.path
        usage = subprocess.run(
            [tool, "--dump-resource-usage", cubin.name], capture_output=True, text=True, check=True
        ).stdout
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    registers, stack = int(found["REG"]), int(found["STACK"]) + int(found["LOCAL"])
    shared = compiled.metadata.shared + int(found["SHARED"])
    warps = compiled.metadata.num_warps
    return KernelBuild(
        _name(build.jit), build.config, target.name, registers, stack, shared,
        target.occupancy(warps, registers, shared), build.problem,
    )  # fmt: skip


def _work(target_name: str, ops: list[str], sample: bool, worker: int, workers: int) -> None:
    """A compiling process's share: every `workers`-th build from `worker` on, one marked JSON
    line each on stdout."""
    from triton.runtime import driver

    target = TARGETS[target_name]
    driver.set_active(_Driver(target))
    for build in _builds(target, ops, sample)[worker::workers]:
        print(_MARK + json.dumps(asdict(_compile(build, target))), flush=True)


if __name__ == "__main__":
    name, wanted, sampled, index, count = sys.argv[1:]
    _work(name, wanted.split(","), sampled == "sample", int(index), int(count))
