"""Every table tokbench prints, as rich tables: devices, results, comparisons, estimates,
fleets and model configs. The only module that knows how things look; the rest returns data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.measure import ops
from bench.measure.suites import Planned
from bench.plan.capacity import OPTIMISTIC, PLAUSIBLE, Claim, Fleet, Layout
from bench.plan.compare import (
    Cell,
    Column,
    Comparison,
    RankSpread,
    Row,
    Verdict,
    estimate_groups,
    rank_spreads,
    tokens_per_dollar,
    tokens_per_watt,
)
from bench.plan.models import ModelConfig, param_count
from bench.plan.simulate import PERCENTILES, SimResult, Simulation, occupancy_series
from bench.plan.throughput import (
    SOURCES,
    STEP_PARTS,
    Throughput,
    Validation,
    projection_prefix,
    shares,
    source_notes,
)
from bench.plan.validate import Check, geometric_mean, worst
from bench.record.hardware import GpuSpec
from bench.record.schema import CaseResult, DeviceInfo, ResultDoc, Telemetry
from bench.record.units import fmt_big, fmt_bytes, fmt_ms, fmt_params, fmt_rate, fmt_ratio, plural


def console() -> Console:
    """stdout, at least 120 columns wide even when piped, so tables stay readable in logs."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 120))


def new_table(title: str, columns: Iterable[str] = (), left: Collection[str] = ()) -> Table:
    """A table with its title and caption on the left, as every tokbench table has them; the
    named columns are right-aligned (numbers) except those in `left`."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in left else "right")
    return table


def key_value_table(title: str, no_wrap_keys: bool = False) -> Table:
    """A headerless two-column table: a bold key, then its value."""
    table = Table(title=title, show_header=False, title_justify="left", caption_justify="left")
    table.add_column(style="bold", no_wrap=no_wrap_keys)
    table.add_column()
    return table


def bullets(notes: Iterable[str]) -> str:
    """Notes as one caption paragraph, each after a bullet."""
    return "  ".join(f"• {n}" for n in notes)


# --- devices and runs ---------------------------------------------------------------


def info_table(
    device: DeviceInfo, spec: GpuSpec | None, software: dict[str, str], telemetry: Telemetry | None
) -> Table:
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
        table.add_row("now", _reading(telemetry))
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


RESULT_COLUMNS = (
    "shape",
    "dtype",
    "impl",
    "median",
    "TFLOP/s",
    "% peak",
    "GB/s",
    "% copy",
    "bus GB/s",
    "speedup",
    "rank spread",
    "slow GPUs",
    "check",
)
INTERPRETED_NOTE = "* Triton's CPU interpreter: a correctness run; its time is not a speed figure"
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
    hosts = {r.rank: r.host for r in doc.ranks}
    tables = []
    for op_name in dict.fromkeys(c.op for c in doc.cases):
        op = ops.get_op(op_name)
        notes: dict[str, int] = {}
        mine = [c for c in doc.cases if c.op == op_name]
        groups = rank_spreads(mine) or [RankSpread([c]) for c in mine]
        copy = doc.measured_peaks.get("copy_gbs") if op.memory_bound else None
        rows = [_row(g, op, ups, notes, hosts, copy) for g in groups]
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
        if any(len(g.cases) > 1 for g in groups):
            footnotes.insert(0, RANKS_NOTE.format(n=len(doc.ranks)))
        if any(c.interpreted and c.timing for c in doc.cases if c.op == op_name):
            footnotes.append(INTERPRETED_NOTE)
        table.caption = "  ".join(footnotes) or None
        tables.append(table)
    return tables


def _row(
    group: RankSpread,
    op: ops.Op,
    ups: dict[tuple, float],
    notes: dict[str, int],
    hosts: dict[int, str],
    copy_gbs: float | None,
) -> list[str]:
    """A case's cells; `copy_gbs`, the measured copy bandwidth, for a memory-bound op."""
    c = group.median
    timed = c.timing is not None and not c.interpreted
    spread = group.spread
    return [
        op.label(c.shape),
        c.dtype,
        c.impl,
        "" if c.timing is None else fmt_ms(c.timing.median_ms) + ("*" if c.interpreted else ""),
        f"{c.tflops:.3g}" if timed and c.tflops else "",
        f"{100 * c.peak_fraction:.0f}%" if c.peak_fraction is not None else "",
        f"{c.gbps:.3g}" if timed and c.gbps is not None else "",
        f"{c.gbps / copy_gbs:.0%}" if timed and c.gbps and copy_gbs else "",
        f"{c.bus_gbps:.3g}" if timed and c.bus_gbps is not None else "",
        f"{ups[c.key]:.2f}×" if c.key in ups and c.impl != op.baseline else "",
        f"±{spread / 2:.1%}" if spread is not None else "",
        ", ".join(
            f"[yellow]rank {s.rank} ({escape(hosts.get(s.rank, '?'))}) "
            f"+{s.timing.median_ms / c.timing.median_ms - 1:.0%}[/yellow]"
            for s in group.slow()
        ),
        _check_cell(_worst(group.cases), notes),
    ]


