"""A run and the machine it runs on: `tokbench info`, the result tables, a case's log line, the
ceilings line and the dry run's plan."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from bench.measure import ops
from bench.measure.suites import Planned
from bench.plan.compare import RankSpread, rank_spreads
from bench.present.tables.base import Column, bullets, column_table, key_value_table, text
from bench.record.hardware import GpuSpec, spec_of
from bench.record.schema import CaseResult, DeviceInfo, ResultDoc, Telemetry
from bench.record.units import fmt_bytes, fmt_ms, plural


def info_table(
    device: DeviceInfo, spec: GpuSpec | None, software: dict[str, str], telemetry: Telemetry | None
) -> Table:
    """`tokbench info`: the device, its spec-table entry and the software versions."""
    table = key_value_table("tokbench info")
    _device_rows(table, device)
    if telemetry is not None:
        table.add_row("now", _reading(telemetry))
        table.add_row("clock events", ", ".join(telemetry.throttle_reasons) or "none")
    _spec_rows(table, device, spec)
    for name, version in software.items():
        table.add_row(escape(name), escape(version))
    return table


def provenance_table(doc: ResultDoc, path: Path) -> Table:
    """A result file's run: how, when and where it was measured, and what it holds."""
    table = key_value_table(escape(str(path)))
    table.add_row("command", escape(doc.command))
    table.add_row("suite", escape(doc.suite))
    table.add_row("created", escape(doc.created))
    complete = "yes" if doc.complete else "no: the run was interrupted, or is still running"
    table.add_row("complete", complete)
    counts = {s: sum(c.status == s for c in doc.cases) for s in ("ok", "failed", "skipped")}
    cases = ", ".join(f"{n} {status}" for status, n in counts.items())
    interpreted = sum(c.interpreted and c.timing is not None for c in doc.cases)
    if interpreted:
        cases += f"; {interpreted} timed in Triton's interpreter (not speed figures)"
    table.add_row("cases", cases)
    if doc.cpu is not None:
        table.add_row("CPU", cpu_line(doc))
    if doc.measured_peaks:
        table.add_row("ceilings", ceilings_line(doc.measured_peaks).partition(": ")[2])
    _device_rows(table, doc.device)
    _spec_rows(table, doc.device, spec_of(doc.device, doc.spec))
    table.add_row("software", escape(", ".join(f"{k} {v}" for k, v in doc.software.items())))
    for note in doc.notes:
        table.add_row("note", escape(note))
    return table


def cpu_line(doc: ResultDoc) -> str:
    """A CPU run's threads, the load found before it, and how many cases were contended."""
    cpu = doc.cpu
    contended = sum(c.contended for c in doc.cases)
    line = (
        f"{plural(cpu.threads, 'thread')} on {cpu.cores:g} cores; before the run other processes "
        f"kept {cpu.others:.1f} cores busy (load average {cpu.loadavg:.2f})"
    )
    if contended:
        line += f"; [yellow]{plural(contended, 'case')} timed under contention[/yellow]"
    return line


def _device_rows(table: Table, device: DeviceInfo) -> None:
    table.add_row("device", f"{escape(device.name)} ({escape(device.kind)})")
    if device.kind == "cuda":
        table.add_row("compute capability", escape(device.compute_capability or "unknown"))
        table.add_row("SMs", str(device.cores))
        table.add_row("memory", fmt_bytes(device.memory_bytes))
        table.add_row("L2 cache", fmt_bytes(device.l2_bytes or 0))
        versions = f"{device.driver or 'unknown'} / {device.cuda or 'unknown'}"
        table.add_row("driver / CUDA", escape(versions))
    else:
        table.add_row("cores", str(device.cores))
        table.add_row("memory", fmt_bytes(device.memory_bytes))
        table.add_row("mode", "CPU fallback: torch on the CPU, Triton kernels interpreted")


def _spec_rows(table: Table, device: DeviceInfo, spec: GpuSpec | None) -> None:
    if spec is not None:
        peaks = ", ".join(f"{k} {v:g}" for k, v in spec.peak_tflops.items())
        table.add_row("spec entry", f"{spec.name} ({spec.source})")
        table.add_row("dense peaks TFLOP/s", peaks)
        table.add_row("bandwidth", f"{spec.bandwidth_gbs:g} GB/s")
    elif device.kind == "cuda":
        table.add_row("spec entry", "none matches this device: no % of peak")


