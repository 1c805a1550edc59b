"""Every command that reads a result file, against generated and mutated files: it succeeds, or
exits 1 (a failed gate) or 2 with one line; it never ends in a traceback."""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
from pathlib import Path

import pytest
from console import invoke
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from resultdocs import case, doc, estimate

from bench import BenchError
from bench.plan.models import get_model
from bench.plan.validate import read_published
from bench.plan.workloads import read_trace

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


def test_a_line_break_inside_a_damaged_file_stays_inside_the_one_line(
    tmp_path: Path, capsys
) -> None:
    """A JSON key holding a line break, quoted by the error, does not split it."""
    data = json.loads(BASES["h100"])
    data["cases"][0]["shape"]["M\nN\x85"] = None
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(data))
    done = invoke(capsys, *COMMANDS["export"](damaged, damaged))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "M\\nN\\x85" in done.stderr


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


# The fuzz tests of issue 25: a few examples each, the whole under a few seconds.
QUICK = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# The text files the planner reads, and the damage each may come with.
HF_CONFIG = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
    "max_position_embeddings": 4096,
}  # fmt: skip
CSV = Path(__file__).parent.parent / "docs" / "published.csv"
TEXTS = {
    "published.csv": "".join(CSV.read_text().splitlines(keepends=True)[:3]),
    "trace.jsonl": "".join(
        json.dumps({"arrival": i / 2, "input": 100 + i, "output": 10 + i}) + "\n" for i in range(3)
    ),
    "config.json": json.dumps(HF_CONFIG),
}
# Pieces that trouble CSV, JSON and their decoders.
PIECES = [*',"\n\r\x00 -.e[]{}:', "Infinity", "NaN", "1e400", "\ufeff", "\u2028", "999999999999"]


DAMAGE = ["insert", "truncate", "utf-16", "bom", "noise"]
blobs = st.binary(min_size=1, max_size=16) | st.lists(
    st.sampled_from(PIECES), min_size=1, max_size=6
).map(lambda pieces: "".join(pieces).encode())


def damage(text: str, kind: str, at: int, blob: bytes) -> bytes:
    """A text file damaged one way: `blob` inserted at `at`, cut at `at`, saved as UTF-16 or
    with a byte-order mark, or `blob` alone."""
    raw = text.encode()
    at %= len(raw) + 1
    if kind == "insert":
        return raw[:at] + blob + raw[at:]
    if kind == "truncate":
        return raw[:at]
    if kind in ("utf-16", "bom"):
        return text.encode("utf-16") if kind == "utf-16" else codecs.BOM_UTF8 + raw
    return blob


READERS = {
    "published.csv": read_published,
    "trace.jsonl": lambda path: read_trace(path, get_model("tiny")),
    "config.json": lambda path: get_model(str(path)),
}


@pytest.mark.parametrize("name", sorted(READERS))
@QUICK
@given(kind=st.sampled_from(DAMAGE), at=st.integers(0, 2**16), blob=blobs)
@example(kind="bom", at=0, blob=b"x")
@example(kind="utf-16", at=0, blob=b"x")
@example(kind="insert", at=0, blob=b"[" * 5000)
def test_readers_on_damaged_files(
    name: str, kind: str, at: int, blob: bytes, tmp_path: Path
) -> None:
    """Issue 25: the CSV, trace and config readers give a result or one line naming the file;
    a byte-order mark (Excel's "CSV UTF-8") changes nothing."""
    path = tmp_path / name
    path.write_bytes(damage(TEXTS[name], kind, at, blob))
    try:
        READERS[name](path)
    except BenchError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)
        assert kind != "bom", str(e)


sizes = st.integers(-(2**70), 2**70) | st.integers(-2, 64)


@QUICK
@given(tokens=sizes, batch=sizes, context=sizes)
@example(tokens=1, batch=1, context=2**70)
def test_step_flags(tokens: int, batch: int, context: int, capsys) -> None:
    """Any whole numbers for `step`'s sizes: a layer's times for a step the model can run (each
    sequence within its context), else one line."""
    args = ["--tokens", str(tokens), "--batch", str(batch), "--context", str(context)]
    done = invoke(capsys, "step", "--model", "tiny", "--gpu", "h100-sxm", *args)
    if done.returncode == 0:
        assert 1 <= batch <= tokens and context >= 0 and not tokens % batch
        assert context + tokens // batch <= get_model("tiny").max_context
    else:
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done


@QUICK
@given(flag=st.sampled_from(["--batch", "--tp", "--isl", "--osl", "--seed"]), value=sizes)
@example(flag="--batch", value=-4)
@example(flag="--seed", value=2**64)
def test_run_size_flags_out_of_range(flag: str, value: int, capsys) -> None:
    """run's whole-number flags outside what a run can take: one line before any work."""
    assume(not 1 <= value <= 2**20 if flag != "--seed" else not 0 <= value < 2**64)
    done = invoke(capsys, "run", "--dry-run", "--model", "tiny", flag, str(value))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done
