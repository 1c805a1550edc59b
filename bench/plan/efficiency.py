"""Default efficiencies: the share of an op's spec-sheet roofline assumed when no result file
times it or any op like it, each with the published figure it rests on.

An estimate uses these last (bench.plan.lookup): measured times, then interpolation, then the
efficiency measured at a similar case in the files given, then one measured in a reference file
(results/), and only then the defaults below. Every figure that rests on one says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops import get_op


@dataclass(frozen=True)
class Efficiency:
    """A share of the roofline (max(FLOPs / peak, bytes / bandwidth)) and where it comes from."""

    share: float
    source: str


GEMM = Efficiency(
    0.80,
    "cuBLAS bf16 GEMMs reach ~790-800 of the H100 SXM's 989 dense TFLOP/s at 4096³-8192³ "
    "(tokbench's reference kernel anchors)",
)
PREFILL_ATTENTION = Efficiency(
    0.62,
    "FlashAttention-3 causal forward, head dim 128, long sequences: ~616 of 989 TFLOP/s on "
    "H100 SXM (Shah et al. 2024)",
)
DECODE_ATTENTION = Efficiency(
    0.75,
    "decode attention reads the KV cache at ~90% of peak bandwidth in the best kernels at long "
    "contexts and ~47% (paged FlashAttention-2) at 256 tokens; 75% between them",
)
MEMORY_BOUND = Efficiency(
    0.80,
    "copy kernels reach ~90% of spec bandwidth (H100 ~3.0 of 3.35 TB/s, H200 ~4.3 of 4.8 TB/s "
    "measured); small fused elementwise kernels somewhat less",
)
MOE = Efficiency(
    0.60,
    "assumed: ¾ of the GEMM default, as grouped GEMMs over experts with uneven token counts run "
    "below one large GEMM; no published anchor in tokbench's references",
)

# A kernel takes at least this long however little it does: launch, ramp-up and tail as a
# serving engine's CUDA-graph replay leaves them (an assumption of the order measured on Hopper).
KERNEL_FLOOR_S = 3e-6


# The default for each of the ops' efficiency classes (bench.measure.ops.step.EFFICIENCY_CLASSES);
# collectives are timed by their own model (bench.plan.throughput), never by a roofline share.
DEFAULTS = {
    "gemm": GEMM,
    "prefill_attention": PREFILL_ATTENTION,
    "decode_attention": DECODE_ATTENTION,
    "moe": MOE,
    "memory": MEMORY_BOUND,
}


def default_efficiency(op: str) -> Efficiency:
    """The default share of the roofline for an op, by its efficiency class."""
    o = get_op(op)
    if o.efficiency not in DEFAULTS:
        raise BenchError(f"{op}: no default efficiency for the class '{o.efficiency}'")
    return DEFAULTS[o.efficiency]
