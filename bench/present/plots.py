"""PNG charts of result files: a roofline per device, TFLOP/s against problem size per
implementation, and tokens/s per GPU across hardware when the files carry estimates.

matplotlib is an optional extra (`pip install 'tokbench[plot]'`), imported only when a plot is
drawn. Figures are drawn on matplotlib.figure.Figure directly, without pyplot, so no GUI backend or
global state is involved. Only comparable cases are drawn: interpreted timings are correctness
runs, not speed figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.measure.ops import OPS
from bench.present import owned
from bench.record.hardware import peak_tflops, spec_of
from bench.record.schema import CaseResult, EstimateRecord, ResultDoc

MARKERS = "osD^vP*X"
# The PNG "Software" text of every chart tokbench draws: plot replaces its own charts only.
MARK = "tokbench"
NEEDS_MATPLOTLIB = "plots need matplotlib, an optional extra: pip install 'tokbench[plot]'"


def _figure(title: str) -> Any:
    """A new Figure, or a BenchError saying how to install the optional extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError(NEEDS_MATPLOTLIB) from None
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    fig.suptitle(title)
    return fig


def _device_title(doc: ResultDoc) -> str:
    spec = spec_of(doc.device, doc.spec)
    device = f"{doc.device.name} ({spec.name})" if spec else doc.device.name
    return f"{device}, {doc.created[:10]}"


def timed(doc: ResultDoc) -> list[CaseResult]:
    """The cases a chart shows: timed on hardware, with their FLOPs and bytes (as the report's
    charts show them too)."""
    return [c for c in doc.cases if c.comparable and c.tflops is not None and c.bytes > 0]


def _series(cases: list[CaseResult], by) -> dict[str, list[CaseResult]]:
    out: dict[str, list[CaseResult]] = {}
    for c in cases:
        out.setdefault(by(c), []).append(c)
    return out


def roofline(doc: ResultDoc, path: Path) -> Path | None:
    """Each timed case with FLOPs at (FLOP/byte, TFLOP/s) under the device's roofs; None when
    no such case was timed on hardware."""
    fig = roofline_figure(doc)
    return _save(fig, path) if fig is not None else None


def roofline_figure(doc: ResultDoc) -> Any:
    """The roofline chart, or None. A case without arithmetic (a KV-cache write) has no place on
    log axes of FLOP/byte and TFLOP/s: its op's chart shows its GB/s."""
    cases = [c for c in timed(doc) if c.flops > 0]
    if not cases:
        return None
    spec = spec_of(doc.device, doc.spec)
    fig = _figure(f"Roofline: {_device_title(doc)}")
    ax = fig.add_subplot()
    impls = list(dict.fromkeys(c.impl for c in cases))
    dtypes = list(dict.fromkeys(c.dtype for c in cases))
    colors = dict(zip(dtypes, _palette(len(dtypes)), strict=True))
    for (impl, dtype), group in _series(cases, lambda c: (c.impl, c.dtype)).items():
        ax.scatter(
            [c.flops / c.bytes for c in group],
            [c.tflops for c in group],
            marker=MARKERS[impls.index(impl) % len(MARKERS)],
            color=colors[dtype],
            label=f"{impl} {dtype}",
            zorder=3,
        )
    if spec is not None:
        _roofs(ax, spec, dtypes, colors, [c.flops / c.bytes for c in cases])
    else:
        ax.text(
            0.01,
            0.98,
            "no spec-table entry: measured points only",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            color="gray",
        )
    _log_axes(ax, "arithmetic intensity (FLOP/byte)", "achieved TFLOP/s")
    return fig


def _roofs(ax, spec, dtypes: list[str], colors: dict[str, Any], intensities: list[float]) -> None:
    """Dashed roof per dtype: min(dense peak, intensity × bandwidth)."""
    lo, hi = min(intensities) / 4, max(intensities) * 4
    xs = [lo * (hi / lo) ** (i / 199) for i in range(200)]
    for dtype in dtypes:
        peak = peak_tflops(spec, dtype)
        if peak:
            ys = [min(peak, x * spec.bandwidth_gbs / 1e3) for x in xs]
            ax.plot(
                xs,
                ys,
                "--",
                color=colors[dtype],
                lw=1,
                label=f"roof {dtype}: {peak:g} TFLOP/s, {spec.bandwidth_gbs:g} GB/s",
            )


