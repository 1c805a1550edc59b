"""The op registry: every module in this package that defines ``OP`` is an op (a family of ops
that share all but a formula, as the collectives do, lists them in ``OPS``).

Adding an op is one module here (plus its kernel in kernels/ and its tests): suites, the CLI's
--shape help, lookups and the estimate's parts read it from the registry. CONTRIBUTING.md lists
the steps.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from bench import BenchError
from bench.measure.ops.base import Op, shape_text
from bench.record import results
from bench.record.schema import ResultDoc, Shape


def _discover() -> dict[str, Op]:
    ops = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        ops += [op for op in (getattr(module, "OP", None), *getattr(module, "OPS", ())) if op]
    return {op.name: op for op in sorted(ops, key=lambda op: op.name)}


OPS: dict[str, Op] = _discover()


def get_op(name: str) -> Op:
    if name not in OPS:
        raise BenchError(f"unknown op '{name}'; known: {', '.join(OPS)}")
    return OPS[name]


def label(op: str, shape: Shape) -> str:
    """A case's shape as its op labels it; as KEY=VALUE pairs for an op this version does not
    know (a file from a newer tokbench is shown, not refused)."""
    return OPS[op].label(shape) if op in OPS else shape_text(shape)


def description(op: str) -> str:
    return OPS[op].description if op in OPS else "an op this version of tokbench does not know"


def shape_help() -> str:
    """Every op's shape keys, for the CLI: 'matmul: M, N, K; decode: B, …, page (+ window,
    sinks)' (keys with a default in parentheses: a shape may leave them out). Spaces let a
    narrow terminal wrap the list rather than cut it."""

    def keys(op: Op) -> str:
        optional = [k for k in op.key_names if k not in op.required]
        return ", ".join(op.required) + (f" (+ {', '.join(optional)})" if optional else "")

    return "; ".join(f"{op.name}: {keys(op)}" for op in OPS.values())


def load_results(path: str | Path) -> ResultDoc:
    """A result file, loaded and validated (bench.record.results.load), whose cases of known
    ops each have a shape their op takes, completed with the defaults of keys added since the
    file was written; cases of ops this version does not know are kept as they are."""
    doc = results.load(path)
    for i, case in enumerate(doc.cases):
        if case.op in OPS:
            try:
                OPS[case.op].check_shape(case.shape)
            except BenchError as e:
                raise BenchError(f"{path}: field 'cases[{i}].shape' is wrong: {e}") from None
            case.shape = OPS[case.op].complete(case.shape)
    return doc
