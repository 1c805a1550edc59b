"""What the memory-bound row ops (rmsnorm, silu_mul, rotary, kv_write) share: a Triton kernel
over a step's tokens and PyTorch baselines, every one called the same way on arguments made
once, untimed, from a case's inputs. A helper of those op modules, not an op (no ``OP``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.measure.ops.base import Impl, Inputs, Prepare, row_kernel_impl
from bench.record.schema import DeviceInfo, Shape

# Positional and keyword arguments of a call.
Arguments = tuple[tuple, dict[str, Any]]
# Why a kernel cannot take a shape its op allows, or None.
Refuses = Callable[[Shape, str, DeviceInfo], str | None]


def _same(args: tuple, returned: Any) -> Any:
    return returned


def prepared(
    load: Callable[[], Callable[..., Any]],
    arguments: Callable[[Inputs], Arguments],
    output: Callable[[tuple, Any], Any] = _same,
    **options: Any,
) -> Prepare:
    """An implementation's prepare: `load()` gives the function (imported then, not when the op
    is described), `arguments` makes its arguments from a case's inputs (untimed), `options` are
    keyword arguments of this implementation alone, and `output(args, returned)` is what the
    timed call gives to check (an in-place write's caches, say)."""

    def prepare(inputs: Inputs) -> Callable[[], Any]:
        fn = load()
        args, kwargs = arguments(inputs)
        kwargs = {**kwargs, **options}
        return lambda: output(args, fn(*args, **kwargs))

    return prepare


def row_impls(
    kernel: Callable[[], Callable[..., Any]],
    baselines: dict[str, Callable[..., Any]],
    arguments: Callable[[Inputs], Arguments],
    *,
    output: Callable[[tuple, Any], Any] = _same,
    unchecked: dict[str, Any] | None = None,
    refuses: Refuses | None = None,
) -> tuple[Impl, ...]:
    """A row op's implementations: its Triton kernel (`kernel()` imports it; interpreted up to
    1,024 tokens, see row_kernel_impl) and each PyTorch baseline by name, all prepared alike
    (see `prepared`). `unchecked` are the kernel's keyword arguments that skip its host-side
    checks, a device sync each in the timed call: a case's inputs are valid by construction.
    `refuses` says why the kernel cannot take a shape its op allows."""
    triton = prepared(kernel, arguments, output, **(unchecked or {}))
    kernel_impl = row_kernel_impl(triton) if refuses is None else row_kernel_impl(triton, refuses)
    return (
        kernel_impl,
        *(
            Impl(name, prepared(lambda fn=fn: fn, arguments, output))
            for name, fn in baselines.items()
        ),
    )
