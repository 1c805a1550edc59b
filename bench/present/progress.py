"""A run's progress as bench.measure.session reports it: the ceilings line, then a bar on a
terminal or one line per case in a log."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console

from bench.measure import ops
from bench.present.tables.runs import case_line, ceilings_line
from bench.record.schema import CaseResult, DeviceInfo


class ConsoleProgress:
    """Progress on a console (stderr): a transient bar on a terminal, a line per case in a log."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def ceilings(self, peaks: dict[str, float]) -> None:
        self.console.print(ceilings_line(peaks), highlight=False)

    def cases(
        self, device: DeviceInfo, total: int
    ) -> contextlib.AbstractContextManager[Callable[[CaseResult], None]]:
        if self.console.is_terminal:
            return self._bar(device, total)
        return contextlib.nullcontext(self._log(total))

    def _log(self, total: int) -> Callable[[CaseResult], None]:
        """One line per case, counted and timed from now."""
        start, done = time.monotonic(), 0

        def line(record: CaseResult) -> None:
            nonlocal done
            done += 1
            elapsed = time.monotonic() - start
            self.console.print(
                f"[{done}/{total} {elapsed:.0f}s] {case_line(record)}", highlight=False
            )

        return line

    @contextlib.contextmanager
    def _bar(self, device: DeviceInfo, total: int) -> Iterator[Callable[[CaseResult], None]]:
        """A bar that names the case last measured, gone when the run ends."""
        # Imported here: only a run on a terminal draws a bar, and the module is not small.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(f"{device.name}", total=total)

            def advance(record: CaseResult) -> None:
                label = ops.label(record.op, record.shape)
                progress.update(task, advance=1, description=f"{record.op} {label} {record.dtype}")

            yield advance
