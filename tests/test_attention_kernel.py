"""Flash-attention forward kernel against the float64 reference (and torch SDPA on a GPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernelcheck import attention_tol, rel_err

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
) -> None:
    """Run the kernel with return_lse and compare output and log-sum-exp with the reference."""
    if use_tma is None:
        out, lse = flash_attention(q, k, v, causal=causal, sm_scale=sm_scale, return_lse=True)
    else:
        scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
        out, lse = attention._launch(q, k, v, causal, scale, True, use_tma=use_tma)
    ref = attention_ref(q, k, v, causal=causal, sm_scale=sm_scale)
    lse_ref = attention_lse_ref(q, k, causal=causal, sm_scale=sm_scale)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    err = rel_err(out, ref)
    assert err < attention_tol(q.dtype), f"relative error {err:.2e}"
    # Rows that see no key must be exact zeros with lse -inf; the rest must match.
    empty = torch.isneginf(lse_ref)
    assert torch.equal(torch.isneginf(lse), empty)
    assert torch.all(out[empty] == 0)
    lse_err = (lse.double()[~empty] - lse_ref[~empty]).abs().max().item() if (~empty).any() else 0
    assert lse_err < _lse_atol(q.dtype), f"lse error {lse_err:.2e}"


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
    ("shape", "causal"),
    [
        ((1, 4, 2, 113, 113, 64), True),
        ((1, 2, 1, 113, 17, 128), True),
        ((2, 2, 2, 40, 70, 64), False),
    ],
    ids=["causal-gqa", "causal-empty-rows", "full"],
)
def test_tma_path(shape, causal, device):
    """The Hopper TMA kernel, forced on: in the interpreter tensor descriptors act like TMA."""
    if not kernels.interpreted() and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs compute capability 9.0 or newer")
    _check(*_inputs(shape, torch.float16, device), causal, use_tma=True)


@pytest.mark.parametrize(
    ("shape", "causal"),
    [((1, 2, 1, 200, 300, 64), True), ((1, 2, 2, 20, 700, 128), False)],
    ids=["causal", "short-queries"],
)
def test_gpu_configs(shape, causal, device, monkeypatch):
    """The GPU autotuning space: pruning sees the real launch arguments, keeps sensible configs,
    and the largest kept tiles compute the right answer (in the interpreter too)."""
    kernel = attention._flash_attention_kernel
    kept_lists = []

    def prune_then_pick_largest(configs, named_args, **kwargs):
        kept = attention._prune_attention_configs(configs, named_args, **kwargs)
        kept_lists.append(kept)
        return [max(kept, key=lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]))]

    monkeypatch.setattr(kernel, "configs", attention._gpu_attention_configs())
    monkeypatch.setattr(kernel, "early_config_prune", prune_then_pick_largest)
    monkeypatch.setattr(kernel, "cache", {})
    _check(*_inputs(shape, torch.float16, device), causal)
    (kept,) = kept_lists
    seq_q = shape[3]
    assert kept and all(c.kwargs["BLOCK_M"] <= max(32, 2 * seq_q) for c in kept)
    assert all(c.kwargs["BLOCK_M"] * shape[5] * 2 < kernels.SMEM_BUDGET for c in kept)


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
        ("rank", "rank 4"),
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
