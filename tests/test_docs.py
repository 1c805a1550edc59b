"""The README stays short and true: its links resolve and its test command is the one CI runs;
the ops page is the registry's; the example CI workflow runs commands tokbench takes."""

import re
import shlex
from pathlib import Path

import yaml
from typer.main import get_command

from bench.measure.ops import OPS
from bench.present import markdown as md
from bench.present.cli import app
from bench.present.tables.catalog import OPS_COLUMNS, ops_rows

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_short() -> None:
    assert len(README) <= 8000


def test_the_ops_page_is_the_registry() -> None:
    """docs/ops.md ends with `tokbench ops --format markdown`, so it lists every op and
    implementation the registry holds (regenerate it when an op changes)."""
    page = (ROOT / "docs" / "ops.md").read_text()
    marker = "<!-- tokbench ops --format markdown -->\n"
    assert marker in page
    assert page.split(marker)[1] == md.table(OPS_COLUMNS, ops_rows())
    for op in OPS.values():
        assert f"| {op.name} |" in page


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target


def test_ci_runs_the_readme_test_command() -> None:
    command = "pip install torch==2.13.0 && pip install -e '.[test]' && pytest -q"
    assert command in README
    assert command.replace("pip install", "pip install -q") in (ROOT / ".ci" / "run").read_text()


def _tokbench_commands(script: str) -> list[list[str]]:
    """The arguments of each tokbench command a step's script runs, up to a redirection."""
    found = []
    for part in re.split(r"&&|\|\||;|\n", script):
        words = shlex.split(part)
        if words[:1] == ["tokbench"]:
            end = next((i for i, w in enumerate(words) if w in (">", ">>", "|")), len(words))
            found.append(words[1:end])
    return found


def test_the_ci_example_is_a_workflow_of_commands_tokbench_takes() -> None:
    """docs/ci/tokbench.yml: a smoke run on every change with its Markdown summary, the gate
    against a stored baseline, the report; each command parses with today's options."""
    workflow = yaml.safe_load((ROOT / "docs" / "ci" / "tokbench.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert all(("uses" in step) != ("run" in step) for step in steps)
    commands = [c for step in steps for c in _tokbench_commands(step.get("run", ""))]
    assert [c[0] for c in commands] == ["run", "compare", "report"]
    assert "--summary-md" in commands[0] and "--fail-on" in commands[1]
    assert commands[1][commands[1].index("--format") + 1] == "markdown"
    group = get_command(app)
    for args in commands:  # a usage error (an option renamed, a value refused) raises
        group.commands[args[0]].make_context(args[0], args[1:])
