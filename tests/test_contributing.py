"""CONTRIBUTING.md's worked example, built as the guide says: the tree copied, the two files it
shows added word for word, and every command that should pick the new op up does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
GUIDE = (ROOT / "CONTRIBUTING.md").read_text()


def _files(guide: str) -> dict[str, str]:
    """The guide's Python blocks that start with a `# path` line, by path."""
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", guide, flags=re.DOTALL)
    return {path: body for path, body in blocks}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with the worked example's files added."""
    root = tmp_path_factory.mktemp("contrib")
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("bench", "kernels"):
        shutil.copytree(ROOT / package, root / package, ignore=ignore)
    files = _files(GUIDE)
    assert set(files) == {"kernels/scale.py", "bench/measure/ops/scale.py"}
    for path, body in files.items():
        (root / path).write_text(body)
    return root


def tokbench(tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # the command chooses, as a user's would
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True, text=True, cwd=tree, env=env, timeout=300, check=False,
    )  # fmt: skip


def test_the_guide_shows_both_files() -> None:
    assert set(_files(GUIDE)) == {"kernels/scale.py", "bench/measure/ops/scale.py"}


def test_the_registry_and_the_suites_pick_it_up(tree: Path) -> None:
    listed = tokbench(tree, "ops", "--format", "markdown")
    assert listed.returncode == 0, listed.stderr
    assert "| scale | y = x · w" in listed.stdout
    planned = tokbench(tree, "run", "--op", "scale", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "7×300" in planned.stdout and "triton, torch" in " ".join(planned.stdout.split())


def test_its_kernel_runs_and_passes_its_check(tree: Path) -> None:
    out = tree / "scale.json"
    done = tokbench(tree, "run", "--op", "scale", "--dtype", "fp32", "--out", str(out))
    assert done.returncode == 0, done.stderr
    cases = json.loads(out.read_text())["cases"]
    assert {(c["impl"], c["status"]) for c in cases} == {("triton", "ok"), ("torch", "ok")}


def test_a_model_step_runs_it(tree: Path) -> None:
    """The model suite measures it, the estimate times it (the op-time model, named in the
    notes) and `step` shows it in the layer."""
    lengths = ("--precision", "fp32", "--isl", "32", "--osl", "16")
    suite = tokbench(tree, "run", "--model", "tiny", *lengths, "--batch", "1", "--dry-run")
    assert suite.returncode == 0, suite.stderr
    assert re.search(r"scale\W+\d+×256", suite.stdout)
    estimate = tokbench(tree, "estimate", "--model", "tiny", "--gpu", "h100-sxm", *lengths,
                        "--json")  # fmt: skip
    assert estimate.returncode == 0, estimate.stderr
    assert any("scale" in note.split(":")[0] for note in json.loads(estimate.stdout)["notes"])
    step = tokbench(tree, "step", "--model", "tiny", "--gpu", "h100-sxm", "--json")
    assert step.returncode == 0, step.stderr
    assert "scale" in {op["role"] for op in json.loads(step.stdout)["ops"]}
