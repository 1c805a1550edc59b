"""The rotary-embedding kernel against the float64 reference: GQA, head dims off the power of two,
unsorted and repeated positions, strided inputs, empty and one-token batches, bad inputs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from kernels import MAX_HEAD_DIM, interpreted
from kernels.reference import rotary_ref
from kernels.rotary import rotary, rotary_cache

# Unit roundoff of one rounding to each dtype. The kernel forms x1·cos − x2·sin (and
# x2·cos + x1·sin) in fp32 and rounds once, so |err| <= u·|ref| elementwise and
# ‖err‖/‖ref‖ <= u, plus fp32 arithmetic (three roundings of 2^-24 over terms whose norm is the
# output's: a rotation keeps norms). bf16: the interpreter truncates to bf16 (error < 2^-7), a GPU
# rounds to nearest (2^-8). fp32: 2^-20 leaves room for that fp32 arithmetic.
UNIT = {
    torch.float16: 2**-11,
    torch.bfloat16: 2**-7 if interpreted() else 2**-8,
    torch.float32: 2**-20,
}
TOL = {dtype: 1.1 * u for dtype, u in UNIT.items()}
DTYPES = [torch.float16, torch.bfloat16, torch.float32]

# (tokens, q_heads, k_heads, head_dim): the smallest, GQA with a half of 40 (padded to 64), MQA,
# more key than query heads with a half of 3, the largest head dim, Llama-8B's heads.
SHAPES = [(1, 1, 1, 2), (7, 4, 2, 80), (5, 8, 1, 96), (3, 3, 5, 6), (4, 2, 2, 256), (6, 32, 8, 128)]
MAX_POS = 64


def _randn(gen: torch.Generator, *shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device).to(dtype)


def _inputs(tokens, q_heads, k_heads, head_dim, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    q = _randn(gen, tokens, q_heads, head_dim, dtype=dtype)
    k = _randn(gen, tokens, k_heads, head_dim, dtype=dtype)
    # Unsorted, with repeats once tokens pass a handful: drawn with replacement.
    positions = torch.randint(0, MAX_POS, (tokens,), generator=gen, device=device)
    return q, k, positions, rotary_cache(MAX_POS, head_dim, device=device)


def _check(q, k, positions, cache) -> None:
    q_out, k_out = rotary(q, k, positions, cache)
    q_ref, k_ref = rotary_ref(q, k, positions, cache)
    assert q_out.dtype == k_out.dtype == q.dtype
    assert q_out.shape == q.shape and k_out.shape == k.shape
    assert q_out.is_contiguous() and k_out.is_contiguous()
    assert rel_err(q_out, q_ref) < TOL[q.dtype]
    assert rel_err(k_out, k_ref) < TOL[q.dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype: torch.dtype, device) -> None:
    _check(*_inputs(*shape, dtype, device))


def test_reference_rotates_pairs_by_the_position_angles(device) -> None:
    """The reference and the cache checked independently: (x_i, x_{i+D/2}) as a complex number
    times e^{i·p·θ_i}, θ_i = base^(−2i/D), is the rotated pair."""
    gen = torch.Generator(device=device).manual_seed(1)
    tokens, heads, head_dim, base = 5, 3, 12, 500.0
    q = _randn(gen, tokens, heads, head_dim, dtype=torch.float64)
    positions = torch.tensor([9, 0, 31, 9, 4], device=device)
    cache = rotary_cache(32, head_dim, base, device=device, dtype=torch.float64)
    theta = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    turn = torch.polar(torch.ones_like(theta), positions[:, None] * theta)[:, None, :]
    z = torch.complex(q[..., : head_dim // 2], q[..., head_dim // 2 :]) * turn
    q_ref, k_ref = rotary_ref(q, q[:, :1], positions, cache)
    assert (q_ref - torch.cat([z.real, z.imag], dim=-1)).abs().max() < 1e-12
    assert torch.equal(k_ref, q_ref[:, :1])


def test_cache_layout(device) -> None:
    """Row p: cos(p·θ_i) then sin(p·θ_i), θ_i = 10000^(−2i/8) = 1, 0.1, 0.01, 0.001."""
    cache = rotary_cache(10, 8, device=device)
    assert cache.shape == (10, 8) and cache.dtype == torch.float32 and cache.is_contiguous()
    angles = torch.tensor([3.0, 0.3, 0.03, 0.003], dtype=torch.float64)
    expected = torch.cat([angles.cos(), angles.sin()]).float()
    assert (cache[3].cpu() - expected).abs().max() < 1e-7
    assert rotary_cache(4, 8, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="even head_dim"):
        rotary_cache(10, 7)


def test_unsorted_repeated_positions(device) -> None:
    """Tokens at one position with one input get one output; every token reads its own row."""
    q, k, _, cache = _inputs(7, 4, 2, 80, torch.float16, device)
    positions = torch.tensor([5, 0, 5, 63, 3, 63, 2], device=device)
    q[2], k[2] = q[0], k[0]
    _check(q, k, positions, cache)
    q_out, k_out = rotary(q, k, positions, cache)
    assert torch.equal(q_out[0], q_out[2]) and torch.equal(k_out[0], k_out[2])
    assert torch.equal(q_out[1].float(), q[1].float())  # position 0 is the identity


def test_int32_positions_and_a_half_precision_cache(device) -> None:
    q, k, positions, cache = _inputs(5, 4, 2, 64, torch.float32, device)
    q_out, k_out = rotary(q, k, positions.int(), cache.to(torch.bfloat16))
    q_ref, k_ref = rotary_ref(q, k, positions, cache.to(torch.bfloat16))
    assert rel_err(q_out, q_ref) < TOL[torch.float32] and rel_err(k_out, k_ref) < TOL[torch.float32]


def test_views_of_a_fused_qkv_projection(device) -> None:
    """q and k sliced out of one (tokens, (Hq + 2·Hk)·D) projection output: no copies."""
    gen = torch.Generator(device=device).manual_seed(2)
    tokens, q_heads, k_heads, head_dim = 6, 4, 2, 96
    qkv = _randn(gen, tokens, (q_heads + 2 * k_heads) * head_dim, dtype=torch.float16)
    q = qkv[:, : q_heads * head_dim].view(tokens, q_heads, head_dim)
    k = qkv[:, q_heads * head_dim : (q_heads + k_heads) * head_dim].view(tokens, k_heads, head_dim)
    assert not q.is_contiguous() and not k.is_contiguous()
    positions = torch.randint(0, MAX_POS, (tokens,), generator=gen, device=device)
    _check(q, k, positions, rotary_cache(MAX_POS, head_dim, device=device))


@VIEWS
@given(
    data=st.data(),
    tokens=st.integers(0, 3),
    heads=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    half=st.integers(1, 9),
)
def test_any_views_of_every_argument(data, tokens: int, heads: tuple, half: int) -> None:
    q, k, positions, cache = _inputs(tokens, *heads, 2 * half, torch.float32, torch.device("cpu"))
    _check(*(data.draw(views(t)) for t in (q, k, positions, cache)))


def test_any_strides(device) -> None:
    """Heads-major k, every other element of q, strided positions, a column-major cache."""
    gen = torch.Generator(device=device).manual_seed(3)
    tokens, q_heads, k_heads, head_dim = 5, 3, 2, 40
    q = _randn(gen, tokens, q_heads, 2 * head_dim)[..., ::2]
    k = _randn(gen, k_heads, tokens, head_dim).transpose(0, 1)
    positions = torch.randint(0, MAX_POS, (2 * tokens,), generator=gen, device=device)[::2]
    cache = rotary_cache(MAX_POS, head_dim, device=device).t().contiguous().t()
    assert not any(t.is_contiguous() for t in (q, k, positions, cache))
    _check(q, k, positions, cache)


def test_no_tokens(device) -> None:
    q, k, positions, cache = _inputs(0, 4, 2, 64, torch.float16, device)
    q_out, k_out = rotary(q, k, positions, cache)
    assert q_out.shape == (0, 4, 64) and k_out.shape == (0, 2, 64)


def test_inputs_are_not_changed(device) -> None:
    q, k, positions, cache = _inputs(3, 2, 1, 16, torch.float16, device)
    before = (q.clone(), k.clone())
    rotary(q, k, positions, cache)
    assert torch.equal(q, before[0]) and torch.equal(k, before[1])


def test_unchecked_position_out_of_range_reads_nothing(device) -> None:
    """check_positions=False: a bad position zeroes its token instead of reading past the
    cache; the other tokens are rotated as usual."""
    q, k, positions, cache = _inputs(4, 2, 1, 16, torch.float32, device)
    positions[1] = MAX_POS + 1000
    q_out, k_out = rotary(q, k, positions, cache, check_positions=False)
    assert not q_out[1].any() and not k_out[1].any()
    keep = [0, 2, 3]
    q_ref, _ = rotary_ref(q[keep], k[keep], positions[keep], cache)
    assert rel_err(q_out[keep], q_ref) < TOL[torch.float32]


def _bad_inputs():
    """(change to (q, k, positions, cache), words the error must contain); head_dim 8."""
    return [
        (lambda q, k, p, c: (q[0], k, p, c), "must be \\(tokens, heads, head_dim\\)"),
        (lambda q, k, p, c: (q, k[:-1], p, c), "must share tokens and head_dim"),
        (lambda q, k, p, c: (q, k[:, :, :6], p, c), "must share tokens and head_dim"),
        (lambda q, k, p, c: (q[:, :, :7], k[:, :, :7], p, c[:, :7]), "even, 2 to 256"),
        (lambda q, k, p, c: (q[:, :0], k, p, c), "at least one head"),
        (lambda q, k, p, c: (q, k.half(), p, c), "must share one dtype"),
        (lambda q, k, p, c: (q.long(), k.long(), p, c), "q dtype torch.int64 unsupported"),
        (lambda q, k, p, c: (q, k, p.float(), c), "int32 or int64"),
        (lambda q, k, p, c: (q, k, p[:-1], c), "positions must be \\(3,\\)"),
        (lambda q, k, p, c: (q, k, p, c[:, :6]), "cos_sin_cache must be \\(max_pos, 8\\)"),
        (lambda q, k, p, c: (q, k, p, c.double()), "cos_sin_cache dtype torch.float64"),
        (lambda q, k, p, c: (q, k, p + 16, c), "must lie in \\[0, 16\\)"),
        (lambda q, k, p, c: (q, k, p - 5, c), "got min -5"),
        (lambda q, k, p, c: (q, k, p.tolist(), c), "positions must be a torch.Tensor"),
    ]


@pytest.mark.parametrize(("change", "words"), _bad_inputs())
def test_bad_inputs_are_one_clear_line(change, words: str, device) -> None:
    q, k, _, _ = _inputs(3, 2, 1, 8, torch.float32, device)
    positions = torch.tensor([0, 15, 3], device=device)
    with pytest.raises(ValueError, match=words) as info:
        rotary(*change(q, k, positions, rotary_cache(16, 8, device=device)))
    assert str(info.value).startswith("rotary: ") and "\n" not in str(info.value)


def test_head_dim_beyond_the_tile_is_refused(device) -> None:
    d = MAX_HEAD_DIM + 2
    x = torch.zeros(1, 1, d, device=device)
    with pytest.raises(ValueError, match=f"allowed: even, 2 to {MAX_HEAD_DIM}"):
        rotary(
            x, x, torch.zeros(1, dtype=torch.int64, device=device), torch.zeros(4, d, device=device)
        )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tokens", [1, 4096])
@pytest.mark.parametrize("heads", [(32, 8, 128), (64, 8, 128), (32, 32, 80), (28, 4, 256)], ids=str)
def test_gpu(tokens: int, heads: tuple[int, int, int], dtype: torch.dtype, device) -> None:
    """LLM sizes: Llama-3-8B, -70B, an 80-wide head (Phi), the widest head; positions over an
    8K context."""
    q_heads, k_heads, head_dim = heads
    gen = torch.Generator(device=device).manual_seed(4)
    q = _randn(gen, tokens, q_heads, head_dim, dtype=dtype)
    k = _randn(gen, tokens, k_heads, head_dim, dtype=dtype)
    positions = torch.randint(0, 8192, (tokens,), generator=gen, device=device)
    cache = rotary_cache(8192, head_dim, base=500000.0, device=device)
    _check(q, k, positions, cache)
