"""What reports are made of, for the report tests: a CPU run (the schema-1 fixture), two runs of
the same name in different folders (one on a device named like a script), and a capacity plan
with the estimate, simulations and step it rests on, as the planning commands print them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from resultdocs import H100, case, doc, estimate, write

FIXTURES = Path(__file__).parent / "fixtures"
CPU_RUN = FIXTURES / "schema1-cpu.json"
SCRIPT = "<script>window.pwned = 1</script>"
IMAGE = '<img src="x" onerror="window.pwned = 2">'
BIG = (4096, 4096, 4096)

# tests/fixtures/plans/NAME.json: what `tokbench ARGS --json` printed (tokbench 0.1.0,
# 2026-12-07); test_report.py checks that the report still reads what these print today.
PLANNING = {
    "capacity": ("capacity", "--model", "llama-3.1-70b", "--gpu", "h200", "--precision", "fp8",
                 "--gpus", "300000", "--deal-usd", "38e9", "--years", "7", "--tp", "auto"),
    "estimate": ("estimate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision", "fp8"),
    "simulate": ("simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision",
                 "fp8", "--requests", "200"),
    "simulate-slo": ("simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--precision",
                     "fp8", "--requests", "200", "--slo", "ttft=2s,tpot=50ms"),
    "step": ("step", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tokens", "512"),
}  # fmt: skip
PLANS = {name: FIXTURES / "plans" / f"{name}.json" for name in PLANNING}


def two_runs(directory: Path) -> list[Path]:
    """run.json in a/ and in b/: the same cases, b/ faster on the big GEMM and slower on one;
    b/ measured on a device named like a script, a/ holding estimates for a model named like
    an image that runs a script."""
    model = dataclasses.replace(estimate("H100 SXM", "h100-sxm", 7000.0), model=IMAGE)
    projected = estimate("B200", "b200", 12000.0, projected=True)
    a = doc(case(*BIG, 1.0), case(1, 4096, 4096, 0.05), case(64, 4096, 4096, 0.06),
            case(*BIG, 1.2, impl="triton"), estimates=(model, projected))  # fmt: skip
    b = doc(case(*BIG, 0.8), case(1, 4096, 4096, 0.051), case(64, 4096, 4096, 0.09),
            case(*BIG, 1.0, impl="triton"), device=dataclasses.replace(H100, name=SCRIPT),
            estimates=(estimate("H100 SXM", "h100-sxm", 7600.0),),
            created="2025-07-01T12:00:00+00:00")  # fmt: skip
    for folder in ("a", "b"):
        (directory / folder).mkdir(exist_ok=True)
    return [write(directory / "a", "run.json", a), write(directory / "b", "run.json", b)]


def loaded(path: Path) -> dict:
    return json.loads(path.read_text())
