"""The paged KV-cache write against the float64 reference: scattered blocks, skipped tokens,
cells left alone, strided inputs and caches, the fp8 scale path, bad inputs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, rel_err, views

from bench.measure.ops.kv_write import write_kv_torch
from kernels.checks import FP8_DTYPE
from kernels.kvcache import FP8_MAX, write_kv
from kernels.reference import write_kv_ref

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
# e4m3 keeps 3 mantissa bits: rounding to nearest moves a normal value by at most 2^-4 of itself
# (half a step of 2^-3), so ‖err‖/‖ref‖ <= 2^-4 over the written cells; subnormals (below 2^-6)
# move by at most 2^-10, nothing against the norm. Saturated cells are exact (±448).
FP8_TOL = 2**-4

# (tokens, kv_heads, head_dim, num_blocks, page_size): the smallest, one token, a head dim off
# the power of two with 5-row pages, a pool with spare blocks, many heads, the widest head.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 2, 64, 3, 16),
    (7, 2, 80, 4, 5),
    (20, 3, 96, 8, 16),
    (5, 8, 128, 2, 16),
    (6, 4, 256, 3, 4),
]
# (tokens, kv_heads, head_dim) on a GPU: a decode step and a 4K prefill for Llama-3-8B/70B
# (8 kv heads), a prefill for Llama-2-7B (32), a 256-wide head.
GPU_SHAPES = [(1, 8, 128), (4096, 8, 128), (4096, 32, 128), (512, 8, 256)]


def _case(tokens, kv_heads, head_dim, num_blocks, page_size, dtype, cache_dtype, device, seed=0):
    """New k/v, caches full of other values (so cells left alone can be told from written ones)
    and distinct slots spread over the pool in random order; every third token skipped."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device)

    k, v = randn(tokens, kv_heads, head_dim).to(dtype), randn(tokens, kv_heads, head_dim).to(dtype)
    pool = (num_blocks, page_size, kv_heads, head_dim)
    k_cache, v_cache = randn(*pool).to(cache_dtype), randn(*pool).to(cache_dtype)
    slots = torch.randperm(num_blocks * page_size, generator=gen, device=device)[:tokens]
    if tokens > 1:
        slots[1::3] = -1
    return k, v, k_cache, v_cache, slots


def _check_exact(k, v, k_cache, v_cache, slots, write=write_kv) -> None:
    """16-bit and fp32 caches take the values bit for bit; every other cell keeps its own."""
    k_ref, v_ref = write_kv_ref(k, v, k_cache, v_cache, slots)
    assert write(k, v, k_cache, v_cache, slots) is None
    assert torch.equal(k_cache.double(), k_ref) and torch.equal(v_cache.double(), v_ref)


