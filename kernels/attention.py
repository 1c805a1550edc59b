"""Flash-attention forward pass (FlashAttention-2 style) in Triton.

``flash_attention(q, k, v)`` computes ``softmax(q·kᵀ·sm_scale)·v`` without materialising the
score matrix. Each program owns ``BLOCK_M`` query rows of one (batch, head) and streams the keys
and values of that head's kv head in ``BLOCK_N`` tiles, keeping a running row maximum and row sum
(online softmax). Scores are kept in the base-2 domain: ``log2(e)`` is folded into the scale so
every exponential is a single ``exp2``.

Supported: any head_dim from 1 to 256 (tiles are padded to a power of two); float16, bfloat16
(GPU only: the CPU interpreter's bfloat16 dot is wrong, so it is rejected there) and float32
(TF32 dots on a GPU);
grouped-query / multi-query attention; causal masks aligned to the bottom-right corner when
``seq_q != seq_k`` (chunked prefill); any strides.

Sliding window (``window=W``, causal only; gpt-oss's and Mistral's sliding-window layers): query
i sees the W keys ``i + seq_k - seq_q - W < j <= i + seq_k - seq_q``, itself and the W - 1 before
it, which is FlashAttention's ``window_size=(W - 1, 0)``. Keys older than a block's window are
skipped, not loaded and masked: the key loop of a query block starts at the tile that holds its
first row's oldest visible key, so a block reads about ``W + BLOCK_M`` keys whatever seq_k is.
Its tiles fall in three ranges: the first ones, which some row of the block sees only in part
through the window, masked; then tiles every row sees in full, without masks; then the tiles on
the causal diagonal, masked.

Attention sinks (``sinks``, gpt-oss): one learned logit per query head, a virtual key with no
value that only adds ``exp(sink_h)`` to the softmax denominator. The logit is used as it is, in
natural-log units and not multiplied by sm_scale, as in gpt-oss's reference ``sdpa``. It is
folded into the running softmax state once, after the key loop.

Hopper path: on compute capability 9.x, for float16/bfloat16 with head_dim 64 or 128 and
16-byte-aligned strides with a unit last stride, tiles are moved by TMA through device-side
tensor descriptors (``tl.make_tensor_descriptor``; Triton then needs a scratch allocator,
installed with ``triton.set_allocator`` once in each context that launches it). Everything else
takes the portable pointer path. This path was written without a GPU at hand: its results are
checked in the CPU interpreter (where descriptors are emulated) and it compiles for sm_90, but
it has not run on hardware. If it fails to compile or launch, the wrapper warns once and uses the
portable path for the rest of the process (``tma_failure()`` says why). Setting
``TOKBENCH_ATTENTION_TMA=0`` turns it off, e.g. to benchmark the portable kernel on an H100.
"""

import contextvars
import functools
import math
import os
import warnings

import torch
import triton
import triton.language as tl

from kernels import HOPPER_SMEM, MAX_HEAD_DIM, interpreted, on_device, strides
from kernels.autotune import autotune, bucket, config, fitting, meta
from kernels.checks import FLOAT_DTYPES, Checks
from kernels.softmax import SINK_LOG2E, check_sinks, fold_sink, softmax_step

_LOG2E = math.log2(math.e)
_LN2: tl.constexpr = tl.constexpr(math.log(2.0))
_TMA_HEAD_DIMS = (64, 128)
_TMA_DTYPES = (torch.float16, torch.bfloat16)
# (batch, head) pairs run on the grid's second axis, which CUDA caps at 65535.
_MAX_GRID_Y = 65535
# tl.dot's smallest tile side on NVIDIA GPUs: shorter sequences and head dims are padded to it.
_MIN_DOT = 16

_tma_failure: str | None = None

