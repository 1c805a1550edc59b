"""The correctness gate and the run loop: wrong, NaN, failing and unsupported implementations."""

import math
from pathlib import Path

import pytest
import torch

from bench.measure import device as dev
from bench.measure.ops import get_op
from bench.measure.ops.base import Impl
from bench.measure.runner import RunConfig, check, relative_error, run_cases, run_one
from bench.measure.suites import CaseSpec, build
from bench.measure.timing import TimerConfig
from bench.record.results import ResultWriter, load
from bench.record.schema import ResultDoc

FAST = RunConfig(timer=TimerConfig(max_time_s=0.01, min_reps=1))
CPU = dev.detect()


def _run(impl: Impl, dtype: str = "fp32"):
    op = get_op("matmul")
    case = CaseSpec("matmul", {"M": 33, "N": 17, "K": 29}, dtype)
    gen = torch.Generator().manual_seed(0)
    inputs = op.inputs(case.shape, case.dtype, torch.device("cpu"), gen)
    return run_one(op, impl, case, inputs, op.reference(inputs), CPU, None, FAST)


def test_relative_error() -> None:
    ref = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert relative_error(torch.tensor([3.0, 4.0]), ref) == 0
    assert relative_error(torch.tensor([3.0, 3.0]), ref) == pytest.approx(0.2)
    assert math.isnan(relative_error(torch.tensor([math.nan, 4.0]), ref))
    assert check(torch.tensor([3.0, 3.0]), ref, 0.1)[1].startswith("relative error 2.00e-01")


def test_correct_implementation_passes_and_is_timed() -> None:
    record = _run(get_op("matmul").impl("torch"))
    assert record.status == "ok" and record.rel_error < 1e-6
    assert record.timing.n >= 1 and record.tflops > 0


def test_gate_rejects_a_wrong_implementation() -> None:
    wrong = Impl("wrong", lambda i: lambda: torch.matmul(i["a"], i["b"]) * 1.01)
    record = _run(wrong)
    assert record.status == "failed"
    assert "exceeds tolerance" in record.error
    assert record.timing is None  # a wrong result is never timed


def test_gate_rejects_nan() -> None:
    def nan_impl(i):
        def fn():
            out = torch.matmul(i["a"], i["b"])
            out[3, 5] = math.nan
            return out

        return fn

    record = _run(Impl("nan", nan_impl))
    assert record.status == "failed" and "NaN" in record.error


def test_an_implementation_that_raises_is_recorded_as_failed() -> None:
    def broken(i):
        raise RuntimeError("kernel exploded\nlong traceback text")

    record = _run(Impl("broken", broken))
    assert record.status == "failed"
    assert record.error == "RuntimeError: kernel exploded"


def test_unsupported_is_skipped_with_its_reason() -> None:
    record = _run(Impl("never", lambda i: None, unsupported=lambda *_: "needs a unicorn"))
    assert record.status == "skipped" and record.error == "needs a unicorn"


def test_interrupted_run_keeps_its_cases(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    doc = ResultDoc(CPU, dev.software(), "test", "smoke")
    seen = []

    def interrupt_after_three(record) -> None:
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt

    cases = build("smoke", ops=["matmul"], dtypes=["fp32"])
    config = RunConfig(timer=FAST.timer, impls=["torch"])
    with pytest.raises(KeyboardInterrupt), ResultWriter(doc, path) as writer:
        run_cases(cases, CPU, None, writer, config, on_case=interrupt_after_three)
    kept = load(path)
    assert len(kept.cases) == 3 and not kept.complete
    assert all(c.status == "ok" for c in kept.cases)


def test_an_implementation_whose_workspace_does_not_fit_is_skipped() -> None:
    huge = Impl("huge", lambda i: lambda: torch.matmul(i["a"], i["b"]), workspace=lambda *_: 1e18)
    record = _run(huge)
    assert record.status == "skipped" and "GiB of workspace" in record.error