def _written(k_cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """A (num_blocks, page_size) mask of the rows the kept tokens go to."""
    mask = torch.zeros(k_cache.shape[:2], dtype=torch.bool, device=k_cache.device)
    mask.view(-1)[slots[slots >= 0]] = True
    return mask


def _check_fp8(k, v, k_cache, v_cache, slots, k_scale, v_scale, write=write_kv) -> None:
    """Written rows within e4m3 rounding of x / scale (saturated), other rows bit for bit."""
    before = (k_cache.clone(), v_cache.clone())
    refs = write_kv_ref(k, v, k_cache, v_cache, slots, k_scale=k_scale, v_scale=v_scale)
    write(k, v, k_cache, v_cache, slots, k_scale=k_scale, v_scale=v_scale)
    rows = _written(k_cache, slots)
    for cache, old, ref in zip((k_cache, v_cache), before, refs, strict=True):
        assert torch.equal(cache[~rows].view(torch.uint8), old[~rows].view(torch.uint8))
        assert rel_err(cache[rows], ref[rows]) < FP8_TOL


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(shape, dtype: torch.dtype, device) -> None:
    _check_exact(*_case(*shape, dtype, dtype, device))


def test_skipped_tokens_are_written_nowhere(device) -> None:
    """Padding tokens (slot -1) carry a value found nowhere else; no cache holds it after."""
    k, v, k_cache, v_cache, slots = _case(9, 2, 16, 4, 4, torch.float16, torch.float16, device)
    skipped = slots < 0
    assert skipped.sum() == 3
    k[skipped], v[skipped] = 1234.0, -1234.0
    _check_exact(k, v, k_cache, v_cache, slots)
    assert not (k_cache == 1234.0).any() and not (v_cache == -1234.0).any()


def test_tokens_land_in_their_own_blocks(device) -> None:
    """Slot s is row s % page_size of block s // page_size: a hand-made mapping, checked
    without the reference."""
    k_cache = torch.zeros(3, 4, 1, 2, device=device)
    v_cache = torch.zeros_like(k_cache)
    k = torch.arange(1.0, 7.0, device=device).view(3, 1, 2)
    write_kv(k, -k, k_cache, v_cache, torch.tensor([9, -1, 2], device=device))
    assert k_cache[2, 1, 0].tolist() == [1.0, 2.0] and k_cache[0, 2, 0].tolist() == [5.0, 6.0]
    assert v_cache[2, 1, 0].tolist() == [-1.0, -2.0] and k_cache.count_nonzero() == 4


def test_no_tokens_change_nothing(device) -> None:
    k, v, k_cache, v_cache, slots = _case(0, 2, 16, 2, 4, torch.float16, torch.float16, device)
    before = k_cache.clone()
    write_kv(k, v, k_cache, v_cache, slots)
    assert torch.equal(k_cache, before)


def test_strided_inputs_and_caches(device) -> None:
    """k sliced out of a fused qkv projection, v contiguous; the pools the two halves of one
    (num_blocks, 2, page_size, kv_heads, head_dim) tensor, or one of them heads-major (HND)."""
    gen = torch.Generator(device=device).manual_seed(5)
    tokens, q_heads, kv_heads, head_dim, num_blocks, page_size = 7, 4, 2, 48, 4, 8
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim, generator=gen, device=device)
    k = qkv[:, q_heads * head_dim : (q_heads + kv_heads) * head_dim].view(tokens, kv_heads, -1)
    v = torch.randn(tokens, kv_heads, head_dim, generator=gen, device=device)
    slots = torch.randperm(num_blocks * page_size, generator=gen, device=device)[:tokens]
    pools = torch.randn(num_blocks, 2, page_size, kv_heads, head_dim, generator=gen, device=device)
    _check_exact(k, v, pools[:, 0], pools[:, 1], slots)
    hnd = torch.randn(num_blocks, kv_heads, page_size, head_dim, generator=gen, device=device)
    assert not any(t.is_contiguous() for t in (k, pools[:, 0], hnd.transpose(1, 2)))
    _check_exact(k, v, pools[:, 0], hnd.transpose(1, 2), slots)
    _check_exact(v, k, hnd.transpose(1, 2), pools[:, 1], slots)


@VIEWS
@given(
    data=st.data(),
    shape=st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(1, 9)),
    pool=st.tuples(st.integers(1, 3), st.integers(1, 4)),
    fp8=st.booleans(),
)
def test_any_views_of_every_argument(data, shape: tuple, pool: tuple, fp8: bool) -> None:
    """Every argument a random view, the pools too (written in place through their strides):
    only the slots' cells change, each to its token's value."""
    tokens = min(shape[0], pool[0] * pool[1])
    cpu = torch.device("cpu")
    cache_dtype = FP8_DTYPE if fp8 else torch.float32
    case = _case(tokens, *shape[1:], *pool, torch.float32, cache_dtype, cpu, seed=shape[0])
    k, v, k_cache, v_cache, slots = (data.draw(views(t)) for t in case)
    if not fp8:
        _check_exact(k, v, k_cache, v_cache, slots)
        return
    scales = (data.draw(views(torch.tensor([s]))) for s in (0.5, 2.0))
    _check_fp8(k, v, k_cache, v_cache, slots, *scales)


