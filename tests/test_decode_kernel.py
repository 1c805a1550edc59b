"""Decode attention over contiguous and paged KV caches against the float64 reference."""

import pytest
import torch
from kernelcheck import attention_tol, rel_err

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
    """1 split, several, and more splits than tiles (empty splits) give the same answer."""
    q, k, v, lens = _inputs([300, 3, 129], 4, 1, 64, torch.float32, device)
    k_pool, v_pool, table = _paged(k, v, lens)
    one = decode_attention(q, k_pool, v_pool, lens, block_table=table, num_splits=1)
    for splits in (2, 5, 16):
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
        kept = decode._prune_decode_configs(configs, named_args, **kwargs)
        kept_lists.append(kept)
        return [max(kept, key=lambda c: c.kwargs["BLOCK_N"])]

    monkeypatch.setattr(kernel, "configs", decode._gpu_decode_configs())
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
        ("lens_dtype", "seq_lens dtype must be torch.int32"),
        ("table_dtype", "block_table dtype must be torch.int32"),
        ("device", "share one device"),
        ("rank", "rank 3"),
        ("batch", "batch mismatch"),
        ("lens_count", "seq_lens has 3 entries"),
        ("over_max_len", "exceeds the cache max_len"),
        ("over_capacity", "exceeds the block table capacity"),
        ("table_negative", "block_table entries in use"),
        ("table_past_pool", "block_table entries in use"),
        ("negative_len", "seq_lens must be >= 0"),
        ("splits", r"num_splits must be an int in \[1, 128\], got 0"),
        ("too_many_splits", r"num_splits must be an int in \[1, 128\], got 4096: the merge"),
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
        "too_many_splits": {"args": (q, k, v, lens), "num_splits": 4096},
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
