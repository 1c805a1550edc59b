"""Every command that reads a result file, against generated and mutated files: it succeeds, or
exits 1 (a failed gate) or 2 with one line; it never ends in a traceback."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from console import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from resultdocs import case, doc, estimate

FIXTURE = Path(__file__).parent / "fixtures" / "schema1-cpu.json"
BASES = {
    "h100": json.dumps(
        dataclasses.asdict(
            doc(
                case(4096, 4096, 4096, 1.0),
                case(1, 4096, 4096, 0.05, impl="triton"),
                case(8, 8, 8, None, status="failed"),
                estimates=(estimate("H100 SXM", "h100-sxm", 7000.0),),
            )
        )
    ),
    "cpu fixture": FIXTURE.read_text(),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value, path=()):
    """Every place in a JSON tree, as a path of keys and indexes."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*path, i))


@st.composite
def mutated(draw) -> bytes:
    """A result file with one damage: a value replaced, a key removed, or the text cut."""
    text = BASES[draw(st.sampled_from(sorted(BASES)))]
    kind = draw(st.sampled_from(["replace", "remove", "truncate", "bytes"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))].encode()
    if kind == "bytes":
        at = draw(st.integers(0, len(text) - 1))
        return text.encode()[:at] + draw(st.binary(min_size=1, max_size=4)) + text.encode()[at:]
    data = json.loads(text)
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if kind == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(data).encode()


TINY = ("--model", "tiny", "--precision", "fp32", "--isl", "32", "--osl", "16")
COMMANDS = {
    "compare": lambda f, g: ["compare", str(g), str(f), "--fail-on", "slower:5%"],
    "export": lambda f, g: ["export", str(f), "--out", str(f.with_suffix(".pb.json"))],
    "estimate": lambda f, g: ["estimate", *TINY, "--results", str(f), "--no-save"],
    "capacity": lambda f, g: ["capacity", *TINY, "--gpus", "8", "--results", str(f)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=mutated())
def test_commands_on_damaged_files(command: str, content: bytes, tmp_path: Path, capsys) -> None:
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(content)
    good = tmp_path / "good.json"
    good.write_text(BASES["h100"])
    done = invoke(capsys, *COMMANDS[command](damaged, good))
    assert done.returncode in (0, 1, 2), done
    if done.returncode == 2:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=mutated())
def test_plot_on_damaged_files(content: bytes, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(content)
    done = invoke(capsys, "plot", str(damaged), "--out", str(tmp_path / "plots"))
    assert done.returncode in (0, 2), done
    if done.returncode == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
