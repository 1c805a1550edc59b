"""`tokbench kernels`: every Triton kernel build compiled ahead of time for a GPU that is not
here, with the registers, spills, shared memory and occupancy ptxas gave it."""

from __future__ import annotations

from rich.table import Table

from bench.measure.aot import SPILL_LIMIT, TARGETS, KernelBuild
from bench.present.tables.base import Column, column_table, text

# One build per row, in compile_report's order (kernel, problem, config).
KERNEL_COLUMNS: tuple[Column[KernelBuild], ...] = (
    text("kernel", lambda b: b.kernel, no_wrap=True),
    text("first problem", lambda b: b.problem),
    text("config", lambda b: b.config),
    Column("registers", lambda b: str(b.registers)),
    Column("spills B", lambda b: str(b.spill_bytes)),
    Column("shared KiB", lambda b: f"{b.shared_memory / 1024:.1f}"),
    Column("warps/SM", lambda b: str(b.occupancy)),
    text("over the limits", lambda b: "; ".join(b.problems(TARGETS[b.target]))),
)
KERNEL_HEADERS = tuple(c.header for c in KERNEL_COLUMNS)
# The numeric columns, right-aligned in Markdown.
KERNEL_RIGHT = tuple(c.justify == "right" for c in KERNEL_COLUMNS)


def limits_caption(target: str) -> str:
    """What the builds are held to on a target."""
    t = TARGETS[target]
    return (
        f"{target}: a block may use {t.smem_per_block // 1024} KiB of shared memory; a build may "
        f"spill {SPILL_LIMIT} B a thread at most; warps/SM: of {t.warps_per_sm}, what the "
        "registers and shared memory leave room for (0: the block does not fit)."
    )


def kernel_rows(builds: list[KernelBuild]) -> list[tuple[str, ...]]:
    """Each build's cells, as the table shows them."""
    return [tuple(c.cell(b) for c in KERNEL_COLUMNS) for b in builds]


def kernels_table(target: str, builds: list[KernelBuild]) -> Table:
    """The builds of one target, with its limits below."""
    title = f"Triton kernels compiled for {target} ahead of time ({len(builds)} builds)"
    return column_table(title, KERNEL_COLUMNS, builds, caption=limits_caption(target))


def over_the_limits(builds: list[KernelBuild]) -> list[KernelBuild]:
    """The builds that would not run, or would spill, on their target."""
    return [b for b in builds if b.problems(TARGETS[b.target])]
