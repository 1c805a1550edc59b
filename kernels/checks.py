"""The input checks every kernel wrapper runs: each failure is one line, a ValueError that starts
with the wrapper's name and says what is wrong and what is allowed.

A wrapper makes one ``Checks("its name")`` and calls its methods in order: tensors first (so the
rest may read shapes), then ranks, dtypes, the device, shapes and, last, the checks that read
values on the host (scales), which cost a device synchronisation and which a caller that vouches
for its inputs may skip.
"""

from __future__ import annotations

import math
import numbers
from typing import NoReturn

import torch

from kernels import fp8_unsupported, interpreted

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FP8_DTYPE = torch.float8_e4m3fn


def dtype_names(dtypes: tuple[torch.dtype, ...]) -> str:
    """(torch.float16, torch.float32) -> "float16, float32"."""
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


class Checks:
    """The checks of one wrapper; every message starts with its name."""

    def __init__(self, wrapper: str) -> None:
        self.wrapper = wrapper

    def fail(self, message: str) -> NoReturn:
        raise ValueError(f"{self.wrapper}: {message}")

    def tensors(self, **named: object) -> None:
        """Each argument is a torch.Tensor."""
        for name, t in named.items():
            if not isinstance(t, torch.Tensor):
                self.fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")

    def rank(self, name: str, t: torch.Tensor, layout: str) -> None:
        """t has one dimension per name in layout, written "(batch, heads, head_dim)"."""
        rank = len([n for n in layout.strip("()").split(",") if n.strip()])
        if t.dim() != rank:
            self.fail(f"{name} must be {layout}, {rank}-D, got shape {tuple(t.shape)}")

    def dtype(self, name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
        if t.dtype not in allowed:
            self.fail(f"{name} dtype {t.dtype} unsupported; allowed: {dtype_names(allowed)}")

    def same_dtype(self, **named: torch.Tensor) -> None:
        """Every tensor has the first one's dtype."""
        dtypes = [t.dtype for t in named.values()]
        if len(set(dtypes)) > 1:
            listing = ", ".join(map(str, dtypes))
            self.fail(f"{', '.join(named)} must share one dtype, got {listing}")

    def device(self, **named: torch.Tensor | None) -> torch.device:
        """Every tensor (None: an option left out) is on the first one's device, and that is one
        the kernels run on: a CUDA GPU, or the CPU under Triton's interpreter. Returns it."""
        (first, device), *rest = ((n, t.device) for n, t in named.items() if t is not None)
        for name, other in rest:
            if other != device:
                self.fail(
                    f"{name} is on {other} but {first} is on {device}; all must share one device"
                )
        if device.type != "cuda" and not (device.type == "cpu" and interpreted()):
            self.fail(
                f"tensors are on {device}; allowed: CUDA tensors (CPU tensors only under "
                "Triton's interpreter, TRITON_INTERPRET=1)"
            )
        return device

    def number(self, name: str, value: object, *, at_least: float | None = None) -> float:
        """A finite real scalar (Python, NumPy or a one-element tensor; not a bool or a string),
        at least `at_least` when given; returns it as the float a kernel's scalar argument takes
        (a tensor would reach the kernel as a pointer)."""
        allowed = "a finite real number" + ("" if at_least is None else f" >= {at_least:g}")
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if isinstance(value, torch.Tensor):
            real = value.numel() == 1 and not (value.is_complex() or value.dtype == torch.bool)
        number = float(value) if real else math.nan
        if not math.isfinite(number) or (at_least is not None and number < at_least):
            self.fail(f"{name} must be {allowed}, got {value!r}")
        return number

    def count(self, name: str, value: object, low: int, high: int, why: str = "") -> int:
        """An int (Python or NumPy; not a bool) in [low, high]; returns it. `why` follows the
        range in the message."""
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or not low <= value <= high:
            self.fail(f"{name} must be an int in [{low}, {high}]{why}, got {value!r}")
        return int(value)

    def fp8(self, device: torch.device, what: str) -> None:
        """float8_e4m3fn `what` can be read on `device`: from compute capability 8.9 on a GPU
        (Triton's fp8e4nv), anywhere under the interpreter, which converts it in numpy."""
        if device.type != "cuda":
            return
        capability = torch.cuda.get_device_capability(device)
        if problem := fp8_unsupported("cuda", capability, rocm=torch.version.hip is not None):
            self.fail(f"{what}: {problem}")

    def dots(self, dtype: torch.dtype) -> None:
        """A dtype the kernel's tl.dot computes right here: the interpreter keeps bfloat16 as raw
        uint16 and its tl.dot multiplies those integers."""
        if dtype == torch.bfloat16 and interpreted():
            self.fail(
                "bfloat16 gives wrong results under the Triton CPU interpreter; use "
                "float16/float32 there, or a GPU"
            )

    def scale(
        self, name: str, scale: object, shapes: tuple[tuple[int, ...], ...], device: torch.device
    ) -> None:
        """A float32 dequantisation scale on `device` whose shape is one of `shapes`."""
        self.tensors(**{name: scale})
        if scale.dtype != torch.float32 or tuple(scale.shape) not in shapes:
            *most, last = (str(s) for s in shapes)
            allowed = f"{', '.join(most)} or {last}" if most else last
            self.fail(
                f"{name} must be a float32 tensor of shape {allowed}, got {scale.dtype} of shape "
                f"{tuple(scale.shape)}"
            )
        if scale.device != device:
            self.fail(f"{name} is on {scale.device} but the inputs are on {device}")

    def positive(self, **scales: torch.Tensor | None) -> None:
        """Every element of every scale (None: left out) finite and > 0, read on the host in one
        synchronisation: a scale of 0, inf or NaN would turn what it dequantises into NaN or
        ±inf without an error."""
        given = {name: s for name, s in scales.items() if s is not None}
        if not given:
            return
        values = torch.cat([s.detach().reshape(-1) for s in given.values()]).tolist()
        for name, s in given.items():
            mine, values = values[: s.numel()], values[s.numel() :]
            if bad := [v for v in mine if not (math.isfinite(v) and v > 0)]:
                self.fail(f"{name} must be finite and > 0 (a dequantisation scale), got {bad[0]}")