# Hopper's warp-group MMA covers 64 rows per 4 warps, hence 8 warps for 128-row tiles; 64-row
# tiles take 8 too where a wide head's accumulator would spill with 4.
GPU_CONFIGS = [
    config(warps, stages, BLOCK_M=bm, BLOCK_N=bn)
    for bm, warps in ((32, 4), (64, 4), (64, 8), (128, 8))
    for bn in (32, 64, 128)
    for stages in (2, 3, 4)
]
# fp32 accumulator elements a thread may hold (BLOCK_M × head_dim over the block): 128 spilled on
# sm_90 at head dims 192 and 256 (bench.measure.aot).
_ACC_PER_THREAD = 64
# fp32 inputs also keep their query and score tiles in registers as fp32: 64 rows over four warps
# spilled on sm_90 and sm_100 at every head dim from 64 up, and eight warps past 32 scores
# (BLOCK_M × BLOCK_N over the block) a thread (bench.measure.aot).
_FP32_SCORES_PER_THREAD = 32
INTERPRETER_CONFIG = config(4, 1, BLOCK_M=64, BLOCK_N=32)


def _select(
    configs: list[triton.Config],
    head_pad: int,
    q_bucket: int,
    k_bucket: int,
    elem: int,
    max_smem: int | None,
) -> list[triton.Config]:
    """Drop configs that waste rows on short sequences, would spill registers or overflow shared
    memory (head_pad: the padded head dim)."""

    def smem(c: triton.Config) -> int:
        bm, bn = meta(c, "BLOCK_M"), meta(c, "BLOCK_N")
        return (bm * head_pad + 2 * c.num_stages * bn * head_pad) * elem

    def fits(c: triton.Config) -> bool:
        bm, bn, threads = meta(c, "BLOCK_M"), meta(c, "BLOCK_N"), 32 * c.num_warps
        if bm > max(32, q_bucket) or bn > max(32, k_bucket):
            return False
        # 32-row tiles only pay off when the query block would otherwise be mostly padding.
        if bm == 32 and q_bucket > 32:
            return False
        if bm * head_pad > _ACC_PER_THREAD * threads:
            return False
        if elem == 4:
            wide = bm > 32 and threads == 128
            return not wide and bm * bn <= _FP32_SCORES_PER_THREAD * threads
        # Eight warps for 64 rows only where four would hold too much of the accumulator.
        return not (bm == 64 and threads == 256 and bm * head_pad <= _ACC_PER_THREAD * 128)

    return fitting(configs, smem, max_smem, fits)


def select(configs: list[triton.Config], args: dict, max_smem: int | None) -> list[triton.Config]:
    """The autotuner's pruning: read the problem off the launch arguments."""
    elem = args["q_ptr"].element_size()
    return _select(configs, args["HEAD_PAD"], args["Q_BUCKET"], args["K_BUCKET"], elem, max_smem)


def tuning_configs(
    seq_q: int,
    seq_k: int,
    head_dim: int,
    elem_bytes: int,
    window: int | None = None,
    max_smem: int = HOPPER_SMEM,
) -> list[triton.Config]:
    """The configs the GPU autotuner compiles and times for this problem: what sizes a GPU run
    before it starts, also from a machine without one."""
    k_bucket = bucket(_keys_seen(seq_k, window), _MIN_DOT)
    return _select(
        GPU_CONFIGS, bucket(head_dim, _MIN_DOT), bucket(seq_q, _MIN_DOT), k_bucket, elem_bytes,
        max_smem,
    )  # fmt: skip


def _keys_seen(seq_k: int, window: int | None) -> int:
    """The most keys one query row sees: all of them, or the window when shorter."""
    return seq_k if window is None else min(seq_k, window)


