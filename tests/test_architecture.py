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

# Bottom to top: each layer is a folder of bench/ (the package's own __init__, BenchError, is
# record; kernels/ measures). A module may import its own layer and the layers below.
ORDER = ["record", "measure", "plan", "present"]
FOLDERS = {"bench": "record", "kernels": "measure", "bench.__main__": "present"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """The layer of a module: the folder of bench/ it lies in; a module of bench/ outside the
    layer folders is an error (the tree is the architecture)."""
    parts = module.split(".")
    if parts[0] == "bench" and len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    for name in (module, parts[0]):
        if name in FOLDERS and (name != "bench" or len(parts) == 1):
            return FOLDERS[name]
    raise AssertionError(f"{module} lies outside the layer folders bench/{{{','.join(ORDER)}}}/")


def test_the_tree_is_the_architecture() -> None:
    """bench/ holds the four layer folders, the package's __init__ and __main__, nothing else."""
    top = {p.name for p in (ROOT / "bench").iterdir() if p.name != "__pycache__"}
    assert top - {"__init__.py", "__main__.py", "gpu_check.sh"} == set(ORDER)


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
from bench.present.cli import main

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
        ("report", a, b, "--project", "b200", "--out", str(tmp_path / "report.html")),
        ("compare", a, b, "--format", "markdown"),
        ("--version",),
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
        "import os, sys, kernels, bench.measure.ops, bench.present.cli; "
        "assert 'TRITON_INTERPRET' not in os.environ, 'kernels chose the interpreter on import'; "
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


# The present layer is thin: a command parses its options, calls one function below and prints.
PRESENT_FUNCTION_LINES = 60


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if _layer(_module(p)) == "present"],
    ids=lambda p: _module(p),
)
def test_no_function_of_the_present_layer_is_long(path: Path) -> None:
    """From its `def` line to its last line, nested functions and methods included."""
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > PRESENT_FUNCTION_LINES
    ]
    assert long == [], f"{_module(path)}: longer than {PRESENT_FUNCTION_LINES} lines: {long}"


def _op_references(path: Path, names: set[str]) -> list[str]:
    """Where a module singles out an op by name: comparing a use's or case's `.op` (or an `op`
    variable) with a literal, or looking one up (get_op("…"), OPS["…"])."""

    def literals(node: ast.AST) -> set[str]:
        items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
        return {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}

    def is_op(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "op") or (
            isinstance(node, ast.Name) and node.id in ("op", "op_name")
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(is_op(s) for s in sides):
                found += [
                    f"{path.name}:{node.lineno} compares with {n}"
                    for s in sides
                    for n in literals(s)
                ]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "get_op"
        ):
            found += [
                f"{path.name}:{node.lineno} get_op({n})" for a in node.args for n in literals(a)
            ]
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "OPS":
            found += [f"{path.name}:{node.lineno} OPS[{n}]" for n in literals(node.slice)]
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if _layer(_module(p)) in ("plan", "present") or p.stem == "decoder_check"],
    ids=lambda p: _module(p),
)
def test_planning_presenting_and_the_layer_check_name_no_op(path: Path) -> None:
    """They read the op contract (parts, efficiency classes, step uses, roles) and never single
    out an op, so that adding an op or putting one into a model step changes only its module."""
    from bench.measure.ops import OPS

    assert _op_references(path, set(OPS)) == []


def test_the_name_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'a = [u for u in uses if u.op == "decode"]\nb = get_op("matmul")\n'
        'c = op in ("rotary", "x")\nd = OPS["moe"]\ne = part(u) == "attention"\n'
    )
    names = {"decode", "matmul", "rotary", "moe"}
    assert len(_op_references(sample, names)) == 4