def throughput(doc: ResultDoc, op: str, path: Path) -> Path | None:
    """One op's chart of speed against problem size (throughput_figure); None when the op has
    no timed case."""
    fig = throughput_figure(doc, op)
    return _save(fig, path) if fig is not None else None


def chart_metric(op: str, cases: Sequence[CaseResult] = ()) -> str:
    """What an op's chart plots: "gbs" for a memory-bound op (Op.memory_bound) or one whose
    cases have no arithmetic, whose TFLOP/s says nothing; else "tflops"."""
    if _memory_bound(op) or (cases and all(c.flops == 0 for c in cases)):
        return "gbs"
    return "tflops"


def _memory_bound(op: str) -> bool:
    """Op.memory_bound; False for an op this version does not know."""
    return op in OPS and OPS[op].memory_bound


def throughput_figure(doc: ResultDoc, op: str) -> Any:
    """TFLOP/s against GFLOP per call, a line per implementation and dtype; a memory-bound op's
    GB/s against MB moved per call instead, with the share of the copy bandwidth measured on the
    same device (`measured_peaks`) on the right axis. None when the op has no timed case."""
    cases = [c for c in timed(doc) if c.op == op]
    if not cases:
        return None
    memory = chart_metric(op, cases) == "gbs"
    what = "GB/s" if memory else "TFLOP/s"
    fig = _figure(f"{op}: {what} vs size, {_device_title(doc)}")
    ax = fig.add_subplot()
    series = _series(cases, lambda c: (c.impl, c.dtype))
    for ((impl, dtype), group), style in zip(series.items(), _styles(len(series)), strict=True):
        group = sorted(group, key=lambda c: c.bytes if memory else c.flops)
        ax.plot(
            [c.bytes / 1e6 if memory else c.flops / 1e9 for c in group],
            [c.gbps if memory else c.tflops for c in group],
            label=f"{impl} {dtype}",
            **style,
        )
    if memory:
        _log_axes(ax, "problem size (MB moved per call)", "achieved GB/s")
    else:
        _log_axes(ax, "problem size (GFLOP per call)", "achieved TFLOP/s")
    copy = doc.measured_peaks.get("copy_gbs")
    if memory and copy and _memory_bound(op):
        _copy_axis(ax, copy)
    return fig


def _copy_axis(ax, copy_gbs: float) -> None:
    """A right axis reading GB/s as a share of the copy bandwidth measured on the device: the
    ceiling a memory-bound op can really reach. Made after the left axis is log, as a secondary
    axis resets its tick labels whenever its parent's scale changes."""
    from matplotlib.ticker import FuncFormatter  # present whenever _figure succeeded

    right = ax.secondary_yaxis(
        "right", functions=(lambda g: 100 * g / copy_gbs, lambda pct: pct * copy_gbs / 100)
    )
    right.set_ylabel(f"% of the measured copy bandwidth ({copy_gbs:,.0f} GB/s)")
    percent = FuncFormatter(lambda pct, _: f"{pct:.3g}%")
    right.yaxis.set_major_formatter(percent)
    right.yaxis.set_minor_formatter(percent)


def _log_axes(ax, xlabel: str, ylabel: str) -> None:
    """Log-log axes, gridded, with the legend outside them."""
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)


def _legend(ax, **kwargs: Any) -> None:
    """The axes' legend beside them, outside the data it would otherwise cover (constrained
    layout makes room for it), centred so that it clears the figure's title."""
    ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize=8,
                     **kwargs)  # fmt: skip


