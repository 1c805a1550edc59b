"""Every kernel wrapper checks where its tensors are (issue 25: add_rmsnorm had no such check
and CPU tensors without Triton's interpreter reached Triton as "0 active drivers"): CPU tensors
outside the interpreter are one line naming what is allowed, before anything launches."""

from collections.abc import Callable

import pytest
import torch

import kernels.checks
from kernels.activation import silu_mul
from kernels.attention import flash_attention
from kernels.decode import decode_attention
from kernels.kvcache import write_kv
from kernels.matmul import matmul, matmul_fp8
from kernels.mla import mla_decode
from kernels.moe import fused_moe, moe_gemm
from kernels.rmsnorm import add_rmsnorm
from kernels.rotary import rotary


def _ones(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.ones(shape, dtype=dtype)


def _ids(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.int32)


FP8 = torch.float8_e4m3fn
# Each wrapper called with small CPU tensors that pass every check before the device's (the
# ranks and dtypes): the error the test expects is the device's, so a call that failed an
# earlier check would fail the test.
CALLS: dict[str, Callable[[], object]] = {
    "silu_mul": lambda: silu_mul(_ones(2, 8)),
    "flash_attention": lambda: flash_attention(_ones(1, 2, 4, 16), _ones(1, 2, 4, 16),
                                               _ones(1, 2, 4, 16)),
    "decode_attention": lambda: decode_attention(_ones(1, 2, 16), _ones(1, 4, 2, 16),
                                                 _ones(1, 4, 2, 16), _ids(1)),
    "write_kv": lambda: write_kv(_ones(2, 1, 16), _ones(2, 1, 16), _ones(1, 4, 1, 16),
                                 _ones(1, 4, 1, 16), torch.zeros(2, dtype=torch.int64)),
    "matmul": lambda: matmul(_ones(4, 8), _ones(8, 4)),
    "matmul_fp8": lambda: matmul_fp8(_ones(16, 16, dtype=FP8), _ones(16, 16, dtype=FP8).t(),
                                     _ones(1), _ones(1)),
    "mla_decode": lambda: mla_decode(_ones(1, 2, 32), _ones(1, 2, 16), _ones(1, 4, 48), _ids(1),
                                     _ids(1, 1), softmax_scale=0.1),
    "fused_moe": lambda: fused_moe(_ones(2, 8), _ones(2, 32, 8), _ones(2, 8, 16), _ones(2, 1),
                                   _ids(2, 1)),
    "moe_gemm": lambda: moe_gemm(_ones(2, 8), _ones(2, 16, 8), _ids(2, 1)),
    "add_rmsnorm": lambda: add_rmsnorm(_ones(2, 8), _ones(2, 8), _ones(8)),
    "rotary": lambda: rotary(_ones(2, 2, 16), _ones(2, 1, 16), _ids(2), _ones(8, 16)),
}  # fmt: skip


@pytest.mark.parametrize("wrapper", CALLS)
def test_cpu_tensors_without_the_interpreter_are_one_line(wrapper: str, monkeypatch) -> None:
    monkeypatch.setattr(kernels.checks, "interpreted", lambda: False)
    with pytest.raises(ValueError, match=r"tensors are on cpu; allowed: CUDA tensors") as raised:
        CALLS[wrapper]()
    # The two grouped-GEMM wrappers share the MoE's checks and their name.
    name = "moe" if wrapper in ("fused_moe", "moe_gemm") else wrapper
    assert str(raised.value).startswith(f"{name}: ") and "\n" not in str(raised.value)
