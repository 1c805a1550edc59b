"""Hopper and Blackwell checked without a GPU: the kernels compiled ahead of time for sm_90 and
sm_100 with Triton's bundled ptxas (bench.measure.aot) may not spill registers or need more
shared memory than a block may use, at the shapes the suites run and at the kernels' limits.

The default run compiles a sample, the heaviest config of each kernel at its worst problems
(about 35 s of CPU a target, 15 s once Triton has cached the builds); with TOKBENCH_AOT_ALL=1
every config the autotuners keep at every problem (the standard suites' and the kernels'
limits: 1,231 builds for sm_90, about 50 minutes on a busy two-core machine, minutes once
cached).
"""

from __future__ import annotations

import os

import pytest
from console import invoke

from bench import BenchError
from bench.measure.aot import SPILL_LIMIT, TARGETS, KernelBuild, Target, compile_report
from bench.present.commands import kernels

EVERY_CONFIG = os.environ.get("TOKBENCH_AOT_ALL") == "1"


@pytest.mark.parametrize("target", TARGETS)
def test_every_build_fits_its_target(target: str) -> None:
    builds = compile_report(target, sample=not EVERY_CONFIG)
    kernels = {b.kernel for b in builds}
    assert kernels == {"matmul", "flash_attention", "decode_split", "decode_merge", "mla_split",
                       "moe_gemm", "add_rmsnorm", "silu_mul", "rotary", "write_kv"}  # fmt: skip
    failed = [f"{b.kernel} {b.config} at {b.problem}: {', '.join(p)}"
              for b in builds if (p := b.problems(TARGETS[target]))]  # fmt: skip
    assert not failed, f"{len(failed)} of {len(builds)} builds:\n" + "\n".join(failed)
    # The numbers are read off real cubins: every build uses registers and warps fit.
    assert all(b.registers > 0 and 0 < b.occupancy <= 64 for b in builds)


def test_occupancy_follows_the_targets_limits() -> None:
    hopper = TARGETS["sm_90"]
    # Registers: 128 a thread is 4,096 a warp, 16 warps of 65,536.
    assert hopper.occupancy(warps=4, registers=128, shared=0) == 16
    # Shared memory: 100 KiB blocks (plus the 1 KiB reserved) fit twice in 228 KiB.
    assert hopper.occupancy(warps=8, registers=64, shared=100 * 1024) == 16
    # Neither binds: 64 warps an SM at most.
    assert hopper.occupancy(warps=4, registers=32, shared=0) == 64
    # Over the 227 KiB a block may use: it does not run at all.
    assert hopper.occupancy(warps=4, registers=32, shared=228 * 1024) == 0


def test_a_build_over_the_limits_says_why() -> None:
    target = Target("sm_90", 90, sms=132)
    fits = KernelBuild("matmul", "BLOCK_M=64", "sm_90", 96, SPILL_LIMIT, 1024, 32, "p")
    assert fits.problems(target) == []
    over = KernelBuild("matmul", "BLOCK_M=64", "sm_90", 255, 2168, 240_000, 0, "p", "PTXASError")
    assert over.problems(target) == [
        "PTXASError",
        f"240000 B of shared memory > {227 * 1024} B",
        "spills 2168 B a thread",
    ]


@pytest.mark.parametrize(
    ("target", "kernels", "message"),
    [("sm_80", None, "unknown target 'sm_80'"), ("sm_90", ["sdpa"], "no Triton kernel for 'sdpa'")],
)
def test_unknown_targets_and_ops_are_refused(target, kernels, message) -> None:
    with pytest.raises(BenchError, match=message):
        compile_report(target, kernels)


def _fake_report(target: str, ops: list[str] | None, *, sample: bool) -> list[KernelBuild]:
    """Two builds as compile_report gives them, one over the limits: the command's printing and
    exit status without a compile."""
    config = "BLOCK_N=64 warps=8 stages=1"
    return [
        KernelBuild("mla_split", config, target, 214, 0, 168_960, 8, "mla fp32 16×128×32768"),
        KernelBuild("mla_split", config, target, 214, 0, 300_032, 0, "mla fp32 1×128×32768"),
    ]


def test_the_kernels_command_shows_each_build_and_fails_on_one_over(capsys, monkeypatch) -> None:
    monkeypatch.setattr(kernels, "compile_report", _fake_report)
    done = invoke(capsys, "kernels", "--target", "sm_100", "--op", "mla", "--format", "markdown")
    assert done.returncode == 1
    config = "BLOCK_N=64 warps=8 stages=1"
    assert (
        f"| mla_split | mla fp32 16×128×32768 | {config} | 214 | 0 | 165.0 | 8 |  |" in done.stdout
    )
    # Markdown escapes the ">".
    assert f"| 293.0 | 0 | 300032 B of shared memory \\> {227 * 1024} B |" in done.stdout
    assert "1 of 2 builds spill or do not fit on sm_100" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--target", "sm_80"), "unknown target 'sm_80'"), (("--op", "sdpa"), "no Triton kernel")],
)
def test_the_kernels_command_refuses_unknown_targets_and_ops(capsys, args, message) -> None:
    done = invoke(capsys, "kernels", *args)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # no note that it compiles: it will not