def _check_fp8_scaled_and_saturated(k, v, k_cache, v_cache, slots) -> None:
    """x / scale for values from about ±4 to well past ±448: cells past it hold exactly ±448,
    the rest are rounded to nearest even exactly as PyTorch's cast rounds them."""
    # k / k_scale is 400·N(0, 1): a quarter of it saturates; v / v_scale is 80·N(0, 1).
    k, v = 8 * k, 8 * v
    k_scale = torch.tensor([0.02], device=k.device)
    v_scale = torch.tensor([0.1], device=k.device)
    k_base, v_base = k_cache.clone(), v_cache.clone()
    _check_fp8(k, v, k_cache, v_cache, slots, k_scale, v_scale)
    write_kv_torch(k, v, k_base, v_base, slots, k_scale=k_scale, v_scale=v_scale)
    assert torch.equal(k_cache.view(torch.uint8), k_base.view(torch.uint8))
    assert torch.equal(v_cache.view(torch.uint8), v_base.view(torch.uint8))
    kept = slots >= 0
    page = k_cache.shape[1]
    stored = k_cache[slots[kept] // page, slots[kept] % page].float()
    over = (k[kept].float() / k_scale).abs() > FP8_MAX
    assert over.float().mean() > 0.2
    assert torch.equal(stored[over].abs(), torch.full_like(stored[over], FP8_MAX))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fp8_scaled_and_saturated(dtype: torch.dtype, device) -> None:
    _check_fp8_scaled_and_saturated(*_case(20, 3, 96, 8, 16, dtype, FP8_DTYPE, device))


def test_fp8_baseline_matches_reference(device) -> None:
    k, v, k_cache, v_cache, slots = _case(7, 2, 80, 4, 5, torch.bfloat16, FP8_DTYPE, device)
    scale = torch.tensor([0.02], device=device)
    _check_fp8(k, v, k_cache, v_cache, slots, scale, scale, write=write_kv_torch)


@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_fp8_rounding_at_ties_carries_and_subnormals(scale: float, device) -> None:
    """Every e4m3 value, every midpoint between neighbours (ties go to the even one), a hair
    either side of each midpoint (the carry into the next binade: 126.07 -> 128), signed zeros,
    values that flush to zero and saturate: bit for bit as PyTorch's cast. Scale 7 puts x / 7
    exactly on those points where x · fl(1/7) misses 60 of them: the division must be IEEE."""
    grid = torch.arange(256, dtype=torch.uint8).view(FP8_DTYPE).float()
    grid = grid[~grid.isnan()].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    extra = torch.tensor([0.0, -0.0, 1e-9, -1e-9, 449.0, 465.0, -1e6, 126.07])
    values = torch.cat([grid, mids, mids.nextafter(grid[1:]), mids.nextafter(grid[:-1]), extra])
    values = torch.cat([values, torch.zeros(-values.numel() % 64)]).view(-1, 1, 64).to(device)
    tokens = values.shape[0]
    caches = torch.zeros(4, tokens, 1, 1, 64, dtype=FP8_DTYPE, device=device)
    slots = torch.arange(tokens, device=device)
    scales = {
        "k_scale": torch.tensor([scale], device=device),
        "v_scale": torch.ones(1, device=device),
    }
    write_kv(values * scale, -values, caches[0], caches[1], slots, **scales)
    write_kv_torch(values * scale, -values, caches[2], caches[3], slots, **scales)
    assert torch.equal(caches[:2].view(torch.uint8), caches[2:].view(torch.uint8))
    assert torch.equal(caches[0].float().flatten()[: grid.numel()], grid.to(device))


def test_unchecked_slot_past_the_pool_is_skipped(device) -> None:
    """check_slots=False: a slot one past the pool writes nothing, not even into the memory
    that follows the pool (here a third block of the tensor the pools are views of)."""
    k, v, _, _, _ = _case(4, 2, 16, 2, 4, torch.float32, torch.float32, device)
    memory = torch.randn(2, 3, 4, 2, 16, device=device)
    k_cache, v_cache = memory[0, :2], memory[1, :2]
    slots = torch.tensor([8, -1, 2, 5], device=device)
    k_ref, v_ref = write_kv_ref(k, v, k_cache, v_cache, torch.where(slots == 8, -1, slots))
    after_the_pool = memory[:, 2].clone()
    write_kv(k, v, k_cache, v_cache, slots, check_slots=False)
    assert torch.equal(k_cache.double(), k_ref) and torch.equal(v_cache.double(), v_ref)
    assert torch.equal(memory[:, 2], after_the_pool)


def test_nan_stays_nan_in_an_fp8_pool(device) -> None:
    """Issue 25: max/min dropped NaN, which an fp8 pool then held as -448."""
    k = torch.tensor([[[float("nan"), 1.0, float("inf"), -500.0]]], device=device)
    caches = torch.zeros(2, 1, 2, 1, 4, dtype=FP8_DTYPE, device=device)
    one = torch.ones(1, device=device)
    write_kv(k, k, caches[0], caches[1], torch.tensor([1], device=device), k_scale=one, v_scale=one)
    written = caches[:, 0, 1, 0].float()
    assert written[:, 0].isnan().all()
    assert written[:, 1:].tolist() == [[1.0, 448.0, -448.0]] * 2


# The unchecked writes below divide by these scales.
@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:divide by zero")
@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
@pytest.mark.parametrize("name", ["k_scale", "v_scale"])
def test_scales_must_be_finite_and_positive(name: str, bad: float, device) -> None:
    """Issue 25: k_scale=0 was accepted (every value became NaN or ±448)."""
    k, v, k_cache, v_cache, slots = _case(3, 2, 8, 4, 8, torch.float32, FP8_DTYPE, device)
    scales = {"k_scale": torch.ones(1, device=device), "v_scale": torch.ones(1, device=device)}
    scales[name] = torch.tensor([bad], device=device)
    with pytest.raises(ValueError, match=f"^write_kv: {name} must be finite and > 0"):
        write_kv(k, v, k_cache, v_cache, slots, **scales)
    # A caller that vouches for its inputs skips the check (and its sync).
    write_kv(k, v, k_cache, v_cache, slots, **scales, check_slots=False)


def _f64(scales: dict) -> dict:
    return {**scales, "v_scale": scales["v_scale"].double()}


def _bad_inputs():
    """(change to (k, v, k_cache, v_cache, slots, scales), words the error must contain)."""
    fp8 = lambda c: c.to(FP8_DTYPE)  # noqa: E731
    return [
        (lambda k, v, kc, vc, s, sc: (k[0], v[0], kc, vc, s, {}), "must be \\(tokens, kv_heads"),
        (lambda k, v, kc, vc, s, sc: (k, v[:, :1], kc, vc, s, {}), "of one shape, got"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc[0], vc[0], s, {}), "\\(num_blocks, page_size"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc[:1], s, {}), "k_cache and v_cache must be"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc[:, :, :1], vc[:, :, :1], s, {}), "differ from k's"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc, s.int(), {}), "slot_mapping must be \\(3,\\)"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc, s[:2], {}), "\\(3,\\) int64, got \\(2,\\)"),
        (lambda k, v, kc, vc, s, sc: (k, v.half(), kc, vc, s, {}), "must share one dtype"),
        (
            lambda k, v, kc, vc, s, sc: (k.int(), v.int(), kc, vc, s, {}),
            "k dtype torch.int32 unsupported",
        ),
        (lambda k, v, kc, vc, s, sc: (k, v, kc.half(), vc.half(), s, {}), "share k's dtype"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, fp8(vc), s, sc), "share k's dtype"),
        (lambda k, v, kc, vc, s, sc: (k, v, fp8(kc), fp8(vc), s, {}), "need k_scale and v_scale"),
        (lambda k, v, kc, vc, s, sc: (k, v, fp8(kc), fp8(vc), s, _f64(sc)), "v_scale must be a fl"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc, s, sc), "apply to float8_e4m3fn caches only"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc, s + 100, {}), "must be < 32 \\(num_blocks"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, vc, s.tolist(), {}), "must be a torch.Tensor"),
        (lambda k, v, kc, vc, s, sc: (k, v, kc, kc, s, {}), "start at the same memory"),
        (
            lambda k, v, kc, vc, s, sc: (k, v, kc[:1].expand(kc.shape), vc, s, {}),
            "k_cache has a stride of 0",
        ),
    ]


