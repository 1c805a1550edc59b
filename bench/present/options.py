"""The options several commands share, declared once: `estimate`, `simulate` and `capacity`
name a model served at a layout and where its times come from in the same words."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


def file_to_write(path: Path | None) -> Path | None:
    """A file a command will write, refused as it is parsed when it names a directory (`--out
    ''` names the current one), before any work is done."""
    try:
        if path is not None and path.is_dir():
            raise typer.BadParameter(f"'{path}' is a directory; give a file name")
    except OSError as e:  # a name too long for the file system, a loop of links
        raise typer.BadParameter(f"'{path}': {e.strerror or e}") from None
    return path


def chart_to_write(path: Path | None) -> Path | None:
    """A chart's file, as file_to_write, named .png: charts are PNGs (matplotlib would append
    .png to a name without it, and its other formats refuse the metadata tokbench stamps)."""
    if path is not None and path.suffix.lower() != ".png":
        raise typer.BadParameter(f"'{path}': a chart is a PNG; end the name with .png")
    return file_to_write(path)


ChartForceOpt = Annotated[
    bool, typer.Option(help="With --plot: replace a file there that tokbench did not draw.")
]


class Format(str, Enum):
    """How a command shows its tables: for a terminal, or as Markdown (a CI job summary, a docs
    page)."""

    table = "table"
    markdown = "markdown"


FormatOpt = Annotated[
    Format, typer.Option("--format", help="table, or markdown (a CI job summary, a docs page).")
]

ModelOpt = Annotated[
    str,
    typer.Option(
        help="Model name (e.g. llama-3.1-8b, tiny) or a config file: tokbench JSON "
        "or a Hugging Face config.json."
    ),
]
ResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--results",
        help="Result file of the model suite; repeatable. Without one, --gpu's spec sheet "
        "and default efficiencies answer, labelled.",
    ),
]
TpOpt = Annotated[
    str,
    typer.Option(
        help="Layout of a model copy: N (tensor parallelism over N GPUs), NxD (D attention "
        "data-parallel groups of N, a MoE's experts over all N×D: expert parallelism), Nep "
        "(TP N, experts over the N), or auto: the layout (TP 1-8; for a MoE, EP over a board "
        "and over the GPU's NVLink domain) that serves the most output tokens/s per GPU; "
        "replicas fill the rest."
    ),
]
RedundantOpt = Annotated[
    int,
    typer.Option(
        "--redundant-experts",
        min=0,
        max=4096,
        help="Extra replicas of the hottest experts under expert parallelism (EPLB; DeepSeek "
        "serves 256 experts as 288).",
    ),
]
SkewOpt = Annotated[
    int,
    typer.Option(
        "--router-skew",
        min=0,
        max=1000,
        help="The router's skew, a Zipf exponent in hundredths (0: uniform, 100: Zipf's law), "
        "for the busiest expert-parallel GPU's load.",
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="Weights' precision (GEMMs, MoE experts): bf16, fp16, fp8, fp4 (NVFP4), mxfp4, "
        "int8, int4 or fp32; a format the GPU has no tensor cores for is weight-only."
    ),
]
KvPrecisionOpt = Annotated[
    str,
    typer.Option(
        help="KV-cache precision: auto (the activations' dtype) or fp8 (e4m3, a scale per tensor)."
    ),
]
IslOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Prompt (input) tokens per request (default: as the result files measured the "
        "model, else 1024).",
        show_default=False,
    ),
]
OslOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Output tokens per request (default: as the result files measured the model, "
        "else 256).",
        show_default=False,
    ),
]
GpuOpt = Annotated[
    str | None,
    typer.Option(
        help="Estimate for this spec-table GPU (e.g. h100-sxm, b200): a spec-sheet "
        "projection when the files were measured on another GPU."
    ),
]
ImplOpt = Annotated[
    str | None,
    typer.Option(
        help="Use only this implementation's times for every op that has one of that "
        "name (default: the fastest correct implementation per shape)."
    ),
]
SloOpt = Annotated[
    str | None,
    typer.Option(
        help="Latency targets, e.g. ttft=2s,tpot=200ms: the highest Poisson rate meeting them "
        "at --percentile is found by simulation."
    ),
]
PercentileOpt = Annotated[float, typer.Option(help="Percentile of requests the SLO holds for.")]
MaxTokensOpt = Annotated[
    int, typer.Option(help="Tokens one engine step may hold (prefill chunks and decodes).")
]
WorkspaceOpt = Annotated[
    float,
    typer.Option(
        help="Share of GPU memory the engine keeps out first (1 − vLLM's "
        "gpu_memory_utilization), before its context, CUDA graphs and activations."
    ),
]
MaxBatchOpt = Annotated[int, typer.Option(help="Scheduler cap on sequences decoded together.")]
CollectivesOpt = Annotated[
    str,
    typer.Option(
        help="Who runs the all-reduces: nccl (as frameworks call it), auto (vLLM's choice: its "
        "own kernel for small ones within an NVLink domain) or custom."
    ),
]
