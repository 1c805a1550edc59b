"""A measuring session on this machine: the machine as `tokbench info` shows it, and the run
`tokbench run` makes: the cases chosen once the device is known, every rank's under torchrun,
the ceilings, the result file written case by case, and progress reported as it goes.

torch and Triton are imported inside the functions, after Triton's mode is chosen
(kernels.use_interpreter_without_gpu), so that importing this module imports neither.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import kernels
from bench import BenchError, check_range
from bench.measure import suites
from bench.measure.ops import get_op
from bench.measure.ops.base import dtype_unsupported
from bench.measure.suites import CaseSpec, Planned
from bench.record import results
from bench.record.hardware import GpuSpec, match_spec
from bench.record.schema import CaseResult, DeviceInfo, RankInfo, ResultDoc, Telemetry
from bench.record.units import plural

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from bench.measure.distributed import Ranks
    from bench.measure.runner import RunConfig

# Seconds of timed reps per case without --max-time (its help says so): on a CPU, where the
# run is a smoke run of the torch baselines, a tenth of the GPU's.
GPU_MAX_TIME_S = 1.0
CPU_MAX_TIME_S = 0.1


@dataclass(frozen=True)
class Machine:
    """The device as the harness sees it, its spec-table entry, software versions, a reading."""

    device: DeviceInfo
    spec: GpuSpec | None
    software: dict[str, str]
    telemetry: Telemetry | None

    def as_dict(self) -> dict[str, object]:
        return {
            "device": dataclasses.asdict(self.device),
            "spec": self.spec.key if self.spec else None,
            "software": self.software,
            "telemetry": dataclasses.asdict(self.telemetry) if self.telemetry else None,
        }


def machine() -> Machine:
    from bench.measure import device as dev

    device = dev.detect()
    spec = match_spec(device.name) if device.kind == "cuda" else None
    return Machine(device, spec, dev.software(), dev.telemetry(device))


# --- which cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The cases a run measures, the suite it records them under, and the dtypes the user named
    (each must run on the device)."""

    suite: str
    cases: list[CaseSpec]
    dtypes: list[str]


class CaseSource(Protocol):
    """Chooses a run's cases once the device and the number of ranks are known."""

    def select(self, device: DeviceInfo, world: int) -> Selection: ...


@dataclass(frozen=True)
class NamedSuite:
    """A named suite (the device's default without a name), narrowed to ops and dtypes, with
    shapes given as text (KEY=VALUE,…) replacing the suite's for the op that takes them."""

    suite: str | None = None
    ops: list[str] | None = None
    dtypes: list[str] | None = None
    shapes: list[str] | None = None

    def select(self, device: DeviceInfo, world: int) -> Selection:
        suite = self.suite or suites.default_suite(device.kind == "cuda")
        given = [suites.parse_shape(s) for s in self.shapes or ()]
        cases = suites.build(suite, ops=self.ops, dtypes=self.dtypes, given=given, world=world)
        return Selection(suite, cases, self.dtypes or [])


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How a run measures: its cases and implementations, the timer, and the result file."""

    cases: CaseSource
    impls: list[str] | None = None  # None: every implementation of each op
    out: Path | None = None  # None: a new file in results/ named by device and date
    force: bool = False  # replace an existing `out`
    append: bool = False  # add to an existing `out`
    noise: float = 0.01  # target relative CI half-width of the median
    max_time: float | None = None  # seconds of timed reps per case (None: *_MAX_TIME_S)
    cuda_graph: bool = False
    seed: int = 0
    ceilings: bool = True  # first measure copy bandwidth and a large GEMM
    rank_timeout: float = 600.0  # under torchrun: seconds a rank may stay silent
    nproc: int | None = None  # start this many ranks here (torch's launcher), unless one already

    def __post_init__(self) -> None:
        check_range("--noise", self.noise, 1e-4, closed="low")
        if self.max_time is not None:
            check_range("--max-time", self.max_time, 1e-3, 3600, closed="low high")
        check_range("--rank-timeout", self.rank_timeout, 0.1, closed="low")

    def mode(self) -> str:
        """How the result file is opened: new, replace or append."""
        if self.force and self.append:
            raise BenchError("--force and --append exclude each other")
        return "replace" if self.force else "append" if self.append else "new"


class Progress(Protocol):
    """What a run reports as it goes, for whoever shows it."""

    def ceilings(self, peaks: dict[str, float]) -> None:
        """The ceilings, once measured."""

    def cases(
        self, device: DeviceInfo, total: int
    ) -> AbstractContextManager[Callable[[CaseResult], None]]:
        """Around the cases: gives the function that hears of each of `total` records."""


@dataclass(frozen=True)
class Measured:
    """A finished run, on rank 0: its document, its file, and how many cases it measured."""

    doc: ResultDoc
    path: Path
    measured: int


class Interrupted(Exception):
    """Ctrl-C stopped the run; the message says what was kept."""


class Stopped(BenchError):
    """The run stopped part-way (a lost rank, a case that does not fit); the message says what
    was kept."""


def _launch(nproc: int) -> int | None:
    """This command (`tokbench run … --nproc-per-node N`) on nproc ranks of this machine, started
    by torch's launcher: the status to exit with, or None in a process that already is a rank
    (torchrun's or the launcher's), which runs its part."""
    check_range("--nproc-per-node", nproc, 1, closed="low")
    from bench.measure import distributed

    if distributed.under_torchrun():
        return None
    return distributed.launch(nproc, sys.argv[1:])


def dry_run(settings: RunSettings) -> list[Planned]:
    """The cases the run would measure, what runs each and what its Triton kernel autotunes
    over: the device is detected (the model suite fits its memory), nothing is measured."""
    _, selection = _select(settings, _start(settings))
    return suites.plan(selection.cases, settings.impls)


def measure(settings: RunSettings, progress: Progress) -> Measured | None:
    """Check and time every case, writing each record as soon as it exists; None on ranks
    other than 0, whose records rank 0 writes. A stop (Ctrl-C, a lost rank, a case that does
    not fit) keeps what was measured and says so; under torchrun rank 0 says it, alone.

    With `nproc`, the process that starts the ranks returns None once they are done, or
    exits with rank 0's status after rank 0 has said why the run failed."""
    if settings.nproc is not None and (status := _launch(settings.nproc)) is not None:
        if status:
            raise SystemExit(status)
        return None
    ranks = _start(settings)
    with _rank_0_speaks(ranks), _stopped_by_torchrun(ranks):
        return _measure(settings, progress, ranks)


