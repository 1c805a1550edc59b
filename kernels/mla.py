"""Multi-head latent attention (MLA) decode over a paged latent cache, in Triton: how DeepSeek-V2,
V3, R1 and Kimi-K2 attend while decoding, as FlashMLA runs it.

MLA caches, per token, one latent vector ``c`` (``kv_lora_rank`` wide, 512 in DeepSeek-V3) and one
rotary key ``k_rope`` (``qk_rope_head_dim``, 64), shared by every head, instead of per-head keys
and values. Decode runs the absorbed form: the key up-projection is multiplied into each head's
non-rotary query beforehand (``q_latent = q_nope · W_UK``, ``kv_lora_rank`` wide), so that

    score[h, t] = (q_latent[h] · c[t] + q_rope[h] · k_rope[t]) · softmax_scale
    out[h]      = Σ_t softmax_t(score[h, t]) · c[t]            (kv_lora_rank wide)

and the model applies the value up-projection ``W_UV`` to ``out`` afterwards (a GEMM). It is
multi-query attention with keys of ``kv_lora_rank + rope`` and values of ``kv_lora_rank`` columns,
the values being the keys' first columns: every head reads the same cached rows.

Design (as kernels.decode, flash-decoding):

* One program per (sequence, block of heads, split): the block's heads are the rows of one
  ``tl.dot`` (at least 16), so each cached row is read once per block of heads, and the latent
  tile serves as both key and value.
* Each split covers a contiguous, whole-tile slice of the sequence with an online softmax; with
  several splits a second kernel (kernels.decode's merge) weighs them by their log-sum-exps.
* The pool is (num_blocks, page_size, kv_lora_rank + rope), latent first, with a block table
  (batch, max_blocks) int32 mapping logical page i of sequence b to a block.

Dtypes: float16, bfloat16 (GPU only: the CPU interpreter's bfloat16 dot is wrong) and float32
(TF32 dots on a GPU). Every tensor may have any strides. Validation reads ``seq_lens`` and the
block table on the host (device syncs); a caller that gives ``max_seq_len`` skips it.
"""

import math

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, on_device, strides
from kernels.autotune import autotune, bucket, config, fitting, meta
from kernels.checks import FLOAT_DTYPES, Checks
from kernels.decode import MAX_USER_SPLITS, _token_slots, choose_num_splits, merge_splits
from kernels.softmax import softmax_step

_LOG2E = math.log2(math.e)
# tl.dot's smallest tile side on NVIDIA GPUs: head blocks and the rotary width are padded to it.
_MIN_DOT = 16
# Heads per program: DeepSeek-V3's 128 heads in 8 programs a (sequence, split). A block of 16
# rows keeps the (heads × kv_lora_rank) fp32 accumulator at 64 values a thread with four warps
# at rank 512 (assumption: as kernels.decode's head groups).
_HEAD_BLOCK = 16

GPU_CONFIGS = [
    config(warps, stages, BLOCK_N=bn)
    for bn in (16, 32, 64)
    for warps in (4, 8)
    for stages in (1, 2, 3)
]
INTERPRETER_CONFIG = config(4, 1, BLOCK_N=16)


def _select(
    configs: list[triton.Config], latent_pad: int, rope_pad: int, elem: int, max_smem: int | None
) -> list[triton.Config]:
    """Configs whose cached tiles (every pipeline stage), the latent tile once more and the
    query tile fit the shared memory, eight warps only for a wide latent (assumption: from 512
    columns, as FlashMLA's). The latent tile is both dots' operand in two layouts: Triton
    converts it through shared memory, so that one stage of 64 fp32 rows needs 300,032 B on
    sm_90, not the 184,320 B of one tile and the queries (`tokbench kernels --target sm_90
    --op mla`, Triton 3.9)."""
    width = latent_pad + rope_pad

    def smem(c: triton.Config) -> int:
        block_n = meta(c, "BLOCK_N")
        tiles = c.num_stages * block_n * width + block_n * latent_pad + _HEAD_BLOCK * width
        return tiles * elem

    def fits(c: triton.Config) -> bool:
        return (c.num_warps == 8) == (latent_pad >= 512)

    return fitting(configs, smem, max_smem, fits)