def _reading(t: Telemetry) -> str:
    """An NVML reading; a field NVML did not report reads "n/a"."""

    def field(value: float | None, unit: str, spec: str = "") -> str:
        return "n/a" if value is None else f"{value:{spec}} {unit}"

    return (
        f"SM {field(t.sm_clock_mhz, 'MHz')}, memory {field(t.mem_clock_mhz, 'MHz')}, "
        f"power {field(t.power_w, 'W', '.0f')}, temperature {field(t.temperature_c, '°C')}"
    )


def speedups(cases: list[CaseResult]) -> dict[tuple, float]:
    """Speedup of each comparable case over its op's baseline at the same shape, dtype and
    rank."""
    base = {
        (c.problem, c.rank): c.timing.median_ms
        for c in cases
        if c.comparable and c.impl == ops.get_op(c.op).baseline
    }
    return {
        c.key: base[c.problem, c.rank] / c.timing.median_ms
        for c in cases
        if c.comparable and (c.problem, c.rank) in base
    }


INTERPRETED_NOTE = "* Triton's CPU interpreter: a correctness run; its time is not a speed figure"
CONTENDED_NOTE = (
    "contended: other processes kept busy cores this run's threads needed while the case was "
    "timed; its time is not a fair figure (see docs/timing.md) and compare's gate does not judge it"
)
RANKS_NOTE = (
    "each row: the median of the {n} ranks, each on its own GPU; rank spread: ± half the range "
    "of their times; slow GPUs: ranks slower than the median beyond noise (their p20 above its "
    "p80)"
)


def results_tables(doc: ResultDoc) -> list[Table]:
    """One table per op, one row per case: time, roofline, speedup over the baseline, check.

    A case every rank of a run measured is one row: the median rank's figures, the spread of
    the ranks' times, and the GPUs slower than the median beyond noise. Columns empty for every
    row (no % of peak without a spec entry) are left out; reasons for skipped and failed cases
    are footnoted under the table rather than squeezed into a cell.
    """
    ups = speedups(doc.cases)
    return [_op_results(doc, op, ups) for op in dict.fromkeys(c.op for c in doc.cases)]


def _op_results(doc: ResultDoc, op_name: str, ups: dict[tuple, float]) -> Table:
    op = ops.get_op(op_name)
    notes: dict[str, int] = {}
    mine = [c for c in doc.cases if c.op == op_name]
    groups = rank_spreads(mine) or [RankSpread([c]) for c in mine]
    copy = doc.measured_peaks.get("copy_gbs") if op.memory_bound else None
    hosts = {r.rank: r.host for r in doc.ranks}
    columns = _result_columns(op, ups, notes, hosts, copy)
    table = column_table(f"{op.name}: {op.description}", columns, groups, drop_empty=True)
    footnotes = [f"[{n}] {escape(why)}" for why, n in notes.items()]
    if any(len(g.cases) > 1 for g in groups):
        footnotes.insert(0, RANKS_NOTE.format(n=len(doc.ranks)))
    if any(c.interpreted and c.timing for c in mine):
        footnotes.append(INTERPRETED_NOTE)
    if any(c.contended for c in mine):
        footnotes.append(CONTENDED_NOTE)
    table.caption = "  ".join(footnotes) or None
    return table


