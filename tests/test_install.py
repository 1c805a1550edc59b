"""tokbench installs the normal way: the wheel holds every module and every data file a command
reads, and the light install (the `plan` dependency group and the wheel, without torch or
Triton) runs the planning commands from outside the checkout.

The wheel is built once, from a copy of the checkout's sources, and installed into a fresh
venv in pytest's temporary folder; pip fetches the light dependencies from its index (PyPI, or
its cache).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.measure.ops import OPS

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What only measuring needs (numpy: bench/measure's timing statistics and device record).
MEASURING = {"torch", "triton", "nvidia-ml-py", "numpy"}


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower()


def test_the_light_install_is_the_dependencies_without_measuring() -> None:
    dependencies = PYPROJECT["project"]["dependencies"]
    light = PYPROJECT["dependency-groups"]["plan"]
    assert set(light) <= set(dependencies)
    assert {_name(r) for r in dependencies} - {_name(r) for r in light} == MEASURING


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of what the package is made of (a build in the checkout
    would leave build/ and egg-info there)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for package in ("bench", "kernels"):
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, source / package, ignore=skip)
    out = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source))
    return next(out.glob("tokbench-*.whl"))


@pytest.fixture(scope="module")
def light(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the light install; its bin folder."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    group = f"{ROOT / 'pyproject.toml'}:plan"
    _pip("--python", python, "install", "--quiet", "--group", group)
    _pip("--python", python, "install", "--quiet", "--no-deps", str(wheel))
    return venv / "bin"


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    held = set(zipfile.ZipFile(wheel).namelist())
    sources = [p for folder in ("bench", "kernels") for p in (ROOT / folder).rglob("*.py")]
    missing = [str(p.relative_to(ROOT)) for p in sources if str(p.relative_to(ROOT)) not in held]
    assert missing == []
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            for path in folder.glob(pattern):
                assert str(path.relative_to(ROOT)) in held


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_the_light_install_plans_outside_the_checkout(light: Path, tmp_path: Path) -> None:
    def ok(*args: str) -> str:
        done = _run(light, tmp_path, *args)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        return done.stdout

    [site] = light.parent.glob("lib/python*/site-packages")
    assert not [p for kind in ("torch*", "triton*", "numpy*") for p in site.glob(kind)]
    assert ok("tokbench", "--version").strip() == f"tokbench {PYPROJECT['project']['version']}"
    assert all(f" {op} " in ok("tokbench", "ops") for op in OPS)
    assert "Llama-3.1-8B" in ok("tokbench", "models")
    estimate = ok("tokbench", "estimate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--json")
    (tmp_path / "estimate.json").write_text(estimate)
    assert json.loads(estimate)["decode_tokens_per_s"] > 0
    sim = ("simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--workload", "lognormal")
    simulated = ok("tokbench", *sim, "--rate", "4", "--requests", "200", "--json")
    assert json.loads(simulated)["output_tokens_s_per_gpu"] > 0  # the simulator, without numpy
    ok("tokbench", "report", "estimate.json", "--out", "report.html")
    assert "vegaEmbed" in (tmp_path / "report.html").read_text()
    with open(site / "bench" / "plan" / "published.csv") as f:  # validate's figures, shipped
        header, first = list(csv.reader(f))[:2]
    with open(tmp_path / "one.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, first])
    assert "est/pub" in ok("tokbench", "validate", "one.csv")


def test_the_light_install_says_what_measuring_needs(light: Path, tmp_path: Path) -> None:
    done = _run(light, tmp_path, "tokbench", "run", "--shape", "M=8,N=8,K=8")
    assert done.returncode == 2
    assert done.stderr.startswith("error: torch is not installed: this command measures")
    assert len(done.stderr.strip().splitlines()) == 1
