"""`tokbench report`: one self-contained HTML page of result files and planning JSON, to send
to a colleague: the capacity answers, the throughput-interactivity frontier, the estimates,
simulations and steps, the comparison of the runs with projections, and each run's provenance,
charts and tables (bench.present.report.page renders it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench import BenchError, __version__
from bench.present import owned
from bench.present.report import planning, runs
from bench.present.report.inputs import RESULT_FILE, Input, read_inputs
from bench.present.report.page import Page, Section, render
from bench.record import results

# The planning sections first, in the order a capacity question is answered; then the runs.
_ORDER = ("capacity", "estimate", "simulate", "step")
# In the head of every page (report.html.j2): report replaces its own pages only.
GENERATOR = b'<meta name="generator" content="tokbench">'


def build(paths: Sequence[Path], project: Sequence[str] = (), title: str | None = None) -> Page:
    """The page for these files: raises BenchError for a file that is neither a result file
    nor a planning command's JSON."""
    if not paths:
        raise BenchError("report needs at least one file")
    items = read_inputs(list(paths), {k: kind.keys for k, kind in planning.KINDS.items()})
    measured = [i for i in items if i.kind == RESULT_FILE]
    sections: list[Section | None] = []
    for kind in _ORDER:
        sections += [planning.KINDS[kind].section(i) for i in items if i.kind == kind]
        if kind == "capacity":  # the frontier is what a capacity answer is read off
            sections.append(planning.frontier_section(items))
    sections.append(runs.comparison_section(measured, project))
    sections.append(runs.tokens_section(measured))
    sections += [runs.run_section(i) for i in measured]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"Made by tokbench {__version__} on {made} from {_listing(items)}."
    return Page(title or "tokbench report", subtitle, [s for s in sections if s is not None])


def _listing(items: list[Input]) -> str:
    return ", ".join(f"{i.path} ({i.kind})" for i in items)


def write(
    paths: Sequence[Path],
    out: Path,
    project: Sequence[str] = (),
    title: str | None = None,
    force: bool = False,
) -> Path:
    """Write the page to `out`, never over one of its inputs or a result file, and over another
    file only when it is an earlier report or `force` says so."""
    results.check_output(out, paths)
    owned.refuse_foreign(out, _is_report, "is not a tokbench report", "another --out", force)
    results.write_atomic(out, render(build(paths, project, title)))
    return out


def _is_report(path: Path) -> bool:
    """Whether path is a page `report` wrote: its head holds the GENERATOR tag."""
    try:
        with path.open("rb") as f:
            return GENERATOR in f.read(1024)
    except OSError:
        return False