def select(configs: list[triton.Config], args: dict, max_smem: int | None) -> list[triton.Config]:
    """The autotuner's pruning, read off the launch arguments."""
    elem = args["q_latent_ptr"].element_size()
    return _select(configs, args["LATENT_PAD"], args["ROPE_PAD"], elem, max_smem)


def tuning_configs(
    latent: int, rope: int, elem: int, max_smem: int = HOPPER_SMEM
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for a latent and rotary width: what
    sizes a GPU run before it starts, also from a machine without one."""
    return _select(GPU_CONFIGS, bucket(latent, _MIN_DOT), bucket(rope, _MIN_DOT), elem, max_smem)


@autotune(GPU_CONFIGS, INTERPRETER_CONFIG, key=["LATENT", "ROPE", "CHUNK_BUCKET"], select=select)
@triton.jit
def _mla_split_kernel(
    q_latent_ptr,
    q_rope_ptr,
    cache_ptr,
    table_ptr,
    lens_ptr,
    out_ptr,
    part_out_ptr,
    part_lse_ptr,
    stride_qlb,
    stride_qlh,
    stride_qld,
    stride_qrb,
    stride_qrh,
    stride_qrd,
    stride_cp,
    stride_cs,
    stride_cd,
    stride_tb,
    stride_ti,
    stride_lens,
    stride_ob,
    stride_oh,
    stride_od,
    num_heads,
    num_splits,
    qk_scale,
    CHUNK_BUCKET,
    LATENT: tl.constexpr,
    LATENT_PAD: tl.constexpr,
    ROPE: tl.constexpr,
    ROPE_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program: a block of heads of one sequence over one context split.

    Args:
        q_latent_ptr: Absorbed queries, (batch, heads, LATENT).
        q_rope_ptr: Rotary queries, (batch, heads, ROPE).
        cache_ptr: Latent pool, (num_blocks, PAGE_SIZE, LATENT + ROPE): each token's latent,
            then its rotary key.
        table_ptr: Block table, (batch, max_blocks) int32.
        lens_ptr: Sequence lengths, (batch,) int32.
        out_ptr: Output, (batch, heads, LATENT); written only without splits.
        part_out_ptr: Normalised partial outputs, contiguous (batch, heads, num_splits, LATENT)
            float32; None without splits.
        part_lse_ptr: Base-2 log-sum-exp of each split, contiguous (batch, heads, num_splits)
            float32, -inf for an empty split; None without splits.
        stride_qlb: Latent query batch stride.
        stride_qlh: Latent query head stride.
        stride_qld: Latent query column stride.
        stride_qrb: Rotary query batch stride.
        stride_qrh: Rotary query head stride.
        stride_qrd: Rotary query column stride.
        stride_cp: Pool stride between blocks.
        stride_cs: Pool stride between the tokens of a block.
        stride_cd: Pool column stride.
        stride_tb: Block-table stride between sequences.
        stride_ti: Block-table stride between logical pages.
        stride_lens: Stride between sequence lengths.
        stride_ob: Output batch stride.
        stride_oh: Output head stride.
        stride_od: Output column stride.
        num_heads: Query heads.
        num_splits: Context splits per sequence (the grid's second axis).
        qk_scale: Softmax scale times log2(e).
        CHUNK_BUCKET: Power-of-two bucket of the longest split; only an autotuning key.
        LATENT: Latent width (kv_lora_rank).
        LATENT_PAD: LATENT rounded up to a power of two of at least 16.
        ROPE: Rotary width (qk_rope_head_dim).
        ROPE_PAD: ROPE rounded up to a power of two of at least 16.
        BLOCK_H: Heads per program, a power of two of at least 16.
        PAGE_SIZE: Tokens per block.
        BLOCK_N: Tokens per tile.
    """
    heads_per_seq = tl.cdiv(num_heads, BLOCK_H)
    pid = tl.program_id(0)
    split = tl.program_id(1)
    batch = pid // heads_per_seq
    heads = (pid % heads_per_seq) * BLOCK_H + tl.arange(0, BLOCK_H)
    head_ok = heads < num_heads

    seq_len = tl.load(lens_ptr + batch.to(tl.int64) * stride_lens)
    # Slices are rounded up to whole tiles so only a slice's last tile needs its mask.
    chunk = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, seq_len)

    lat = tl.arange(0, LATENT_PAD)
    lat_ok = lat < LATENT
    rope = tl.arange(0, ROPE_PAD)
    rope_ok = rope < ROPE
    b64 = batch.to(tl.int64)
    q_lat = tl.load(
        q_latent_ptr + b64 * stride_qlb + heads[:, None] * stride_qlh + lat[None, :] * stride_qld,
        mask=head_ok[:, None] & lat_ok[None, :],
        other=0.0,
    )
    q_rope = tl.load(
        q_rope_ptr + b64 * stride_qrb + heads[:, None] * stride_qrh + rope[None, :] * stride_qrd,
        mask=head_ok[:, None] & rope_ok[None, :],
        other=0.0,
    )
    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, LATENT_PAD], dtype=tl.float32)
    for start_n in tl.range(start, end, BLOCK_N):
        toks = start_n + tl.arange(0, BLOCK_N)
        valid = toks < end
        block, slot = _token_slots(table_ptr, batch, toks, valid, stride_tb, stride_ti, PAGE_SIZE)
        rows = cache_ptr + block * stride_cp + slot * stride_cs
        c = tl.load(
            rows[:, None] + lat[None, :] * stride_cd, mask=valid[:, None] & lat_ok[None, :],
            other=0.0,
        )  # fmt: skip
        k_rope = tl.load(
            rows[:, None] + (LATENT + rope[None, :]) * stride_cd,
            mask=valid[:, None] & rope_ok[None, :], other=0.0,
        )  # fmt: skip
        s = tl.dot(q_lat, tl.trans(c))
        s = tl.dot(q_rope, tl.trans(k_rope), s) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        # Every tile holds at least one valid token, so the new maximum is finite: no guard.
        p, alpha, m_i, l_i = softmax_step(s, m_i, l_i, False)
        # The latent is the value too: one tile read serves both dots.
        acc = tl.dot(p.to(c.dtype), c, acc * alpha[:, None])

    # An empty split or sequence has l = 0: its output is zero and its weight in the merge 0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if part_out_ptr is not None:
        part = (batch * num_heads + heads).to(tl.int64) * num_splits + split
        tl.store(
            part_out_ptr + part[:, None] * LATENT + lat[None, :], out,
            mask=head_ok[:, None] & lat_ok[None, :],
        )  # fmt: skip
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
        tl.store(part_lse_ptr + part, lse, mask=head_ok)
    else:
        o_ptrs = out_ptr + b64 * stride_ob + heads[:, None] * stride_oh + lat[None, :] * stride_od
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=head_ok[:, None] & lat_ok[None, :])