def _save(fig, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, metadata={"Software": MARK})
    except OSError as e:
        raise BenchError(f"cannot write the chart {path}: {e.strerror or e}") from None
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_plots(
    runs: Sequence[tuple[str, ResultDoc]], out_dir: Path, force: bool = False, option: str = "--out"
) -> list[Path]:
    """Every chart for every (name, document): a roofline and one TFLOP/s-vs-size chart per op,
    then one tokens/s chart per model and serving setup across all runs that saved estimates.

    Files are named after the run name (bench.present.names: the result file's stem, with its
    folders where stems alike need them), made distinct where their slugs are alike, so no two
    runs overwrite each other's charts; a file tokbench did not draw is replaced only if `force`
    (the refusal names `option`, the command's flag for the directory).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"{out_dir} is a file; plots are written into a directory")
    written, files = [], _ChartFiles(out_dir, force, f"another {option} directory")
    for name, doc in runs:
        stem = _slug(name)
        written.append(roofline(doc, files(f"{stem}-roofline.png")))
        for op in dict.fromkeys(c.op for c in doc.cases):
            metric = chart_metric(op, [c for c in doc.cases if c.op == op])
            written.append(throughput(doc, op, files(f"{stem}-{_slug(op)}-{metric}.png")))
    groups: dict[tuple, list[tuple[str, EstimateRecord, str]]] = {}
    for name, doc in runs:
        for e in doc.estimates:
            groups.setdefault(e.setup, []).append((name, e, doc.created[:10]))
    for key, entries in groups.items():
        stem = _slug("-".join(map(str, key)))
        written.append(tokens_chart(entries, files(f"tokens-{stem}.png")))
    return [p for p in written if p is not None]


class _ChartFiles:
    """The chart files one command writes into a directory: each name once (a second chart of
    the same name gets -2, -3, …), and none over a file tokbench did not draw unless forced."""

    def __init__(self, directory: Path, force: bool, elsewhere: str) -> None:
        self.directory, self.force, self.elsewhere = directory, force, elsewhere
        self.taken: set[Path] = set()

    def __call__(self, name: str) -> Path:
        path, n = self.directory / name, 1
        while path in self.taken:
            n += 1
            path = self.directory / f"{Path(name).stem}-{n}.png"
        self.taken.add(path)
        check_chart(path, self.force, self.elsewhere)
        return path


def check_chart(path: Path, force: bool, elsewhere: str = "another --plot file") -> None:
    """Refuse to draw over path when it holds a file tokbench did not draw, unless `force`;
    `elsewhere` names the command's flag for another place."""
    owned.refuse_foreign(path, _drawn_by_tokbench, "was not drawn by tokbench", elsewhere, force)


def _drawn_by_tokbench(path: Path) -> bool:
    """Whether path is a PNG whose "Software" text is tokbench's mark (see _save)."""
    try:
        from PIL import Image, UnidentifiedImageError  # matplotlib's own dependency
    except ImportError:
        raise BenchError(NEEDS_MATPLOTLIB) from None
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == MARK
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def tokens_chart(entries: Sequence[tuple[str, EstimateRecord, str]], path: Path) -> Path | None:
    """Prefill and decode tokens/s per GPU, one pair of bars per (run name, estimate, date);
    projected estimates are hatched and say so in their label."""
    if not entries:
        return None
    e0 = entries[0][1]
    dates = sorted({date for _, _, date in entries})
    span = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    gpus = ", ".join(dict.fromkeys(e.gpu for _, e, _ in entries))
    fig = _figure(f"{e0.setup_label} tokens: per-GPU throughput\n{gpus}; {span}")
    ax = fig.add_subplot()
    labels = [f"{e.gpu}{' (projection)' if e.projected else ''}\n{name}" for name, e, _ in entries]
    xs = range(len(entries))
    for offset, phase in ((-0.2, "prefill"), (0.2, "decode")):
        bars = ax.bar(
            [x + offset for x in xs],
            [getattr(e, f"{phase}_tokens_per_s") for _, e, _ in entries],
            width=0.4,
            label="decode, at the largest batch estimated" if phase == "decode" else phase,
            color="C0" if phase == "prefill" else "C1",
        )
        # Projections are hatched so that they never pass for measurements.
        for bar, (_, e, _) in zip(bars, entries, strict=True):
            bar.set_hatch("//" if e.projected else "")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set(ylabel="tokens/s per GPU")
    ax.grid(True, axis="y", alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if any(e.projected for _, e, _ in entries):
        from matplotlib.patches import Patch  # present whenever _figure succeeded

        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="projection"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return _save(fig, path)


def roofline_shares_chart(
    shares: dict[str, list[tuple[int, float]]], title: str, path: Path, force: bool = False
) -> Path:
    """Each op's predicted share of its roofline against the step's tokens (`tokbench step
    --plot`): one line per role, log tokens, the legend outside the data. A file tokbench did
    not draw is replaced only if `force`."""
    check_chart(path, force)
    fig = _figure(title)
    ax = fig.add_subplot()
    for (role, points), style in zip(shares.items(), _styles(len(shares)), strict=True):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, markersize=4, label=role, **style)
    ax.set(xscale="log", ylim=(0, 1.05), xlabel="tokens in the step",
           ylabel="predicted share of the roofline")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


