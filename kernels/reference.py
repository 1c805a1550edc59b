"""High-precision references every kernel is checked against.

They compute in float64 (float32 where float64 would not fit the test budget) with plain
PyTorch, on whatever device the inputs are on, and return float64 results.
"""

import torch


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C = A·B in float64. fp8 inputs are upcast exactly before the product."""
    return a.to(torch.float64) @ b.to(torch.float64)


def _attention_scores(
    q: torch.Tensor, k: torch.Tensor, causal: bool, sm_scale: float | None
) -> torch.Tensor:
    """Float64 scaled scores (B, H, Sq, Sk) with masked entries at -inf.

    GQA is handled by repeating each kv head for its group of query heads; the causal mask is
    aligned bottom-right: query i sees key j when j <= i + Sk - Sq.
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    k64 = k.to(torch.float64).repeat_interleave(heads // kv_heads, dim=1)
    scores = q.to(torch.float64) @ k64.transpose(-1, -2) * scale
    seq_q, seq_k = q.shape[2], k.shape[2]
    rows = torch.arange(seq_q, device=q.device)[:, None]
    cols = torch.arange(seq_k, device=q.device)[None, :]
    if causal:
        scores = scores.masked_fill(cols > rows + (seq_k - seq_q), float("-inf"))
    return scores


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v in float64, (B, H, Sq, D); q (B, H, Sq, D), k/v (B, KVH, Sk, D).

    Rows that see no key (causal with Sq > Sk) are zero.
    """
    scores = _attention_scores(q, k, causal, sm_scale)
    # softmax of an all -inf row is nan; such rows see no key and are defined as zero.
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
    v64 = v.to(torch.float64).repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    return probs @ v64


def attention_lse_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Natural-log log-sum-exp of the scaled, masked scores, float64 (B, H, Sq); -inf when a
    row sees no key."""
    scores = _attention_scores(q, k, causal, sm_scale)
    return torch.logsumexp(scores, dim=-1)


def decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    block_table: torch.Tensor | None = None,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """One query token per sequence over its KV cache, float64 (B, H, D).

    q is (B, H, D). Contiguous cache: k/v (B, max_len, KVH, D), sequence b uses rows
    [0, seq_lens[b]). Paged cache: k/v (num_blocks, page_size, KVH, D) and block_table
    (B, max_blocks), token t of sequence b at k[block_table[b, t // page_size], t % page_size].
    Sequences of length 0 give zeros.
    """
    batch, heads, head_dim = q.shape
    group = heads // k_cache.shape[2]
    scale = head_dim**-0.5 if sm_scale is None else sm_scale
    out = torch.zeros((batch, heads, head_dim), dtype=torch.float64, device=q.device)
    # Lengths and tables read to the host once, not an element (and a device sync) at a time.
    lengths = seq_lens.tolist()
    tables = None if block_table is None else block_table.tolist()
    for b in range(batch):
        length = lengths[b]
        if length == 0:
            continue
        if tables is None:
            keys, values = k_cache[b, :length], v_cache[b, :length]
        else:
            page = k_cache.shape[1]
            pages = tables[b][: (length + page - 1) // page]
            keys = torch.cat([k_cache[p] for p in pages])[:length]
            values = torch.cat([v_cache[p] for p in pages])[:length]
        # (L, KVH, D) -> (H, L, D) with each kv head repeated for its query-head group.
        keys = keys.to(torch.float64).permute(1, 0, 2).repeat_interleave(group, dim=0)
        values = values.to(torch.float64).permute(1, 0, 2).repeat_interleave(group, dim=0)
        scores = (keys @ q[b].to(torch.float64)[:, :, None]).squeeze(-1) * scale
        out[b] = (torch.softmax(scores, dim=-1)[:, None, :] @ values).squeeze(1)
    return out


def add_rmsnorm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual)·weight, x + residual) in float64, normalising over the last dim."""
    h = x.to(torch.float64) + residual.to(torch.float64)
    inv_rms = torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    return h * inv_rms * weight.to(torch.float64), h
