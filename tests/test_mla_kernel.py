"""MLA decode against its float64 reference: awkward head counts and widths, pages part-filled,
empty and one-token sequences, splits, every argument a non-contiguous view, and bad input as
one line."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, attention_tol, rel_err, views

from kernels.mla import mla_decode, mla_decode_ref, mla_decode_torch

# For the hypothesis test, which cannot take the function-scoped `device` fixture.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def case(
    batch: int,
    heads: int,
    latent: int,
    rope: int,
    lens: list[int],
    page: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> dict:
    """Random queries and a shuffled paged latent pool holding `lens` tokens per sequence."""
    gen = torch.Generator().manual_seed(seed)
    pages = [math.ceil(n / page) for n in lens]
    width = max(max(pages), 1)
    blocks = sum(pages) + 3  # spare blocks the table never names
    order = torch.randperm(blocks, generator=gen)
    table = torch.zeros((batch, width), dtype=torch.int32)
    used = 0
    for b, n in enumerate(pages):
        table[b, :n] = order[used : used + n].int()
        used += n
    randn = lambda *shape: torch.randn(*shape, generator=gen).to(dtype).to(device)  # noqa: E731
    return {
        "q_latent": randn(batch, heads, latent),
        "q_rope": randn(batch, heads, rope),
        "cache": randn(blocks, page, latent + rope),
        "seq_lens": torch.tensor(lens, dtype=torch.int32, device=device),
        "block_table": table.to(device),
        "softmax_scale": (latent + rope) ** -0.5,
    }


def check(inputs: dict, dtype: torch.dtype, **options: object) -> None:
    ref = mla_decode_ref(**inputs)
    out = mla_decode(**inputs, **options)
    assert out.shape == ref.shape and out.dtype == dtype
    assert rel_err(out.cpu(), ref) < attention_tol(dtype)


@pytest.mark.parametrize(
    ("batch", "heads", "latent", "rope", "lens", "page"),
    [
        (2, 16, 64, 16, [37, 5], 16),  # a part-filled last page
        (3, 20, 96, 24, [1, 70, 33], 8),  # heads past one block of 16, widths off a power of two
        (1, 4, 32, 16, [129], 4),  # few heads padded up to a dot tile
        (2, 16, 64, 16, [0, 17], 16),  # an empty sequence outputs zeros
    ],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_against_float64(batch, heads, latent, rope, lens, page, dtype, device) -> None:
    check(case(batch, heads, latent, rope, lens, page, dtype, device), dtype)


@pytest.mark.parametrize("splits", [2, 5])
def test_splits_merge_to_the_same_answer(splits: int, device) -> None:
    inputs = case(2, 16, 64, 16, [90, 41], 8, torch.float32, device)
    check(inputs, torch.float32, num_splits=splits)


def test_the_torch_baseline_agrees() -> None:
    inputs = case(2, 5, 48, 16, [23, 9], 4, torch.float32, torch.device("cpu"))
    assert rel_err(mla_decode_torch(**inputs), mla_decode_ref(**inputs)) < 1e-6


def test_scalars_may_be_numpy_or_tensors(device) -> None:
    inputs = case(2, 16, 32, 16, [9, 20], 8, torch.float32, device)
    plain = mla_decode(**{**inputs, "softmax_scale": 0.125}, num_splits=2, max_seq_len=20)
    numpy = {**inputs, "softmax_scale": np.float32(0.125)}
    assert torch.equal(mla_decode(**numpy, num_splits=np.int64(2), max_seq_len=np.int32(20)), plain)
    tensor = {**inputs, "softmax_scale": torch.tensor(0.125)}
    assert torch.equal(mla_decode(**tensor, num_splits=2, max_seq_len=20), plain)


def test_an_empty_sequence_is_zeros(device) -> None:
    inputs = case(2, 16, 32, 16, [0, 9], 8, torch.float32, device)
    assert not mla_decode(**inputs)[0].any()


@VIEWS
@given(data=st.data())
def test_every_argument_may_be_a_strided_view(data: st.DataObject) -> None:
    inputs = case(2, 17, 48, 16, [21, 30], 8, torch.float32, DEVICE)
    for name in ("q_latent", "q_rope", "cache", "seq_lens", "block_table"):
        inputs[name] = data.draw(views(inputs[name]), label=name)
    check(inputs, torch.float32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.update(cache=i["cache"][..., :-1]), "cache rows must hold kv_lora_rank"),
        (lambda i: i.update(q_rope=i["q_rope"][:1]), "q_rope must be (batch, heads, rope_dim)"),
        (lambda i: i.update(seq_lens=i["seq_lens"] + 1000), "seq_lens must be within 0..32"),
        (lambda i: i["block_table"].fill_(99), "block_table entries a sequence uses"),
        (lambda i: i.update(seq_lens=i["seq_lens"].long()), "seq_lens dtype torch.int64"),
        (lambda i: i.update(cache=i["cache"].double()), "must share one dtype"),
        (lambda i: i.update(q_latent=[1.0]), "q_latent must be a torch.Tensor"),
        (lambda i: i.update(softmax_scale="0.1"), "softmax_scale must be a finite real number"),
        (lambda i: i.update(softmax_scale=torch.ones(2)), "softmax_scale must be a finite real"),
        (lambda i: i.update(num_splits=True), "num_splits must be an int in [1, 128], got True"),
        (lambda i: i.update(num_splits=2.5), "num_splits must be an int in [1, 128], got 2.5"),
        (lambda i: i.update(max_seq_len=14.0), "max_seq_len must be an int in [0, 32]"),
        (lambda i: i.update(cache=i["cache"][:, :0]), "page_size (the cache's dim 1) must be >= 1"),
    ],
)
def test_bad_input_is_one_line(change, message: str, device) -> None:
    inputs = case(2, 16, 32, 16, [9, 20], 16, torch.float32, device)
    change(inputs)
    with pytest.raises(ValueError, match=r"^mla_decode: ") as raised:
        mla_decode(**inputs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch", [1, 64])
def test_gpu_deepseek_shapes(batch: int, dtype: torch.dtype, device) -> None:
    """DeepSeek-V3's decode at TP 1: 128 heads, a 512-wide latent and a 64-wide rotary key,
    pages of 64 tokens (FlashMLA's), contexts of a few thousand."""
    lens = [1000 + 37 * b for b in range(batch)]
    check(case(batch, 128, 512, 64, lens, 64, dtype, device), dtype)