# Line styles and MARKERS multiply the colours: 32 lines per colour.
LINESTYLES = ("-", "--", ":", "-.")


def _palette(n: int) -> list[Any]:
    """n colours, distinct up to 256: tab10's, tab20's beyond ten, then turbo's (256 colours)
    sampled evenly (a categorical map called past its end repeats its last colour)."""
    from matplotlib import colormaps

    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return [cmap(i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


def _styles(n: int) -> list[dict[str, Any]]:
    """n distinct (colour, line style, marker), for up to 8,192 lines: each colour solid, then
    dashed, dotted and dash-dotted, then all again with the next marker; tab10's colours up to
    320 lines, more colours (up to turbo's 256) beyond."""
    k = max(10, math.ceil(n / (len(LINESTYLES) * len(MARKERS))))
    colours = _palette(k)
    return [
        {
            "color": colours[i % k],
            "linestyle": LINESTYLES[i // k % len(LINESTYLES)],
            "marker": MARKERS[i // (k * len(LINESTYLES)) % len(MARKERS)],
        }
        for i in range(n)
    ]


def frontier_chart(frontiers: Sequence[Any], path: Path, force: bool = False) -> Path:
    """Output tok/s per GPU against tok/s per user (`simulate --concurrency --plot`): one line per
    GPU through its points of every layout (bench.plan.frontier.Frontier), each point labelled
    with its clients (and its TP degree where the GPU's line joins several). A file tokbench did
    not draw is replaced only if `force`."""
    check_chart(path, force)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    setup = frontiers[0].step_model.setup
    fig = _figure(
        f"{setup.model.name}, {setup.precision}, {setup.isl} + {setup.osl} tokens: throughput "
        "against interactivity (simulated)"
    )
    ax = fig.add_subplot()
    gpus: dict[str, list[tuple[int, Any]]] = {}
    for f in frontiers:
        gpus.setdefault(f.step_model.target.name, []).extend((f.step_model.setup.tp, p)
                                                               for p in f.points)  # fmt: skip
    for (gpu, points), style in zip(gpus.items(), _styles(len(gpus)), strict=True):
        points.sort(key=lambda tp_point: tp_point[1].per_user)
        layouts = {tp for tp, _ in points}
        xs = [p.per_user for _, p in points]
        ys = [p.output_tokens_per_s for _, p in points]
        ax.plot(xs, ys, label=gpu, **style)
        for (tp, p), x, y in zip(points, xs, ys, strict=True):
            text = f"TP{tp}·{p.concurrency}" if len(layouts) > 1 else str(p.concurrency)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=style["color"])  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="output tok/s per user (1 / median TPOT)",
           ylabel="output tok/s per GPU")  # fmt: skip
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())  # a decade or less of tok/s per user
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, title="points: clients (TP·clients)", title_fontsize=8)
    return _save(fig, path)
