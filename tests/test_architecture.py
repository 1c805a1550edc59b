"""The layers import only downward, and the commands that do not measure start without torch or
Triton: they run here with both made unimportable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from resultdocs import case, doc, estimate, write

ROOT = Path(__file__).parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "schema1-cpu.json"
TINY = ("--precision", "fp32", "--isl", "32", "--osl", "16")

# Bottom to top; each module may import modules of its own layer and the layers below.
LAYERS = {
    "record": {"bench", "bench.schema", "bench.results", "bench.hardware", "bench.units"},
    "measure": {
        "bench.ops",
        "bench.device",
        "bench.timing",
        "bench.runner",
        "bench.ceilings",
        "bench.suites",
        "bench.distributed",
        "kernels",
    },
    "plan": {
        "bench.models",
        "bench.lookup",
        "bench.efficiency",
        "bench.simulate",
        "bench.validate",
        "bench.throughput",
        "bench.capacity",
        "bench.compare",
        "bench.layer",
    },
    "present": {"bench.cli", "bench.__main__", "bench.tables", "bench.plots", "bench.export"},
}
ORDER = list(LAYERS)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """The layer of a module: its own entry, else its package's (bench.ops.matmul: bench.ops);
    a module no layer lists is an error: a new module takes its place in LAYERS."""
    listed = set().union(*LAYERS.values())
    name = module
    while name not in listed:
        name = name.rpartition(".")[0]
        assert name not in ("", "bench"), f"{module} is in no layer: add it to LAYERS"
    return next(layer for layer, modules in LAYERS.items() if name in modules)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in a file; `from bench import x`
    counts as bench.x when x is a module."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: a relative import; the layer check reads absolute ones"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.append((name if _is_module(name) else node.module, id(node) in top))
    return found


def _is_module(name: str) -> bool:
    """Whether a dotted name is one of this project's modules (not a name a module defines)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module(p))
def test_every_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    mine = ORDER.index(_layer(_module(path)))
    for name, _ in _imports(path):
        if name.split(".")[0] in ("bench", "kernels"):
            theirs = _layer(name)
            assert ORDER.index(theirs) <= mine, f"{_module(path)} ({ORDER[mine]}) imports {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module(p))
def test_the_record_layer_and_the_kernels_package_need_no_torch(path: Path) -> None:
    module = _module(path)
    if _layer(module) != "record" and module != "kernels":
        return
    heavy = {n for n, top in _imports(path) if top and n.split(".")[0] in ("torch", "triton")}
    assert not heavy, f"{module} imports {heavy}"


BLOCKER = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "triton"):
            raise ImportError(f"{name} is not installed (test)")

sys.meta_path.insert(0, NotInstalled())
sys.argv = ["tokbench", *sys.argv[1:]]
from bench.cli import main

main()
"""


def _without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=120,
        check=False,
    )


def test_commands_that_do_not_measure_run_without_torch_or_triton(tmp_path: Path) -> None:
    files = [
        write(tmp_path, name, doc(case(4096, 4096, 4096, ms), estimates=(est,)))
        for name, ms, est in (
            ("a.json", 1.0, estimate("H100 SXM", "h100-sxm", 7000.0)),
            ("b.json", 1.1, estimate("H100 SXM", "h100-sxm", 6500.0)),
        )
    ]
    a, b = map(str, files)
    runs = [
        ("--help",),
        ("models",),
        ("ops",),
        ("compare", a, b, "--fail-on", "slower:50%", "--project", "b200"),
        ("export", a, "--out", str(tmp_path / "a.pb.json")),
        ("plot", a, b, "--out", str(tmp_path / "plots")),
        ("capacity", "--model", "llama-3.1-8b", "--gpus", "8", "--tokens-per-gpu", "2000"),
        ("capacity", "--model", "tiny", "--gpus", "8", *TINY, "--results", str(FIXTURE)),
        ("estimate", "--model", "tiny", *TINY, "--results", str(FIXTURE), "--no-save"),
    ]
    for args in runs:
        done = _without_torch(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert "not installed (test)" not in done.stdout + done.stderr


def test_a_command_that_measures_says_what_is_missing(tmp_path: Path) -> None:
    done = _without_torch("run", "--shape", "M=8,N=8,K=8", cwd=tmp_path)
    assert done.returncode != 0 and "torch is not installed (test)" in done.stderr


def test_importing_the_packages_changes_nothing() -> None:
    code = (
        "import os, sys, kernels, bench.ops, bench.cli; "
        "assert 'TRITON_INTERPRET' not in os.environ, 'kernels chose the interpreter on import'; "
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
