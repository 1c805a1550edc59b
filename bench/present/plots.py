"""PNG charts of result files: a roofline per device, TFLOP/s against problem size per
implementation, and tokens/s per GPU across hardware when the files carry estimates.

matplotlib is an optional extra (`pip install 'tokbench[plot]'`), imported only when a plot is
drawn. Figures are drawn on matplotlib.figure.Figure directly, without pyplot, so no GUI backend or
global state is involved. Only comparable cases are drawn: interpreted timings are correctness
runs, not speed figures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.record.hardware import peak_tflops, spec_of
from bench.record.schema import CaseResult, EstimateRecord, ResultDoc

MARKERS = "osD^vP*X"


def _figure(title: str) -> Any:
    """A new Figure, or a BenchError saying how to install the optional extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError(
            "plots need matplotlib, an optional extra: pip install 'tokbench[plot]'"
        ) from None
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
    """Each timed case at (FLOP/byte, TFLOP/s) under the device's roofs; None when no case was
    timed on hardware."""
    cases = timed(doc)
    if not cases:
        return None
    spec = spec_of(doc.device, doc.spec)
    fig = _figure(f"Roofline: {_device_title(doc)}")
    ax = fig.add_subplot()
    impls = list(dict.fromkeys(c.impl for c in cases))
    dtypes = list(dict.fromkeys(c.dtype for c in cases))
    colors = {dt: f"C{i}" for i, dt in enumerate(dtypes)}
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
    _log_axes(ax, "arithmetic intensity (FLOP/byte)")
    return _save(fig, path)


def _roofs(ax, spec, dtypes: list[str], colors: dict[str, str], intensities: list[float]) -> None:
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
    """TFLOP/s against problem size (GFLOP per call) for one op, a line per implementation and
    dtype; None when the op has no timed case."""
    cases = [c for c in timed(doc) if c.op == op]
    if not cases:
        return None
    fig = _figure(f"{op}: TFLOP/s vs size, {_device_title(doc)}")
    ax = fig.add_subplot()
    impls = list(dict.fromkeys(c.impl for c in cases))
    for (impl, dtype), group in _series(cases, lambda c: (c.impl, c.dtype)).items():
        group = sorted(group, key=lambda c: c.flops)
        ax.plot(
            [c.flops / 1e9 for c in group],
            [c.tflops for c in group],
            marker=MARKERS[impls.index(impl) % len(MARKERS)],
            label=f"{impl} {dtype}",
        )
    _log_axes(ax, "problem size (GFLOP per call)")
    return _save(fig, path)


def _log_axes(ax, xlabel: str) -> None:
    """Log-log axes of achieved TFLOP/s, gridded, with the legend."""
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="achieved TFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise BenchError(f"cannot write the chart {path}: {e.strerror or e}") from None
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_plots(runs: Sequence[tuple[str, ResultDoc]], out_dir: Path) -> list[Path]:
    """Every chart for every (name, document): a roofline and one TFLOP/s-vs-size chart per op,
    then one tokens/s chart per model and serving setup across all runs that saved estimates.

    Files are named after the run name (bench.present.names: the result file's stem, with its
    folders where stems alike need them), so no two runs overwrite each other's charts.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"{out_dir} is a file; plots are written into a directory")
    written = []
    for name, doc in runs:
        stem = _slug(name)
        written.append(roofline(doc, out_dir / f"{stem}-roofline.png"))
        for op in dict.fromkeys(c.op for c in doc.cases):
            written.append(throughput(doc, op, out_dir / f"{stem}-{_slug(op)}-tflops.png"))
    groups: dict[tuple, list[tuple[str, EstimateRecord, str]]] = {}
    for name, doc in runs:
        for e in doc.estimates:
            groups.setdefault(e.setup, []).append((name, e, doc.created[:10]))
    for key, entries in groups.items():
        stem = _slug("-".join(map(str, key)))
        written.append(tokens_chart(entries, out_dir / f"tokens-{stem}.png"))
    return [p for p in written if p is not None]


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
    ax.legend(handles=handles, fontsize=8)
    return _save(fig, path)


def roofline_shares_chart(
    shares: dict[str, list[tuple[int, float]]], title: str, path: Path
) -> Path:
    """Each op's predicted share of its roofline against the step's tokens (`tokbench step
    --plot`): one line per role, log tokens, the legend outside the data."""
    fig = _figure(title)
    ax = fig.add_subplot()
    cmap = _colours(len(shares))
    for i, (role, points) in enumerate(shares.items()):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], markersize=4, color=cmap[i], label=role)
    ax.set(xscale="log", ylim=(0, 1.05), xlabel="tokens in the step",
           ylabel="predicted share of the roofline")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _colours(n: int) -> list[Any]:
    """n distinct colours (tab20's when more than ten are needed)."""
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20"
    return [colormaps[name](i) for i in range(n)]


def frontier_chart(frontiers: Sequence[Any], path: Path) -> Path:
    """Output tok/s per GPU against tok/s per user (`simulate --concurrency --plot`): one line per
    GPU through its points of every layout (bench.plan.frontier.Frontier), each point labelled
    with its clients (and its TP degree where the GPU's line joins several)."""
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
    cmap = _colours(len(gpus))
    for i, (gpu, points) in enumerate(gpus.items()):
        points.sort(key=lambda tp_point: tp_point[1].per_user)
        layouts = {tp for tp, _ in points}
        xs = [p.per_user for _, p in points]
        ys = [p.output_tokens_per_s for _, p in points]
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=cmap[i], label=gpu)
        for (tp, p), x, y in zip(points, xs, ys, strict=True):
            text = f"TP{tp}·{p.concurrency}" if len(layouts) > 1 else str(p.concurrency)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=cmap[i])  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="output tok/s per user (1 / median TPOT)",
           ylabel="output tok/s per GPU")  # fmt: skip
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())  # a decade or less of tok/s per user
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="points: clients (TP·clients)", title_fontsize=8)
    return _save(fig, path)