_CHECK = Checks("mla_decode")


def _validate(
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
) -> None:
    c = _CHECK
    c.tensors(q_latent=q_latent, q_rope=q_rope, cache=cache, seq_lens=seq_lens,
              block_table=block_table)  # fmt: skip
    c.rank("q_latent", q_latent, "(batch, heads, kv_lora_rank)")
    c.rank("q_rope", q_rope, "(batch, heads, rope_dim)")
    c.rank("cache", cache, "(num_blocks, page_size, kv_lora_rank + rope_dim)")
    c.rank("seq_lens", seq_lens, "(batch,)")
    c.rank("block_table", block_table, "(batch, max_blocks)")
    c.dtype("q_latent", q_latent, FLOAT_DTYPES)
    c.same_dtype(q_latent=q_latent, q_rope=q_rope, cache=cache)
    c.dtype("seq_lens", seq_lens, (torch.int32,))
    c.dtype("block_table", block_table, (torch.int32,))
    c.device(q_latent=q_latent, q_rope=q_rope, cache=cache, seq_lens=seq_lens,
             block_table=block_table)  # fmt: skip
    c.dots(q_latent.dtype)
    batch, heads, latent = q_latent.shape
    if q_rope.shape[:2] != (batch, heads):
        c.fail(f"q_rope must be (batch, heads, rope_dim) = ({batch}, {heads}, ·), got "
               f"{tuple(q_rope.shape)}")  # fmt: skip
    if latent < 1 or q_rope.shape[2] < 1 or cache.shape[2] != latent + q_rope.shape[2]:
        c.fail(
            f"cache rows must hold kv_lora_rank + rope_dim = {latent} + {q_rope.shape[2]} "
            f"columns, both at least 1; got {cache.shape[2]}"
        )
    if cache.shape[1] == 0:
        c.fail("page_size (the cache's dim 1) must be >= 1, got 0")
    if seq_lens.shape[0] != batch or block_table.shape[0] != batch:
        c.fail(
            f"seq_lens and block_table must have one row per sequence ({batch}), got "
            f"{seq_lens.shape[0]} and {block_table.shape[0]}"
        )