def _worst(cases: list[CaseResult]) -> CaseResult:
    """The case a check cell shows for several ranks: a failure, else a skip, else the first."""
    order = {"failed": 0, "skipped": 1, "ok": 2}
    return min(cases, key=lambda c: order.get(c.status, 0))


def _check_cell(c: CaseResult, notes: dict[str, int]) -> str:
    if c.status == "ok":
        flag = " [yellow]throttled[/yellow]" if c.telemetry and c.telemetry.throttled else ""
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


def ops_table() -> Table:
    """`tokbench ops`: every registered op, its shape keys, dtypes and implementations."""
    columns = ("op", "what", "shape keys", "dtypes", "implementations (baseline first)", "part")
    table = new_table("ops", columns, left=columns)
    for op in ops.OPS.values():
        impls = [op.baseline, *(i.name for i in op.impls if i.name != op.baseline)]
        keys = ", ".join(
            f"{k.name}{' (true/false)' if k.switch else ''}: {k.help}" for k in op.keys
        )
        table.add_row(
            op.name, op.description, keys, ", ".join(op.dtypes), ", ".join(impls), op.part
        )
    return table


def plan_table(planned: list[Planned]) -> Table:
    """`tokbench run --dry-run`: each case, what runs it, what its Triton kernel autotunes."""
    tuned = [p.configs for p in planned if p.configs is not None]
    table = new_table(
        "dry run: the cases this run would measure",
        ("op", "shape", "dtype", "implementations", "autotune configs"),
        left=("op", "shape", "dtype", "implementations"),
    )
    for p in planned:
        op = ops.get_op(p.case.op)
        configs = "" if p.configs is None else str(p.configs)
        table.add_row(op.name, op.label(p.case.shape), p.case.dtype, ", ".join(p.impls), configs)
    table.caption = bullets(
        [
            f"{plural(len(planned), 'case')}, {plural(sum(len(p.impls) for p in planned), 'run')}"
            " (each implementation checked, then timed, where the device supports it)",
            f"autotune configs: those the Triton kernel compiles and times at the case's first "
            f"call on a Hopper GPU (H100, H200), {sum(tuned):,} in all at most (shapes that share "
            "an autotuning key share them)",
        ]
    )
    return table


# --- comparisons -------------------------------------------------------------------------------


def compare_tables(comparison: Comparison, width: int = 120) -> list[Table]:
    """Legend, side-by-side tables per op, and geometric means, laid out for a console of width
    columns: when every column side by side is wider, one table per later column beside A."""
    out = [_legend(comparison)]
    for op in dict.fromkeys(r.case.op for r in comparison.rows):
        out += _op_tables(comparison, op, width)
    if len(comparison.columns) > 1:
        geomeans = _geomean_table(comparison)
        if geomeans.row_count:
            out.append(geomeans)
    if estimate_groups(comparison):
        out.append(_estimates_table(comparison))
    return out


def _legend(comparison: Comparison) -> Table:
    table = key_value_table("compare", no_wrap_keys=True)
    for col in comparison.columns:
        device = f"{col.device} ({col.spec.name})" if col.spec else col.device
        if col.measured:
            what = f"{escape(str(col.path))}: {escape(device)}, {col.date}, suite {col.doc.suite}"
        else:
            what = (
                f"[italic]{escape(col.device)}: PROJECTION from {col.projected_from} through the "
                "spec table (times scaled by the ratio of the two GPUs' rooflines); not "
                "measured[/italic]"
            )
        table.add_row(col.tag, what)
    table.add_row("vs A", "speedup over A: A time / this time, above 1 is faster")
    for word, meaning in _words(comparison):
        table.add_row(word, escape(meaning))
    if comparison.threshold is not None:
        gate = f"a case more than {comparison.threshold:.0%} slower than in A, outside both runs'"
        table.add_row(
            "gate",
            escape(
                f"{gate} [p20, p80] spread, fails (exit 1); so does a case timed in A that a "
                "later file failed, skipped, lacks or has no usable time for"
            ),
        )
    for note in comparison.notes:
        table.add_row("note", escape(note))
    return table


