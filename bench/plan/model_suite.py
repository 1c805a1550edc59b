"""The model suite that `tokbench run --model` measures: every shape one GPU runs for a model's
serving set-ups (models.suite_cases), chosen once the device's memory is known."""

from __future__ import annotations

from dataclasses import dataclass

from bench import BenchError
from bench.measure.ops import OPS, get_op
from bench.measure.session import Selection
from bench.measure.suites import MODEL_SUITE
from bench.plan import models
from bench.plan.models import Serving
from bench.record.schema import DeviceInfo


@dataclass(frozen=True)
class ModelSuite:
    """A model's suite at each TP degree and request length, narrowed to `ops`."""

    model: str | None  # a name or a config file
    tps: list[int]
    precision: str = "bf16"  # of the GEMMs: the one dtype this suite runs, named by the user
    kv_precision: str = "auto"
    batches: list[int] | None = None  # None: models.DEFAULT_BATCHES
    isls: list[int] | None = None  # None: models.DEFAULT_ISL
    osls: list[int] | None = None  # None: models.DEFAULT_OSL
    ops: list[str] | None = None

    def __post_init__(self) -> None:
        if not any(self.precision in op.dtypes for op in OPS.values()):
            raise BenchError(
                f"no op here runs {self.precision} GEMMs; estimate them from the op-time model: "
                f"tokbench estimate --model {self.model} --gpu b200 --precision {self.precision}"
            )
        if self.model is None:
            raise BenchError("suite 'model' needs --model NAME or a config file")

    def select(self, device: DeviceInfo, world: int) -> Selection:
        batches = self.batches or models.DEFAULT_BATCHES
        memory, cuda = float(device.memory_bytes), device.kind == "cuda"
        cases = models.suite_cases(self._setups(), batches, memory, cuda)
        if self.ops:
            names = [get_op(name).name for name in self.ops]
            cases = [c for c in cases if c.op in names]
        return Selection(MODEL_SUITE, cases, [self.precision])

    def _setups(self) -> list[Serving]:
        """One serving set-up per TP degree and request length."""
        config = models.get_model(self.model)
        return [
            Serving(config, tp=t, precision=self.precision, kv_precision=self.kv_precision,
                    isl=i, osl=o)
            for t in self.tps
            for i in self.isls or [models.DEFAULT_ISL]
            for o in self.osls or [models.DEFAULT_OSL]
        ]  # fmt: skip
