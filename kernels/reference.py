"""High-precision references every kernel is checked against.

They compute in float64 (float32 where float64 would not fit the test budget) with plain
PyTorch, on whatever device the inputs are on, and return float64 results.
"""

import torch


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C = A·B in float64. fp8 inputs are upcast exactly before the product."""
    return a.to(torch.float64) @ b.to(torch.float64)


def _attention_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    causal: bool,
    sm_scale: float | None,
    window: int | None = None,
) -> torch.Tensor:
    """Float64 scaled scores (B, H, Sq, Sk) with masked entries at -inf.

    GQA is handled by repeating each kv head for its group of query heads; the causal mask is
    aligned bottom-right: query i sees key j when j <= i + Sk - Sq. A window W also hides the
    keys j <= i + Sk - Sq - W (gpt-oss: j < i - W + 1 when Sq == Sk).
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
    if window is not None:
        scores = scores.masked_fill(cols <= rows + (seq_k - seq_q) - window, float("-inf"))
    return scores


def _with_sinks(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """Scores (..., H, Sq, Sk) with a last column holding head h's sink logit, unscaled (as
    gpt-oss's sdpa concatenates it), when sinks (H,) is given."""
    if sinks is None:
        return scores
    column = sinks.to(device=scores.device, dtype=torch.float64)[:, None, None]
    return torch.cat([scores, column.expand(*scores.shape[:-1], 1)], dim=-1)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v in float64, (B, H, Sq, D); q (B, H, Sq, D), k/v (B, KVH, Sk, D).

    window W: query i sees keys i + Sk - Sq - W < j (with causal, the W up to its own position).
    sinks (H,): head h's softmax also holds a key of score sinks[h] (not scaled) and no value.
    Rows that see no key (causal with Sq > Sk) are zero.
    """
    scores = _with_sinks(_attention_scores(q, k, causal, sm_scale, window), sinks)
    # softmax of an all -inf row is nan; such rows see no key and are defined as zero.
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
    if sinks is not None:
        probs = probs[..., :-1]
    v64 = v.to(torch.float64).repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    return probs @ v64


def attention_lse_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Natural-log log-sum-exp of the scaled, masked scores and the sink when given (the log of
    the softmax denominator), float64 (B, H, Sq); -inf when a row sees no key and no sink."""
    scores = _with_sinks(_attention_scores(q, k, causal, sm_scale, window), sinks)
    return torch.logsumexp(scores, dim=-1)


def decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    block_table: torch.Tensor | None = None,
    sm_scale: float | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """One query token per sequence over its KV cache, float64 (B, H, D).

    q is (B, H, D). Contiguous cache: k/v (B, max_len, KVH, D), sequence b uses rows
    [0, seq_lens[b]). Paged cache: k/v (num_blocks, page_size, KVH, D) and block_table
    (B, max_blocks), token t of sequence b at k[block_table[b, t // page_size], t % page_size].
    window W: only the last W tokens [len - W, len). sinks (H,): head h's softmax also holds a
    key of score sinks[h] (not scaled) and no value. k_scale/v_scale ((), (1,) or (KVH,)):
    cached keys/values are dequantised as cache.to(float64) * scale of their kv head (the cache
    may be float8). Sequences of length 0 give zeros.
    """
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    group = heads // kv_heads
    scale = head_dim**-0.5 if sm_scale is None else sm_scale

    def per_kv_head(t: torch.Tensor | None) -> torch.Tensor:
        if t is None:
            return torch.ones(kv_heads, dtype=torch.float64, device=q.device)
        return t.to(device=q.device, dtype=torch.float64).reshape(-1).expand(kv_heads)

    k_scales, v_scales = per_kv_head(k_scale), per_kv_head(v_scale)
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
            # Upcast page by page: torch cannot concatenate float8 tensors on every device.
            keys = torch.cat([k_cache[p].to(torch.float64) for p in pages])[:length]
            values = torch.cat([v_cache[p].to(torch.float64) for p in pages])[:length]
        first = 0 if window is None else max(0, length - window)
        keys = keys[first:].to(torch.float64) * k_scales[None, :, None]
        values = values[first:].to(torch.float64) * v_scales[None, :, None]
        # (L, KVH, D) -> (H, L, D) with each kv head repeated for its query-head group.
        keys = keys.permute(1, 0, 2).repeat_interleave(group, dim=0)
        values = values.permute(1, 0, 2).repeat_interleave(group, dim=0)
        scores = (keys @ q[b].to(torch.float64)[:, :, None]).squeeze(-1) * scale
        if sinks is not None:
            scores = torch.cat([scores, sinks.to(scores)[:, None]], dim=-1)
        probs = torch.softmax(scores, dim=-1)[:, : keys.shape[1]]
        out[b] = (probs[:, None, :] @ values).squeeze(1)
    return out


def add_rmsnorm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual)·weight, x + residual) in float64, normalising over the last dim."""
    h = x.to(torch.float64) + residual.to(torch.float64)
    inv_rms = torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    return h * inv_rms * weight.to(torch.float64), h


def fused_moe_ref(
    x: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    w_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The MoE expert MLP in float64, (T, H): out[t] = Σ_s topk_weights[t, s]·W2[e]·(SiLU(g)·u),
    e = topk_ids[t, s], (g, u) = W1[e]·x[t] with W1 = w_gate_up (E, 2I, H), gate rows first,
    and W2 = w_down (E, H, I). fp8 weights dequantise as W·scale, w_scales = (gate_up, down)
    scales of E elements (per expert) or 1 (per tensor).

    Each expert's weights are upcast once and applied to the (token, slot) pairs routed to it,
    gathered by a mask; nothing is rounded between the two products.
    """
    x64 = x.to(torch.float64)
    inter = w_gate_up.shape[1] // 2
    out = torch.zeros(x.shape, dtype=torch.float64, device=x.device)

    def expert_weight(w: torch.Tensor, which: int, e: int) -> torch.Tensor:
        w64 = w[e].to(torch.float64)
        if w_scales is None:
            return w64
        scale = w_scales[which].reshape(-1).to(torch.float64)
        return w64 * scale[e if scale.numel() > 1 else 0]

    for e in range(w_gate_up.shape[0]):
        token, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        if token.numel() == 0:
            continue
        gate_up = x64[token] @ expert_weight(w_gate_up, 0, e).T
        h = torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        y = h @ expert_weight(w_down, 1, e).T
        out.index_add_(0, token, y * topk_weights[token, slot].to(torch.float64)[:, None])
    return out