def _words(comparison: Comparison) -> list[tuple[str, str]]:
    """The short words the side-by-side tables use that this comparison shows, explained."""
    seen = {v for r in comparison.rows for v in r.verdicts if v}
    gate = comparison.threshold
    under = f" but within the {gate:.0%} gate" if gate is not None else ""
    out = []
    if Verdict.SAME in seen:
        out.append(("same", "within noise: the two runs' [p20, p80] spreads overlap"))
    if seen & {Verdict.SLOWER, Verdict.FASTER}:
        out.append(("slower, faster", f"beyond noise (the spreads do not overlap){under}"))
    if seen & {Verdict.REGRESSION, Verdict.IMPROVEMENT}:
        out.append(
            ("regressed, improved", f"beyond noise and beyond the {gate:.0%} gate (either way)")
        )
    if any(not c.measured for c in comparison.columns):
        out.append(("memory, compute", "what bounds the case on the projected GPU's roofline"))
    problems = sorted({p.word for r in comparison.rows for p in r.problems if p})
    if problems:
        fails = "; fails the gate" if gate is not None else ""
        out.append((", ".join(problems), f"timed in A, no usable time in this file{fails}"))
    partial = len(comparison.partial())
    if partial:
        out.append(("—", f"not in that file ({partial} cases are in only some files)"))
    return out


def _op_tables(comparison: Comparison, op: str, width: int) -> list[Table]:
    """All columns side by side when that fits width; else A beside each later column."""
    n = len(comparison.columns)
    table = _op_table(comparison, op, range(n))
    if n <= 2 or Console(width=10_000).measure(table).maximum <= width:
        return [table]
    return [_op_table(comparison, op, (0, i)) for i in range(1, n)]


def _op_table(comparison: Comparison, op_name: str, shown: Sequence[int]) -> Table:
    columns = [(i, comparison.columns[i]) for i in shown]
    title = f"{op_name}: {ops.description(op_name)}"
    if len(columns) < len(comparison.columns):
        title += f" — {columns[-1][1].tag} vs A"
    table = new_table(escape(title))
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", overflow="fold")
    table.add_column("impl", overflow="fold")
    for i, col in columns:
        proj = " proj." if col.projected_from else ""
        table.add_column(f"{col.tag}{proj}\ntime", justify="right", no_wrap=True)
        table.add_column(f"{col.tag}\nTFLOP/s", justify="right", no_wrap=True)
        if col.spec is not None:
            table.add_column(f"{col.tag} %\npeak", justify="right", no_wrap=True)
        if i > 0:
            table.add_column(f"{col.tag}\nvs A", no_wrap=True)
    for row in (r for r in comparison.rows if r.case.op == op_name):
        if all(row.cells[i] is None for i, _ in columns):
            continue
        cells = [ops.label(op_name, row.case.shape), row.case.dtype, row.case.impl]
        for i, col in columns:
            cells += _cells(row, i, col, comparison.threshold)
        table.add_row(*cells)
    return table


def _cells(row: Row, i: int, col: Column, threshold: float | None) -> list[str]:
    """time, TFLOP/s, [% peak], [vs A] for one row in one column."""
    cell = row.cells[i]
    out = [_time_text(cell)]
    out.append(f"{cell.tflops:.3g}" if cell and cell.speed and cell.tflops is not None else "")
    if col.spec is not None:
        frac = cell.peak_fraction if cell and cell.speed else None
        out.append(f"{100 * frac:.0f}%" if frac is not None else "")
    if i > 0:
        problem = row.problems[i] if row.problems else None
        if problem is not None:
            out.append(f"[{'bold red' if threshold is not None else 'red'}]{problem.word}[/]")
        else:
            out.append(_vs_text(row.speedups[i], row.verdicts[i], cell))
    return out


