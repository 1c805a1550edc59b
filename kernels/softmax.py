"""The online-softmax steps the attention kernels share, and the check of their sinks."""

import math

import torch
import triton
import triton.language as tl

from kernels.checks import Checks

# Sink logits are natural-log scores (gpt-oss); the kernels' scores are base 2.
SINK_LOG2E: tl.constexpr = tl.constexpr(math.log2(math.e))


@triton.jit
def softmax_step(s, m_i, l_i, MASKED: tl.constexpr):
    """
    Fold one tile of keys into a running softmax (the flash-attention recurrence, base 2).

    Args:
        s: Base-2 scores of the tile, (rows, keys) float32; masked keys at -inf.
        m_i: Running row maximum so far, (rows,) float32.
        l_i: Running row sum of exp2(score - m_i), (rows,) float32.
        MASKED: A row may have seen no visible key yet (m = -inf): shift it by 0 instead, so
            that exp2 does not make -inf - -inf = nan and its p, alpha and l stay 0.

    Returns:
        p (the tile's unnormalised weights), alpha (the factor that rescales what was summed
        before), and the new m_i and l_i.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new) if MASKED else m_new
    p = tl.math.exp2(s - shift[:, None])
    alpha = tl.math.exp2(m_i - shift)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def fold_sink(acc, m_i, l_i, sink):
    """
    Fold an attention sink into a running softmax: one more key, of base-2 score `sink`, with
    no value, so it rescales acc and l like any key and adds its exp2 to l (gpt-oss's sinks).

    A -inf sink adds nothing; shifting by 0 then keeps a row that saw no key either at
    m = -inf, l = 0 instead of nan.

    Args:
        acc: Unnormalised output accumulator, (rows, head_dim) float32.
        m_i: Running row maximum of the base-2 scores, (rows,) float32.
        l_i: Running row sum of exp2(score - m_i), (rows,) float32.
        sink: The sink's base-2 score per row, (rows,) or a scalar, float32.

    Returns:
        acc, m_i and l_i with the sink folded in.
    """
    m_new = tl.maximum(m_i, sink)
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - shift)
    l_i = l_i * alpha + tl.math.exp2(sink - shift)
    return acc * alpha[:, None], m_new, l_i


def check_sinks(check: Checks, sinks: object, heads: int, device: torch.device) -> None:
    """An attention's sinks: one float32 logit per query head, on the queries' device, any
    stride."""
    check.tensors(sinks=sinks)
    if sinks.shape != (heads,) or sinks.dtype != torch.float32:
        check.fail(
            f"sinks must be a float32 tensor of shape ({heads},) (one logit per query head), "
            f"got {sinks.dtype} of shape {tuple(sinks.shape)}"
        )
    if sinks.device != device:
        check.fail(f"sinks is on {sinks.device} but q is on {device}; all must share one device")
