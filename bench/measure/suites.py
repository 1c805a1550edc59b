"""Named shape sweeps: which (op, shape, dtype) cases a suite runs, read off the op registry.

`smoke` is sized for a CPU (the torch baselines on the CPU, the Triton kernels in the
interpreter) and is the default without a GPU; `standard` is the GPU sweep. Each op module holds
its own shapes for both. The `model` suite is derived from a model config instead
(bench.plan.models.suite_cases): every shape one GPU runs for that model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops import OPS, get_op
from bench.measure.ops.base import Op
from bench.record.schema import DTYPE_BYTES, Shape


@dataclass(frozen=True)
class CaseSpec:
    """One op at one shape and dtype; the runner expands it over the op's implementations."""

    op: str
    shape: Shape
    dtype: str


SUITES = ("smoke", "standard")
MODEL_SUITE = "model"
DEFAULT_DTYPES = {"smoke": ("fp32", "fp16", "bf16"), "standard": ("fp16", "bf16", "fp8")}


def suite_names() -> list[str]:
    return [*SUITES, MODEL_SUITE]


def default_suite(has_gpu: bool) -> str:
    return "standard" if has_gpu else "smoke"


def check_dtypes(dtypes: list[str]) -> None:
    """Each dtype asked for is one some op runs (fp4 is for estimates only)."""
    known = sorted({d for op in OPS.values() for d in op.dtypes}, key=list(DTYPE_BYTES).index)
    for dtype in dtypes:
        if dtype not in known:
            raise BenchError(f"unknown dtype '{dtype}'; known: {', '.join(known)}")


def build(
    suite: str,
    *,
    ops: list[str] | None = None,
    dtypes: list[str] | None = None,
    given: list[Shape] | None = None,
    world: int = 1,
) -> list[CaseSpec]:
    """The cases of a suite for a run of `world` ranks, narrowed to ops and dtypes; each of the
    `given` shapes replaces the suite's shapes of the op whose shape keys it has. Ops with no
    shapes at this world size (collectives without torchrun) are left out unless named."""
    if suite == MODEL_SUITE:
        raise BenchError("suite 'model' is derived from a model: pass --model NAME or FILE")
    if suite not in SUITES:
        raise BenchError(f"unknown suite '{suite}'; known: {', '.join(suite_names())}")
    check_dtypes(dtypes or [])
    selected = [get_op(name) for name in ops or OPS]
    owned = _owned_shapes(given or [], selected)
    cases = []
    for op in selected:
        if given and op.name not in owned:
            continue
        shapes = owned.get(op.name) or op.suite_shapes(suite, world)
        if not shapes and ops:
            raise BenchError(
                f"{op.name} needs several ranks: run it under torchrun, e.g. torchrun "
                f"--nproc-per-node 2 -m bench run --op {op.name}"
            )
        wanted = dtypes or DEFAULT_DTYPES[suite]
        for shape in shapes:
            op.check_shape(shape)
            complete = op.complete(shape)
            cases += [CaseSpec(op.name, complete, dt) for dt in wanted if dt in op.dtypes]
    if not cases:
        names = [op.name for op in selected]
        raise BenchError(f"suite '{suite}' has no cases for ops {names} and dtypes {dtypes}")
    return cases


def _owned_shapes(given: list[Shape], ops: list[Op]) -> dict[str, list[Shape]]:
    """Each given shape under the op whose keys it has; a shape no selected op takes is an
    error that lists every op's keys."""
    owned: dict[str, list[Shape]] = {}
    for shape in given:
        owner = next((op for op in ops if op.takes(set(shape))), None)
        if owner is None:
            keys = "; ".join(f"{op.name} {','.join(op.required)}" for op in ops)
            raise BenchError(
                f"shape keys {','.join(shape)} match no selected op; the keys are: {keys}"
            )
        owned.setdefault(owner.name, []).append(shape)
    return owned


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # ASCII digits: int() would also take "²" or "٣"


def parse_shape(text: str) -> Shape:
    """ "M=64,N=128,K=256" -> {"M": 64, "N": 128, "K": 256}; true/false become booleans."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    shape: Shape = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key:
            raise BenchError(f"bad shape '{shown}'; expected KEY=VALUE pairs like M=64,N=128,K=256")
        if key in shape:
            raise BenchError(f"bad shape '{shown}': {key} is given twice")
        if value.lower() in ("true", "false"):
            shape[key] = value.lower() == "true"
        elif _INTEGER.fullmatch(value):
            shape[key] = int(value)
        else:
            value = value if len(value) <= 20 else value[:17] + "..."
            raise BenchError(
                f"bad shape '{shown}': {key}={value} is neither an integer (up to 18 digits) "
                "nor true/false"
            )
    return shape


@dataclass(frozen=True)
class Planned:
    """A case as `tokbench run --dry-run` shows it: the implementations that would run it, and
    the configs its Triton kernel autotunes over on a Hopper GPU (None: none is autotuned)."""

    case: CaseSpec
    impls: tuple[str, ...]
    configs: int | None


def plan(cases: list[CaseSpec], impls: list[str] | None) -> list[Planned]:
    """What a run of these cases would do, before any device is touched."""
    planned = []
    for case in cases:
        chosen = [i for i in get_op(case.op).impls if not impls or i.name in impls]
        counts = [i.tuning(case.shape, case.dtype) for i in chosen if i.tuning]
        planned.append(
            Planned(case, tuple(i.name for i in chosen), sum(counts) if counts else None)
        )
    return planned