def _time_text(cell: Cell | None) -> str:
    if cell is None:
        return "[dim]—[/dim]"
    c = cell.case
    if c.status != "ok":
        return "[red]failed[/red]" if c.status == "failed" else "[dim]skipped[/dim]"
    if cell.median_ms is None:
        return "[red]bad time[/red]" if c.timing is not None else ""
    text = fmt_ms(cell.median_ms)
    return f"[dim]{text} interp.[/dim]" if c.interpreted else text


def _vs_text(speedup: float | None, v: Verdict | None, cell: Cell | None) -> str:
    if speedup is None:
        return ""
    text = fmt_ratio(speedup)
    if cell is not None and cell.projected:
        return f"{text} [dim]{cell.bound}[/dim]"
    if v is None:
        return text
    return f"{text} [{_STYLE[v]}]{v.value}[/]"


_STYLE = {
    Verdict.SAME: "dim",
    Verdict.SLOWER: "yellow",
    Verdict.FASTER: "cyan",
    Verdict.REGRESSION: "bold red",
    Verdict.IMPROVEMENT: "bold green",
}


def _geomean_table(comparison: Comparison) -> Table:
    """Per op and later column with at least one case timed in both: the geometric mean."""
    table = new_table(
        "per op: geometric mean of the speedup over A",
        ("op", "column", "geomean vs A", "cases", "verdicts"),
        left={"op", "column", "verdicts"},
    )
    for op, per_column in comparison.geomeans().items():
        for i, col in enumerate(comparison.columns[1:], start=1):
            gm = per_column[i]
            if gm is None:
                continue
            name = f"{col.tag} (projection)" if col.projected_from else col.tag
            table.add_row(
                op, name, fmt_ratio(gm[0]), str(gm[1]), _verdict_counts(comparison, op, i)
            )
    return table


def _verdict_counts(comparison: Comparison, op: str, i: int) -> str:
    tally: dict[str, int] = {}
    for row in comparison.rows:
        if row.case.op != op:
            continue
        v, p = row.verdicts[i], row.problems[i] if row.problems else None
        word = v.value if v is not None else p.word if p is not None else None
        if word is not None:
            tally[word] = tally.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in tally.items())


def _estimates_table(comparison: Comparison) -> Table:
    groups = estimate_groups(comparison)
    entries = [e for group in groups.values() for _, e in group]
    per_watt = any(tokens_per_watt(e) is not None for e in entries)
    per_dollar = any(tokens_per_dollar(e, comparison.prices) is not None for e in entries)
    title = (
        "per-model estimates, per GPU; decode at the largest batch estimated"
        + ("; per W: decode tok/s per watt of spec-sheet power" if per_watt else "")
        + (
            "; serving out Mtok/$: output tokens per USD at --price in the serving mix "
            "(isl in, osl out; req/s × osl), as capacity plans, at full utilisation"
            if per_dollar
            else ""
        )
    )
    heads = ["model", "file", "GPU", "prefill tok/s", "decode tok/s", "vs first", "max batch"]
    heads += ["req/s"] + ["per W"] * per_watt + ["serving out Mtok/$"] * per_dollar
    table = new_table(title, heads, left=heads[:3])
    for group in groups.values():
        first = group[0][1].decode_tokens_per_s
        for col, e in group:
            cells = [
                escape(e.setup_label),
                col.tag,
                escape(e.gpu) + (" [italic](projection)[/italic]" if e.projected else ""),
                f"{e.prefill_tokens_per_s:,.0f}",
                f"{e.decode_tokens_per_s:,.0f}",
                fmt_ratio(e.decode_tokens_per_s / first) if first > 0 else "",
                str(e.max_batch),
                f"{e.requests_per_s:.3g}",
            ]
            if per_watt:
                watt = tokens_per_watt(e)
                cells.append(f"{watt:.3g}" if watt is not None else "")
            if per_dollar:
                dollar = tokens_per_dollar(e, comparison.prices)
                cells.append(f"{dollar / 1e6:.3g}" if dollar is not None else "")
            table.add_row(*cells)
    return table


# --- the gate's verdict ---------------------------------------------------------------------------


