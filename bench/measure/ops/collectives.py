"""Collectives over the ranks of a run under torchrun (torch.distributed: NCCL on GPUs, gloo on
CPUs): all_reduce, all_gather, reduce_scatter, all_to_all (MoE expert parallelism) and a ring
of send/recv. One family, one module: they differ only in the call, the reference and the
bus-bandwidth factor.

Sizes as nccl-tests prints them: `bytes` is S, the per-rank buffer of all_reduce and send/recv, the
gathered output of all_gather, the input of reduce_scatter and all_to_all (each rank sends S/n to
every rank). Timed as nccl-tests does, the slowest rank's time per call
(bench.measure.distributed.time_collective): algorithm bandwidth S / time, bus bandwidth that times
the factor of PERFORMANCE.md in nccl-tests — all_reduce 2(n−1)/n; all_gather, reduce_scatter and
all_to_all (n−1)/n; send/recv 1 — the bandwidth a link would need for that time.

Every rank's input is a seeded random vector times (rank + 1), so each rank knows every other
rank's input and checks its own output against a float64 reference computed locally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from bench import ceil_div
from bench.measure.ops.base import Impl, Inputs, Key, Op, randn
from bench.measure.ops.moe import busiest_load
from bench.measure.ops.step import ModelStep, OpUse
from bench.record.schema import DTYPE_BYTES, DeviceInfo, Shape
from bench.record.units import fmt_bytes

if TYPE_CHECKING:
    import torch

# Message sizes: the smoke suite's few small ones, and nccl-tests' sweep of 8 B to 1 GiB
# (here every 4×).
SMOKE_BYTES = (64, 4096, 65536)
STANDARD_BYTES = (*(8 * 4**i for i in range(15)), 2**30)


class Collective(Op):
    """What every collective shares; a subclass names its call, reference and factor."""

    keys = (
        Key("bytes", "message size S in bytes, as nccl-tests prints it"),
        Key("world", "ranks taking part (the run's, under torchrun)"),
    )
    dtypes = ("fp32", "fp16", "bf16")
    baseline = "torch"
    part = "communication"
    efficiency = "collective"
    axes = (("bytes",),)
    # Whether S is split into one chunk per rank (S must then divide by the ranks).
    split: ClassVar[bool] = False
    # Whether serving engines run small ones with a one-shot kernel of their own instead of
    # NCCL (vLLM's and TensorRT-LLM's custom all-reduce).
    engine_kernel: ClassVar[bool] = False

    def bus_factor(self, world: int) -> float:
        raise NotImplementedError

    def rule(self, shape: Shape) -> str | None:
        unit = 4 * shape["world"] if self.split else 4
        if shape["bytes"] % unit:
            return f"bytes must be a multiple of {unit} (4 bytes × the ranks it is split over)"
        return None

    def suite_shapes(self, suite: str, world: int) -> tuple[Shape, ...]:
        """The suite's sizes, rounded down to what splits evenly over `world` ranks; none
        without several ranks."""
        if world < 2:
            return ()
        unit = 4 * world if self.split else 4
        sizes = SMOKE_BYTES if suite == "smoke" else STANDARD_BYTES
        return tuple(
            {"bytes": max(unit, s // unit * unit), "world": world} for s in dict.fromkeys(sizes)
        )

    def flops(self, shape: Shape) -> float:
        return 0.0

    def bytes(self, shape: Shape, dtype: str) -> float:
        return float(shape["bytes"])

    def work(self, shape: Shape) -> float:
        return float(shape["bytes"])

    def footprint(self, shape: Shape, dtype: str) -> float:
        # Input, output and the float64 reference of the larger of the two.
        return 2 * shape["bytes"] + 8 * shape["bytes"] / DTYPE_BYTES[dtype]

    def label(self, shape: Shape) -> str:
        return f"{fmt_bytes(shape['bytes'])} × {shape['world']} ranks"

    def make_inputs(
        self, shape: Shape, dtype: str, device: torch.device, gen: torch.Generator
    ) -> Inputs:
        from bench.measure import distributed

        n = shape["world"]
        base = randn((shape["bytes"] // DTYPE_BYTES[dtype],), dtype, device, gen)
        rank = distributed.rank()
        return {"base": base, "rank": rank, "world": n, "x": base * (rank + 1)}

    def implementations(self) -> tuple[Impl, ...]:
        return (Impl("torch", self._prepare, unsupported=_needs_the_ranks),)

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        raise NotImplementedError


def _needs_the_ranks(shape: Shape, dtype: str, device: DeviceInfo) -> str | None:
    from bench.measure import distributed

    if distributed.world() == shape["world"]:
        return None
    return f"needs {shape['world']} ranks: run it under torchrun --nproc-per-node {shape['world']}"


def _chunk(inputs: Inputs, i: int) -> torch.Tensor:
    """Chunk i of the shared random vector, in float64."""
    return inputs["base"].double().chunk(inputs["world"])[i]


class AllReduce(Collective):
    name = "all_reduce"
    description = "all-reduce (sum) of an S-byte buffer over the ranks"
    engine_kernel = True

    def bus_factor(self, world: int) -> float:
        return 2 * (world - 1) / world

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Tensor parallelism's two a layer, after O and after down: the partial sums of the
        hidden state of every token of the step."""
        if step.tp == 1:
            return []
        shape = {"bytes": int(step.tokens * step.hidden * DTYPE_BYTES[step.act]), "world": step.tp}
        # Under expert parallelism a MoE layer's routed experts come back by the all-to-all
        # combine; its dense layers and shared experts (split by TP) still reduce.
        mlps = step.dense_layers + (step.moe_layers if step.shared else 0)
        count = 2 * step.layers if step.ep == 1 else step.layers + mlps
        return [self.use("all_reduce", shape, step.act, count)]

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        import torch.distributed as dist

        x, out = inputs["x"], inputs["x"].clone()

        def fn() -> torch.Tensor:
            out.copy_(x)  # the sum lands in place: start each call from the input
            dist.all_reduce(out)
            return out

        return fn

    def reference(self, inputs: Inputs) -> torch.Tensor:
        n = inputs["world"]
        return inputs["base"].double() * (n * (n + 1) / 2)


