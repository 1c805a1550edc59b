"""The configs a dry run counts (each kernel's ``tuning_configs``) are those its autotuner keeps
at a real launch: each kernel runs here with its GPU config list put back and its pruning hook
watched, so a wrapper whose launch arguments drift from the plan fails."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from kernels import attention, decode, matmul, moe


@contextlib.contextmanager
def pruned_at_launch(kernel, gpu_configs: list, prune) -> Iterator[list[int]]:
    """Run `kernel`'s autotuner over `gpu_configs` with `prune` as its hook, recording how many
    configs the hook keeps at each launch; the launch itself runs the first config kept."""
    kept: list[int] = []

    def watch(configs: list, named_args: dict, **kwargs: object) -> list:
        chosen = prune(gpu_configs, named_args, **kwargs)
        kept.append(len(chosen))
        return chosen[:1]

    saved = kernel.configs, kernel.early_config_prune, kernel.cache
    kernel.configs, kernel.early_config_prune, kernel.cache = gpu_configs, watch, {}
    try:
        yield kept
    finally:
        kernel.configs, kernel.early_config_prune, kernel.cache = saved


def test_matmul_plan_matches_its_launch(device: torch.device) -> None:
    a = torch.randn(37, 50, dtype=torch.float16, device=device)
    b = torch.randn(50, 70, dtype=torch.float16, device=device)
    configs = matmul._GPU_CONFIGS
    with pruned_at_launch(matmul._matmul_kernel, configs, matmul._prune_configs) as kept:
        matmul.matmul(a, b)
    assert kept == [len(matmul.tuning_configs(37, 70, 50, 2))]
    assert kept[0] < len(configs)


def test_matmul_plan_drops_tiles_a_problem_or_hopper_cannot_hold() -> None:
    decode_shaped = matmul.tuning_configs(1, 14336, 4096, 2)
    assert {c.kwargs["BLOCK_M"] for c in decode_shaped} == {16}
    # 128×128×128 and 128×256×128 tiles fit 227 KiB with 1-byte operands, not with 2-byte ones.
    assert len(matmul.tuning_configs(8192, 8192, 8192, 1)) == len(matmul._GPU_CONFIGS)
    assert len(matmul.tuning_configs(8192, 8192, 8192, 2)) == len(matmul._GPU_CONFIGS) - 2


@pytest.mark.parametrize("window", [None, 24])
def test_attention_plan_matches_its_launch(device: torch.device, window: int | None) -> None:
    q = torch.randn(1, 4, 40, 80, dtype=torch.float16, device=device)
    k, v = torch.randn(2, 1, 2, 90, 80, dtype=torch.float16, device=device)
    kernel, configs = attention._flash_attention_kernel, attention._gpu_attention_configs()
    with pruned_at_launch(kernel, configs, attention._prune_attention_configs) as kept:
        attention.flash_attention(q, k, v, causal=True, window=window)
    assert kept == [len(attention.tuning_configs(40, 90, 80, 2, window))]
    assert kept[0] < len(configs)


def test_decode_plan_matches_its_launch(device: torch.device) -> None:
    batch, kv_heads, group, length, head_dim = 3, 2, 4, 100, 64
    q = torch.randn(batch, kv_heads * group, head_dim, dtype=torch.float16, device=device)
    k, v = torch.randn(2, batch, length, kv_heads, head_dim, dtype=torch.float16, device=device)
    lens = torch.full((batch,), length, dtype=torch.int32, device=device)
    kernel, configs = decode._decode_split_kernel, decode._gpu_decode_configs()
    with pruned_at_launch(kernel, configs, decode._prune_decode_configs) as kept:
        decode.decode_attention(q, k, v, lens, num_splits=1)
    # One program per (sequence, kv head) fills this many SMs: one split, as launched.
    sms = batch * kv_heads
    planned = decode.tuning_configs(batch, kv_heads, group, length, head_dim, 2, 2, sms)
    assert kept == [len(planned)]
    assert kept[0] < len(configs)


def test_moe_plan_matches_its_launches(device: torch.device) -> None:
    tokens, hidden, inter, experts, top_k = 5, 48, 40, 4, 2
    x = torch.randn(tokens, hidden, dtype=torch.float16, device=device)
    w_gate_up = torch.randn(experts, 2 * inter, hidden, dtype=torch.float16, device=device)
    w_down = torch.randn(experts, hidden, inter, dtype=torch.float16, device=device)
    weights, ids = moe.route(tokens, experts, top_k, generator=torch.Generator(device))
    with pruned_at_launch(moe._moe_gemm_kernel, moe._GPU_CONFIGS, moe._prune_configs) as kept:
        moe.fused_moe(x, w_gate_up, w_down, weights, ids)
    assert len(kept) == 2  # gate/up, then down
    assert sum(kept) == len(moe.tuning_configs(tokens, hidden, inter, experts, top_k, 2, 2))