def gate_report(comparison: Comparison, fail_on: str) -> tuple[list[str], bool]:
    """The gate's lines (console markup) and whether it passed: a warning per later file whose
    run is incomplete, a line per regression and per broken case, then the outcome."""
    lines = [
        f"[yellow]warning:[/yellow] {col.tag} ({escape(str(col.path))}) is an incomplete run: "
        "it was interrupted or is still running; cases it lacks count as missing"
        for col in comparison.incomplete()
    ]
    regressions, broken = comparison.regressions(), comparison.broken()
    lines += [f"[bold red]regression:[/bold red] {escape(line)}" for line in regressions]
    lines += [f"[bold red]broken:[/bold red] {escape(line)}" for line in broken]
    gate = f"gate {escape(fail_on)}"
    if regressions or broken:
        lines.append(
            f"{gate}: [bold red]failed[/bold red] ({plural(len(regressions), 'regression')}, "
            f"{plural(len(broken), 'broken case')}; {plural(comparison.judged(), 'comparison')})"
        )
        return lines, False
    lines.append(f"{gate}: passed ({plural(comparison.judged(), 'comparison')})")
    return lines, True


# --- models and estimates ----------------------------------------------------------------------


def models_table(configs: list[ModelConfig]) -> Table:
    """The model configs and their derived parameter counts; sources as numbered footnotes in
    the caption, which wraps at word boundaries where a table column would cut them short."""
    columns = (
        "model",
        "hidden",
        "layers",
        "heads/kv",
        "head dim",
        "MLP",
        "vocab",
        "top-k/E",
        "window",
        "params",
        "source",
    )
    table = new_table("models", columns, left={"model"})
    table.columns[0].no_wrap = True  # names are what a user types: never cut
    sources: dict[str, int] = {}
    for c in configs:
        experts = f"{c.top_k}/{c.experts}" if c.moe else ""
        layers = plural(c.sliding_layers, "layer")
        window = f"{c.sliding_window} in {layers}" if c.sliding_layers else ""
        source = c.source + (
            f"; no estimates: {c.unsupported} not modelled" if c.unsupported else ""
        )
        ref = sources.setdefault(source, len(sources) + 1)
        table.add_row(
            c.name,
            str(c.hidden),
            str(c.layers),
            f"{c.heads}/{c.kv_heads}",
            str(c.head_dim),
            str(c.intermediate),
            str(c.vocab),
            experts,
            window + (" sinks" if c.sinks else ""),
            fmt_params(param_count(c)),
            f"[{ref}]",
        )
    table.caption = "\n".join(f"[{n}] {source}" for source, n in sources.items())
    return table


def estimate_tables(result: Throughput) -> list[Table]:
    """The memory fit, prefill and decode steps, the serving mix and the notes."""
    return [_summary(result), _steps(result, "prefill"), _steps(result, "decode"), _serving(result)]


def _summary(result: Throughput) -> Table:
    r, plan, cfg = result.record, result.plan, result.setup.model
    table = key_value_table(f"{cfg.name} on {r.gpu}: per GPU")
    table.add_row("model", f"{cfg.name} ({cfg.source})")
    if r.projected:
        device = " [yellow](projection from spec sheets)[/yellow]"
    elif not result.target.measured_on:
        device = " [yellow](its spec sheet: nothing measured)[/yellow]"
    else:
        device = " (measured)"
    table.add_row("device", r.gpu + device)
    table.add_row(
        "parallelism / precision",
        f"TP {r.tp}, {r.precision} GEMMs, {result.setup.act} activations, "
        f"{result.setup.kv_dtype} KV cache",
    )
    table.add_row("weights per GPU", fmt_bytes(plan.weights))
    table.add_row("KV cache per token per GPU", f"{plan.kv_per_token:,.0f} B")
    table.add_row(
        "memory",
        f"{fmt_bytes(plan.memory)}, {plan.workspace_fraction:.0%} kept for workspace, "
        f"{fmt_bytes(max(plan.kv_budget, 0))} left for KV cache",
    )
    table.add_row(
        "largest batch that fits", f"{plan.max_batch:,} sequences of {r.isl} + {r.osl} tokens"
    )
    return table


SOURCE_KEY = (
    f"source: share of the step's time measured ({SOURCES['measured']}), interpolated between "
    f"measured shapes ({SOURCES['interpolated']}), roofline × the efficiency measured in the "
    f"files ({SOURCES['roofline']}), in a reference file ({SOURCES['reference']}) or by default "
    f"({SOURCES['default']}, with its source below), or modelled ({SOURCES['modelled']}: from "
    "bytes or the interconnect, for what no case in the files times)"
)