class AllGather(Collective):
    name = "all_gather"
    description = "all-gather: each rank's S/n bytes to every rank (S gathered)"
    split = True

    def bus_factor(self, world: int) -> float:
        return (world - 1) / world

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        import torch.distributed as dist

        mine = inputs["base"].chunk(inputs["world"])[0] * (inputs["rank"] + 1)
        out = inputs["base"].new_empty(inputs["base"].shape)

        def fn() -> torch.Tensor:
            dist.all_gather_into_tensor(out, mine)
            return out

        return fn

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        return torch.cat([_chunk(inputs, 0) * (r + 1) for r in range(inputs["world"])])


class ReduceScatter(Collective):
    name = "reduce_scatter"
    description = "reduce-scatter (sum): S bytes in, the rank's S/n summed over the ranks out"
    split = True

    def bus_factor(self, world: int) -> float:
        return (world - 1) / world

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        import torch.distributed as dist

        x = inputs["x"]
        out = x.new_empty(x.numel() // inputs["world"])

        def fn() -> torch.Tensor:
            dist.reduce_scatter_tensor(out, x)
            return out

        return fn

    def reference(self, inputs: Inputs) -> torch.Tensor:
        n = inputs["world"]
        return _chunk(inputs, inputs["rank"]) * (n * (n + 1) / 2)


class AllToAll(Collective):
    name = "all_to_all"
    description = "all-to-all: S/n bytes from every rank to every rank (MoE expert dispatch)"
    split = True

    def bus_factor(self, world: int) -> float:
        return (world - 1) / world

    def step_uses(self, step: ModelStep) -> list[OpUse]:
        """Expert parallelism's two a MoE layer (DeepEP's dispatch and combine): each GPU sends
        its share of its group's tokens (a TP group's GPUs split them) once to every EP rank
        holding one of a token's k experts, and gets their outputs back; the busiest rank
        (bench.measure.ops.moe.busiest_load) moves the most and bounds both. Dispatch in fp8
        where the experts' weights are 8-bit or narrower, combine in the activations' dtype,
        as DeepEP runs them (github.com/deepseek-ai/DeepEP README: "FP8 dispatching and BF16
        combining")."""
        if step.ep == 1 or not step.moe:
            return []
        n = step.ep
        # Ranks a token reaches: the distinct ranks among its k experts (uniform placement).
        ranks = n * (1 - (1 - 1 / n) ** step.top_k)
        rows = step.tokens / step.tp * ranks * busiest_load(step)
        narrow = DTYPE_BYTES[step.weights] < 2
        uses = []
        for dtype in ("fp8" if narrow else step.act, step.act):
            unit = 4 * n
            size = ceil_div(int(rows * step.hidden * DTYPE_BYTES[dtype]), unit) * unit
            uses.append(self.use("all_to_all", {"bytes": size, "world": n}, step.act,
                                 step.moe_layers))  # fmt: skip
        return uses

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        import torch.distributed as dist

        x = inputs["x"]
        out = x.new_empty(x.shape)

        def fn() -> torch.Tensor:
            dist.all_to_all_single(out, x)
            return out

        return fn

    def reference(self, inputs: Inputs) -> torch.Tensor:
        import torch

        mine = _chunk(inputs, inputs["rank"])
        return torch.cat([mine * (j + 1) for j in range(inputs["world"])])


class SendRecv(Collective):
    name = "send_recv"
    description = "send/recv in a ring: S bytes to the next rank, S from the previous one"

    def bus_factor(self, world: int) -> float:
        return 1.0

    def _prepare(self, inputs: Inputs) -> Callable[[], torch.Tensor]:
        import torch.distributed as dist

        x, r, n = inputs["x"], inputs["rank"], inputs["world"]
        out = x.new_empty(x.shape)

        ring = [dist.P2POp(dist.isend, x, (r + 1) % n), dist.P2POp(dist.irecv, out, (r - 1) % n)]

        def fn() -> torch.Tensor:
            for work in dist.batch_isend_irecv(ring):
                work.wait()
            return out

        return fn

    def reference(self, inputs: Inputs) -> torch.Tensor:
        sender = (inputs["rank"] - 1) % inputs["world"]
        return inputs["base"].double() * (sender + 1)


OPS = (AllReduce(), AllGather(), ReduceScatter(), AllToAll(), SendRecv())
