"""The most output tokens/s one GPU can make of a served model, by physics alone: the one upper
bound every claim and every rate given by hand is held to.

A request of isl + osl tokens costs one GPU of its TP group, at least,

- compute: its prompt's FLOPs (every op of the prefill: GEMMs, attention, LM head) and each
  output token's (the decode step's at its context), each FLOP at the fastest dense peak the GPU
  has for a format no wider than its op's (an fp8 GEMM at the fp8 peak, mxfp4 at the fp4 peak
  where there is one): bench.record.hardware's spec sheet, no efficiency;
- memory traffic: each output token reads its sequence's KV cache (the decode attention's bytes
  at its context, windows held), and each step reads the weights once for at most as many
  sequences as the memory beside the weights holds (all the memory the driver reports, none
  kept by an engine; every sequence holding at least its prompt's cache, and growing), at the
  spec sheet's bandwidth;

and compute and traffic overlap at best: the request takes the longer of the two. Where the
cost varies over a request's decode steps (attention grows with the context, windows cap it)
the mean is bounded below by the mean of its first and last step, which no concave growth
exceeds. Nothing else of a step (norms, collectives, kernel floors, the scheduler) is counted,
so no engine serves more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops import get_op
from bench.measure.ops.step import OpUse
from bench.plan.models import Serving, part
from bench.record.hardware import GpuSpec
from bench.record.units import fmt_bytes

# Bits of each format, to find the fastest peak an op could run at: one of a format at most as
# narrow as its own (fp8 weights may run at the fp8 peak, never at the fp4 one).
WIDTHS = {
    "fp4": 4, "mxfp4": 4, "int4": 4, "fp8": 8, "int8": 8, "bf16": 16, "fp16": 16,
    "tf32": 32, "fp32": 32,
}  # fmt: skip


@dataclass(frozen=True)
class Bound:
    """The upper bound of output tokens/s per GPU, and what sets it."""

    tokens_per_s: float
    limit: str  # "compute" or "memory traffic"
    batch: float  # the most sequences the memory holds at once

    def describe(self) -> str:
        return (
            f"at most {self.tokens_per_s:,.0f} output tok/s per GPU by its spec sheet "
            f"({self.limit} bound: prefill and decode FLOPs at the dense peak, weight and KV "
            f"reads at the full bandwidth, at most {self.batch:,.0f} sequences in memory)"
        )


def _peak(spec: GpuSpec, dtype: str) -> float:
    """FLOP/s of the fastest dense peak of a format at least as wide as `dtype`'s."""
    width = WIDTHS[dtype]
    peaks = [v for k, v in spec.peak_tflops.items() if WIDTHS.get(k, 0) >= width]
    return max(peaks) * 1e12


def _compute(uses: list[OpUse], spec: GpuSpec) -> float:
    """Seconds of the uses' FLOPs at the peaks."""
    return sum(get_op(u.op).flops(u.shape) * u.count / _peak(spec, u.dtype) for u in uses)


def _mean_of_ends(cost: Callable[[int], float], first: int, last: int) -> float:
    """The mean of a cost over contexts first..last, from below: its ends' mean."""
    return (cost(first) + cost(last)) / 2


def output_bound(setup: Serving, spec: GpuSpec) -> Bound:
    """The most output tokens/s per GPU `spec` can make of `setup`'s requests (see above); a
    model whose weights leave no memory for one sequence's cache is a one-line error."""
    isl, osl = setup.isl, setup.osl
    last = isl + osl - 1
    weights = setup.weight_bytes()
    held = setup.kv_bytes_per_token() * _mean_of_ends(setup.kv_tokens, isl, isl + osl)
    if spec.memory_bytes - weights < held:
        raise BenchError(
            f"{setup.model.name} at {setup.layout} in {setup.precision} does not fit {spec.name}: "
            f"{fmt_bytes(weights)} of weights per GPU beside {fmt_bytes(spec.memory_bytes)} of "
            "memory leave no room for one sequence's KV cache"
        )
    batch = (spec.memory_bytes - weights) / held

    def kv_read(context: int) -> float:
        uses = [u for u in setup.decode_step(1, context) if part(u) == "attention"]
        return sum(get_op(u.op).bytes(u.shape, u.dtype) * u.count for u in uses)

    compute = _compute(setup.prefill_step(1, isl), spec) + osl * _mean_of_ends(
        lambda c: _compute(setup.decode_step(1, c), spec), isl, last
    )
    traffic = osl * (_mean_of_ends(kv_read, isl, last) + weights / batch)
    traffic /= spec.bandwidth_gbs * 1e9
    seconds = max(compute, traffic)
    limit = "compute" if compute >= traffic else "memory traffic"
    return Bound(osl / seconds / setup.tp, limit, batch)