def _steps(result: Throughput, phase: str) -> Table:
    steps = result.prefill if phase == "prefill" else result.decode
    if phase == "prefill":
        title = "prefill: time to first token (TTFT) and prompt tokens/s per GPU"
        columns = ("batch", "prompt", "TTFT", "tok/s/GPU")
    else:
        title = "decode: time per output token (TPOT) and output tokens/s per GPU"
        columns = ("batch", "context", "TPOT", "tok/s/GPU")
    parts = [p for p in STEP_PARTS if any(step.parts.get(p) for step in steps)]
    columns = (*columns, *(STEP_PARTS[p] for p in parts), "source")
    table = new_table(title, columns, left={"source"})
    for step in steps:
        mark = ""
        if phase == "decode" and step is steps[-1]:
            mark = " (cap)" if result.capped else " (max fit)"
        if phase == "prefill" and step.batch == result.budget_batch:
            mark = " (budget)"
        table.add_row(
            f"{step.batch}{mark}",
            str(step.context),
            fmt_ms(step.seconds * 1e3),
            fmt_rate(step.tokens_per_s),
            *(f"{step.parts.get(p, 0) / step.seconds:.0%}" for p in parts),
            " ".join(shares(step.sources, short=True)),
        )
    caption = [SOURCE_KEY] if phase == "decode" else []
    if phase == "prefill":
        caption.append(
            "(budget): the most prompts one prefill step's token budget holds, at most the "
            "decode batch; the serving mix's prefill"
        )
    else:
        cap = result.decode_cap
        caption.append(
            f"(cap): --max-batch {cap} below the {result.plan.max_batch:,} that fit memory"
            if result.capped
            else f"(max fit): the {cap:,} sequences that fit memory"
        )
    if result.target.projected:
        caption.append(
            f"projection to {result.target.name} from spec sheets of times measured on "
            f"{result.target.measured_on}"
        )
    table.caption = bullets(caption)
    return table


def _serving(result: Throughput) -> Table:
    r = result.record
    row = r.rows[-1]
    columns = (
        "decode batch",
        "requests/s/GPU",
        "output tok/s/GPU",
        "total tok/s/GPU",
        "latency ≥",
        "source",
    )
    table = new_table(
        f"serving mix: {r.isl} input + {r.osl} output tokens per request",
        columns,
        left={"source"},
    )
    table.add_row(
        str(row.batch),
        fmt_rate(r.requests_per_s),
        fmt_rate(r.requests_per_s * r.osl),
        fmt_rate(r.requests_per_s * (r.isl + r.osl)),
        fmt_ms(row.step_ms),
        row.source.removeprefix(projection_prefix(r.gpu)),
    )
    table.caption = bullets(r.notes)
    return table


# --- fleets -------------------------------------------------------------------------------------


def fleet_table(fleet: Fleet, title: str) -> Table:
    """Tokens and requests per day, and the cost per million tokens."""
    columns = ("per day", "output tokens", "input + output tokens", "requests")
    table = new_table(title, columns, left={"per day"})
    p = fleet.per_gpu
    table.add_row(
        f"{_gpus(fleet.serving_gpus)} at {fleet.utilization:.0%}",
        fmt_big(fleet.per_day(p.output_tokens_per_s)),
        fmt_big(fleet.per_day(p.total_tokens_per_s)),
        fmt_big(fleet.per_day(p.requests_per_s)),
    )
    if fleet.price_per_gpu_hour is not None:
        out = fleet.cost_per_million(p.output_tokens_per_s)
        total = fleet.cost_per_million(p.total_tokens_per_s)
        per_request = fleet.price_per_gpu_hour / (p.requests_per_s * fleet.utilization * 3600)
        table.add_row(
            f"cost at ${fleet.price_per_gpu_hour:g}/GPU-hour",
            f"${out:,.3f} / M",
            f"${total:,.3f} / M",
            f"${per_request * 1000:,.3f} / k",
        )
    notes = [
        f"per GPU: {fmt_rate(p.output_tokens_per_s)} output tok/s, "
        f"{fmt_rate(p.total_tokens_per_s)} total tok/s, {fmt_rate(p.requests_per_s)} "
        f"requests/s ({p.source})"
    ]
    if fleet.serving_gpus < fleet.gpus:
        left = fleet.gpus - fleet.serving_gpus
        notes.append(f"{_gpus(left)} left over: not a whole TP group")
    table.caption = bullets(notes)
    return table


