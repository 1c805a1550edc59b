"""What the kernel tests share: relative error against a float64 reference, the bound the
attention-style kernels (prefill, decode) are held to, and random non-contiguous views of a
kernel's arguments."""

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import kernels

# fp16/bf16: dominated by rounding the output (2^-11, 2^-8 per element).
_HALF_TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}

# Few, reproducible examples: each runs a kernel in Triton's interpreter, a second or so. A
# failing example is printed whole, so it needs no database to be found again.
VIEWS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def attention_tol(dtype: torch.dtype) -> float:
    """fp32 dots are exact in the interpreter and tf32 on a GPU (10-bit mantissa)."""
    if dtype == torch.float32:
        return 1e-5 if kernels.interpreted() else 5e-3
    return _HALF_TOL[dtype]


def _poison(dtype: torch.dtype) -> float | int:
    """What fills the gaps between a view's elements, so that a kernel reading a neighbour
    instead of the element (a stride ignored) gives a wrong answer: NaN for floats, and for
    integers a large negative value (a negative length or slot, an id or position out of
    range), which the wrappers and references treat as wrong or skipped."""
    return float("nan") if dtype.is_floating_point else -(2**30)


@st.composite
def views(draw: st.DrawFn, t: torch.Tensor) -> torch.Tensor:
    """t's values in a random non-contiguous view of a larger buffer: every dimension stepped by
    1 to 3, the dimensions laid out in a random order, at a random offset, the gaps poisoned
    (see _poison). A tensor of two elements or more always comes out non-contiguous."""
    order = draw(st.permutations(range(t.dim())))
    steps = [draw(st.integers(1, 3)) for _ in range(t.dim())]
    offset = draw(st.integers(0, 3))
    view = _view(t, order, steps, offset)
    if t.numel() > 1 and view.is_contiguous():
        steps[next(d for d in range(t.dim()) if t.shape[d] > 1)] = 2
        view = _view(t, order, steps, offset)
    return view


def _view(t: torch.Tensor, order: list[int], steps: list[int], offset: int) -> torch.Tensor:
    sizes = [n * s for n, s in zip(t.shape, steps, strict=True)]
    buffer = torch.full(
        (offset + torch.Size(sizes).numel(),), _poison(t.dtype), dtype=t.dtype, device=t.device
    )
    laid_out = buffer[offset:].view([sizes[d] for d in order])
    spread = laid_out.permute([list(order).index(d) for d in range(t.dim())])
    view = spread[tuple(slice(None, None, s) for s in steps)]
    view.copy_(t)
    return view
