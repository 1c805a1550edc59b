"""Flash-attention forward kernel against the float64 reference (and torch SDPA on a GPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernelcheck import VIEWS, attention_tol, rel_err, views

import kernels
from kernels import attention
from kernels.attention import flash_attention
from kernels.reference import attention_lse_ref, attention_ref

# Relative Frobenius error ‖out − ref‖ / ‖ref‖ allowed per dtype. float32 dots are exact in the
# interpreter but TF32 on a GPU.
_LSE_ATOL = 1e-4


def _lse_atol(dtype: torch.dtype) -> float:
    return 2e-2 if dtype == torch.float32 and not kernels.interpreted() else _LSE_ATOL


def _inputs(
    shape: tuple[int, int, int, int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q (B, H, Sq, D) and k, v (B, KVH, Sk, D) from shape (B, H, KVH, Sq, Sk, D)."""
    batch, heads, kv_heads, seq_q, seq_k, head_dim = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq_q, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, seq_k, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, seq_k, head_dim, generator=gen)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def _check(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    sm_scale: float | None = None,
    use_tma: bool | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the kernel with return_lse, compare output and log-sum-exp with the reference and
    return the output."""
    options = {"window": window, "sinks": sinks}
    if use_tma is None:
        out, lse = flash_attention(
            q, k, v, causal=causal, sm_scale=sm_scale, return_lse=True, **options
        )
    else:
        scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
        out, lse = attention._launch(q, k, v, causal, scale, True, use_tma=use_tma, **options)
    ref = attention_ref(q, k, v, causal=causal, sm_scale=sm_scale, **options)
    lse_ref = attention_lse_ref(q, k, causal=causal, sm_scale=sm_scale, **options)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    err = rel_err(out, ref)
    assert err < attention_tol(q.dtype), f"relative error {err:.2e}"
    # Rows that see no key (and have no sink) must be exact zeros with lse -inf; the rest must
    # match.
    empty = torch.isneginf(lse_ref)
    assert torch.equal(torch.isneginf(lse), empty)
    assert torch.all(out[empty] == 0)
    lse_err = (lse.double()[~empty] - lse_ref[~empty]).abs().max().item() if (~empty).any() else 0
    assert lse_err < _lse_atol(q.dtype), f"lse error {lse_err:.2e}"
    return out


CPU_DTYPES = [torch.float16, torch.float32]

# (batch, heads, kv_heads, seq_q, seq_k, head_dim)
SQUARE_SHAPES = [
    (1, 2, 2, 1, 1, 64),
    (2, 2, 2, 17, 17, 64),
    (1, 3, 3, 113, 113, 64),
    (1, 2, 2, 113, 113, 128),
]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SQUARE_SHAPES, ids=str)
def test_square(shape, causal, dtype, device):
    _check(*_inputs(shape, dtype, device), causal)


@pytest.mark.parametrize("head_dim", [1, 16, 32, 80, 96, 192, 256])
def test_other_head_dims(head_dim, device):
    """Powers of two, and dims whose tile is padded (Phi's 80, Qwen's 96, MLA prefill's 192)."""
    _check(*_inputs((1, 2, 1, 33, 47, head_dim), torch.float16, device), True)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_long_sequence(causal, device):
    _check(*_inputs((1, 1, 1, 1023, 1023, 64), torch.float16, device), causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kv_heads", [8, 2, 1], ids=lambda n: f"group{8 // n}")
def test_grouped_query(kv_heads, causal, device):
    _check(*_inputs((1, 8, kv_heads, 113, 113, 64), torch.float32, device), causal)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(
    "seqs",
    # Shorter and longer queries than keys; 113 > 17 leaves the first 96 causal rows empty.
    [(17, 113), (113, 17), (1, 113), (40, 300)],
    ids=lambda s: f"q{s[0]}k{s[1]}",
)
def test_unequal_lengths(seqs, causal, dtype, device):
    seq_q, seq_k = seqs
    _check(*_inputs((1, 4, 2, seq_q, seq_k, 64), dtype, device), causal)


def test_custom_scale(device):
    _check(*_inputs((1, 2, 1, 50, 70, 64), torch.float32, device), True, sm_scale=0.3)


# Windows around the interpreter's tiles (BLOCK_M 64, BLOCK_N 32): one key, shorter than a tile,
# a tile, a query block, neither, and longer than the context.
WINDOW_CASES = [
    ((1, 2, 2, 113, 113, 64), 1, torch.float32),
    ((1, 2, 2, 113, 113, 64), 5, torch.float16),
    ((1, 2, 2, 113, 113, 64), 32, torch.float32),
    ((1, 2, 2, 113, 113, 64), 64, torch.float16),
    ((1, 2, 2, 113, 113, 64), 97, torch.float16),
    ((1, 2, 2, 113, 113, 64), 1000, torch.float16),
    # Chunked prefill: the 40 queries are the last of 300 keys.
    ((1, 4, 2, 40, 300, 64), 50, torch.float16),
    # More queries than keys: the first 96 rows see no key.
    ((1, 4, 2, 113, 17, 64), 8, torch.float16),
    # Grouped-query heads and a padded head dim.
    ((1, 4, 1, 70, 90, 80), 40, torch.float32),
]


@pytest.mark.parametrize(
    ("shape", "window", "dtype"), WINDOW_CASES, ids=lambda c: str(c).replace("torch.", "")
)
def test_window(shape, window, dtype, device):
    _check(*_inputs(shape, dtype, device), True, window=window)


def test_window_matches_its_definition(device):
    """The convention itself, on a small case: query i of 6 over 9 keys with window 3 sees keys
    i + 1, i + 2, i + 3 (the last 3 up to its own position, i + 9 - 6), as gpt-oss's and
    FlashAttention's window_size=(2, 0) do; all other keys get value 0 so the output shows it."""
    q = torch.zeros(1, 1, 6, 16, device=device)
    k = torch.zeros(1, 1, 9, 16, device=device)
    v = torch.eye(9, 16, device=device)[None, None]  # key j's value is the unit vector e_j
    out = flash_attention(q, k, v, causal=True, window=3)  # equal scores: a plain mean
    expected = torch.zeros(6, 16, device=device)
    for i in range(6):
        expected[i, i + 1 : i + 4] = 1 / 3
    assert torch.allclose(out[0, 0], expected, atol=1e-6)


def test_window_longer_than_the_context_changes_nothing(device):
    """A window of seq_k keys or more is no window; one key less already hides key 0 from the
    last query row (and from it alone)."""
    q, k, v = _inputs((1, 2, 1, 113, 150, 64), torch.float16, device)
    plain = flash_attention(q, k, v, causal=True)
    for window in (150, 10**12):
        assert torch.equal(flash_attention(q, k, v, causal=True, window=window), plain), window
    shorter = flash_attention(q, k, v, causal=True, window=149)
    if kernels.interpreted():  # a GPU may tune the windowed kernel to other tiles
        assert torch.equal(shorter[:, :, :-1], plain[:, :, :-1])
    assert not torch.equal(shorter[:, :, -1], plain[:, :, -1])
    assert rel_err(shorter, attention_ref(q, k, v, causal=True, window=149)) < attention_tol(
        torch.float16
    )


def test_window_skips_the_keys_before_it(device):
    """Keys before a query block's window are never loaded: NaN keys and values there leave the
    output finite and right. A kernel that loaded them and masked the scores would spread the
    NaNs through p·v (0·NaN is NaN), as the control below shows with one NaN value inside the
    first tile the kernel does load."""
    q, k, v = _inputs((1, 4, 2, 20, 300, 64), torch.float16, device)
    window = 50
    # The 20 queries end the 300 keys, so the oldest window starts at key 300 - 20 - 50 + 1 =
    # 231. Whatever the tile (32 to 128 keys), the keys below 128 lie in tiles before it.
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k[:, :, :128] = float("nan")
    poisoned_v[:, :, :128] = float("nan")
    out = flash_attention(q, poisoned_k, poisoned_v, causal=True, window=window)
    assert torch.isfinite(out).all()
    ref = attention_ref(q, k, v, causal=True, window=window)
    assert rel_err(out, ref) < attention_tol(torch.float16)
    # Control: key 230 is outside every row's window but shares a tile with key 231.
    control_v = v.clone()
    control_v[:, :, 230] = float("nan")
    assert torch.isnan(flash_attention(q, k, control_v, causal=True, window=window)).any()


def _sinks(heads: int, device: torch.device) -> torch.Tensor:
    """Sink logits from -inf (no sink) up to 5, about the log-sum-exp of a hundred N(0, 1)
    scores, so that some heads give the sink most of their weight."""
    sinks = torch.linspace(-1.0, 5.0, heads)
    sinks[0] = float("-inf")
    return sinks.to(device)


@pytest.mark.parametrize(
    ("shape", "causal", "window"),
    [
        ((1, 4, 2, 80, 80, 64), False, None),
        ((1, 4, 2, 80, 80, 64), True, None),
        ((1, 4, 2, 80, 80, 64), True, 20),
        # Causal rows that see no key: zeros, with the sink alone in the log-sum-exp.
        ((1, 4, 2, 113, 17, 64), True, None),
        ((1, 4, 1, 40, 300, 80), True, 50),
    ],
    ids=["full", "causal", "causal-window", "causal-empty-rows", "chunk-window-d80"],
)
def test_sinks(shape, causal, window, device):
    q, k, v = _inputs(shape, torch.float16, device)
    sinks = _sinks(shape[1], device)
    out = _check(q, k, v, causal, window=window, sinks=sinks)
    # The sinks weigh: without them the answer is far off, so the check above can fail.
    no_sinks = attention_ref(q, k, v, causal=causal, window=window)
    assert rel_err(out, no_sinks) > 0.1
    empty_rows = max(0, shape[3] - shape[4]) if causal else 0
    assert torch.all(out[:, :, :empty_rows] == 0)


def test_sinks_without_keys(device):
    q, k, v = _inputs((1, 4, 4, 5, 0, 64), torch.float32, device)
    sinks = _sinks(4, device)
    out, lse = flash_attention(q, k, v, sinks=sinks, return_lse=True)
    assert torch.all(out == 0) and torch.equal(lse, sinks[None, :, None].expand(1, 4, 5))


ROW_OFFSET_PAST_INT32 = """
import torch
import kernels
kernels.use_interpreter_without_gpu()
from kernels.attention import flash_attention
from kernels.reference import attention_ref

rows, d, stride = 16, 16, 2**28  # from row 8 on, row x stride passes 2^31
storage = torch.empty(rows * stride, dtype=torch.float16)  # 8 GiB of address space, untouched
gen = torch.Generator().manual_seed(0)
for r in range(rows):
    storage[r * stride : r * stride + d] = torch.randn(d, generator=gen).half()
q = storage.as_strided((1, 1, rows, d), (0, 0, stride, 1))
k, v = (torch.randn(1, 1, 32, d, generator=gen).half() for _ in range(2))
ref = attention_ref(q, k, v)
print(((flash_attention(q, k, v).double() - ref).norm() / ref.norm()).item())
"""


@pytest.mark.skipif(not kernels.interpreted(), reason="a CPU tensor's untouched address space")
def test_row_offsets_past_int32(tmp_path):
    """A query row stride of 2^28 elements, as a long sequence in a (batch, seq, heads, dim)
    layout has: offsets computed in int32 wrap and read far outside the tensor (a crash)."""
    done = subprocess.run(
        [sys.executable, "-c", ROW_OFFSET_PAST_INT32],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert float(done.stdout) < 1e-3


def test_launches_on_the_device_of_its_inputs(device, monkeypatch):
    """Triton launches on the current CUDA device: the wrapper makes it the inputs' (cuda:1
    under a multi-GPU run)."""
    seen = []
    monkeypatch.setattr(attention, "on_device", lambda t: seen.append(t) or kernels.on_device(t))
    q, k, v = _inputs((1, 2, 2, 9, 9, 64), torch.float32, device)
    flash_attention(q, k, v)
    assert len(seen) == 1 and seen[0] is q


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_strided_inputs(causal, device):
    """q, k, v as transposed views of (B, S, H, D) buffers; v also with a non-unit last stride."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 70, 4, 64, generator=gen).to(device).transpose(1, 2)
    k = torch.randn(2, 90, 2, 64, generator=gen).to(device).transpose(1, 2)
    v = torch.randn(2, 90, 2, 128, generator=gen).to(device).transpose(1, 2)[..., ::2]
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    _check(q, k, v, causal)


@pytest.mark.parametrize(
    ("shape", "causal", "window"),
    [
        ((1, 4, 2, 113, 113, 64), True, None),
        ((1, 2, 1, 113, 17, 128), True, None),
        ((2, 2, 2, 40, 70, 64), False, None),
        ((1, 4, 2, 113, 150, 64), True, 40),
    ],
    ids=["causal-gqa", "causal-empty-rows", "full", "window-sinks"],
)
def test_tma_path(shape, causal, window, device):
    """The Hopper TMA kernel, forced on: in the interpreter tensor descriptors act like TMA."""
    if not kernels.interpreted() and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs compute capability 9.0 or newer")
    sinks = None if window is None else _sinks(shape[1], device)
    _check(*_inputs(shape, torch.float16, device), causal, use_tma=True, window=window, sinks=sinks)


@pytest.mark.parametrize(
    ("shape", "causal", "window"),
    [
        ((1, 2, 1, 200, 300, 64), True, None),
        ((1, 2, 2, 20, 700, 128), False, None),
        # A window shorter than the largest tiles.
        ((1, 2, 1, 200, 300, 64), True, 50),
    ],
    ids=["causal", "short-queries", "causal-window"],
)
def test_gpu_configs(shape, causal, window, device, monkeypatch):
    """The GPU autotuning space: pruning sees the real launch arguments, keeps sensible configs,
    and the largest kept tiles compute the right answer (in the interpreter too)."""
    kernel = attention._flash_attention_kernel
    kept_lists = []

    def prune_then_pick_largest(configs, named_args, **kwargs):
        kept = attention.select(configs, {**named_args, **kwargs}, kernels.HOPPER_SMEM)
        kept_lists.append(kept)
        return [max(kept, key=lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]))]

    monkeypatch.setattr(kernel, "configs", attention.GPU_CONFIGS)
    monkeypatch.setattr(kernel, "early_config_prune", prune_then_pick_largest)
    monkeypatch.setattr(kernel, "cache", {})
    _check(*_inputs(shape, torch.float16, device), causal, window=window)
    (kept,) = kept_lists
    seq_q = shape[3]
    assert kept and all(c.kwargs["BLOCK_M"] <= max(32, 2 * seq_q) for c in kept)
    assert all(c.kwargs["BLOCK_M"] * shape[5] * 2 < kernels.HOPPER_SMEM for c in kept)


@VIEWS
@given(
    data=st.data(),
    seqs=st.tuples(st.integers(0, 20), st.integers(0, 40)),
    heads=st.sampled_from([(2, 1), (2, 2), (3, 1)]),
    head_dim=st.integers(1, 24),
    causal=st.booleans(),
    window=st.one_of(st.none(), st.integers(1, 12)),
    sinks=st.booleans(),
)
def test_any_views_of_every_argument(data, seqs, heads, head_dim, causal, window, sinks):
    """q, k, v and the sinks random views (their neighbours NaN), over query and key lengths
    from 0, against the float64 reference, the log-sum-exp too."""
    shape = (2, *heads, *seqs, head_dim)
    q, k, v = (data.draw(views(t)) for t in _inputs(shape, torch.float32, torch.device("cpu")))
    logits = data.draw(views(_sinks(heads[0], torch.device("cpu")))) if sinks else None
    _check(q, k, v, causal, window=window if causal else None, sinks=logits)


def test_strided_sinks(device):
    """Issue 25: the sinks were read as if contiguous (a [::2] view came out 1.85 off)."""
    q, k, v = _inputs((1, 4, 2, 9, 30, 16), torch.float32, device)
    sinks = torch.linspace(-1.0, 5.0, 8, device=device)[::2]
    _check(q, k, v, True, sinks=sinks)


def test_no_keys(device):
    q, k, v = _inputs((1, 2, 2, 5, 0, 64), torch.float32, device)
    out, lse = flash_attention(q, k, v, return_lse=True)
    assert torch.all(out == 0) and torch.all(torch.isneginf(lse))


def test_returns_only_output_without_lse(device):
    q, k, v = _inputs((1, 2, 2, 9, 9, 64), torch.float32, device)
    out = flash_attention(q, k, v)
    assert isinstance(out, torch.Tensor)
    assert rel_err(out, attention_ref(q, k, v)) < attention_tol(torch.float32)


def _bad(
    device: torch.device, **changes: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Valid (1, 4, 2, 8, 8, 64) float16 inputs with the named tensors replaced."""
    q, k, v = _inputs((1, 4, 2, 8, 8, 64), torch.float16, device)
    tensors = {"q": q, "k": k, "v": v}
    tensors.update(changes)
    return tensors["q"], tensors["k"], tensors["v"]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("heads", "divisible by kv_heads"),
        ("head_dim", "head_dim 288 unsupported; allowed: 1 to 256"),
        ("dtype", "dtype torch.float64 unsupported"),
        ("mixed_dtype", "share one dtype"),
        ("rank", "4-D"),
        ("batch", "batch mismatch"),
        ("head_dim_mismatch", "head_dim mismatch"),
        ("kv_shape", "k and v shapes differ"),
        ("device", "device"),
        ("grid", "grid limit"),
    ],
)
def test_invalid_inputs(case, words, device):
    def rand(*shape: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        return torch.randn(*shape).to(device=device, dtype=dtype)

    other_device = torch.device("meta")
    args = {
        "heads": lambda: _bad(device, k=rand(1, 3, 8, 64), v=rand(1, 3, 8, 64)),
        "head_dim": lambda: _bad(
            device, q=rand(1, 4, 8, 288), k=rand(1, 2, 8, 288), v=rand(1, 2, 8, 288)
        ),
        "dtype": lambda: tuple(t.double() for t in _bad(device)),
        "mixed_dtype": lambda: _bad(device, v=rand(1, 2, 8, 64, dtype=torch.float32)),
        "rank": lambda: _bad(device, q=rand(4, 8, 64)),
        "batch": lambda: _bad(device, k=rand(2, 2, 8, 64), v=rand(2, 2, 8, 64)),
        "head_dim_mismatch": lambda: _bad(device, k=rand(1, 2, 8, 128), v=rand(1, 2, 8, 128)),
        "kv_shape": lambda: _bad(device, v=rand(1, 2, 9, 64)),
        "grid": lambda: _bad(
            device, q=rand(1, 65536, 1, 64), k=rand(1, 1, 1, 64), v=rand(1, 1, 1, 64)
        ),
        "device": lambda: _bad(
            device, v=torch.empty(1, 2, 8, 64, dtype=torch.float16, device=other_device)
        ),
    }[case]()
    with pytest.raises(ValueError, match=words) as info:
        flash_attention(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"causal": True, "window": 0}, r"window must be None or an int >= 1 .*, got 0$"),
        ({"causal": True, "window": -3}, r"window must be None or an int >= 1 .*, got -3$"),
        ({"causal": True, "window": 2.5}, r"window must be None or an int >= 1 .*, got 2\.5$"),
        ({"causal": True, "window": True}, r"window must be None or an int >= 1 .*, got True$"),
        ({"window": 8}, "window needs causal=True"),
        ({"sinks": "shape"}, r"sinks must be a float32 tensor of shape \(4,\) .*shape \(2,\)"),
        ({"sinks": "dtype"}, r"sinks must be a float32 tensor .*got torch.bfloat16"),
        ({"sinks": "list"}, "sinks must be a torch.Tensor, got list"),
        ({"sinks": "device"}, "sinks is on meta but q is on"),
        ({"sm_scale": "0.1"}, r"sm_scale must be a finite real number, got '0\.1'$"),
        ({"sm_scale": float("inf")}, r"sm_scale must be a finite real number, got inf$"),
    ],
    ids=[
        "window-0",
        "window-negative",
        "window-float",
        "window-bool",
        "window-not-causal",
        "sinks-shape",
        "sinks-dtype",
        "sinks-list",
        "sinks-device",
        "scale-str",
        "scale-inf",
    ],
)
def test_invalid_options(options, words, device):
    sinks = {
        "shape": torch.zeros(2, device=device),
        "dtype": torch.zeros(4, dtype=torch.bfloat16, device=device),
        "list": [0.0] * 4,
        "device": torch.zeros(4, device="meta"),
    }
    if "sinks" in options:
        options = {**options, "sinks": sinks[options["sinks"]]}
    with pytest.raises(ValueError, match=words) as info:
        flash_attention(*_bad(device), **options)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not kernels.interpreted(), reason="only the interpreter rejects bfloat16")
