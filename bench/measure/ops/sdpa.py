"""PyTorch's scaled_dot_product_attention with one backend pinned: the baselines that prefill
attention and decode attention share."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.measure.ops.base import Impl, Inputs, Unsupported, no_workspace
from bench.record.schema import DeviceInfo, Shape

if TYPE_CHECKING:
    import torch

# Implementation name: torch.nn.attention.SDPBackend member.
BACKENDS = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-math": "MATH",
}


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
) -> Callable[[], torch.Tensor]:
    """SDPA with FlashAttention's bottom-right causal alignment (is_causal aligns top-left,
    which differs when Sq != Skv), or with a boolean `mask` of the keys each query sees."""
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    gqa = q.shape[1] != k.shape[1]
    if mask is not None:
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    if causal and q.shape[2] != k.shape[2]:
        mask = causal_lower_right(q.shape[2], k.shape[2])
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


def pinned(name: str, run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """run with SDPA pinned to one backend; Unsupported when that backend refuses the case."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, BACKENDS[name])

    def fn() -> torch.Tensor:
        with sdpa_kernel(backend):
            return run()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SDPA explains a refusal in warnings, then raises
        try:
            fn()
        except RuntimeError as e:
            raise Unsupported(f"{name} does not run this case: {str(e).splitlines()[0]}") from None
    return fn


Refusal = Callable[[Shape, str, DeviceInfo], str | None]


def _runs_everywhere(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    return None


def sdpa_impls(
    prepare: Callable[[str], Callable[[Inputs], Callable[[], torch.Tensor]]],
    scores: Callable[[Shape, str], float] = no_workspace,
    unsupported: Refusal = _runs_everywhere,
) -> tuple[Impl, ...]:
    """One implementation per backend, each prepared by `prepare(name)`, refusing the cases
    `unsupported` names. math and flash (PyTorch has a fused CPU kernel behind the flash
    backend) also run on the CPU; efficient and cuDNN need CUDA. The math backend materialises
    the `scores`."""

    def refusal(name: str) -> Refusal:
        def why(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
            if name in ("sdpa-efficient", "sdpa-cudnn") and device.kind != "cuda":
                return f"{name} needs a CUDA device"
            return unsupported(shape, dtype, device)

        return why

    return tuple(
        Impl(
            name,
            prepare(name),
            workspace=scores if name == "sdpa-math" else no_workspace,
            unsupported=refusal(name),
        )
        for name in BACKENDS
    )
