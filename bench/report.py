"""Rich tables of devices and results."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.device import DeviceInfo
from bench.hardware import GpuSpec
from bench.ops import get_op
from bench.results import CaseResult, ResultDoc


def new_table(title: str, columns: Iterable[str] = (), left: Collection[str] = ()) -> Table:
    """A table with its title and caption on the left, as every tokbench table has them; the
    named columns are right-aligned (numbers) except those in `left`."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in left else "right")
    return table


def key_value_table(title: str, no_wrap_keys: bool = False) -> Table:
    """A headerless two-column table: a bold key, then its value."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=no_wrap_keys)
    table.add_column()
    return table


def bullets(notes: Iterable[str]) -> str:
    """Notes as one caption paragraph, each after a bullet."""
    return "  ".join(f"• {n}" for n in notes)


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def fmt_ms(ms: float) -> str:
    """Three significant digits in µs, ms or s."""
    value, unit = ms * 1e3, "µs"
    for larger in ("ms", "s"):
        if float(f"{value:.3g}") < 1000:
            break
        value, unit = value / 1e3, larger
    return f"{value:#.3g} {unit}".replace(". ", " ")


def info_table(device: DeviceInfo, spec: GpuSpec | None, software: dict[str, str], telemetry):
    """`tokbench info`: the device, its spec-table entry and the software versions."""
    table = key_value_table("tokbench info")
    table.add_row("device", f"{device.name} ({device.kind})")
    if device.kind == "cuda":
        table.add_row("compute capability", device.compute_capability)
        table.add_row("SMs", str(device.cores))
        table.add_row("memory", fmt_bytes(device.memory_bytes))
        table.add_row("L2 cache", fmt_bytes(device.l2_bytes or 0))
        table.add_row("driver / CUDA", f"{device.driver or 'unknown'} / {device.cuda}")
    else:
        table.add_row("cores", str(device.cores))
        table.add_row("memory", fmt_bytes(device.memory_bytes))
        table.add_row("mode", "CPU fallback: torch on the CPU, Triton kernels interpreted")
    if telemetry is not None:
        table.add_row(
            "now",
            f"SM {telemetry.sm_clock_mhz} MHz, memory {telemetry.mem_clock_mhz} MHz, "
            f"{telemetry.power_w:.0f} W, {telemetry.temperature_c} °C",
        )
        table.add_row("clock events", ", ".join(telemetry.throttle_reasons) or "none")
    if spec is not None:
        peaks = ", ".join(f"{k} {v:g}" for k, v in spec.peak_tflops.items())
        table.add_row("spec entry", f"{spec.name} ({spec.source})")
        table.add_row("dense peaks TFLOP/s", peaks)
        table.add_row("bandwidth", f"{spec.bandwidth_gbs:g} GB/s")
    elif device.kind == "cuda":
        table.add_row("spec entry", "none matches this device: no % of peak")
    for name, version in software.items():
        table.add_row(name, version)
    return table


def speedups(cases: list[CaseResult]) -> dict[tuple, float]:
    """Speedup of each comparable case over its op's baseline at the same shape and dtype."""
    base = {}
    for c in cases:
        if c.comparable and c.impl == get_op(c.op).baseline:
            base[(c.op, c.dtype, tuple(sorted(c.shape.items())))] = c.timing.median_ms
    out = {}
    for c in cases:
        ref = base.get((c.op, c.dtype, tuple(sorted(c.shape.items()))))
        if c.comparable and ref:
            out[c.key] = ref / c.timing.median_ms
    return out


RESULT_COLUMNS = (
    "shape",
    "dtype",
    "impl",
    "median",
    "TFLOP/s",
    "% peak",
    "GB/s",
    "speedup",
    "check",
)
INTERPRETED_NOTE = "* Triton's CPU interpreter: a correctness run; its time is not a speed figure"


def results_tables(doc: ResultDoc) -> list[Table]:
    """One table per op, one row per case: time, roofline, speedup over the baseline, check.

    Columns empty for every row (no % of peak without a spec entry) are left out; reasons for
    skipped and failed cases are footnoted under the table rather than squeezed into a cell.
    """
    ups = speedups(doc.cases)
    tables = []
    for op_name in dict.fromkeys(c.op for c in doc.cases):
        op = get_op(op_name)
        notes: dict[str, int] = {}
        rows = [_row(c, op, ups, notes) for c in doc.cases if c.op == op_name]
        keep = [i for i, name in enumerate(RESULT_COLUMNS) if any(r[i] for r in rows)]
        table = new_table(f"{op.name}: {op.description}")
        for i in keep:
            name = RESULT_COLUMNS[i]
            header = f"vs {op.baseline}" if name == "speedup" else name
            justify = "left" if name in ("shape", "impl", "check") else "right"
            table.add_column(header, justify=justify)
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        footnotes = [f"[{n}] {escape(why)}" for why, n in notes.items()]
        if any(c.interpreted and c.timing for c in doc.cases if c.op == op_name):
            footnotes.append(INTERPRETED_NOTE)
        table.caption = "  ".join(footnotes) or None
        tables.append(table)
    return tables


def _row(c: CaseResult, op, ups: dict[tuple, float], notes: dict[str, int]) -> list[str]:
    timed = c.timing is not None and not c.interpreted
    return [
        op.label(c.shape),
        c.dtype,
        c.impl,
        "" if c.timing is None else fmt_ms(c.timing.median_ms) + ("*" if c.interpreted else ""),
        f"{c.tflops:.3g}" if timed and c.tflops is not None else "",
        f"{100 * c.peak_fraction:.0f}%" if c.peak_fraction is not None else "",
        f"{c.gbps:.3g}" if timed and c.gbps is not None else "",
        f"{ups[c.key]:.2f}×" if c.key in ups and c.impl != op.baseline else "",
        _check_cell(c, notes),
    ]


def _check_cell(c: CaseResult, notes: dict[str, int]) -> str:
    if c.status == "ok":
        flag = " [yellow]throttled[/yellow]" if c.telemetry and c.telemetry.throttled else ""
        return f"[green]✓[/green] {c.rel_error:.1e}{flag}"
    mark = f"[{notes.setdefault(c.error or '', len(notes) + 1)}]"
    if c.status == "skipped":
        return f"[dim]skipped {mark}[/dim]"
    return f"[red]✗ failed {mark}[/red]"


def console() -> Console:
    """stdout, at least 120 columns wide even when piped, so tables stay readable in logs."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 120))
