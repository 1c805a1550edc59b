"""Decode attention over contiguous and paged KV caches against the float64 reference."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, attention_tol, rel_err, views

import kernels
from kernels import decode
from kernels.decode import (
    MAX_SPLITS,
    MIN_TOKENS_PER_SPLIT,
    choose_num_splits,
    decode_attention,
    gather_paged_kv,
    make_paged_cache,
)
from kernels.reference import decode_ref


def _inputs(
    lens: list[int],
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
    max_len: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q (B, H, D), contiguous caches (B, max_len, KVH, D) and int32 seq_lens."""
    gen = torch.Generator().manual_seed(seed)
    max_len = max_len or max(lens) + 3
    q = torch.randn(len(lens), heads, head_dim, generator=gen)
    k = torch.randn(len(lens), max_len, kv_heads, head_dim, generator=gen)
    v = torch.randn(len(lens), max_len, kv_heads, head_dim, generator=gen)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    return (*(t.to(device=device, dtype=dtype) for t in (q, k, v)), seq_lens)


def _paged(
    k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor, page_size: int = 16, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return make_paged_cache(k, v, seq_lens, page_size, True, torch.Generator().manual_seed(seed))


# Lengths of 1, ending mid-page (17, 100, 250), on a page boundary (64) and mixed in one batch.
MIXED_LENS = [1, 17, 100, 64]


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("kv_heads", [8, 2, 1], ids=lambda n: f"group{8 // n}")
def test_contiguous(kv_heads, dtype, num_splits, device):
    q, k, v, lens = _inputs(MIXED_LENS, 8, kv_heads, 64, dtype, device)
    out = decode_attention(q, k, v, lens, num_splits=num_splits)
    assert out.shape == q.shape and out.dtype == q.dtype
    err = rel_err(out, decode_ref(q, k, v, lens))
    assert err < attention_tol(dtype), f"relative error {err:.2e}"


@pytest.mark.parametrize("num_splits", [1, 4])
@pytest.mark.parametrize(
    ("head_dim", "page_size", "dtype"),
    [
        (64, 16, torch.float16),
        (128, 16, torch.float32),
        (64, 8, torch.float32),
        (64, 64, torch.float16),
        (80, 16, torch.float16),  # padded tiles: head dims off the powers of two
        (96, 16, torch.float32),
        (192, 16, torch.float16),
        (8, 16, torch.float32),
    ],
    ids=[
        "d64-p16-fp16",
        "d128-p16-fp32",
        "d64-p8-fp32",
        "d64-p64-fp16",
        "d80-p16-fp16",
        "d96-p16-fp32",
        "d192-p16-fp16",
        "d8-p16-fp32",
    ],
)
def test_paged(head_dim, page_size, dtype, num_splits, device):
    q, k, v, lens = _inputs([250, 1, 33, 16], 8, 2, head_dim, dtype, device)
    k_pool, v_pool, table = _paged(k, v, lens, page_size)
    out = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=num_splits)
    # The reference reads the pool through the table itself and must equal the contiguous one.
    ref = decode_ref(q, k_pool, v_pool, lens, block_table=table)
    assert torch.allclose(ref, decode_ref(q, k, v, lens))
    err = rel_err(out, ref)
    assert err < attention_tol(dtype), f"relative error {err:.2e}"


def test_paged_agrees_with_contiguous(device):
    q, k, v, lens = _inputs([5, 77, 160], 16, 2, 64, torch.float16, device)
    contiguous = decode_attention(q, k, v, lens, num_splits=2)
    k_pool, v_pool, table = _paged(k, v, lens)
    paged = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=2)
    assert rel_err(paged, contiguous.double()) < 1e-3


def test_given_max_seq_len_skips_the_host_checks_not_the_maths(device):
    q, k, v, lens = _inputs([5, 77, 160], 8, 2, 64, torch.float16, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    ref = decode_ref(q, k_pool, v_pool, lens, block_table=table)
    for cache, paged in (((k, v), None), ((k_pool, v_pool), table)):
        out = decode_attention(q, *cache, lens, block_table=paged, max_seq_len=160)
        assert rel_err(out, ref) < attention_tol(torch.float16)
    with pytest.raises(ValueError, match="max_seq_len must be an int in"):
        decode_attention(q, k, v, lens, max_seq_len=k.shape[1] + 1)


def test_split_counts_agree(device):
    """1 split, several, and more splits than tiles (empty splits) give the same answer; past
    16 the merge weighs the splits 16 at a time, the last group part-filled."""
    q, k, v, lens = _inputs([300, 3, 129], 4, 1, 64, torch.float32, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    one = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=1)
    for splits in (2, 5, 16, 37):
        many = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=splits)
        assert rel_err(many, one.double()) < attention_tol(torch.float32), splits


