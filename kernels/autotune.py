"""What the autotuned kernels (matmul, attention, decode, MoE) share: their configs, the one small
config Triton's interpreter runs instead, and the pruning of each launch's configs to its problem
and to the shared memory a block may use.

Each kernel family gives a ``select(configs, args, smem_limit)`` that keeps the configs worth
timing for the launch arguments ``args`` (by name) on a device whose blocks may use
``smem_limit`` bytes of shared memory (None in the interpreter, where nothing is compiled). The
same function answers the family's ``tuning_configs`` (what a GPU run will time, planned without
one, at ``kernels.HOPPER_SMEM``) and ``bench.measure.aot`` (what to compile ahead of time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton

from kernels import interpreted

Select = Callable[[list[triton.Config], dict, int | None], list[triton.Config]]


def config(warps: int, stages: int, **meta: int) -> triton.Config:
    """One config: the kernel's block sizes and the launch's warps and pipeline stages."""
    return triton.Config(meta, num_warps=warps, num_stages=stages)


def meta(config: triton.Config, name: str) -> int:
    """A block size of a config."""
    return int(config.kwargs[name])


def fitting(
    configs: list[triton.Config],
    smem: Callable[[triton.Config], int],
    limit: int | None,
    keep: Callable[[triton.Config], bool],
) -> list[triton.Config]:
    """The configs that `keep` takes and whose shared memory, as `smem` estimates it, fits
    `limit` (None: any). Never empty: with none left, the one of least shared memory, so that a
    launch always has a config."""
    kept = [c for c in configs if keep(c) and (limit is None or smem(c) <= limit)]
    return kept or [min(configs, key=smem)]


@functools.cache
def _device_smem(index: int) -> int:
    props = triton.runtime.driver.active.utils.get_device_properties(index)
    return int(props["max_shared_mem"])


def smem_limit(args: dict) -> int | None:
    """The shared memory a block may use on the device of the launch's first tensor: the GPU's
    own limit, or None under the interpreter."""
    t = next(v for v in args.values() if isinstance(v, torch.Tensor))
    if interpreted() or t.device.type != "cuda":
        return None
    return _device_smem(t.device.index or 0)


@dataclass(frozen=True)
class Tuning:
    """An autotuned kernel's GPU configs and the selection its pruning hook makes from them."""

    gpu: list[triton.Config]
    select: Select


# Every autotuned kernel's Tuning, keyed by the kernel: what the tuning tests and the compiler
# ahead of time read, rather than each knowing every family's names.
TUNINGS: dict[object, Tuning] = {}


def autotune(
    gpu: list[triton.Config], interpreter: triton.Config, key: list[str], select: Select
) -> Callable:
    """triton.autotune over the `gpu` configs, each launch's pruned by `select` (positional
    launch arguments reach the hook in named_args, keyword ones in kwargs); under the
    interpreter one small `interpreter` config instead, since timing configs there would only
    time the interpreter."""

    def prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list:
        args = {**named_args, **kwargs}
        return select(configs, args, smem_limit(args))

    def decorate(fn: object) -> object:
        configs = [interpreter] if interpreted() else gpu
        prune_by = {"early_config_prune": prune}
        kernel = triton.autotune(configs=configs, key=key, prune_configs_by=prune_by)(fn)
        TUNINGS[kernel] = Tuning(gpu, select)
        return kernel

    return decorate


def bucket(n: int, least: int = 1) -> int:
    """A length's power-of-two bucket, at least `least`: close lengths share a tuned config
    instead of each tuning anew."""
    return max(least, triton.next_power_of_2(n))