@triton.jit
def _load_rows(
    src,
    start,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    MASKED: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Load rows [start, start + BLOCK) of one head's (seq, head_dim) matrix.

    Args:
        src: Tensor descriptor (USE_TMA) or pointer to row 0 of the head.
        start: First row of the tile.
        n_rows: Number of rows in the head; rows past it read as zero.
        stride_row: Stride between rows, in elements (pointer path only).
        stride_col: Stride between head_dim elements (pointer path only).
        BLOCK: Rows in the tile.
        HEAD_DIM: Columns of the matrix.
        HEAD_PAD: Columns in the tile: HEAD_DIM rounded up to a power of two of at least 16;
            the columns past HEAD_DIM read as zero.
        MASKED: Whether the tile may run past n_rows (pointer path; TMA always zero-fills).
        USE_TMA: Whether src is a tensor descriptor (only when HEAD_PAD == HEAD_DIM).
    """
    if USE_TMA:
        tile = src.load([start, 0])
    else:
        # int64: with a (batch, seq, heads, dim) layout the row stride is heads × dim, and row ×
        # stride passes 2^31 at 262,144 tokens for 64 heads of 128.
        rows = start + tl.arange(0, BLOCK).to(tl.int64)
        cols = tl.arange(0, HEAD_PAD)
        ptrs = src + rows[:, None] * stride_row + cols[None, :] * stride_col
        if MASKED:
            inside = rows[:, None] < n_rows
            if HEAD_PAD != HEAD_DIM:
                inside = inside & (cols[None, :] < HEAD_DIM)
            tile = tl.load(ptrs, mask=inside, other=0.0)
        elif HEAD_PAD != HEAD_DIM:
            tile = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _attend_tiles(
    acc,
    m_i,
    l_i,
    q,
    k_src,
    v_src,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    lo,
    hi,
    offs_m,
    seq_k,
    diag_offset,
    window,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Fold key tiles [lo, hi) into the running softmax state of one query block.

    Args:
        acc: Unnormalised output accumulator, (BLOCK_M, HEAD_PAD) float32.
        m_i: Running row maximum of the base-2 scores, (BLOCK_M,) float32.
        l_i: Running row sum of exp2(score - m_i), (BLOCK_M,) float32.
        q: Query tile, (BLOCK_M, HEAD_PAD) in the input dtype, zero past HEAD_DIM.
        k_src: Key descriptor or pointer to key row 0 of the kv head.
        v_src: Value descriptor or pointer to value row 0 of the kv head.
        stride_kn: Key row stride.
        stride_kd: Key head_dim stride.
        stride_vn: Value row stride.
        stride_vd: Value head_dim stride.
        lo: First key of the range, a multiple of BLOCK_N.
        hi: End of the key range (exclusive).
        offs_m: Query row indices of the block, (BLOCK_M,).
        seq_k: Number of keys.
        diag_offset: seq_k - seq_q; query i sees keys j <= i + diag_offset when causal.
        window: Sliding-window length W; query i also needs j > i + diag_offset - W. Only read
            when WINDOW.
        qk_scale: sm_scale * log2(e).
        HEAD_DIM: Head dimension.
        HEAD_PAD: Tile columns (see _load_rows).
        BLOCK_N: Keys per tile.
        MASKED: Whether tiles need the key-bound, causal and window masks; False for tiles every
            row of the block sees in full, which is most of them.
        CAUSAL: Whether the causal mask applies.
        WINDOW: Whether the sliding-window mask applies (with CAUSAL only).
        USE_TMA: Whether k_src/v_src are tensor descriptors.
    """
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        k = _load_rows(
            k_src,
            start_n,
            seq_k,
            stride_kn,
            stride_kd,
            BLOCK_N,
            HEAD_DIM,
            HEAD_PAD,
            MASKED,
            USE_TMA,
        )
        v = _load_rows(
            v_src,
            start_n,
            seq_k,
            stride_vn,
            stride_vd,
            BLOCK_N,
            HEAD_DIM,
            HEAD_PAD,
            MASKED,
            USE_TMA,
        )
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            cols = start_n + offs_n
            visible = cols[None, :] < seq_k
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + diag_offset)
            if WINDOW:
                visible = visible & (cols[None, :] > offs_m[:, None] + diag_offset - window)
            s = tl.where(visible, s, float("-inf"))
        p, alpha, m_i, l_i = softmax_step(s, m_i, l_i, MASKED)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, m_i, l_i


