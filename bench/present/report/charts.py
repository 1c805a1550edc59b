"""The report's charts as Vega-Lite specifications: plain data that the page draws with the
vendored Vega-Lite, so the numbers in a chart are the numbers given here.

Every chart colours its marks by a `series` field. Hovering a mark shows its tooltip fields
(text formatted as the tables format it); clicking a legend entry shows that series alone
(shift-click adds one); dragging pans, scrolling zooms, and a double-click shows all again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Spec = dict[str, Any]
Row = dict[str, Any]

WIDTH, HEIGHT = 560, 300
SERIES = "series"
_SHOWN = "shown"
_TOGGLE = {"name": _SHOWN, "select": {"type": "point", "fields": [SERIES]}, "bind": "legend"}
_ZOOM = {"name": "zoom", "select": "interval", "bind": "scales"}


def log(field_: str, title: str) -> Spec:
    return {"field": field_, "type": "quantitative", "scale": {"type": "log"}, "title": title}


def linear(field_: str, title: str) -> Spec:
    return {"field": field_, "type": "quantitative", "title": title}


def nominal(field_: str, title: str) -> Spec:
    """Categories in the order of the rows."""
    return {"field": field_, "type": "nominal", "title": title, "sort": None}


@dataclass(frozen=True)
class Layer:
    """One kind of mark over its own rows; `encoding` adds channels to the chart's x, y and
    colour (or replaces them)."""

    mark: Spec
    rows: Sequence[Row]
    encoding: Spec = field(default_factory=dict)


def point(rows: Sequence[Row], **encoding: Any) -> Layer:
    return Layer({"type": "point", "filled": True, "size": 60}, rows, encoding)


def line(rows: Sequence[Row], *, dashed: bool = False, **encoding: Any) -> Layer:
    mark: Spec = {"type": "line", "point": not dashed}
    if dashed:
        mark["strokeDash"] = [6, 3]
    return Layer(mark, rows, encoding)


def bar(rows: Sequence[Row], **encoding: Any) -> Layer:
    return Layer({"type": "bar"}, rows, encoding)


def chart(
    title: str,
    x: Spec,
    y: Spec,
    layers: Sequence[Layer],
    tooltip: Sequence[tuple[str, str]] = (),
    *,
    zoom: bool = True,
    height: int = HEIGHT,
) -> Spec:
    """A chart of layers sharing the axes and the series colours; tooltip: (field, title)
    pairs every layer's rows carry. The first layer holds the legend toggle (and the zoom); a
    layer's encoding of None leaves that channel out."""
    shown = [layer for layer in layers if layer.rows]
    tips = [{"field": f, "type": "nominal", "title": t} for f, t in tooltip]
    spec_layers = []
    for i, layer in enumerate(shown):
        encoding = {
            "x": x,
            "y": y,
            "color": {"field": SERIES, "type": "nominal", "title": None, "sort": None},
            "opacity": {"condition": {"param": _SHOWN, "value": 1}, "value": 0.1},
            **({"tooltip": tips} if tips else {}),
            **layer.encoding,
        }
        encoding = {k: v for k, v in encoding.items() if v is not None}
        unit: Spec = {"data": {"values": list(layer.rows)}, "mark": layer.mark}
        unit["encoding"] = encoding
        if i == 0:
            unit["params"] = [_TOGGLE, _ZOOM] if zoom else [_TOGGLE]
        spec_layers.append(unit)
    return {
        "title": title,
        "width": WIDTH,
        "height": height,
        "layer": spec_layers,
        "config": {
            "legend": {"orient": "bottom", "columns": 2, "labelLimit": 360},
            "axis": {"labelOverlap": "greedy"},
        },
    }


def bar_height(categories: int) -> int:
    """A chart's height for one bar (or row of marks) per category, readable at any count."""
    return max(120, 22 * categories)