def _measure(settings: RunSettings, progress: Progress, ranks: Ranks | None) -> Measured | None:
    """measure, once the process group (if any) is joined."""
    from bench.measure import distributed

    device, selection = _select(settings, ranks)
    _check_dtypes(device, selection.dtypes)
    mode = settings.mode()
    config = _config(settings, device)
    spec = match_spec(device.name) if device.kind == "cuda" else None
    doc = _document(selection.suite, device, spec, ranks)
    leader = ranks is None or ranks.leader
    path = (settings.out or results.default_path(device)) if leader else None
    with results.ResultWriter(doc, path, mode) as writer:
        try:
            if settings.ceilings and leader and not writer.doc.measured_peaks:
                from bench.measure.ceilings import measure as ceilings

                writer.doc.measured_peaks = ceilings(device, config.timer)
                progress.ceilings(writer.doc.measured_peaks)
            _run(selection.cases, device, spec, writer, config, ranks, progress)
        except KeyboardInterrupt:
            raise Interrupted(_kept(writer)) from None
        except BenchError as e:
            raise Stopped(f"{e} ({_kept(writer)})") from None
        except RuntimeError as e:  # a collective whose peers are gone
            if ranks is None:
                raise
            why = distributed.why_lost(e)
            raise Stopped(f"lost the other ranks ({why}); {_kept(writer)}") from None
        writer.finish()
    distributed.stop()
    return Measured(writer.doc, path, writer.measured) if leader else None


def _start(settings: RunSettings) -> Ranks | None:
    """Triton's mode chosen and the process group joined (under torchrun)."""
    kernels.use_interpreter_without_gpu()
    from bench.measure import distributed

    return distributed.start(timedelta(seconds=settings.rank_timeout))


def _select(settings: RunSettings, ranks: Ranks | None) -> tuple[DeviceInfo, Selection]:
    """This rank's device, and the cases that one of the implementations asked for runs."""
    from bench.measure import device as dev

    device = dev.detect(ranks.local_rank if ranks else 0)
    selection = settings.cases.select(device, ranks.world if ranks else 1)
    cases = _select_impls(selection.cases, settings.impls)
    return device, dataclasses.replace(selection, cases=cases)