def _check_lengths(cache: torch.Tensor, seq_lens: torch.Tensor, table: torch.Tensor) -> int:
    """The longest sequence, after checking every length fits its pages and every page it uses
    names a block of the pool (one device sync)."""
    page, capacity = cache.shape[1], table.shape[1] * cache.shape[1]
    lens = seq_lens.tolist()
    if any(not 0 <= n <= capacity for n in lens):
        _CHECK.fail(f"seq_lens must be within 0..{capacity} (block_table pages × page_size)")
    pages = torch.arange(table.shape[1], device=table.device)[None, :]
    used = pages * page < seq_lens[:, None].to(pages.dtype)
    bad = used & ((table < 0) | (table >= cache.shape[0]))
    if bool(bad.any()):
        _CHECK.fail(f"block_table entries a sequence uses must be within 0..{cache.shape[0] - 1}")
    return max(lens, default=0)


def mla_decode(
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    *,
    softmax_scale: float,
    num_splits: int | None = None,
    max_seq_len: int | None = None,
) -> torch.Tensor:
    """Absorbed MLA attention of one query token per sequence over its paged latent cache.

    Args:
        q_latent: (batch, heads, kv_lora_rank): each head's non-rotary query times W_UK.
        q_rope: (batch, heads, rope_dim): each head's rotary query.
        cache: (num_blocks, page_size, kv_lora_rank + rope_dim): every token's latent then its
            rotary key, the queries' dtype.
        seq_lens: (batch,) int32 tokens cached for each sequence (its new one included), from 0
            to its pages' capacity; a zero-length sequence outputs zeros.
        block_table: (batch, max_blocks) int32: token t of sequence b lives at
            cache[block_table[b, t // page_size], t % page_size].
        softmax_scale: The model's score scale (DeepSeek-V3: 1/sqrt(qk_nope + qk_rope) times
            its YaRN factor), applied to both parts of the score.
        num_splits: Context splits per sequence (1..128); chosen from the SM count and the
            longest sequence when None (one under the CPU interpreter).
        max_seq_len: The longest seq_lens entry when the caller knows it: skips the host checks
            of seq_lens and the block table (device syncs), as decode_attention's does.

    Returns:
        A new contiguous (batch, heads, kv_lora_rank) tensor in q_latent's dtype.
    """
    _validate(q_latent, q_rope, cache, seq_lens, block_table)
    if num_splits is not None:  # as an int: a NumPy scalar would reach the kernel as one
        num_splits = _CHECK.count("num_splits", num_splits, 1, MAX_USER_SPLITS)
    softmax_scale = _CHECK.number("softmax_scale", softmax_scale)
    if max_seq_len is None:
        longest = _check_lengths(cache, seq_lens, block_table)
    else:
        capacity = block_table.shape[1] * cache.shape[1]
        longest = _CHECK.count("max_seq_len", max_seq_len, 0, capacity, " (pages × page_size)")
    batch, heads, latent = q_latent.shape
    out = torch.empty((batch, heads, latent), dtype=q_latent.dtype, device=q_latent.device)
    if out.numel() == 0:
        return out
    if num_splits is None:
        sm_count = 1 if q_latent.device.type != "cuda" else _sm_count(q_latent.device.index or 0)
        # Every head reads the one latent cache: a sequence's head blocks stand in for the
        # kv heads of decode attention's rule.
        num_splits = choose_num_splits(batch, triton.cdiv(heads, _HEAD_BLOCK), longest, sm_count)
    with on_device(q_latent):
        _launch(q_latent, q_rope, cache, seq_lens, block_table, out, softmax_scale=softmax_scale,
                num_splits=num_splits, longest=longest)  # fmt: skip
    return out


