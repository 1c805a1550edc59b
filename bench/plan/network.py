"""The collectives' time model: a latency plus the bytes over a bus bandwidth, as nccl-tests
defines it (time = latency + factor · S / bus bandwidth, the factor the op's: an all-reduce's
2(n−1)/n, an all-gather's (n−1)/n), with both terms taken per fabric from public measurements.

Within a GPU's scale-up domain (an HGX board's NVLink, an NVL72 rack, a PCIe server) NCCL runs
at its measured bus bandwidth, or a protocol share of the link; beyond it, over each GPU's NIC.
Serving engines run small all-reduces with a kernel of their own (vLLM's custom all-reduce, one
or two shots over NVLink) below size limits per GPU generation; `engine` chooses: "nccl",
"custom" (where the engine would have one), or "auto" (what vLLM picks).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops.base import Op
from bench.plan.optime import Modelled
from bench.record.hardware import GpuSpec

ENGINES = ("nccl", "auto", "custom")

# NCCL's latency for a small collective within a scale-up domain, timed as frameworks call it
# without CUDA graphs, where the spec table has no measurement for the GPU: the H100's, the
# median of six public all-reduces of up to 1 MiB on 8 H100s (bench/record/hardware.py).
NCCL_LATENCY_S = 29.7e-6
# Between nodes: small all-reduces over InfiniBand across 2 × 8 GPUs took 46-47 µs
# (NVIDIA/nccl#1244).
NETWORK_LATENCY_S = 46e-6
# vLLM's custom all-reduce for small messages: 9.5, 9.1 and 10.1 µs at TP 2, 4 and 8 on H100
# (sgl-project/sglang#2904), their mean.
CUSTOM_LATENCY_S = 9.6e-6
# NCCL's bus bandwidth as a share of a link's one-way bandwidth where the spec table has no
# measurement: ~20% protocol overhead (NCCL maintainers: H100 370 of 450 GB/s,
# NVIDIA/nccl-tests#212; A100 ~230 of 300, NVIDIA/nccl-tests#149).
PROTOCOL_SHARE = 0.8
# A NIC's share of its line rate NCCL reaches: 46-48 GB/s of NDR's 50 (NVIDIA/nccl-tests#290).
NIC_SHARE = 0.94
# The largest all-reduce vLLM runs with its custom kernel, by GPU generation and ranks
# (vllm/distributed/device_communicators/all_reduce_utils.py, CUSTOM_ALL_REDUCE_MAX_SIZES);
# other generations take its default max_size, 8 MiB, for 2, 4, 6 or 8 ranks.
MIB = 2**20
CUSTOM_MAX_BYTES = {
    "hopper": {2: 64 * MIB, 4: 32 * MIB, 6: MIB // 2, 8: MIB // 4},
    "blackwell": {2: 2 * MIB, 4: 2 * MIB, 6: MIB, 8: MIB},
}
CUSTOM_DEFAULT_MAX_BYTES = {n: 8 * MIB for n in (2, 4, 6, 8)}


@dataclass(frozen=True)
class Fabric:
    """What joins the ranks of a collective: its latency and NCCL's bus bandwidth over it."""

    name: str
    latency_s: float
    bus_gbs: float
    scale_up: bool  # within one NVLink/xGMI domain (an engine's custom kernel can run there)


def fabric(spec: GpuSpec, world: int) -> Fabric:
    """The fabric a collective over `world` GPUs of this kind crosses."""
    if world > spec.domain:
        if not spec.scale_out_gbs:
            raise BenchError(f"{spec.name} has no network bandwidth in the spec table")
        gbs = NIC_SHARE * spec.scale_out_gbs
        return Fabric(
            f"the network ({spec.scale_out_gbs:g} GB/s a GPU)", NETWORK_LATENCY_S, gbs, False
        )
    one_way = spec.interconnect_gbs / 2
    gbs = spec.nccl_gbs or PROTOCOL_SHARE * one_way
    name = f"{spec.link} ({one_way:g} GB/s each way)"
    return Fabric(name, spec.nccl_latency_s or NCCL_LATENCY_S, gbs, spec.link != "pcie")


def collective_time(op: Op, shape: dict, spec: GpuSpec, engine: str = "nccl") -> Modelled:
    """A collective of `shape["bytes"]` over `shape["world"]` GPUs of this kind."""
    if engine not in ENGINES:
        raise BenchError(f"unknown collectives engine '{engine}'; known: {', '.join(ENGINES)}")
    n, size = shape["world"], shape["bytes"]
    fab = fabric(spec, n)
    nccl = fab.latency_s + op.bus_factor(n) * size / (fab.bus_gbs * 1e9)
    how = f"NCCL over {fab.name}: {fab.latency_s * 1e6:.3g} µs + bytes at {fab.bus_gbs:g} GB/s"
    if engine != "nccl" and _custom_runs(op, size, n, spec, fab, engine):
        # One shot reads every peer's whole buffer; two shots reduce-scatter then all-gather.
        one_shot = (n - 1) * size / (fab.bus_gbs * 1e9)
        two_shot = 2 * (n - 1) / n * size / (fab.bus_gbs * 1e9)
        custom = CUSTOM_LATENCY_S + min(one_shot, two_shot)
        how = (
            f"custom all-reduce over {fab.name}: {CUSTOM_LATENCY_S * 1e6:.3g} µs + one or two "
            f"shots at {fab.bus_gbs:g} GB/s"
        )
        return Modelled(custom, "network", how)
    return Modelled(nccl, "network", how)


def _custom_runs(op: Op, size: float, world: int, spec: GpuSpec, fab: Fabric, engine: str) -> bool:
    """Whether the engine's own kernel runs this collective: an all-reduce within one NVLink
    domain, on 2, 4, 6 or 8 ranks, up to vLLM's size limit ("custom" lifts the limit)."""
    if not (getattr(op, "engine_kernel", False) and fab.scale_up):
        return False
    limits = CUSTOM_MAX_BYTES.get(spec.arch, CUSTOM_DEFAULT_MAX_BYTES)
    return world in limits and (engine == "custom" or size <= limits[world])
