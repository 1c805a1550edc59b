"""The configs a dry run counts (each kernel's ``tuning_configs``) are those its autotuner keeps
at a real launch: each kernel runs here with its GPU config list put back and its pruning hook
watched, so a wrapper whose launch arguments drift from the plan fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from bench.measure.ops.moe import route
from kernels import HOPPER_SMEM, attention, decode, matmul, moe
from kernels.autotune import TUNINGS


@contextlib.contextmanager
def pruned_at_launch(kernel) -> Iterator[list[int]]:
    """Run `kernel`'s autotuner over its GPU configs, pruned by its selection for a Hopper GPU,
    recording how many configs it keeps at each launch; the launch itself runs the first kept."""
    kept: list[int] = []
    tuning = TUNINGS[kernel]

    def watch(configs: list, named_args: dict, **kwargs: object) -> list:
        chosen = tuning.select(tuning.gpu, {**named_args, **kwargs}, HOPPER_SMEM)
        kept.append(len(chosen))
        return chosen[:1]

    saved = kernel.configs, kernel.early_config_prune, kernel.cache
    kernel.configs, kernel.early_config_prune, kernel.cache = tuning.gpu, watch, {}
    try:
        yield kept
    finally:
        kernel.configs, kernel.early_config_prune, kernel.cache = saved


def test_matmul_plan_matches_its_launch(device: torch.device) -> None:
    a = torch.randn(37, 50, dtype=torch.float16, device=device)
    b = torch.randn(50, 70, dtype=torch.float16, device=device)
    with pruned_at_launch(matmul._matmul_kernel) as kept:
        matmul.matmul(a, b)
    assert kept == [len(matmul.tuning_configs(37, 70, 50, 2))]
    assert kept[0] < len(matmul.GPU_CONFIGS)


def test_matmul_plan_drops_tiles_a_problem_or_hopper_cannot_hold() -> None:
    decode_shaped = matmul.tuning_configs(1, 14336, 4096, 2)
    assert {c.kwargs["BLOCK_M"] for c in decode_shaped} == {16}

    def tiles(elem_bytes: int) -> set[tuple[int, int, int]]:
        kept = matmul.tuning_configs(8192, 8192, 8192, elem_bytes)
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in kept}

    # 128×128×128 tiles in 4 stages fit 227 KiB with 1-byte operands, not with 2-byte ones.
    assert (128, 128, 128) in tiles(1) and (128, 128, 128) not in tiles(2)
    # 128×256 accumulators (128 fp32 a thread over 8 warps) spill with fp8's two accumulators
    # and fp32's FMA operands, not with 16-bit warp-group MMAs.
    big = {(128, 256, 64), (256, 128, 64)}
    assert big <= tiles(2) and not big & (tiles(1) | tiles(4))


@pytest.mark.parametrize("window", [None, 24])
def test_attention_plan_matches_its_launch(device: torch.device, window: int | None) -> None:
    q = torch.randn(1, 4, 40, 80, dtype=torch.float16, device=device)
    k, v = torch.randn(2, 1, 2, 90, 80, dtype=torch.float16, device=device)
    with pruned_at_launch(attention._flash_attention_kernel) as kept:
        attention.flash_attention(q, k, v, causal=True, window=window)
    assert kept == [len(attention.tuning_configs(40, 90, 80, 2, window))]
    assert kept[0] < len(attention.GPU_CONFIGS)


def test_decode_plan_matches_its_launch(device: torch.device) -> None:
    batch, kv_heads, group, length, head_dim = 3, 2, 4, 100, 64
    q = torch.randn(batch, kv_heads * group, head_dim, dtype=torch.float16, device=device)
    k, v = torch.randn(2, batch, length, kv_heads, head_dim, dtype=torch.float16, device=device)
    lens = torch.full((batch,), length, dtype=torch.int32, device=device)
    with pruned_at_launch(decode._decode_split_kernel) as kept:
        decode.decode_attention(q, k, v, lens, num_splits=1)
    # One program per (sequence, kv head) fills this many SMs: one split, as launched.
    sms = batch * kv_heads
    planned = decode.tuning_configs(batch, kv_heads, group, length, head_dim, 2, 2, sms)
    assert kept == [len(planned)]
    assert kept[0] < len(decode.GPU_CONFIGS)


def test_moe_plan_matches_its_launches(device: torch.device) -> None:
    tokens, hidden, inter, experts, top_k = 5, 48, 40, 4, 2
    x = torch.randn(tokens, hidden, dtype=torch.float16, device=device)
    w_gate_up = torch.randn(experts, 2 * inter, hidden, dtype=torch.float16, device=device)
    w_down = torch.randn(experts, hidden, inter, dtype=torch.float16, device=device)
    weights, ids = route(tokens, experts, top_k, generator=torch.Generator(device))
    with pruned_at_launch(moe._moe_gemm_kernel) as kept:
        moe.fused_moe(x, w_gate_up, w_down, weights, ids)
    assert len(kept) == 2  # gate/up, then down
    assert sum(kept) == len(moe.tuning_configs(tokens, hidden, inter, experts, top_k, 2, 2))