@pytest.mark.parametrize("num_splits", [1, 2])
def test_length_one_and_zero(num_splits, device):
    # float16 makes the single-key case exact on a GPU too (float32 would go through TF32).
    q, k, v, lens = _inputs([1, 0, 1], 4, 2, 64, torch.float16, device, max_len=16)
    k_pool, v_pool, table = _paged(k, v, lens)
    for out in (
        decode_attention(q, k, v, lens, num_splits=num_splits),
        decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=num_splits),
    ):
        # With a single key, attention returns that key's value; an empty sequence gives zeros.
        group_v = v[:, 0].repeat_interleave(2, dim=1)
        assert torch.equal(out[0], group_v[0])
        assert torch.all(out[1] == 0)
        assert torch.equal(out[2], group_v[2])


def test_an_empty_block_table_serves_empty_sequences(device):
    q, k, v, lens = _inputs([0, 0], 4, 2, 64, torch.float16, device, max_len=16)
    k_pool, v_pool, _ = _paged(k, v, torch.tensor([1, 1], dtype=torch.int32, device=device))
    table = torch.zeros(2, 0, dtype=torch.int32, device=device)
    assert not decode_attention(q, k_pool, v_pool, lens, block_table=table).any()


def test_scalars_may_be_numpy_or_tensors(device):
    q, k, v, lens = _inputs([20, 9], 4, 2, 64, torch.float16, device, max_len=32)
    plain = decode_attention(q, k, v, lens, num_splits=2, max_seq_len=20, sm_scale=0.1)
    for scale in (np.float32(0.1), torch.tensor(0.1)):
        other = decode_attention(
            q, k, v, lens, num_splits=np.int64(2), max_seq_len=np.int32(20), sm_scale=scale
        )
        assert torch.equal(other, plain)


def test_unused_table_entries_are_ignored(device):
    q, k, v, lens = _inputs([20, 40], 4, 2, 64, torch.float32, device, max_len=128)
    k_pool, v_pool, table = _paged(k, v, lens)
    expected = decode_attention(q, k_pool, v_pool, lens, block_table=table)
    table[0, 2:] = -1  # sequence 0 uses pages 0 and 1 only
    table[1, 3:] = 10**6  # sequence 1 uses pages 0..2
    out = decode_attention(q, k_pool, v_pool, lens, block_table=table)
    assert torch.equal(out, expected)


def test_strided_inputs(device):
    """q as a view of an (H, B, D) buffer, caches as views with a wider kv axis, a strided table."""
    q, k, v, lens = _inputs([30, 90], 4, 4, 64, torch.float16, device)
    q_strided = q.transpose(0, 1).contiguous().transpose(0, 1)
    k_wide = torch.cat([k, torch.zeros_like(k)], dim=2)[:, :, :4]
    v_wide = torch.cat([torch.zeros_like(v), v], dim=2)[:, :, 4:]
    k_pool, v_pool, table = _paged(k, v, lens)
    table_strided = torch.stack([table, table], dim=-1)[..., 0]
    views = (q_strided, k_wide, v_wide, table_strided)
    assert not any(t.is_contiguous() for t in views)
    ref = decode_ref(q, k, v, lens)
    assert rel_err(decode_attention(q_strided, k_wide, v_wide, lens, num_splits=2), ref) < 1e-3
    paged = decode_attention(q_strided, k_pool, v_pool, lens, block_table=table_strided)
    assert rel_err(paged, ref) < 1e-3


