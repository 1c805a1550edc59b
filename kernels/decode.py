"""Decode attention: one new query token per sequence over its KV cache, in Triton.

``decode_attention`` reads either a contiguous cache, k/v (batch, max_len, kv_heads, head_dim),
or a paged cache as in vLLM/FlashInfer, k/v (num_blocks, page_size, kv_heads, head_dim) plus a
block table (batch, max_blocks) int32 that maps logical page i of sequence b to a physical block
of the shared pool.

Design (flash-decoding):

* One program per (sequence, kv head, split). The query heads of that kv head's group are
  computed together as the rows of one ``tl.dot``, padded to at least 16 rows, so each key and
  value tile is read once per group instead of once per query head.
* Each split covers a contiguous slice of the sequence (the sequence divided into
  ``num_splits`` slices rounded up to whole tiles) and keeps an online softmax over it. With one
  split the program writes the final output directly; with several it writes a normalised
  partial output and its base-2 log-sum-exp, and a second kernel merges the splits by
  log-sum-exp weights.
* ``choose_num_splits`` picks the split count from the SM count and the context length.
* There is no Hopper-specific (TMA) path: paged tiles are gathered token by token through the
  block table, which plain TMA tile loads cannot express.

Dtypes: float16, bfloat16 (GPU only; the CPU interpreter's bfloat16 dot is wrong, so it is
rejected there) and float32 (TF32 dots on a GPU). Any head_dim from 1 to 256: tiles are padded
to a power of two.

Serving options (gpt-oss, fp8 KV caches):

* Sliding window ``window=W``: the query, at position seq_len - 1, sees its last W cached
  tokens [seq_len - W, seq_len), itself included (FlashAttention's ``window_size=(W - 1, 0)``,
  gpt-oss's ``sliding_window=W``). The splits divide the window, not the sequence: the tokens
  before it are never read, so a call reads min(seq_len, W) tokens per sequence. The split
  count is chosen for the window's length too.
* Attention sinks ``sinks`` (one float32 logit per query head, natural log, not multiplied by
  sm_scale, as gpt-oss's reference): ``exp(sink_h)`` joins head h's softmax denominator as a key
  with no value. It is folded in once per head: in the merge kernel with several splits (each
  split's partial output and log-sum-exp leave it out), in the split kernel with one.
* float8_e4m3fn caches with a float16/bfloat16 query and output, and dequantisation scales
  ``k_scale``/``v_scale`` (fp32, per tensor or per kv head; also allowed on 16-bit caches). The
  kernel loads one byte per cached element, converts the tile exactly to the query's dtype (every
  e4m3 value is a float16 and a bfloat16) and leaves the scales out of the tiles: the key scale
  is folded into the score scale that multiplies every score anyway (one multiply per program
  instead of one per cached key element), and the value scale into the output after the
  normalisation (one multiply per output element instead of one per cached value element).
  Folding also keeps large scales from overflowing float16 tiles. Scores, softmax state and the
  accumulator stay float32.

Validation reads ``seq_lens`` (and the block table) and the scales' values on the host, which
costs device synchronisations and so cannot run inside CUDA-graph capture; a caller that gives
``max_seq_len`` skips it. Every tensor may have any strides.

The module also holds plain-PyTorch helpers for baselines and tests: ``gather_paged_kv`` and
``make_paged_cache``.
"""

import functools
import math

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, MAX_HEAD_DIM, on_device, strides
from kernels.autotune import autotune, bucket, config, fitting, meta
from kernels.checks import FLOAT_DTYPES, FP8_DTYPE, Checks
from kernels.softmax import SINK_LOG2E, check_sinks, fold_sink, softmax_step

DEFAULT_PAGE_SIZE = 16
# A split below this many tokens costs more in merge traffic than it gains in parallelism.
MIN_TOKENS_PER_SPLIT = 256
MAX_SPLITS = 32
# A caller's own split count: the merge kernel reads every split's log-sum-exp in one block, and
# each power of two of splits compiles a merge kernel of its own.
MAX_USER_SPLITS = 128
FP8_CACHE_DTYPE = FP8_DTYPE

_LOG2E = math.log2(math.e)
# The window passed to the split kernel when there is none: no sequence is that long.
_NO_WINDOW = 2**31 - 1
# tl.dot's smallest tile side on NVIDIA GPUs: small query-head groups and head dims are padded
# up to it.
_MIN_DOT = 16
# Eight warps only pay off once the (query-head rows × head_dim) fp32 accumulator is large: from
# 8,192 elements, 64 a thread with four warps. An assumption, not measured.
_EIGHT_WARPS_FROM = 64 * 128
# An fp8 key or value tile is converted to the query's dtype in registers: 256 elements a thread
# (BLOCK_N × head_dim over the block) spilled on sm_90, 128 did not (bench.measure.aot). Wider
# tiles take eight warps.
_FP8_TILE_PER_THREAD = 128
# Splits the merge kernel weighs at once: 16 × a 256-wide head is 32 fp32 a thread with four
# warps; all 128 at once spilled (bench.measure.aot).
_MERGE_SPLITS = 16