def rotary_ref(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half (neox) RoPE of q (T, Hq, D) and k (T, Hk, D) in float64.

    cos_sin_cache is (max_pos, D): row p holds cos(p·θ) in its first D/2 columns and sin(p·θ)
    in the rest; token t uses row positions[t]. Each head's halves x1, x2 become
    (x1·cos − x2·sin, x2·cos + x1·sin).
    """
    cos, sin = cos_sin_cache.to(torch.float64)[positions.long()].chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.to(torch.float64).chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    return rotate(q), rotate(k)


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate)·up in float64 for gate_up (T, 2I): gate the first I columns, up the last I."""
    gate, up = gate_up.to(torch.float64).chunk(2, dim=-1)
    return gate * torch.sigmoid(gate) * up


def write_kv_ref(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paged caches after writing k, v (T, KVH, D) into them, as new float64 tensors.

    Caches are (num_blocks, page_size, KVH, D); token t goes to block slot_mapping[t] //
    page_size, row slot_mapping[t] % page_size, and is skipped when slot_mapping[t] < 0. Every
    other cell keeps its old value. float8_e4m3fn caches get the value divided by the scale and
    saturated to ±448, not rounded to fp8 (that rounding is the kernel's error).
    """
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    page_size = k_cache.shape[1]

    def write(x: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        out = cache.to(torch.float64).clone()
        values = x[keep].to(torch.float64)
        if cache.dtype == torch.float8_e4m3fn:
            limit = torch.finfo(torch.float8_e4m3fn).max
            values = (values / scale.to(torch.float64)).clamp(-limit, limit)
        out[slots // page_size, slots % page_size] = values
        return out

    return write(k, k_cache, k_scale), write(v, v_cache, v_scale)