def claim_table(claim: Claim, what: str) -> Table:
    table = new_table(
        f"claim check: {what}",
        ("claimed tok/s", "estimate tok/s", "claim / estimate", "verdict"),
    )
    colour = {"plausible": "green", "optimistic": "yellow", "implausible": "red"}[claim.verdict]
    table.add_row(
        fmt_rate(claim.claimed),
        fmt_rate(claim.estimate),
        f"{claim.ratio:.2f}",
        f"[{colour}]{claim.verdict}[/{colour}]",
    )
    table.caption = (
        f"estimate: {_gpus(claim.gpus)} all busy at the serving rate (prefill and decode, or "
        f"the highest rate meeting the SLO). Verdict: ratio ≤ {PLAUSIBLE} plausible (fusion, "
        f"overlap, better kernels); ≤ {OPTIMISTIC} optimistic (needs speculative decoding, lower "
        f"precision or caching not modelled); above, implausible"
    )
    return table


def target_lines(figures: dict[str, float | int | str]) -> list[str]:
    """One sentence per target: the GPUs it needs."""
    lines = []
    util = f"at {figures['utilization']:.0%} utilization"
    if "gpus_for_target_tokens_s" in figures:
        lines.append(
            f"{fmt_rate(figures['target_tokens_s'])} output tok/s needs "
            f"{_gpus(figures['gpus_for_target_tokens_s'])} {util}"
        )
    if "gpus_for_target_tokens_day" in figures:
        lines.append(
            f"{fmt_big(figures['target_tokens_day'])} output tokens/day needs "
            f"{_gpus(figures['gpus_for_target_tokens_day'])} {util}"
        )
    return lines


def _gpus(n: int) -> str:
    return plural(n, "GPU")


# Measured / estimated layer time the validation table shows as agreeing. A real layer runs
# slower than the op sum: the estimate models the memory-bound work as the fused kernels of a
# serving engine, while an eager PyTorch layer dispatches ~30 small ops; and the layer is timed
# now, the ops when the file was made. At the latency end (batch 1) on a CPU that dispatch
# dominates.
VALIDATION_BAND = (0.5, 3.0)


def validation_table(checks: list[Validation]) -> Table:
    """Measured against estimated layer time, coloured by VALIDATION_BAND."""
    table = new_table(
        "validation: one decoder layer run here against the op sum",
        ("step", "batch", "context", "measured", "estimated", "measured / estimated"),
        left={"step"},
    )
    low, high = VALIDATION_BAND
    for c in checks:
        colour = "green" if low <= c.ratio <= high else "red"
        table.add_row(
            c.phase,
            str(c.batch),
            str(c.context),
            fmt_ms(c.measured_s * 1e3),
            fmt_ms(c.estimated_s * 1e3),
            f"[{colour}]{c.ratio:.2f}[/{colour}]",
        )
    table.caption = (
        f"one layer, without the LM head and all-reduces; green: within [{low}, {high}] of "
        "the op sum"
    )
    return table


# --- serving simulation ------------------------------------------------------------------------


def simulation_tables(sim: Simulation) -> list[Table]:
    """What the simulated replica served, its latencies, and its batch over time."""
    setup, r = sim.step_model.setup, sim.result
    target = sim.step_model.target
    title = f"{setup.model.name} on {target.name}: simulated serving, per GPU"
    summary = key_value_table(title)
    summary.add_row(
        "set-up",
        f"TP {setup.tp}, {setup.precision} weights, {setup.kv_dtype} KV cache, at most "
        f"{setup.max_batch:,} sequences and {setup.prefill_budget:,} tokens a step, "
        f"{sim.kv_pages:,} KV pages of {setup.page} tokens",
    )
    summary.add_row("workload", escape(sim.workload.name))
    summary.add_row("arrivals", _arrivals(sim))
    if sim.search is not None:
        summary.add_row("SLO", _slo_line(sim))
    summary.add_row(
        "served",
        f"{fmt_rate(r.output_tokens_per_s)} output tok/s per GPU, "
        f"{fmt_rate(r.requests_per_s)} requests/s per GPU",
    )
    for metric, values in (("TTFT", r.ttft), ("TPOT", r.tpot)):
        if values:
            cells = [f"p{q} {fmt_ms(r.percentile(metric.lower(), q) * 1e3)}" for q in PERCENTILES]
            summary.add_row(metric, ", ".join(cells))
    summary.add_row(
        "batch",
        f"{r.mean_occupancy:,.1f} sequences running on average; "
        f"{plural(r.preemptions, 'preemption')} (KV cache full); {r.steps:,} steps over "
        f"{fmt_ms(r.seconds * 1e3)}",
    )
    summary.caption = bullets(source_notes(sim.step_model))
    return [summary, _occupancy(r)]