def choose_num_splits(batch: int, kv_heads: int, max_len: int, sm_count: int) -> int:
    """Number of KV splits per (sequence, kv head).

    Rule: with ``batch * kv_heads`` programs already filling every SM once, splitting only adds
    a merge, so 1. Otherwise aim at two programs per SM, ``ceil(2 * sm_count / (batch *
    kv_heads))``, but give every split at least ``MIN_TOKENS_PER_SPLIT`` tokens of the longest
    sequence and never use more than ``MAX_SPLITS``. The result is at least 1.
    """
    programs = batch * kv_heads
    if programs >= sm_count:
        return 1
    wanted = triton.cdiv(2 * sm_count, max(programs, 1))
    return max(1, min(wanted, max_len // MIN_TOKENS_PER_SPLIT, MAX_SPLITS))


GPU_CONFIGS = [
    config(warps, stages, BLOCK_N=bn)
    for bn in (32, 64, 128)
    for warps in (4, 8)
    for stages in (2, 3, 4)
]
INTERPRETER_CONFIG = config(4, 1, BLOCK_N=32)


def _select(
    configs: list[triton.Config],
    chunk: int,
    head_pad: int,
    block_h: int,
    q_elem: int,
    kv_elem: int,
    max_smem: int | None,
) -> list[triton.Config]:
    """Drop tiles longer than a split, configs over the shared-memory limit, warp counts that do
    not match the accumulator's size and fp8 tiles too wide to convert in registers (head_pad:
    the padded head dim)."""
    eight_warps = block_h * head_pad >= _EIGHT_WARPS_FROM
    fp8 = kv_elem < q_elem

    def smem(c: triton.Config) -> int:
        # Key and value tiles for every pipeline stage plus the query tile.
        return (2 * c.num_stages * meta(c, "BLOCK_N") * kv_elem + block_h * q_elem) * head_pad

    def fits(c: triton.Config) -> bool:
        bn, warps = meta(c, "BLOCK_N"), c.num_warps
        if bn > max(32, chunk):
            return False
        if fp8 and bn * head_pad > _FP8_TILE_PER_THREAD * 32 * warps:
            return False
        return (warps == 8) == eight_warps or (fp8 and warps == 8)

    return fitting(configs, smem, max_smem, fits)


def select(configs: list[triton.Config], args: dict, max_smem: int | None) -> list[triton.Config]:
    """The autotuner's pruning: read the problem off the launch arguments (a float8 cache's
    tiles take one byte an element)."""
    elems = args["q_ptr"].element_size(), args["k_ptr"].element_size()
    problem = args["CHUNK_BUCKET"], args["HEAD_PAD"], args["BLOCK_H"]
    return _select(configs, *problem, *elems, max_smem)


def tuning_configs(
    batch: int,
    kv_heads: int,
    group: int,
    span: int,
    head_dim: int,
    q_bytes: int,
    kv_bytes: int,
    sm_count: int,
    max_smem: int = HOPPER_SMEM,
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for a decode step over ``span`` cached
    tokens on a device of ``sm_count`` SMs: what sizes a GPU run before it starts, also from a
    machine without one."""
    splits = choose_num_splits(batch, kv_heads, span, sm_count)
    problem = _chunk_bucket(span, splits), _head_pad(head_dim), _block_h(group)
    return _select(GPU_CONFIGS, *problem, q_bytes, kv_bytes, max_smem)


def _chunk_bucket(span: int, num_splits: int) -> int:
    """The power-of-two bucket of the tokens one split reads."""
    return bucket(triton.cdiv(span, num_splits))


def _head_pad(head_dim: int) -> int:
    """The head dim padded to a tl.dot tile."""
    return bucket(head_dim, _MIN_DOT)


def _block_h(group: int) -> int:
    """The query heads of one kv head, padded to a tl.dot tile."""
    return bucket(group, _MIN_DOT)


@triton.jit
def _token_slots(table_ptr, batch, toks, valid, stride_tb, stride_ti, PAGE_SIZE: tl.constexpr):
    """Where tokens ``toks`` of one sequence live: (block or sequence index, slot within it).

    Args:
        table_ptr: Block table, (batch, max_blocks); None for a contiguous cache.
        batch: Sequence index.
        toks: Logical token positions, (BLOCK_N,).
        valid: Which toks lie inside the sequence; the block-table load is masked to them, so
            table entries past the sequence's last page are never read.
        stride_tb: Block-table stride between sequences.
        stride_ti: Block-table stride between logical pages.
        PAGE_SIZE: Tokens per physical block.
    """
    if table_ptr is not None:
        row = table_ptr + batch.to(tl.int64) * stride_tb
        block = tl.load(row + (toks // PAGE_SIZE) * stride_ti, mask=valid, other=0)
        slot = toks % PAGE_SIZE
    else:
        block = batch
        slot = toks
    return block.to(tl.int64), slot.to(tl.int64)


# The autotuner adds the tensors' dtypes to the key, so paged, split or scaled launches (None
# or not) tune apart, though launches that differ only in which one option they give may share
# a tuned config.
@autotune(
    GPU_CONFIGS, INTERPRETER_CONFIG, key=["HEAD_DIM", "BLOCK_H", "CHUNK_BUCKET"], select=select
)
@triton.jit
def _decode_split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    table_ptr,
    lens_ptr,
    out_ptr,
    part_out_ptr,
    part_lse_ptr,
    sinks_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_qb,
    stride_qh,
    stride_qd,
    stride_kp,
    stride_ks,
    stride_kh,
    stride_kd,
    stride_vp,
    stride_vs,
    stride_vh,
    stride_vd,
    stride_tb,
    stride_ti,
    stride_lens,
    stride_ob,
    stride_oh,
    stride_od,
    stride_sinks,
    stride_k_scale,
    stride_v_scale,
    num_kv_heads,
    group_size,
    num_splits,
    window,
    qk_scale,
    CHUNK_BUCKET,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program: the query-head group of one (sequence, kv head) over one context split.

    Args:
        q_ptr: Queries, (batch, heads, HEAD_DIM).
        k_ptr: Key cache, (num_blocks, PAGE_SIZE, kv_heads, HEAD_DIM) when paged, else
            (batch, max_len, kv_heads, HEAD_DIM); the queries' dtype or float8_e4m3fn.
        v_ptr: Value cache, same layout and dtype as the keys.
        table_ptr: Block table, (batch, max_blocks) int32; None for a contiguous cache.
        lens_ptr: Sequence lengths, (batch,) int32.
        out_ptr: Output, (batch, heads, HEAD_DIM); written only without splits.
        part_out_ptr: Normalised partial outputs, contiguous (batch, heads, num_splits,
            HEAD_DIM) float32; None without splits (one split writes out_ptr itself).
        part_lse_ptr: Base-2 log-sum-exp of each split, contiguous (batch, heads, num_splits)
            float32, -inf for an empty split; None without splits.
        sinks_ptr: Sink logits, (heads,) float32, natural log; None for no sinks, and with
            splits, whose merge kernel folds them in.
        k_scale_ptr: Key dequantisation scale(s), float32; None for none.
        v_scale_ptr: Value dequantisation scale(s), float32; None for none.
        stride_qb: Query batch stride.
        stride_qh: Query head stride.
        stride_qd: Query head_dim stride.
        stride_kp: Key stride between physical blocks (paged) or sequences (contiguous).
        stride_ks: Key stride between tokens of one block or sequence.
        stride_kh: Key kv-head stride.
        stride_kd: Key head_dim stride.
        stride_vp: Value stride between physical blocks or sequences.
        stride_vs: Value stride between tokens.
        stride_vh: Value kv-head stride.
        stride_vd: Value head_dim stride.
        stride_tb: Block-table stride between sequences.
        stride_ti: Block-table stride between logical pages.
        stride_lens: Stride between sequence lengths.
        stride_ob: Output batch stride.
        stride_oh: Output head stride.
        stride_od: Output head_dim stride.
        stride_sinks: Stride between the sinks of consecutive heads.
        stride_k_scale: Stride of k_scale between kv heads: 0 for one scale per tensor.
        stride_v_scale: Stride of v_scale between kv heads: 0 for one scale per tensor.
        num_kv_heads: KV heads.
        group_size: Query heads per kv head; query head h reads kv head h // group_size.
        num_splits: Context splits per sequence (the grid's second axis).
        window: Sliding-window length: the query sees the tokens [seq_len - window, seq_len);
            2^31 - 1 for no window.
        qk_scale: Softmax scale times log2(e).
        CHUNK_BUCKET: Power-of-two bucket of the longest split; only an autotuning key.
        HEAD_DIM: Head dimension, 1 to 256.
        HEAD_PAD: HEAD_DIM rounded up to a power of two of at least 16: the tiles' width, whose
            extra columns are zeros that add nothing to the dots.
        BLOCK_H: group_size padded to a power of two of at least 16 rows for tl.dot.
        PAGE_SIZE: Tokens per physical block (paged only).
        BLOCK_N: Tokens per tile.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    batch = pid // num_kv_heads
    kv_head = pid % num_kv_heads

    seq_len = tl.load(lens_ptr + batch.to(tl.int64) * stride_lens)
    # The splits cover the window [first, seq_len) only: older tokens are never read.
    first = tl.maximum(seq_len - window, 0)
    # Slices are rounded up to whole tiles so only a slice's last tile needs its mask.
    chunk = tl.cdiv(tl.cdiv(seq_len - first, num_splits), BLOCK_N) * BLOCK_N
    start = first + split * chunk
    end = tl.minimum(start + chunk, seq_len)
    if k_scale_ptr is not None:
        # Dequantising the keys, (q·k)·scale, folded into the score scale.
        qk_scale = qk_scale * tl.load(k_scale_ptr + kv_head * stride_k_scale)

    rows = tl.arange(0, BLOCK_H)
    heads = kv_head * group_size + rows
    row_ok = rows < group_size
    offs_d = tl.arange(0, HEAD_PAD)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = (
        q_ptr
        + batch.to(tl.int64) * stride_qb
        + heads[:, None] * stride_qh
        + offs_d[None, :] * stride_qd
    )
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    k_head = k_ptr + kv_head.to(tl.int64) * stride_kh
    v_head = v_ptr + kv_head.to(tl.int64) * stride_vh
    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_PAD], dtype=tl.float32)
    for start_n in tl.range(start, end, BLOCK_N):
        toks = start_n + tl.arange(0, BLOCK_N)
        valid = toks < end
        block, slot = _token_slots(table_ptr, batch, toks, valid, stride_tb, stride_ti, PAGE_SIZE)
        k_rows = k_head + block * stride_kp + slot * stride_ks
        v_rows = v_head + block * stride_vp + slot * stride_vs
        inside = valid[:, None] & d_ok[None, :]
        k = tl.load(k_rows[:, None] + offs_d[None, :] * stride_kd, mask=inside, other=0.0)
        v = tl.load(v_rows[:, None] + offs_d[None, :] * stride_vd, mask=inside, other=0.0)
        # No-ops unless the cache is float8, whose values the query's dtype holds exactly.
        k = k.to(q.dtype)
        v = v.to(q.dtype)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        # Every tile holds at least one valid token, so the new maximum is finite: no guard.
        p, alpha, m_i, l_i = softmax_step(s, m_i, l_i, False)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])

    if sinks_ptr is not None:
        # Only without splits (see _decode_merge_kernel): the sink as one more key of score
        # sink·log2(e) and no value.
        sink = tl.load(sinks_ptr + heads * stride_sinks, mask=row_ok, other=float("-inf"))
        acc, m_i, l_i = fold_sink(acc, m_i, l_i, sink * SINK_LOG2E)
    # An empty split or sequence has l = 0: its output is zero and its weight in the merge 0.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if v_scale_ptr is not None:
        # Dequantising the values: sum_j p_j·(v_j·scale) = (sum_j p_j·v_j)·scale, once per
        # output element instead of once per cached element.
        out = out * tl.load(v_scale_ptr + kv_head * stride_v_scale)
    if part_out_ptr is not None:
        part = (batch * num_kv_heads * group_size + heads).to(tl.int64) * num_splits + split
        part_ptrs = part_out_ptr + part[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(part_ptrs, out, mask=row_ok[:, None] & d_ok[None, :])
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
        tl.store(part_lse_ptr + part, lse, mask=row_ok)
    else:
        o_ptrs = (
            out_ptr
            + batch.to(tl.int64) * stride_ob
            + heads[:, None] * stride_oh
            + offs_d[None, :] * stride_od
        )
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _decode_merge_kernel(
    part_out_ptr,
    part_lse_ptr,
    sinks_ptr,
    out_ptr,
    stride_sinks,
    stride_ob,
    stride_oh,
    stride_od,
    num_heads,
    num_splits,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_S: tl.constexpr,
    MERGE_SPLITS: tl.constexpr,
):
    """One program: combine the split partials of one (sequence, head).

    The splits' partial outputs and log-sum-exps leave the sink out; with sinks it joins the
    merged denominator here, once per head, as one more weight with a zero output.

    Args:
        part_out_ptr: Normalised partial outputs, contiguous (batch, heads, num_splits,
            HEAD_DIM) float32.
        part_lse_ptr: Base-2 log-sum-exp per split, contiguous (batch, heads, num_splits).
        sinks_ptr: Sink logits, (heads,) float32, natural log; None for no sinks.
        out_ptr: Output, (batch, heads, HEAD_DIM).
        stride_sinks: Stride between the sinks of consecutive heads.
        stride_ob: Output batch stride.
        stride_oh: Output head stride.
        stride_od: Output head_dim stride.
        num_heads: Query heads.
        num_splits: Splits per sequence.
        HEAD_DIM: Head dimension.
        HEAD_PAD: HEAD_DIM rounded up to a power of two.
        BLOCK_S: num_splits rounded up to a power of two: every split's log-sum-exp at once.
        MERGE_SPLITS: Splits whose partial outputs are weighed at once, a power of two.
    """
    pid = tl.program_id(0)
    batch = pid // num_heads
    head = pid % num_heads
    base = pid.to(tl.int64) * num_splits
    splits = tl.arange(0, BLOCK_S)
    lse = tl.load(part_lse_ptr + base + splits, mask=splits < num_splits, other=float("-inf"))
    # A zero-length sequence has every lse at -inf; shifting by 0 keeps its weights at 0.
    top = tl.max(lse, 0)
    if sinks_ptr is not None:
        sink = tl.load(sinks_ptr + head * stride_sinks) * SINK_LOG2E
        top = tl.maximum(top, sink)
    shift = tl.where(top == float("-inf"), 0.0, top)
    total = tl.sum(tl.math.exp2(lse - shift), 0)
    if sinks_ptr is not None:
        total += tl.math.exp2(sink - shift)
    offs_d = tl.arange(0, HEAD_PAD)
    d_ok = offs_d < HEAD_DIM
    acc = tl.zeros([HEAD_PAD], dtype=tl.float32)
    # The partial outputs a few splits at a time: all of them at once (num_splits × HEAD_PAD
    # fp32) would not fit in registers.
    for first in range(0, num_splits, MERGE_SPLITS):
        some = first + tl.arange(0, MERGE_SPLITS)
        some_ok = some < num_splits
        weights = tl.math.exp2(
            tl.load(part_lse_ptr + base + some, mask=some_ok, other=float("-inf")) - shift
        )
        parts = tl.load(
            part_out_ptr + (base + some)[:, None] * HEAD_DIM + offs_d[None, :],
            mask=some_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc += tl.sum(weights[:, None] * parts, 0)
    out = acc / tl.where(total == 0.0, 1.0, total)
    o_ptrs = out_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
    tl.store(o_ptrs + offs_d * stride_od, out.to(out_ptr.dtype.element_ty), mask=d_ok)


_CHECK = Checks("decode_attention")


def _validate(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor | None,
    window: int | None,
    sinks: torch.Tensor | None,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> None:
    """The checks that need no data from the device."""
    paged = block_table is not None
    cache_layout = (
        "(num_blocks, page_size, kv_heads, head_dim)"
        if paged
        else "(batch, max_len, kv_heads, head_dim)"
    )
    tables = {"block_table": block_table} if paged else {}
    _CHECK.tensors(q=q, k_cache=k_cache, v_cache=v_cache, seq_lens=seq_lens, **tables)
    _CHECK.rank("q", q, "(batch, heads, head_dim)")
    _CHECK.rank("k_cache", k_cache, cache_layout)
    _CHECK.rank("v_cache", v_cache, cache_layout)
    _CHECK.rank("seq_lens", seq_lens, "(batch,)")
    if paged:
        _CHECK.rank("block_table", block_table, "(batch, max_blocks)")
    _CHECK.dtype("q", q, FLOAT_DTYPES)
    fp8_cache = k_cache.dtype == FP8_DTYPE and v_cache.dtype == FP8_DTYPE
    if fp8_cache and q.dtype == torch.float32:
        _CHECK.fail("a float8_e4m3fn cache needs a float16 or bfloat16 q, got torch.float32")
    if not fp8_cache and (k_cache.dtype != q.dtype or v_cache.dtype != q.dtype):
        _CHECK.fail(
            f"q, k_cache, v_cache must share one dtype (or both caches be float8_e4m3fn), got "
            f"{q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    for name, t in {"seq_lens": seq_lens, **tables}.items():
        _CHECK.dtype(name, t, (torch.int32,))
    device = _CHECK.device(q=q, k_cache=k_cache, v_cache=v_cache, seq_lens=seq_lens, **tables)
    _CHECK.dots(q.dtype)
    if fp8_cache:
        _CHECK.fp8(device, "float8_e4m3fn caches")
    if k_cache.shape != v_cache.shape:
        _CHECK.fail(
            f"k_cache and v_cache shapes differ: {tuple(k_cache.shape)} vs {tuple(v_cache.shape)}"
        )
    if paged and k_cache.shape[1] == 0:
        _CHECK.fail("page_size (the caches' dim 1) must be >= 1, got 0")
    batch, heads, head_dim = q.shape
    if k_cache.shape[3] != head_dim:
        _CHECK.fail(f"head_dim mismatch: q has {head_dim}, the caches have {k_cache.shape[3]}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        _CHECK.fail(f"head_dim {head_dim} unsupported; allowed: 1 to {MAX_HEAD_DIM}")
    kv_heads = k_cache.shape[2]
    if kv_heads == 0 or heads % kv_heads:
        _CHECK.fail(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    if seq_lens.shape[0] != batch:
        _CHECK.fail(f"seq_lens has {seq_lens.shape[0]} entries for a batch of {batch}")
    if paged and block_table.shape[0] != batch:
        _CHECK.fail(f"block_table has {block_table.shape[0]} rows for a batch of {batch}")
    if not paged and k_cache.shape[0] != batch:
        _CHECK.fail(f"batch mismatch: q has {batch}, the contiguous caches have {k_cache.shape[0]}")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 1
    ):
        _CHECK.fail(
            f"window must be None or an int >= 1 (cached tokens the query sees), got {window!r}"
        )
    if sinks is not None:
        check_sinks(_CHECK, sinks, heads, device)
    for name, scale in (("k_scale", k_scale), ("v_scale", v_scale)):
        if scale is not None:
            _CHECK.scale(name, scale, ((), (1,), (kv_heads,)), device)


def _check_max_seq_len(
    max_seq_len: int, k_cache: torch.Tensor, block_table: torch.Tensor | None
) -> int:
    """A caller-given longest length must fit the cache; returns it."""
    capacity = k_cache.shape[1] if block_table is None else block_table.shape[1] * k_cache.shape[1]
    return _CHECK.count("max_seq_len", max_seq_len, 0, capacity, " (the cache's capacity)")


def _check_lengths(
    k_cache: torch.Tensor, seq_lens: torch.Tensor, block_table: torch.Tensor | None
) -> int:
    """Check lengths and used block-table entries with one host sync; return the longest length.

    Only the first ceil(seq_len / page_size) entries of each block-table row are used, so only
    those must point inside the pool; the rest may hold anything.
    """
    if seq_lens.numel() == 0:
        return 0
    lens = seq_lens.to(torch.int64)
    stats = [lens.min(), lens.max()]
    page_size, num_blocks = k_cache.shape[1], k_cache.shape[0]
    if block_table is not None and block_table.shape[1] > 0:
        pages = torch.arange(block_table.shape[1], device=lens.device)
        used = pages[None, :] < (lens.clamp(min=0)[:, None] + page_size - 1) // page_size
        table = block_table.to(torch.int64)
        stats += [torch.where(used, table, 0).min(), torch.where(used, table, -1).max()]
    values = torch.stack(stats).tolist()
    shortest, longest = values[0], values[1]
    if shortest < 0:
        _CHECK.fail(f"seq_lens must be >= 0, got a minimum of {shortest}")
    if block_table is None:
        if longest > k_cache.shape[1]:
            _CHECK.fail(f"seq_lens max {longest} exceeds the cache max_len {k_cache.shape[1]}")
        return longest
    capacity = block_table.shape[1] * page_size
    if longest > capacity:
        _CHECK.fail(
            f"seq_lens max {longest} exceeds the block table capacity {capacity} "
            f"({block_table.shape[1]} blocks x page_size {page_size})"
        )
    if len(values) > 2 and (values[2] < 0 or values[3] >= num_blocks):
        _CHECK.fail(
            f"block_table entries in use must lie in [0, {num_blocks}) (the pool's blocks), "
            f"got min {values[2]} and max {values[3]}"
        )
    return longest


@functools.lru_cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    block_table: torch.Tensor | None = None,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    max_seq_len: int | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over that sequence's cached keys and values.

    Args:
        q: (batch, heads, head_dim), float16/bfloat16/float32, any strides.
        k_cache: Contiguous layout (batch, max_len, kv_heads, head_dim), or with block_table the
            paged pool (num_blocks, page_size, kv_heads, head_dim); any strides. kv_heads
            divides heads; query head h uses kv head h // (heads // kv_heads). q's dtype, or
            float8_e4m3fn with a float16/bfloat16 q.
        v_cache: Same shape, dtype and device as k_cache.
        seq_lens: (batch,) int32 tokens in each sequence's cache, 0 <= len <= capacity, any
            stride. A zero-length sequence outputs zeros.
        block_table: (batch, max_blocks) int32; token t of sequence b lives at
            k_cache[block_table[b, t // page_size], t % page_size]. None for a contiguous cache.
        sm_scale: Score scale; 1/sqrt(head_dim) when None.
        num_splits: Context splits per sequence; ``choose_num_splits`` decides when None (one
            split under the CPU interpreter).
        max_seq_len: The longest seq_lens entry, when the caller knows it (as FlashAttention's
            max_seqlen_k). It skips the checks of seq_lens, the block table's entries and the
            scales' values, which cost device syncs and a few small kernels per call, so that
            the call can be timed on its own and captured in a CUDA graph; the caller vouches
            for those values.
        window: Sliding-window length W >= 1, or None for none: the query (the token at
            position seq_len - 1) sees the tokens [seq_len - W, seq_len), itself and the W - 1
            before it (FlashAttention's window_size=(W - 1, 0)). Older tokens are never read.
        sinks: (heads,) float32 sink logits (gpt-oss), or None: head h's softmax denominator
            gains exp(sinks[h]), a key with no value. Not multiplied by sm_scale.
        k_scale: float32 key dequantisation scale, finite and > 0, shape () or (1,) for the
            whole cache or (kv_heads,) per kv head, or None for 1: the keys are
            k_cache · k_scale.
        v_scale: Likewise for the values.

    Returns:
        A new contiguous (batch, heads, head_dim) tensor in q's dtype.
    """
    _validate(q, k_cache, v_cache, seq_lens, block_table, window, sinks, k_scale, v_scale)
    if num_splits is not None:  # as an int: a NumPy scalar would reach the kernel as one
        why = " (the merge kernel reads every split's log-sum-exp at once)"
        num_splits = _CHECK.count("num_splits", num_splits, 1, MAX_USER_SPLITS, why)
    if max_seq_len is None:
        longest = _check_lengths(k_cache, seq_lens, block_table)
        _CHECK.positive(k_scale=k_scale, v_scale=v_scale)
    else:
        longest = _check_max_seq_len(max_seq_len, k_cache, block_table)
    batch, heads, head_dim = q.shape
    scale = head_dim**-0.5 if sm_scale is None else _CHECK.number("sm_scale", sm_scale)
    out = torch.empty((batch, heads, head_dim), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    # The longest stretch of cache one query reads: its sequence, or the window when shorter.
    span = longest if window is None else min(longest, window)
    if num_splits is None:
        sm_count = 1 if q.device.type != "cuda" else _sm_count(q.device.index or 0)
        num_splits = choose_num_splits(batch, k_cache.shape[2], span, sm_count)
    with on_device(q):
        _launch(
            q, k_cache, v_cache, seq_lens, out, block_table=block_table, scale=scale, span=span,
            num_splits=num_splits, window=window, sinks=sinks, k_scale=k_scale, v_scale=v_scale,
        )  # fmt: skip
    return out


def _per_head_stride(scale: torch.Tensor | None) -> int:
    """0 for one scale for the whole cache, else the stride between kv heads."""
    return 0 if scale is None or scale.numel() == 1 else scale.stride(0)


def _launch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    out: torch.Tensor,
    *,
    block_table: torch.Tensor | None,
    scale: float,
    span: int,
    num_splits: int,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """The split kernel into `out` and, with several splits, the merge kernel. span: the most
    tokens one sequence's query reads (its length, or the window when shorter)."""
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    part_out = part_lse = None
    if num_splits > 1:
        part_out = torch.empty(
            (batch, heads, num_splits, head_dim), dtype=torch.float32, device=q.device
        )
        part_lse = torch.empty((batch, heads, num_splits), dtype=torch.float32, device=q.device)
    table_strides = (0, 0) if block_table is None else block_table.stride()
    sink_stride = 0 if sinks is None else sinks.stride(0)
    _decode_split_kernel[(batch * kv_heads, num_splits)](
        q_ptr=q,
        k_ptr=k_cache,
        v_ptr=v_cache,
        table_ptr=block_table,
        lens_ptr=seq_lens,
        out_ptr=out,
        part_out_ptr=part_out,
        part_lse_ptr=part_lse,
        # With splits the merge folds the sinks in, once per head.
        sinks_ptr=sinks if part_out is None else None,
        k_scale_ptr=k_scale,
        v_scale_ptr=v_scale,
        **strides(q, "stride_qb", "stride_qh", "stride_qd"),
        **strides(k_cache, "stride_kp", "stride_ks", "stride_kh", "stride_kd"),
        **strides(v_cache, "stride_vp", "stride_vs", "stride_vh", "stride_vd"),
        stride_tb=table_strides[0],
        stride_ti=table_strides[1],
        stride_lens=seq_lens.stride(0),
        **strides(out, "stride_ob", "stride_oh", "stride_od"),
        stride_sinks=sink_stride,
        stride_k_scale=_per_head_stride(k_scale),
        stride_v_scale=_per_head_stride(v_scale),
        num_kv_heads=kv_heads,
        group_size=heads // kv_heads,
        num_splits=num_splits,
        window=_NO_WINDOW if window is None else min(window, _NO_WINDOW),
        qk_scale=scale * _LOG2E,
        CHUNK_BUCKET=_chunk_bucket(span, num_splits),
        HEAD_DIM=head_dim,
        HEAD_PAD=_head_pad(head_dim),
        BLOCK_H=_block_h(heads // kv_heads),
        PAGE_SIZE=1 if block_table is None else k_cache.shape[1],
    )
    if part_out is not None:
        merge_splits(part_out, part_lse, out, head_pad=_head_pad(head_dim), sinks=sinks,
                     sink_stride=sink_stride)  # fmt: skip


def merge_splits(
    part_out: torch.Tensor,
    part_lse: torch.Tensor,
    out: torch.Tensor,
    *,
    head_pad: int,
    sinks: torch.Tensor | None = None,
    sink_stride: int = 0,
) -> None:
    """Launch the merge of a split decode (this one's and MLA's): each (sequence, head) row's
    partial outputs weighted by their log-sum-exps, and its sink if given, written into `out`
    (batch, heads, head_dim); `part_out` is (batch, heads, splits, head_dim)."""
    batch, heads, num_splits, head_dim = part_out.shape
    block_s = triton.next_power_of_2(num_splits)
    _decode_merge_kernel[(batch * heads,)](
        part_out_ptr=part_out,
        part_lse_ptr=part_lse,
        sinks_ptr=sinks,
        out_ptr=out,
        stride_sinks=sink_stride,
        **strides(out, "stride_ob", "stride_oh", "stride_od"),
        num_heads=heads,
        num_splits=num_splits,
        HEAD_DIM=head_dim,
        HEAD_PAD=head_pad,
        BLOCK_S=block_s,
        MERGE_SPLITS=min(block_s, _MERGE_SPLITS),
    )


def gather_paged_kv(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy a paged cache into padded contiguous (batch, kv_heads, max_len, head_dim) tensors.

    max_len is the longest sequence; positions at or past a sequence's length are zero, so an
    SDPA baseline still needs a key-padding mask. Plain PyTorch, for baselines and tests.
    """
    page_size = k_cache.shape[1]
    lens = seq_lens.to(device=k_cache.device, dtype=torch.int64)
    max_len = int(lens.max()) if lens.numel() else 0
    num_pages = triton.cdiv(max_len, page_size)
    pages = torch.arange(num_pages, device=k_cache.device)
    used = pages[None, :] < (lens[:, None] + page_size - 1) // page_size
    # Unused table entries may hold anything; point them at block 0 so indexing stays in range.
    table = torch.where(used, block_table[:, :num_pages].to(k_cache.device, torch.int64), 0)
    inside = torch.arange(max_len, device=k_cache.device)[None, :] < lens[:, None]

    def gather(cache: torch.Tensor) -> torch.Tensor:
        tokens = cache[table].flatten(1, 2)[:, :max_len]  # (batch, max_len, kv_heads, head_dim)
        tokens = tokens * inside[:, :, None, None].to(cache.dtype)
        return tokens.permute(0, 2, 1, 3).contiguous()

    return gather(k_cache), gather(v_cache)


def make_paged_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    seq_lens: torch.Tensor,
    page_size: int = DEFAULT_PAGE_SIZE,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build a paged pool and block table holding the same tokens as contiguous caches.

    Args:
        k: Contiguous key cache, (batch, max_len, kv_heads, head_dim).
        v: Contiguous value cache, same shape.
        seq_lens: (batch,) lengths; sequence b gets ceil(seq_lens[b] / page_size) blocks.
        page_size: Tokens per block.
        shuffle: Scatter the blocks over the pool in random order (as a long-running server's
            allocator would) instead of handing them out in sequence order.
        generator: CPU generator for the shuffle.

    Returns:
        (k_pool, v_pool, block_table): pools (num_blocks, page_size, kv_heads, head_dim) with
        num_blocks the total pages used (at least 1), and a (batch, ceil(max_len / page_size))
        int32 table on k's device whose unused entries are 0.
    """
    batch, max_len, kv_heads, head_dim = k.shape
    max_blocks = triton.cdiv(max_len, page_size)
    pages_needed = (seq_lens.to(device=k.device, dtype=torch.int64) + page_size - 1) // page_size
    used = torch.arange(max_blocks, device=k.device)[None, :] < pages_needed[:, None]
    total = int(used.sum())
    order = torch.randperm(total, generator=generator) if shuffle else torch.arange(total)
    block_ids = order.to(k.device)
    table = torch.zeros((batch, max_blocks), dtype=torch.int32, device=k.device)
    table[used] = block_ids.to(torch.int32)
    pad = max_blocks * page_size - max_len

    def to_pool(cache: torch.Tensor) -> torch.Tensor:
        pages = torch.nn.functional.pad(cache, (0, 0, 0, 0, 0, pad))
        pages = pages.reshape(batch, max_blocks, page_size, kv_heads, head_dim)
        pool = torch.zeros(
            (max(total, 1), page_size, kv_heads, head_dim), dtype=cache.dtype, device=cache.device
        )
        pool[block_ids] = pages[used]
        return pool

    return to_pool(k), to_pool(v), table