def test_default_num_splits(device):
    q, k, v, lens = _inputs([600, 45], 8, 1, 64, torch.float16, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    out = decode_attention(q, k_pool, v_pool, lens, block_table=table)
    assert rel_err(out, decode_ref(q, k, v, lens)) < attention_tol(torch.float16)


def test_gpu_configs(device, monkeypatch):
    """The GPU autotuning space: pruning sees the real launch arguments and the longest kept
    tile computes the right answer (in the interpreter too)."""
    kernel = decode._decode_split_kernel
    kept_lists = []

    def prune_then_pick_longest(configs, named_args, **kwargs):
        kept = decode.select(configs, {**named_args, **kwargs}, kernels.HOPPER_SMEM)
        kept_lists.append(kept)
        return [max(kept, key=lambda c: c.kwargs["BLOCK_N"])]

    monkeypatch.setattr(kernel, "configs", decode.GPU_CONFIGS)
    monkeypatch.setattr(kernel, "early_config_prune", prune_then_pick_longest)
    monkeypatch.setattr(kernel, "cache", {})
    q, k, v, lens = _inputs([300, 7, 130], 8, 2, 128, torch.float16, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    out = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=2)
    assert rel_err(out, decode_ref(q, k, v, lens)) < attention_tol(torch.float16)
    (kept,) = kept_lists
    assert {c.kwargs["BLOCK_N"] for c in kept} == {32, 64, 128}
    assert all(c.num_warps == 4 for c in kept)


def test_launches_on_the_device_of_its_inputs(device, monkeypatch):
    seen = []
    monkeypatch.setattr(decode, "on_device", lambda t: seen.append(t) or kernels.on_device(t))
    q, k, v, lens = _inputs([20, 9], 4, 2, 64, torch.float32, device)
    decode_attention(q, k, v, lens)
    assert len(seen) == 1 and seen[0] is q


# Windows around the interpreter's tile (BLOCK_N 32): one token, shorter than a tile, a tile and
# longer than every sequence; the 17-token sequence is shorter than the tile-long window.
@pytest.mark.parametrize(
    ("window", "num_splits"), [(1, 1), (5, 3), (32, 1), (1000, 3)], ids=lambda n: str(n)
)
def test_window(window, num_splits, device):
    q, k, v, lens = _inputs([17, 130], 4, 1, 64, torch.float32, device)
    out = decode_attention(q, k, v, lens, num_splits=num_splits, window=window)
    err = rel_err(out, decode_ref(q, k, v, lens, window=window))
    assert err < attention_tol(torch.float32), f"relative error {err:.2e}"


def test_window_matches_its_definition(device):
    """The query, the cache's last token, sees the last `window` tokens, itself included
    (FlashAttention's window_size=(window - 1, 0)): with equal scores and value e_t for token t,
    the output is their plain mean."""
    lens = torch.tensor([9, 2], dtype=torch.int32, device=device)
    q = torch.zeros(2, 1, 16, device=device)
    k = torch.zeros(2, 9, 1, 16, device=device)
    v = torch.eye(9, 16, device=device)[None, :, None].expand(2, 9, 1, 16).contiguous()
    out = decode_attention(q, k, v, lens, window=3)
    expected = torch.zeros(2, 1, 16, device=device)
    expected[0, 0, 6:9] = 1 / 3  # tokens 6, 7, 8 of 9
    expected[1, 0, 0:2] = 1 / 2  # a sequence shorter than the window: all of it
    assert torch.allclose(out, expected, atol=1e-6)


def test_window_paged(device):
    """A window that starts mid-page, split in 4, on a padded head dim."""
    q, k, v, lens = _inputs([150, 1, 33], 4, 2, 80, torch.float16, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    out = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=4, window=40)
    err = rel_err(out, decode_ref(q, k, v, lens, window=40))
    assert err < attention_tol(torch.float16), f"relative error {err:.2e}"


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_window_skips_the_tokens_before_it(paged, device):
    """The splits divide the window alone: NaN keys and values before it are never read and leave
    the output finite and right (a kernel that read them and masked the scores would get NaN
    from 0·NaN in p·v)."""
    q, k, v, lens = _inputs([150, 30], 4, 1, 64, torch.float16, device)
    window = 40
    ref = decode_ref(q, k, v, lens, window=window)
    k_bad, v_bad = k.clone(), v.clone()
    for b, n in enumerate(lens.tolist()):
        k_bad[b, : max(0, n - window)] = float("nan")
        v_bad[b, : max(0, n - window)] = float("nan")
    table = None
    if paged:
        k_bad, v_bad, table = _paged(k_bad, v_bad, lens)
    out = decode_attention(q, k_bad, v_bad, lens, block_table=table, num_splits=3, window=window)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < attention_tol(torch.float16)


def test_window_sets_the_split_count(device, monkeypatch):
    """Splits are chosen for the window's length, not the sequence's."""
    seen = []
    monkeypatch.setattr(decode, "choose_num_splits", lambda *args: seen.append(args) or 1)
    q, k, v, lens = _inputs([70, 3], 2, 1, 16, torch.float16, device)
    decode_attention(q, k, v, lens, window=40)
    decode_attention(q, k, v, lens, window=1000)
    assert [args[2] for args in seen] == [40, 70]


def _sinks(heads: int, device: torch.device) -> torch.Tensor:
    """Sink logits from -inf (no sink) up to 4, so that some heads give the sink much weight."""
    sinks = torch.linspace(-2.0, 4.0, heads)
    sinks[0] = float("-inf")
    return sinks.to(device)


@pytest.mark.parametrize(
    ("window", "num_splits"), [(None, 4), (40, 1), (40, 3)], ids=["splits", "window", "both"]
)
def test_sinks(window, num_splits, device):
    """Sinks with one split (folded in the split kernel) and several (folded once, in the
    merge); a zero-length sequence still outputs zeros."""
    q, k, v, lens = _inputs([150, 0, 33], 4, 2, 64, torch.float32, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    sinks = _sinks(4, device)
    out = decode_attention(
        q,
        k_pool,
        v_pool,
        lens,
        block_table=table,
        num_splits=num_splits,
        window=window,
        sinks=sinks,
    )
    err = rel_err(out, decode_ref(q, k, v, lens, window=window, sinks=sinks))
    assert err < attention_tol(torch.float32), f"relative error {err:.2e}"
    # The sinks weigh: without them the answer is far off, so the check above can fail.
    assert rel_err(out, decode_ref(q, k, v, lens, window=window)) > 0.1
    assert torch.all(out[1] == 0)


@pytest.mark.parametrize(
    ("k_scale", "v_scale", "num_splits"),
    [([0.3], [3.0, 0.5], 1), ([2.5, 0.2], 0.7, 3)],
    ids=["tensor-head", "head-0dim-split"],
)
def test_scales_on_a_16_bit_cache(k_scale, v_scale, num_splits, device):
    """The folded scales (keys into the score scale, values into the output) against the
    reference, which multiplies the cache itself: per tensor, 0-dim and per kv head."""
    q, k, v, lens = _inputs([17, 100], 4, 2, 64, torch.float16, device)
    k_scale, v_scale = torch.tensor(k_scale, device=device), torch.tensor(v_scale, device=device)
    out = decode_attention(q, k, v, lens, num_splits=num_splits, k_scale=k_scale, v_scale=v_scale)
    ref = decode_ref(q, k, v, lens, k_scale=k_scale, v_scale=v_scale)
    assert rel_err(out, ref) < attention_tol(torch.float16)
    # The scales weigh, so the check above can fail.
    assert rel_err(out, decode_ref(q, k, v, lens)) > 0.1


def _fp8_cache(
    k: torch.Tensor, v: torch.Tensor, per_head: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float8_e4m3fn caches and their scales, amax / 448 per kv head or for the whole tensor."""

    def quantise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amax = t.float().abs().amax(dim=(0, 1, 3)) if per_head else t.float().abs().amax()[None]
        scale = amax / torch.finfo(decode.FP8_CACHE_DTYPE).max
        return (t.float() / scale[:, None]).to(decode.FP8_CACHE_DTYPE), scale

    (k8, k_scale), (v8, v_scale) = quantise(k), quantise(v)
    return k8, v8, k_scale, v_scale


@pytest.mark.parametrize(
    ("head_dim", "per_head", "paged", "num_splits", "window"),
    [
        (64, False, False, 1, None),
        (80, True, True, 3, None),
        (128, True, False, 2, 40),
        (80, False, True, 1, 40),
    ],
    ids=["d64-tensor", "d80-head-paged-split", "d128-head-window", "d80-tensor-paged-window"],
)
def test_fp8_cache(head_dim, per_head, paged, num_splits, window, device):
    """float8 caches with a float16 query; the reference dequantises the same float8 values, so
    only the kernel's own rounding counts. The last case adds sinks."""
    q, k, v, lens = _inputs([150, 1, 33], 4, 2, head_dim, torch.float16, device)
    k8, v8, k_scale, v_scale = _fp8_cache(k, v, per_head)
    sinks = _sinks(4, device) if window and paged else None
    table = None
    if paged:
        # Paging and quantising commute; float8 indexing is not on every device.
        k_pool, v_pool, table = _paged(k8.half(), v8.half(), lens)
        k8, v8 = k_pool.to(decode.FP8_CACHE_DTYPE), v_pool.to(decode.FP8_CACHE_DTYPE)
    options = {"window": window, "sinks": sinks, "k_scale": k_scale, "v_scale": v_scale}
    out = decode_attention(q, k8, v8, lens, block_table=table, num_splits=num_splits, **options)
    assert out.dtype == torch.float16
    ref = decode_ref(q, k8, v8, lens, block_table=table, **options)
    err = rel_err(out, ref)
    assert err < attention_tol(torch.float16), f"relative error {err:.2e}"
    # Quantisation noise against the unquantised cache: a few percent, not more.
    unquantised = decode_ref(q, k, v, lens, window=window, sinks=sinks)
    assert rel_err(out, unquantised) < 0.1


@VIEWS
@given(
    data=st.data(),
    lens=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    group=st.sampled_from([(1, 1), (2, 1), (3, 2)]),
    head_dim=st.integers(1, 20),
    page=st.one_of(st.none(), st.integers(1, 8)),
    num_splits=st.integers(1, 3),
    window=st.one_of(st.none(), st.integers(1, 30)),
    options=st.sets(st.sampled_from(["sinks", "k_scale", "v_scale", "per_head"])),
)
def test_any_views_of_every_argument(
    data, lens, group, head_dim, page, num_splits, window, options
):
    """q, the caches (contiguous or paged), seq_lens, the block table, sinks and scales all
    random views whose neighbours are poisoned, over lengths from 0, against float64."""
    kv_heads, per_kv = group
    cpu = torch.device("cpu")
    q, k, v, seq_lens = _inputs(lens, kv_heads * per_kv, kv_heads, head_dim, torch.float32, cpu)
    table = None
    if page is not None:
        k, v, table = _paged(k, v, seq_lens, page)
    scales = torch.linspace(0.7, 1.9, kv_heads if "per_head" in options else 1)
    extras = {
        "sinks": _sinks(q.shape[1], cpu) if "sinks" in options else None,
        "k_scale": scales if "k_scale" in options else None,
        "v_scale": scales.flip(0) if "v_scale" in options else None,
    }
    ref = decode_ref(q, k, v, seq_lens, block_table=table, window=window, **extras)
    viewed = {name: None if t is None else data.draw(views(t)) for name, t in extras.items()}
    q, k, v, seq_lens = (data.draw(views(t)) for t in (q, k, v, seq_lens))
    table = None if table is None else data.draw(views(table))
    out = decode_attention(
        q, k, v, seq_lens, block_table=table, num_splits=num_splits, window=window, **viewed
    )
    assert rel_err(out, ref) < attention_tol(torch.float32)


@pytest.mark.parametrize("num_splits", [1, 3], ids=["split-kernel", "merge-kernel"])
def test_strided_sinks(num_splits, device):
    """Issue 25: the split and the merge kernel read the sinks as if contiguous."""
    q, k, v, lens = _inputs([40, 17], 4, 2, 16, torch.float32, device)
    sinks = (torch.linspace(-2.0, 4.0, 8, device=device))[::2]
    out = decode_attention(q, k, v, lens, sinks=sinks, num_splits=num_splits)
    assert rel_err(out, decode_ref(q, k, v, lens, sinks=sinks)) < attention_tol(torch.float32)


def test_strided_seq_lens(device):
    """Issue 25: the host check read a [::2] view's lengths, the kernel their neighbours (past
    the cache on a GPU)."""
    q, k, v, _ = _inputs([40, 17], 4, 2, 16, torch.float32, device)
    lens = torch.tensor([40, 5, 17, 39], dtype=torch.int32, device=device)[::2]
    assert rel_err(decode_attention(q, k, v, lens), decode_ref(q, k, v, lens)) < 1e-5


def test_choose_num_splits():
    # Enough (sequence, kv head) programs to fill the SMs: no split.
    assert choose_num_splits(64, 8, 32768, 132) == 1
    # Few programs, long context: about two programs per SM.
    assert choose_num_splits(1, 8, 32768, 132) == 32 and choose_num_splits(2, 8, 32768, 132) == 17
    # Short context: every split keeps at least MIN_TOKENS_PER_SPLIT tokens.
    assert choose_num_splits(1, 1, 3 * MIN_TOKENS_PER_SPLIT + 5, 132) == 3
    assert choose_num_splits(1, 1, 10, 132) == 1
    assert choose_num_splits(1, 1, 10**6, 10_000) == MAX_SPLITS


def test_make_and_gather_paged_cache(device):
    _, k, v, lens = _inputs([5, 33, 16], 2, 2, 64, torch.float32, device, max_len=40)
    k_pool, v_pool, table = make_paged_cache(k, v, lens, 16, False, None)
    assert k_pool.shape == v_pool.shape == (1 + 3 + 1, 16, 2, 64) and table.dtype == torch.int32
    assert table.tolist() == [[0, 0, 0], [1, 2, 3], [4, 0, 0]]
    shuffled = _paged(k, v, lens)[2]
    assert shuffled.tolist() != table.tolist()
    k_back, v_back = gather_paged_kv(*_paged(k, v, lens), lens)
    assert k_back.shape == (3, 2, 33, 64)
    for b, n in enumerate(lens.tolist()):
        assert torch.equal(k_back[b, :, :n], k[b, :n].transpose(0, 1))
        assert torch.equal(v_back[b, :, :n], v[b, :n].transpose(0, 1))
        assert torch.all(k_back[b, :, n:] == 0) and torch.all(v_back[b, :, n:] == 0)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("heads", "divisible by kv_heads"),
        ("head_dim", "head_dim 320 unsupported; allowed: 1 to 256"),
        ("head_dim_mismatch", "head_dim mismatch"),
        ("dtype", "share one dtype"),
        ("lens_dtype", "seq_lens dtype torch.int64 unsupported; allowed: int32"),
        ("table_dtype", "block_table dtype torch.int64 unsupported; allowed: int32"),
        ("device", "share one device"),
        ("rank", "3-D"),
        ("batch", "batch mismatch"),
        ("lens_count", "seq_lens has 3 entries"),
        ("over_max_len", "exceeds the cache max_len"),
        ("over_capacity", "exceeds the block table capacity"),
        ("table_negative", "block_table entries in use"),
        ("table_past_pool", "block_table entries in use"),
        ("negative_len", "seq_lens must be >= 0"),
        ("splits", r"num_splits must be an int in \[1, 128\] .*got 0$"),
        ("too_many_splits", r"num_splits must be an int in \[1, 128\] \(the merge .*got 4096$"),
        ("splits_bool", r"num_splits must be an int in \[1, 128\] .*got True$"),
        ("splits_float", r"num_splits must be an int in \[1, 128\] .*got 2\.5$"),
        ("scale_str", r"sm_scale must be a finite real number, got 'x'$"),
        ("scale_nan", r"sm_scale must be a finite real number, got nan$"),
        ("page_size_zero", r"page_size \(the caches' dim 1\) must be >= 1, got 0$"),
        ("window_zero", r"window must be None or an int >= 1 .*, got 0$"),
        ("window_negative", r"window must be None or an int >= 1 .*, got -2$"),
        ("window_float", r"window must be None or an int >= 1 .*, got 8\.0$"),
        ("sinks_shape", r"sinks must be a float32 tensor of shape \(4,\) .*shape \(2,\)"),
        ("sinks_dtype", r"sinks must be a float32 tensor .*got torch.float16"),
        ("sinks_device", "sinks is on meta but q is on"),
        (
            "k_scale_shape",
            r"k_scale must be a float32 tensor of shape \(\), \(1,\) or \(2,\).*\(3,\)$",
        ),
        ("k_scale_zero", r"k_scale must be finite and > 0 \(a dequantisation scale\), got 0.0$"),
        ("v_scale_nan", r"v_scale must be finite and > 0 \(a dequantisation scale\), got nan$"),
        ("v_scale_inf", r"v_scale must be finite and > 0 .*, got inf$"),
        ("v_scale_shape", r"v_scale must be a float32 tensor .*shape \(1, 2\)$"),
        ("v_scale_dtype", r"v_scale must be a float32 tensor .*got torch.float64"),
        ("scale_type", "k_scale must be a torch.Tensor, got float"),
        ("fp8_fp32_q", "a float8_e4m3fn cache needs a float16 or bfloat16 q, got torch.float32"),
        ("fp8_one_cache", r"share one dtype \(or both caches be float8_e4m3fn\)"),
    ],
)
def test_invalid_inputs(case, words, device):
    q, k, v, lens = _inputs([20, 9], 4, 2, 64, torch.float16, device, max_len=32)
    k_pool, v_pool, table = _paged(k, v, lens)

    def with_table(new_table: torch.Tensor) -> dict:
        return {"args": (q, k_pool, v_pool, lens), "block_table": new_table}

    bad_table = table.clone()
    bad_table[0, 1] = -3
    past_pool = table.clone()
    past_pool[1, 0] = k_pool.shape[0]
    call = {
        "heads": {"args": (q[:, :3], k, v, lens)},
        "head_dim": {"args": _inputs([20, 9], 4, 2, 320, torch.float16, device)},
        "head_dim_mismatch": {"args": (q[..., :32], k, v, lens)},
        "dtype": {"args": (q.float(), k, v, lens)},
        "lens_dtype": {"args": (q, k, v, lens.long())},
        "table_dtype": with_table(table.long()),
        "device": {"args": (q, k, v, torch.empty(2, dtype=torch.int32, device="meta"))},
        "rank": {"args": (q[:, :, None], k, v, lens)},
        "batch": {"args": (q, k[:1], v[:1], lens)},
        "lens_count": {
            "args": (q, k, v, torch.tensor([1, 2, 3], dtype=torch.int32, device=device))
        },
        "over_max_len": {
            "args": (q, k, v, torch.tensor([33, 1], dtype=torch.int32, device=device))
        },
        "over_capacity": {
            "args": (q, k_pool, v_pool, torch.tensor([33, 1], dtype=torch.int32, device=device)),
            "block_table": table,
        },
        "table_negative": with_table(bad_table),
        "table_past_pool": with_table(past_pool),
        "negative_len": {
            "args": (q, k, v, torch.tensor([-1, 1], dtype=torch.int32, device=device))
        },
        "splits": {"args": (q, k, v, lens), "num_splits": 0},
        "splits_bool": {"args": (q, k, v, lens), "num_splits": True},
        "splits_float": {"args": (q, k, v, lens), "num_splits": 2.5},
        "scale_str": {"args": (q, k, v, lens), "sm_scale": "x"},
        "scale_nan": {"args": (q, k, v, lens), "sm_scale": float("nan")},
        "page_size_zero": {"args": (q, k_pool[:, :0], v_pool[:, :0], lens), "block_table": table},
        "k_scale_zero": {
            "args": (q, k, v, lens),
            "k_scale": torch.tensor([1.0, 0.0], device=device),
        },
        "v_scale_nan": {
            "args": (q, k, v, lens),
            "v_scale": torch.tensor(float("nan"), device=device),
        },
        "v_scale_inf": {
            "args": (q, k, v, lens),
            "v_scale": torch.tensor([float("inf")], device=device),
        },
        "too_many_splits": {"args": (q, k, v, lens), "num_splits": 4096},
        "window_zero": {"args": (q, k, v, lens), "window": 0},
        "window_negative": {"args": (q, k, v, lens), "window": -2},
        "window_float": {"args": (q, k, v, lens), "window": 8.0},
        "sinks_shape": {"args": (q, k, v, lens), "sinks": torch.zeros(2, device=device)},
        "sinks_dtype": {
            "args": (q, k, v, lens),
            "sinks": torch.zeros(4, dtype=torch.float16, device=device),
        },
        "sinks_device": {"args": (q, k, v, lens), "sinks": torch.zeros(4, device="meta")},
        "k_scale_shape": {"args": (q, k, v, lens), "k_scale": torch.ones(3, device=device)},
        "v_scale_shape": {"args": (q, k, v, lens), "v_scale": torch.ones(1, 2, device=device)},
        "v_scale_dtype": {
            "args": (q, k, v, lens),
            "v_scale": torch.ones(2, dtype=torch.float64, device=device),
        },
        "scale_type": {"args": (q, k, v, lens), "k_scale": 0.5},
        "fp8_fp32_q": {
            "args": (q.float(), k.to(decode.FP8_CACHE_DTYPE), v.to(decode.FP8_CACHE_DTYPE), lens)
        },
        "fp8_one_cache": {"args": (q, k.to(decode.FP8_CACHE_DTYPE), v, lens)},
    }[case]
    kwargs = {key: value for key, value in call.items() if key != "args"}
    with pytest.raises(ValueError, match=words) as info:
        decode_attention(*call["args"], **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not kernels.interpreted(), reason="only the interpreter rejects bfloat16")
def test_interpreter_rejects_bfloat16(device):
    q, k, v, lens = _inputs([5], 2, 2, 64, torch.bfloat16, device)
    with pytest.raises(ValueError, match="bfloat16 gives wrong results"):
        decode_attention(q, k, v, lens)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "head_dim"),
    [(8, 32, 8, 128), (1, 64, 8, 128), (32, 32, 32, 64), (4, 16, 1, 256)],
    ids=str,
)
def test_gpu_large(batch, heads, kv_heads, head_dim, dtype, device):
    gen = torch.Generator().manual_seed(batch + heads)
    lens = torch.randint(1, 4097, (batch,), generator=gen).tolist()
    q, k, v, seq_lens = _inputs(lens, heads, kv_heads, head_dim, dtype, device, max_len=4096)
    k_pool, v_pool, table = _paged(k, v, seq_lens)
    ref = decode_ref(q, k, v, seq_lens)
    paged = decode_attention(q, k_pool, v_pool, seq_lens, block_table=table)
    contiguous = decode_attention(q, k, v, seq_lens)
    assert rel_err(paged, ref) < attention_tol(dtype)
    assert rel_err(contiguous, ref) < attention_tol(dtype)
    # torch SDPA on the gathered cache with a key-padding mask as an independent baseline.
    k_dense, v_dense = gather_paged_kv(k_pool, v_pool, table, seq_lens)
    pad = torch.arange(k_dense.shape[2], device=device)[None, :] < seq_lens[:, None].long()
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None], k_dense, v_dense, attn_mask=pad[:, None, None, :], enable_gqa=True
    )[:, :, 0]
    assert rel_err(paged, ref) <= 2 * rel_err(sdpa, ref) + 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "head_dim", "per_head", "window"),
    [
        (8, 64, 8, 64, True, 128),  # gpt-oss-120b's attention: 64 heads of 64, 8 kv heads
        (1, 32, 8, 128, False, None),
        (4, 16, 2, 80, True, 1000),
    ],
    ids=str,
)
def test_gpu_fp8_window_sinks(batch, heads, kv_heads, head_dim, per_head, window, dtype, device):
    """The serving combination on a GPU: float8 paged cache, scales, window and sinks, with the
    default split count; bfloat16 queries only here."""
    gen = torch.Generator().manual_seed(batch + heads)
    lens = torch.randint(1, 4097, (batch,), generator=gen).tolist()
    q, k, v, seq_lens = _inputs(lens, heads, kv_heads, head_dim, dtype, device, max_len=4096)
    k8, v8, k_scale, v_scale = _fp8_cache(k, v, per_head)
    k_pool, v_pool, table = _paged(k8.to(dtype), v8.to(dtype), seq_lens)
    k_pool, v_pool = k_pool.to(decode.FP8_CACHE_DTYPE), v_pool.to(decode.FP8_CACHE_DTYPE)
    options = {
        "window": window,
        "sinks": _sinks(heads, device),
        "k_scale": k_scale,
        "v_scale": v_scale,
    }
    out = decode_attention(q, k_pool, v_pool, seq_lens, block_table=table, **options)
    contiguous = decode_attention(q, k8, v8, seq_lens, **options)
    ref = decode_ref(q, k8, v8, seq_lens, **options)
    assert rel_err(out, ref) < attention_tol(dtype)
    assert rel_err(contiguous, ref) < attention_tol(dtype)