def _result_columns(
    op: ops.Op,
    ups: dict[tuple, float],
    notes: dict[str, int],
    hosts: dict[int, str],
    copy_gbs: float | None,
) -> list[Column[RankSpread]]:
    """A case's cells; `copy_gbs`, the measured copy bandwidth, for a memory-bound op."""

    def timed(g: RankSpread) -> bool:
        return g.median.timing is not None and not g.median.interpreted

    def median(g: RankSpread) -> str:
        c = g.median
        if c.timing is None:
            return ""
        return fmt_ms(c.timing.median_ms) + ("*" if c.interpreted else "")

    def speedup(g: RankSpread) -> str:
        c = g.median
        return f"{ups[c.key]:.2f}×" if c.key in ups and c.impl != op.baseline else ""

    def slow(g: RankSpread) -> str:
        return ", ".join(
            f"[yellow]rank {s.rank} ({escape(hosts.get(s.rank, '?'))}) "
            f"+{s.timing.median_ms / g.median.timing.median_ms - 1:.0%}[/yellow]"
            for s in g.slow()
        )

    def fraction(g: RankSpread) -> str:
        c = g.median
        return f"{c.gbps / copy_gbs:.0%}" if timed(g) and c.gbps and copy_gbs else ""

    def rate(value: float | None) -> str:
        return f"{value:.3g}" if value is not None else ""

    def peak(g: RankSpread) -> str:
        fraction = g.median.peak_fraction
        return f"{100 * fraction:.0f}%" if fraction is not None else ""

    return [
        text("shape", lambda g: op.label(g.median.shape)),
        Column("dtype", lambda g: g.median.dtype),
        text("impl", lambda g: g.median.impl),
        Column("median", median),
        Column("TFLOP/s", lambda g: rate(g.median.tflops) if timed(g) and g.median.tflops else ""),
        Column("% peak", peak),
        Column("GB/s", lambda g: rate(g.median.gbps) if timed(g) else ""),
        Column("% copy", fraction),
        Column("bus GB/s", lambda g: rate(g.median.bus_gbps) if timed(g) else ""),
        Column(f"vs {op.baseline}", speedup),
        Column("rank spread", lambda g: f"±{g.spread / 2:.1%}" if g.spread is not None else ""),
        Column("slow GPUs", slow),
        text("check", lambda g: _check_cell(_worst(g.cases), notes)),
    ]


def _worst(cases: list[CaseResult]) -> CaseResult:
    """The case a check cell shows for several ranks: a failure, else a skip, else the first."""
    order = {"failed": 0, "skipped": 1, "ok": 2}
    return min(cases, key=lambda c: order.get(c.status, 0))


def _check_cell(c: CaseResult, notes: dict[str, int]) -> str:
    if c.status == "ok":
        flag = " [yellow]throttled[/yellow]" if c.telemetry and c.telemetry.throttled else ""
        flag += " [yellow]contended[/yellow]" if c.contended else ""
        return f"[green]✓[/green] {c.rel_error:.1e}{flag}"
    where = f"rank {c.rank}: " if c.rank else ""
    mark = f"[{notes.setdefault(where + (c.error or ''), len(notes) + 1)}]"
    if c.status == "skipped":
        return f"[dim]skipped {mark}[/dim]"
    return f"[red]✗ failed {mark}[/red]"


def case_line(c: CaseResult) -> str:
    """One case as a log line: what it is and how it went."""
    what = f"{c.op} {ops.label(c.op, c.shape)} {c.dtype} {c.impl}"
    if c.status != "ok":
        return f"{what}: {c.status}: {c.error}"
    mark = " (interpreted)" if c.interpreted else ""
    if c.contended:
        load = c.cpu_load
        mark += f" (contended: {load.others:.1f} cores busy with other processes)"
    return f"{what}: ok {c.rel_error:.1e}, {fmt_ms(c.timing.median_ms)}{mark}"


def ceilings_line(peaks: dict[str, float]) -> str:
    """The measured ceilings, as `run` prints them before the cases."""
    parts = []
    for name, value in peaks.items():
        if name == "copy_gbs":
            parts.append(f"copy {value:,.1f} GB/s")
        else:  # matmul_<dtype>_<n>_tflops
            _, dtype, n, _ = name.split("_")
            parts.append(f"{dtype} GEMM {n}³ {value:,.3g} TFLOP/s")
    return "measured ceilings: " + ", ".join(parts)


PLAN_COLUMNS: tuple[Column[Planned], ...] = (
    text("op", lambda p: p.case.op),
    text("shape", lambda p: ops.label(p.case.op, p.case.shape)),
    text("dtype", lambda p: p.case.dtype),
    text("implementations", lambda p: ", ".join(p.impls)),
    Column("autotune configs", lambda p: "" if p.configs is None else str(p.configs)),
)


def plan_table(planned: list[Planned]) -> Table:
    """`tokbench run --dry-run`: each case, what runs it, what its Triton kernel autotunes."""
    tuned = [p.configs for p in planned if p.configs is not None]
    caption = bullets(
        [
            f"{plural(len(planned), 'case')}, {plural(sum(len(p.impls) for p in planned), 'run')}"
            " (each implementation checked, then timed, where the device supports it)",
            f"autotune configs: those the Triton kernel compiles and times at the case's first "
            f"call on a Hopper GPU (H100, H200), {sum(tuned):,} in all at most (shapes that share "
            "an autotuning key share them)",
        ]
    )
    title = "dry run: the cases this run would measure"
    return column_table(title, PLAN_COLUMNS, planned, caption=caption)