def _select_impls(cases: list[CaseSpec], impls: list[str] | None) -> list[CaseSpec]:
    """Keep the cases that one of the requested implementations runs; an implementation name
    no selected op has is an error."""
    if not impls:
        return cases
    names = {i.name for c in cases for i in get_op(c.op).impls}
    for name in impls:
        if name not in names:
            raise BenchError(f"unknown implementation '{name}'; known: {', '.join(sorted(names))}")
    return [c for c in cases if any(i.name in impls for i in get_op(c.op).impls)]


def _check_dtypes(device: DeviceInfo, dtypes: list[str]) -> None:
    """A dtype the user asked for by name must run on this device."""
    for dtype in dtypes:
        reason = dtype_unsupported(dtype, device)
        if reason:
            raise BenchError(f"dtype {dtype}: {reason}")


def _config(settings: RunSettings, device: DeviceInfo) -> RunConfig:
    from bench.measure.runner import RunConfig
    from bench.measure.timing import TimerConfig

    default = GPU_MAX_TIME_S if device.kind == "cuda" else CPU_MAX_TIME_S
    timer = TimerConfig(noise=settings.noise, max_time_s=settings.max_time or default)
    return RunConfig(
        timer=timer, cuda_graph=settings.cuda_graph, impls=settings.impls, seed=settings.seed
    )


def _document(
    suite: str, device: DeviceInfo, spec: GpuSpec | None, ranks: Ranks | None
) -> ResultDoc:
    """The result document the run fills: the device, software, command and every rank."""
    from bench.measure import device as dev

    cpu = dev.prepare_cpu(device)  # before software(), which records the thread count
    return ResultDoc(
        device=device,
        cpu=cpu,
        software=dev.software(),
        command=results.command_line(),
        suite=suite,
        spec=spec.key if spec else None,
        ranks=_ranks(ranks, device),
    )


def _ranks(ranks: Ranks | None, device: DeviceInfo) -> list[RankInfo]:
    """Every rank's host and device, in rank order (on rank 0; this rank's alone elsewhere)."""
    from bench.measure import device as dev
    from bench.measure import distributed

    mine = RankInfo(ranks.rank if ranks else 0, socket.gethostname(), device, dev.nvlinks(device))
    if ranks is None:
        return [mine]
    try:
        return distributed.gather(mine) or [mine]
    except RuntimeError as e:  # a rank lost before the run began: nothing to keep
        why = distributed.why_lost(e)
        raise Stopped(f"lost the other ranks ({why}); no case measured") from None


def _run(
    cases: list[CaseSpec],
    device: DeviceInfo,
    spec: GpuSpec | None,
    writer: results.ResultWriter,
    config: RunConfig,
    ranks: Ranks | None,
    progress: Progress,
) -> None:
    """Run the cases; rank 0 reports every rank's records as they come."""
    from bench.measure.runner import run_cases

    if ranks is not None and not ranks.leader:
        run_cases(cases, device, spec, writer, config, ranks=ranks)
        return
    chosen = config.impls
    total = sum(
        len([i for i in get_op(c.op).impls if chosen is None or i.name in chosen]) for c in cases
    )
    with progress.cases(device, total) as on_case:
        run_cases(cases, device, spec, writer, config, on_case=on_case, ranks=ranks)


@contextlib.contextmanager
def _stopped_by_torchrun(ranks: Ranks | None) -> Iterator[None]:
    """torchrun stops the other ranks with SIGTERM when one fails: rank 0 then ends like an
    interrupted run, keeping what it measured, instead of dying without a word (the other
    ranks end quietly: see _rank_0_speaks)."""
    if ranks is None:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise BenchError("another rank ended first, and torchrun stopped the run")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _rank_0_speaks(ranks: Ranks | None) -> Iterator[None]:
    """Under torchrun rank 0 alone says why a run ended: another rank ends without a word. On
    bad input, which every rank meets before measuring, it exits cleanly (rank 0's status 2
    fails the run); stopped part-way, with status 2 (130 on Ctrl-C), so that torchrun stops the
    others rather than waiting for a rank that may never answer."""
    try:
        yield
    except (BenchError, Interrupted, KeyboardInterrupt) as e:
        if ranks is None or ranks.leader:
            raise
        raise SystemExit(
            2 if isinstance(e, Stopped) else 0 if isinstance(e, BenchError) else 130
        ) from None


def _kept(writer: results.ResultWriter) -> str:
    if writer.path is None:  # a rank other than 0: rank 0 keeps the file
        return "rank 0 keeps the cases measured so far"
    if not writer.measured:
        return f"no case measured; {writer.path} not written"
    return f"{plural(writer.measured, 'case')} measured so far kept in {writer.path}"