def _arrivals(sim: Simulation) -> str:
    if sim.search is not None:
        return f"Poisson, {sim.rate:.3g} requests/s per replica (the highest meeting the SLO)"
    if sim.rate is not None:
        return f"Poisson, {sim.rate:.3g} requests/s per replica"
    if sim.workload.trace is not None:
        return "the trace's own times"
    return "all at once (offline: throughput)"


def _slo_line(sim: Simulation) -> str:
    search, slo = sim.search, sim.slo
    offline = search.offline
    bound = (
        f"offline bound {fmt_rate(offline.output_tokens_per_s)} output tok/s per GPU at "
        f"p{slo.percentile:g} TTFT {fmt_ms(offline.percentile('ttft', slo.percentile) * 1e3)}"
    )
    if search.rate >= 0.99 * offline.requests / offline.seconds:
        return f"{slo.describe()}: met at every rate up to the offline bound; {bound}"
    return f"{slo.describe()}: met up to {search.rate:.3g} requests/s per replica; {bound}"


def _occupancy(r: SimResult) -> Table:
    table = new_table("batch over time: sequences running", ("time", "running"))
    for t, n in occupancy_series(r):
        table.add_row(fmt_ms(t * 1e3), f"{n:,}")
    return table


def layout_table(layouts: list[Layout], chosen: int, what: str) -> Table:
    """The tensor-parallel degrees --tp auto tried, and the one chosen."""
    columns = ("TP", f"output tok/s/GPU, {what}", "note")
    table = new_table("--tp auto: each degree tried", columns, left={"note"})
    for layout in layouts:
        mark = "[green]chosen[/green]" if layout.tp == chosen else escape(layout.why)
        rate = fmt_rate(layout.rate) if layout.rate else "—"
        table.add_row(str(layout.tp), rate, mark)
    table.caption = "replicas of the chosen degree fill the fleet (data parallel)"
    return table


# --- validation against published figures -----------------------------------------------------


def validate_table(checks: list[Check], name: str) -> Table:
    """Estimate ÷ published per row, the geometric mean and the worst rows."""
    columns = (
        "model",
        "GPU",
        "weights/KV",
        "TP",
        "in→out",
        "published",
        "estimate",
        "est/pub",
        "note",
    )
    table = new_table(
        f"{name}: estimate ÷ published output tok/s per GPU", columns, left={"model", "GPU", "note"}
    )
    for c in checks:
        r = c.row
        ratio = c.ratio
        colour = "green" if ratio and 0.8 <= ratio <= 1.25 else "yellow" if ratio else "red"
        table.add_row(
            escape(r.model), r.gpu, f"{r.precision}/{r.kv_precision}", str(r.tp),
            f"{r.isl}→{r.osl}", fmt_rate(r.published),
            fmt_rate(c.estimate) if c.estimate is not None else "—",
            f"[{colour}]{ratio:.2f}[/{colour}]" if ratio else "—",
            escape(c.note),
        )  # fmt: skip
    mean = geometric_mean(checks)
    rated = [c for c in checks if c.ratio]
    furthest = "; ".join(
        f"{c.row.model} {c.row.gpu} TP{c.row.tp} {c.row.isl}→{c.row.osl} {c.ratio:.2f}"
        for c in worst(checks)
    )
    notes = [
        f"geometric mean of est/pub over {plural(len(rated), 'row')}: "
        + (f"{mean:.2f}" if mean else "none"),
        f"furthest: {furthest or 'none'}",
        "sources: line by line in the file; the estimates are from spec sheets and default "
        "efficiencies unless result files were given, never fitted to these rows",
    ]
    table.caption = bullets(notes)
    return table