# The autotuner adds the inputs' dtype and whether lse and sinks are given (None or not) itself.
@autotune(
    GPU_CONFIGS,
    INTERPRETER_CONFIG,
    key=["Q_BUCKET", "K_BUCKET", "HEAD_DIM", "CAUSAL", "WINDOW", "USE_TMA"],
    select=select,
)
@triton.jit
def _flash_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    lse_ptr,
    sinks_ptr,
    stride_sinks,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    num_heads,
    group_size,
    seq_q,
    seq_k,
    window,
    qk_scale,
    Q_BUCKET,
    K_BUCKET,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One program: BLOCK_M query rows of one (batch, head).

    Args:
        q_ptr: Queries, (batch, heads, seq_q, HEAD_DIM).
        k_ptr: Keys, (batch, kv_heads, seq_k, HEAD_DIM).
        v_ptr: Values, (batch, kv_heads, seq_k, HEAD_DIM).
        out_ptr: Output, (batch, heads, seq_q, HEAD_DIM), dtype of the queries.
        lse_ptr: Natural-log log-sum-exp of the softmax denominator (the sink's term included),
            contiguous (batch, heads, seq_q) float32; None when not wanted.
        sinks_ptr: Sink logits, (heads,) float32, natural log and unscaled; None for no sinks.
        stride_sinks: Elements between the sinks of consecutive heads.
        stride_qb: Q batch stride.
        stride_qh: Q head stride.
        stride_qm: Q row stride.
        stride_qd: Q head_dim stride.
        stride_kb: K batch stride.
        stride_kh: K head stride.
        stride_kn: K row stride.
        stride_kd: K head_dim stride.
        stride_vb: V batch stride.
        stride_vh: V head stride.
        stride_vn: V row stride.
        stride_vd: V head_dim stride.
        stride_ob: O batch stride.
        stride_oh: O head stride.
        stride_om: O row stride.
        stride_od: O head_dim stride.
        num_heads: Query heads.
        group_size: Query heads per kv head; query head h reads kv head h // group_size.
        seq_q: Query rows.
        seq_k: Key rows.
        window: Sliding-window length W >= 1: query i sees keys i + seq_k - seq_q - W < j; only
            read when WINDOW.
        qk_scale: Softmax scale times log2(e).
        Q_BUCKET: Power-of-two bucket of seq_q; only an autotuning key, so close lengths share
            a tuned config instead of re-tuning for every length.
        K_BUCKET: Power-of-two bucket of the keys one query row sees: seq_k, or the window when
            that is shorter; autotuning key only.
        HEAD_DIM: Head dimension, 1 to 256.
        HEAD_PAD: HEAD_DIM rounded up to a power of two of at least 16 (tl.dot's minimum): the
            width of every tile, whose extra columns are zeros that add nothing to the dots.
        CAUSAL: Bottom-right aligned causal mask.
        WINDOW: Sliding window (with CAUSAL only): keys older than a block's window are skipped.
        USE_TMA: Move tiles with TMA through tensor descriptors (Hopper).
        BLOCK_M: Query rows per program.
        BLOCK_N: Keys per tile.
    """
    # The grid's first axis runs over query blocks in reverse: under a causal mask the last
    # blocks see the most keys, and starting them first shortens the tail of the launch.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch = pid_bh // num_heads
    head = pid_bh % num_heads
    kv_head = head // group_size

    q_base = q_ptr + batch.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh
    k_base = k_ptr + batch.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    o_base = out_ptr + batch.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh
    if USE_TMA:
        q_src = tl.make_tensor_descriptor(
            q_base, shape=[seq_q, HEAD_DIM], strides=[stride_qm, 1], block_shape=[BLOCK_M, HEAD_DIM]
        )
        k_src = tl.make_tensor_descriptor(
            k_base, shape=[seq_k, HEAD_DIM], strides=[stride_kn, 1], block_shape=[BLOCK_N, HEAD_DIM]
        )
        v_src = tl.make_tensor_descriptor(
            v_base, shape=[seq_k, HEAD_DIM], strides=[stride_vn, 1], block_shape=[BLOCK_N, HEAD_DIM]
        )
    else:
        q_src = q_base
        k_src = k_base
        v_src = v_base

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = _load_rows(
        q_src, start_m, seq_q, stride_qm, stride_qd, BLOCK_M, HEAD_DIM, HEAD_PAD, True, USE_TMA
    )

    diag_offset = seq_k - seq_q
    if CAUSAL:
        # Row start_m, the block's first, sees keys up to start_m + diag_offset, so whole tiles
        # below that bound need no mask; the block's last row bounds the keys read at all.
        full_end = tl.minimum(tl.maximum(start_m + 1 + diag_offset, 0), seq_k) // BLOCK_N * BLOCK_N
        hi = tl.minimum(tl.maximum(start_m + BLOCK_M + diag_offset, 0), seq_k)
    else:
        full_end = seq_k // BLOCK_N * BLOCK_N
        hi = seq_k

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32)
    if WINDOW:
        # The block's first row has the oldest window, from key start_m + diag_offset - window + 1
        # on: the loop starts at the tile holding that key, and the tiles before it are skipped,
        # never loaded. Keys from start_m + BLOCK_M + diag_offset - window on lie in every row's
        # window: only the tiles before that bound need the window mask. When the window is
        # shorter than the block, full_start meets full_end and every tile is masked.
        lo = tl.maximum(start_m + diag_offset - window + 1, 0) // BLOCK_N * BLOCK_N
        in_every_window = tl.maximum(start_m + BLOCK_M + diag_offset - window, 0)
        full_end = tl.maximum(full_end, lo)
        full_start = tl.minimum(
            tl.maximum(tl.cdiv(in_every_window, BLOCK_N) * BLOCK_N, lo), full_end
        )
        acc, m_i, l_i = _attend_tiles(
            acc, m_i, l_i, q, k_src, v_src, stride_kn, stride_kd, stride_vn, stride_vd,
            lo, full_start, offs_m, seq_k, diag_offset, window, qk_scale,
            HEAD_DIM, HEAD_PAD, BLOCK_N, True, CAUSAL, WINDOW, USE_TMA,
        )  # fmt: skip
    else:
        full_start = 0
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_src, v_src, stride_kn, stride_kd, stride_vn, stride_vd,
        full_start, full_end, offs_m, seq_k, diag_offset, window, qk_scale,
        HEAD_DIM, HEAD_PAD, BLOCK_N, False, CAUSAL, WINDOW, USE_TMA,
    )  # fmt: skip
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, k_src, v_src, stride_kn, stride_kd, stride_vn, stride_vd,
        full_end, hi, offs_m, seq_k, diag_offset, window, qk_scale,
        HEAD_DIM, HEAD_PAD, BLOCK_N, True, CAUSAL, WINDOW, USE_TMA,
    )  # fmt: skip
    if sinks_ptr is not None:  # the sink as one more key, of score sink·log2(e), with no value
        sink = tl.load(sinks_ptr + head * stride_sinks)
        acc, m_i, l_i = fold_sink(acc, m_i, l_i, sink * SINK_LOG2E)

    # Rows that see no key (causal, seq_q > seq_k) have acc = 0 and, without a sink, l = 0: they
    # must come out as zeros.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = (acc / l_safe[:, None]).to(out_ptr.dtype.element_ty)
    if USE_TMA:
        o_desc = tl.make_tensor_descriptor(
            o_base, shape=[seq_q, HEAD_DIM], strides=[stride_om, 1], block_shape=[BLOCK_M, HEAD_DIM]
        )
        o_desc.store([start_m, 0], out)
    else:
        cols = tl.arange(0, HEAD_PAD)
        o_ptrs = o_base + offs_m.to(tl.int64)[:, None] * stride_om + cols[None, :] * stride_od
        tl.store(o_ptrs, out, mask=(offs_m[:, None] < seq_q) & (cols[None, :] < HEAD_DIM))
    if lse_ptr is not None:
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_safe)) * _LN2)
        tl.store(lse_ptr + pid_bh.to(tl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)


_CHECK = Checks("flash_attention")


def _validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    window: int | None,
    sinks: torch.Tensor | None,
) -> None:
    """Raise ValueError with one line naming the first problem with the inputs."""
    _CHECK.tensors(q=q, k=k, v=v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _CHECK.rank(name, t, "(batch, heads, seq, head_dim)")
    _CHECK.dtype("q", q, FLOAT_DTYPES)
    _CHECK.same_dtype(q=q, k=k, v=v)
    device = _CHECK.device(q=q, k=k, v=v)
    _CHECK.dots(q.dtype)
    if k.shape != v.shape:
        _CHECK.fail(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if k.shape[0] != q.shape[0]:
        _CHECK.fail(f"batch mismatch: q has {q.shape[0]}, k/v have {k.shape[0]}")
    if k.shape[3] != q.shape[3]:
        _CHECK.fail(f"head_dim mismatch: q has {q.shape[3]}, k/v have {k.shape[3]}")
    if not 1 <= q.shape[3] <= MAX_HEAD_DIM:
        _CHECK.fail(f"head_dim {q.shape[3]} unsupported; allowed: 1 to {MAX_HEAD_DIM}")
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads == 0 or heads % kv_heads:
        _CHECK.fail(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    if q.shape[0] * heads > _MAX_GRID_Y:
        _CHECK.fail(f"batch * heads = {q.shape[0] * heads} exceeds the grid limit {_MAX_GRID_Y}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            _CHECK.fail(f"window must be None or an int >= 1 (keys a query sees), got {window!r}")
        if not causal:
            _CHECK.fail(
                "window needs causal=True: the sliding window is causal (keys up to the query)"
            )
    if sinks is not None:
        check_sinks(_CHECK, sinks, heads, device)


@functools.lru_cache
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)


def _tma_aligned(t: torch.Tensor) -> bool:
    """TMA needs a 16-byte-aligned base, 16-byte-aligned outer strides and a unit last stride."""
    nbytes = t.element_size()
    return (
        t.stride(-1) == 1
        and t.data_ptr() % 16 == 0
        and all(s * nbytes % 16 == 0 for s in t.stride()[:-1])
    )


def _want_tma(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether this call can take the Hopper TMA path."""
    if _tma_failure is not None or os.environ.get("TOKBENCH_ATTENTION_TMA", "1") == "0":
        return False
    if interpreted() or q.device.type != "cuda" or _capability(q.device.index or 0)[0] != 9:
        return False
    return (
        hasattr(tl, "make_tensor_descriptor")
        and q.dtype in _TMA_DTYPES
        and q.shape[3] in _TMA_HEAD_DIMS
        and all(_tma_aligned(t) for t in (q, k, v))
    )


def tma_failure() -> str | None:
    """Why the Hopper TMA path was switched off in this process, or None if it was not."""
    return _tma_failure


# Triton keeps its allocator in a context variable (per thread and context), so ours is installed
# once in each context that launches the TMA path, not at every launch.
_allocator_installed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tokbench_tma_allocator", default=False
)


def _install_tma_allocator() -> None:
    """Device-side descriptors live in a per-launch scratch buffer that Triton asks for; it is
    allocated on the device the launch runs on."""
    if _allocator_installed.get():
        return

    def alloc(size: int, alignment: int, stream: int | None) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device=torch.cuda.current_device())

    triton.set_allocator(alloc)
    _allocator_installed.set(True)


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    sm_scale: float,
    return_lse: bool,
    use_tma: bool,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, heads, seq_q, head_dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    out = torch.empty((batch, heads, seq_q, head_dim), dtype=q.dtype, device=q.device)
    lse = (
        torch.empty((batch, heads, seq_q), dtype=torch.float32, device=q.device)
        if return_lse
        else None
    )
    if out.numel() == 0:
        return out, lse
    if use_tma:
        _install_tma_allocator()

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(seq_q, meta["BLOCK_M"]), batch * heads

    with on_device(q):
        _flash_attention_kernel[grid](
            q_ptr=q,
            k_ptr=k,
            v_ptr=v,
            out_ptr=out,
            lse_ptr=lse,
            sinks_ptr=sinks,
            stride_sinks=0 if sinks is None else sinks.stride(0),
            **strides(q, "stride_qb", "stride_qh", "stride_qm", "stride_qd"),
            **strides(k, "stride_kb", "stride_kh", "stride_kn", "stride_kd"),
            **strides(v, "stride_vb", "stride_vh", "stride_vn", "stride_vd"),
            **strides(out, "stride_ob", "stride_oh", "stride_om", "stride_od"),
            num_heads=heads,
            group_size=heads // kv_heads,
            seq_q=seq_q,
            seq_k=seq_k,
            window=0 if window is None else window,
            qk_scale=sm_scale * _LOG2E,
            Q_BUCKET=bucket(seq_q, _MIN_DOT),
            K_BUCKET=bucket(_keys_seen(seq_k, window), _MIN_DOT),
            HEAD_DIM=head_dim,
            HEAD_PAD=bucket(head_dim, _MIN_DOT),
            CAUSAL=causal,
            WINDOW=window is not None,
            USE_TMA=use_tma,
        )
    return out, lse


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention forward: softmax(q·kᵀ·sm_scale)·v.

    Args:
        q: (batch, heads, seq_q, head_dim), float16/bfloat16/float32, any strides.
        k: (batch, kv_heads, seq_k, head_dim), same dtype and device; kv_heads divides heads
            and query head h uses kv head h // (heads // kv_heads).
        v: Same shape as k. A non-finite value in v reaches every row of its tile, masked
            ones too (0·inf is NaN in the tile's product), as it does every row in torch's SDPA.
        causal: Mask aligned to the bottom-right corner: query i sees keys
            j <= i + seq_k - seq_q. Rows that see no key output zeros.
        sm_scale: Score scale; 1/sqrt(head_dim) when None.
        return_lse: Also return the natural-log log-sum-exp of the softmax denominator (the
            scaled scores, and the sink when sinks is given), (batch, heads, seq_q) float32;
            -inf on rows that see no key and have no sink.
        window: Sliding-window length W >= 1, with causal only; None for none. Query i sees the
            W keys i + seq_k - seq_q - W < j <= i + seq_k - seq_q (itself and the W - 1 before
            it: FlashAttention's window_size=(W - 1, 0), gpt-oss's sliding_window=W). Tiles of
            only older keys are skipped, never read; a window at least seq_k long changes
            nothing.
        sinks: (heads,) float32 sink logits (gpt-oss's learned sinks), or None: head h's
            softmax denominator gains exp(sinks[h]), a key with no value, so
            out = sum_j exp(s_j) v_j / (sum_j exp(s_j) + exp(sinks[h])) with s_j the scaled
            scores. The logit is not multiplied by sm_scale. A row that sees no key outputs
            zeros.

    Returns:
        The output, a new contiguous (batch, heads, seq_q, head_dim) tensor in q's dtype, and
        the log-sum-exp when return_lse.
    """
    global _tma_failure
    _validate(q, k, v, causal, window, sinks)
    if window is not None and window >= k.shape[2]:
        # Every query's window reaches back past key 0: the plain causal kernel, no window masks.
        window = None
    scale = q.shape[3] ** -0.5 if sm_scale is None else _CHECK.number("sm_scale", sm_scale)
    out = lse = None
    if k.shape[2] == 0:
        # No keys at all: every row is an empty softmax, whose denominator holds the sink alone.
        out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        if sinks is not None:
            lse.copy_(sinks[None, :, None].expand(lse.shape))
    elif _want_tma(q, k, v):
        # TritonError: compile errors, and OutOfResources / PTXASError, which are not
        # CompilationErrors and surface here when no config of the TMA kernel can run.
        try:
            out, lse = _launch(
                q, k, v, causal, scale, return_lse, use_tma=True, window=window, sinks=sinks
            )
        except (triton.TritonError, RuntimeError) as exc:
            _tma_failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            warnings.warn(
                f"flash_attention: TMA path disabled, using the portable kernel ({_tma_failure})",
                RuntimeWarning,
                stacklevel=2,
            )
    if out is None:
        out, lse = _launch(
            q, k, v, causal, scale, return_lse, use_tma=False, window=window, sinks=sinks
        )
    return (out, lse) if return_lse else out
