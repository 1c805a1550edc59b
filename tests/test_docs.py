"""The README stays short and true: its op table is the registry's, its links resolve, and its
test command is the one CI runs."""

import re
from pathlib import Path

from bench.measure.ops import OPS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_short() -> None:
    assert len(README) <= 8000


def test_readme_lists_every_op_and_implementation() -> None:
    section = README.split("## What is measured")[1].split("\n## ")[0]
    rows = {
        name.strip(" `"): line
        for line in section.splitlines()
        if "|" in line
        for name in line.split("|")[1].split(",")
    }
    for op in OPS.values():
        assert op.name in rows, f"README's op table lacks {op.name}"
        for impl in op.impls:
            if impl.name != "triton":
                assert f"`{impl.name}`" in rows[op.name], f"{op.name}: {impl.name} not listed"


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target


def test_ci_runs_the_readme_test_command() -> None:
    command = "pip install torch==2.13.0 && pip install -e '.[test]' && pytest -q"
    assert command in README
    assert command.replace("pip install", "pip install -q") in (ROOT / ".ci" / "run").read_text()