def test_interpreter_rejects_bfloat16(device):
    q, k, v = _inputs((1, 2, 2, 8, 8, 64), torch.bfloat16, device)
    with pytest.raises(ValueError, match="bfloat16 gives wrong results"):
        flash_attention(q, k, v)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(
    "shape",
    [
        (4, 16, 16, 1024, 1024, 64),
        (2, 32, 8, 2048, 2048, 128),
        (1, 8, 1, 777, 777, 256),
        (2, 8, 2, 300, 1500, 128),
    ],
    ids=str,
)
def test_gpu_large(shape, causal, dtype, device):
    q, k, v = _inputs(shape, dtype, device)
    _check(q, k, v, causal)
    if shape[3] == shape[4]:
        # SDPA aligns causal masks top-left, which matches bottom-right only for square ones.
        sdpa = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=causal, enable_gqa=True
        )
        out = flash_attention(q, k, v, causal=causal)
        ref = attention_ref(q, k, v, causal=causal)
        assert rel_err(out, ref) <= 2 * rel_err(sdpa, ref) + 1e-3
    assert attention.tma_failure() is None


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [64, 128])
def test_gpu_tma_matches_portable(head_dim, device):
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the TMA path is chosen on compute capability 9.x only")
    q, k, v = _inputs((2, 8, 2, 1000, 1000, head_dim), torch.bfloat16, device)
    assert attention._want_tma(q, k, v)
    tma, _ = attention._launch(q, k, v, True, head_dim**-0.5, False, use_tma=True)
    portable, _ = attention._launch(q, k, v, True, head_dim**-0.5, False, use_tma=False)
    assert rel_err(tma, portable.double()) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("shape", "window"),
    [
        ((2, 32, 8, 2048, 2048, 128), 128),  # gpt-oss's 128-token sliding layers
        ((1, 8, 1, 777, 1500, 80), 500),
        ((1, 16, 4, 1024, 1024, 64), None),
    ],
    ids=str,
)
def test_gpu_window_and_sinks(shape, window, dtype, device):
    q, k, v = _inputs(shape, dtype, device)
    _check(q, k, v, True, window=window, sinks=_sinks(shape[1], device))
    assert attention.tma_failure() is None