def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _launch(
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    out: torch.Tensor,
    *,
    softmax_scale: float,
    num_splits: int,
    longest: int,
) -> None:
    """The split kernel into `out` and, with several splits, decode's merge kernel."""
    batch, heads, latent = q_latent.shape
    part_out = part_lse = None
    if num_splits > 1:
        part_out = torch.empty((batch, heads, num_splits, latent), dtype=torch.float32,
                               device=out.device)  # fmt: skip
        part_lse = torch.empty((batch, heads, num_splits), dtype=torch.float32, device=out.device)
    latent_pad, rope_pad = bucket(latent, _MIN_DOT), bucket(q_rope.shape[2], _MIN_DOT)
    grid = (batch * triton.cdiv(heads, _HEAD_BLOCK), num_splits)
    _mla_split_kernel[grid](
        q_latent_ptr=q_latent,
        q_rope_ptr=q_rope,
        cache_ptr=cache,
        table_ptr=block_table,
        lens_ptr=seq_lens,
        out_ptr=out,
        part_out_ptr=part_out,
        part_lse_ptr=part_lse,
        **strides(q_latent, "stride_qlb", "stride_qlh", "stride_qld"),
        **strides(q_rope, "stride_qrb", "stride_qrh", "stride_qrd"),
        **strides(cache, "stride_cp", "stride_cs", "stride_cd"),
        **strides(block_table, "stride_tb", "stride_ti"),
        stride_lens=seq_lens.stride(0),
        **strides(out, "stride_ob", "stride_oh", "stride_od"),
        num_heads=heads,
        num_splits=num_splits,
        qk_scale=softmax_scale * _LOG2E,
        CHUNK_BUCKET=bucket(triton.cdiv(max(longest, 1), num_splits)),
        LATENT=latent,
        LATENT_PAD=latent_pad,
        ROPE=q_rope.shape[2],
        ROPE_PAD=rope_pad,
        BLOCK_H=_HEAD_BLOCK,
        PAGE_SIZE=cache.shape[1],
    )
    if part_out is not None:
        merge_splits(part_out, part_lse, out, head_pad=latent_pad)


def mla_decode_torch(
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    *,
    softmax_scale: float,
) -> torch.Tensor:
    """The same in plain PyTorch, as an eager engine would: every sequence's pages gathered
    through the block table (whose every entry, used or not, must name a block) into a padded
    (batch, pages · page_size, width) tensor, the scores as
    two batched products, the tokens past each sequence's length masked, a float32 softmax and
    one more batched product."""
    latent = q_latent.shape[2]
    rows = cache[block_table.long()].flatten(1, 2)  # (batch, tokens, latent + rope)
    scores = torch.baddbmm(
        q_rope.float() @ rows[..., latent:].float().transpose(1, 2),
        q_latent.float(),
        rows[..., :latent].float().transpose(1, 2),
    )
    past = torch.arange(rows.shape[1], device=rows.device)[None, :] >= seq_lens[:, None]
    scores = scores.masked_fill(past[:, None, :], float("-inf")) * softmax_scale
    weights = torch.softmax(scores, dim=-1).nan_to_num()  # an empty sequence: all zeros
    return (weights @ rows[..., :latent].float()).to(q_latent.dtype)


def mla_decode_ref(
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    *,
    softmax_scale: float,
) -> torch.Tensor:
    """The float64 reference: for each sequence and head, every cached token looked up through
    the block table one by one, scores and softmax in float64."""
    batch, heads, latent = q_latent.shape
    page = cache.shape[1]
    out = torch.zeros((batch, heads, latent), dtype=torch.float64)
    for b in range(batch):
        n = int(seq_lens[b])
        if n == 0:
            continue
        rows = torch.stack(
            [cache[int(block_table[b, t // page]), t % page].double().cpu() for t in range(n)]
        )
        keys = rows  # (n, latent + rope): a query row is [q_latent, q_rope]
        queries = torch.cat([q_latent[b].double().cpu(), q_rope[b].double().cpu()], dim=-1)
        weights = torch.softmax(queries @ keys.T * softmax_scale, dim=-1)
        out[b] = weights @ rows[:, :latent]
    return out