@pytest.mark.parametrize(("change", "words"), _bad_inputs())
def test_bad_inputs_are_one_clear_line(change, words: str, device) -> None:
    k, v, k_cache, v_cache, slots = _case(3, 2, 8, 4, 8, torch.float32, torch.float32, device)
    scales = {"k_scale": torch.ones(1, device=device), "v_scale": torch.ones(1, device=device)}
    *args, kwargs = change(k, v, k_cache, v_cache, slots, scales)
    with pytest.raises(ValueError, match=words) as info:
        write_kv(*args, **kwargs)
    assert str(info.value).startswith("write_kv: ") and "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [*DTYPES, FP8_DTYPE], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
def test_gpu(shape: tuple[int, int, int], cache_dtype: torch.dtype, device) -> None:
    """16-row pages in a pool twice the size needed, slots scattered over it, every third token
    skipped; fp8 pools written from bf16."""
    tokens, kv_heads, head_dim = shape
    num_blocks = max(2, 2 * tokens // 16)
    dtype = torch.bfloat16 if cache_dtype == FP8_DTYPE else cache_dtype
    case = _case(tokens, kv_heads, head_dim, num_blocks, 16, dtype, cache_dtype, device)
    if cache_dtype == FP8_DTYPE:
        _check_fp8_scaled_and_saturated(*case)
    else:
        _check_exact(*case)
        baseline_case = _case(tokens, kv_heads, head_dim, num_blocks, 16, dtype, dtype, device)
        _check_exact(*baseline_case, write=write_kv_torch)
