"""SiLU·mul in Triton: the activation of a gated MLP (Llama's SwiGLU), fused.

``silu_mul(gate_up)`` takes the output of the fused gate/up projection, (tokens, 2·I) with the
gate in the first I columns and up in the last I, and returns the new (tokens, I) tensor
``silu(gate) · up``, silu(g) = g / (1 + e^−g). This is vLLM's ``silu_and_mul``: one pass reads
each input element once and writes each output element once, where the PyTorch form launches
two kernels and writes and rereads the (tokens, I) silu(gate) in between.

One program covers BLOCK columns (1,024, fewer for narrow rows) of one row: the gate columns and
the up columns BLOCK apart by I. The sigmoid and the product are in fp32 and the output is
rounded once to the input dtype (vLLM rounds silu(gate) to the input dtype first). I need not be
a power of two: the last block is masked. No ``tl.dot``, so the interpreter runs bfloat16 too.
float16, bfloat16 and float32; any strides; zero rows allowed. Rows go on grid axis 0 (up to
2^31 − 1 of them), column blocks on axis 1; element offsets are int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import on_device, strides
from kernels.checks import FLOAT_DTYPES, Checks

# Columns per program: 4 warps, 8 elements of each half a thread.
_BLOCK = 1024
# Columns a warp covers: 8 a thread, so a narrower block takes fewer warps.
_WARP_ELEMENTS = 256


@triton.jit
def _silu_mul_kernel(
    x_ptr,
    out_ptr,
    stride_xm,
    stride_xn,
    inter,
    BLOCK: tl.constexpr,
):
    """One program: columns [program_id(1)·BLOCK, +BLOCK) of row program_id(0).

    Args:
        x_ptr: gate_up, (rows, 2·inter): gate in columns [0, inter), up in [inter, 2·inter);
            any strides.
        out_ptr: silu(gate)·up, contiguous (rows, inter), in the input dtype.
        stride_xm: Elements between rows of gate_up.
        stride_xn: Elements between columns of gate_up.
        inter: I, the intermediate size (columns of the output).
        BLOCK: Columns per program, a power of two.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < inter
    gate_ptrs = x_ptr + row * stride_xm + cols * stride_xn
    gate = tl.load(gate_ptrs, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(gate_ptrs + inter * stride_xn, mask=inside, other=0.0).to(tl.float32)
    out = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * inter + cols, out.to(out_ptr.dtype.element_ty), mask=inside)


_CHECK = Checks("silu_mul")


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate)·up for gate_up = [gate | up] (the fused gate/up projection's output).

    Args:
        gate_up: (tokens, 2·I) float16/bfloat16/float32, any strides; tokens may be 0. The gate
            is columns [0, I), up columns [I, 2·I); I is any size from 1.

    Returns:
        A new contiguous (tokens, I) tensor in gate_up's dtype.
    """
    _CHECK.tensors(gate_up=gate_up)
    _CHECK.rank("gate_up", gate_up, "(tokens, 2 * intermediate)")
    width = gate_up.shape[1]
    if width == 0 or width % 2:
        _CHECK.fail(f"gate_up's width must be even and >= 2 (gate then up), got {width}")
    _CHECK.dtype("gate_up", gate_up, FLOAT_DTYPES)
    _CHECK.device(gate_up=gate_up)
    tokens, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((tokens, inter), dtype=gate_up.dtype, device=gate_up.device)
    if tokens:
        _launch(gate_up, out)
    return out


def _launch(gate_up: torch.Tensor, out: torch.Tensor) -> None:
    """The kernel over every row of gate_up into out (contiguous), rows >= 1."""
    tokens, inter = out.shape
    block = min(_BLOCK, triton.next_power_of_2(inter))
    with on_device(gate_up):
        _silu_mul_kernel[(tokens, triton.cdiv(inter, block))](
            x_ptr=gate_up,
            out_ptr=out,
            **strides(gate_up, "stride_xm", "stride_xn"),
            inter=inter,
            BLOCK=block,
            num_warps=max(block // _WARP_ELEMENTS, 1),
        )
