"""The report as a page: sections of blocks (tables, charts, notes), rendered by Jinja2 with
autoescaping, so that everything taken from a file is text in the page, never markup; the
charts' specifications travel as JSON that cannot close their script element.

The page is self-contained: Vega, Vega-Lite and vega-embed (vendor/, with their licences) are
inlined into it, so it opens with no network, and the charts are SVG, sharp when printed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

from bench.present.plain import PlainTable

# The vendored scripts, in the order they load (each needs the ones before), and the package
# version each file holds.
VENDOR = {
    "vega.min.js": "vega 6.4.0",
    "vega-lite.min.js": "vega-lite 6.5.0",
    "vega-embed.min.js": "vega-embed 7.3.0",
}


@dataclass(frozen=True)
class TableBlock:
    kind: ClassVar[str] = "table"
    table: PlainTable


@dataclass(frozen=True)
class ChartBlock:
    kind: ClassVar[str] = "chart"
    spec: dict[str, Any]
    id: str = ""  # the element the chart is drawn in; numbered when the page is rendered


@dataclass(frozen=True)
class NotesBlock:
    kind: ClassVar[str] = "notes"
    title: str
    items: list[str]


Block = TableBlock | ChartBlock | NotesBlock


@dataclass(frozen=True)
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    intro: str = ""


@dataclass(frozen=True)
class Page:
    title: str
    subtitle: str  # who made it, when, from what
    sections: list[Section]


def render(page: Page) -> str:
    """The whole HTML document."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("bench.present.report", ""),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    sections = _numbered(page.sections)
    charts = [{"id": b.id, "spec": b.spec} for s in sections for b in s.blocks if b.kind == "chart"]
    return env.get_template("report.html.j2").render(
        page=page,
        sections=sections,
        charts=charts,
        vendor=[_vendored(name) for name in VENDOR],
        libraries=", ".join(VENDOR.values()),
    )


def _numbered(sections: list[Section]) -> list[Section]:
    """The sections with each chart given the id of the element it is drawn in."""
    count = 0
    out = []
    for section in sections:
        blocks: list[Block] = []
        for block in section.blocks:
            if block.kind == "chart":
                count += 1
                block = dataclasses.replace(block, id=f"chart-{count}")
            blocks.append(block)
        out.append(dataclasses.replace(section, blocks=blocks))
    return out


def _vendored(name: str) -> str:
    return (resources.files("bench.present.report") / "vendor" / name).read_text("utf-8")
