"""Issue 25: every input a user gives (flags, traces, model configs) ends in a result or one
line and exit 2, never a traceback or a silent default."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from console import invoke

from bench import BenchError
from bench.plan.deal import read_ramp
from bench.plan.models import get_model
from bench.plan.workloads import read_trace

TINY = ("--model", "tiny", "--gpu", "h100-sxm")


def one_line(done, message: str) -> None:
    assert done.returncode == 2, (done.stdout[-300:], done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--out", ""), "'--out': '.' is a directory"),
        (("--seed", "99999999999999999999999"), "18446744073709551615"),
        (("--seed", "-1"), "'--seed'"),
        (("--model", "tiny", "--batch", "-4"), "'--batch'"),
        (("--model", "tiny", "--batch", "0"), "'--batch'"),
        (("--model", "tiny", "--batch", "99999999999999999999999"), "'--batch'"),
        (("--model", "tiny", "--isl", "0"), "'--isl'"),
        (("--max-time", "inf"), "--max-time must be in [0.001, 3600], got inf"),
        (("--max-time", "nan"), "--max-time must be in [0.001, 3600], got nan"),
        (("--noise", "nan"), "--noise must be at least 0.0001, got nan"),
        (("--rank-timeout", "0"), "--rank-timeout must be at least 0.1, got 0"),
        (("--precision", "fp4"), "--precision sets the model suite: give --model"),
        (("--tp", "2", "--isl", "64"), "--tp, --isl set the model suite: give --model"),
    ],
)
def test_bad_run_flags_are_refused_before_any_work(capsys, args: tuple, message: str) -> None:
    """Each once a traceback, or (--batch -4 with --dry-run) a −32×256 case listed."""
    one_line(invoke(capsys, "run", "--dry-run", "--op", "rmsnorm", *args), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("estimate", *TINY, "--isl", "0"), "'--isl'"),  # was the default, 1024, silently
        (("simulate", *TINY, "--requests", "99999999999999999999999"), "'--requests'"),
        (("simulate", *TINY, "--workload", "lognormal", "--sigma", "1e300"), "at most 5"),
        (("simulate", *TINY, "--workload", "lognormal", "--seed", "-4"), "'--seed'"),
        (("simulate", *TINY, "--concurrency", "10000000000"), "from 1 to 1,000,000"),
        (("capacity", *TINY, "--gpus", "8", "--slo", "ttft=2s", "--requests", "-4"), "'--reque"),
        (("step", *TINY, "--context", "99999999999999999999"), "exceed tiny's context"),
        (("step", *TINY, "--plot", "chart.xyz"), "a chart is a PNG"),  # was a ValueError
        (("step", *TINY, "--plot", ""), "a chart is a PNG"),  # wrote ./.png, said "wrote ."
        (("simulate", *TINY, "--concurrency", "1", "--plot", "/"), "a chart is a PNG"),
        (("run", "--dry-run", "--out", "a" * 300 + ".json"), "File name too long"),
        (("simulate", *TINY, "--workers", "0"), "'--workers'"),
        (("estimate", *TINY, "--router-skew", "99999999"), "'--router-skew'"),
        (("estimate", *TINY, "--redundant-experts", "-1"), "'--redundant-experts'"),
        (("simulate", *TINY, "--slo", ""), "bad --slo ''"),  # was taken as no --slo
        (("simulate", *TINY, "--spec", ""), "bad --spec ''"),
        (("capacity", *TINY, "--gpus", "8", "--slo", " "), "bad --slo ' '"),
    ],
)
def test_bad_planning_flags_are_one_line(capsys, args: tuple, message: str) -> None:
    one_line(invoke(capsys, *args), message)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_trace_reader(tmp_path: Path) -> None:
    """A byte-order mark is read past; nesting too deep and a boolean arrival are bad lines."""
    line = b'{"arrival": 0.5, "input": 10, "output": 5}\n'
    (request,) = read_trace(write(tmp_path, "bom.jsonl", codecs.BOM_UTF8 + line))
    assert (request.arrival, request.prompt, request.output) == (0.5, 10, 5)
    for content in (b"[" * 100_000, b'{"arrival": true, "input": 10, "output": 5}'):
        with pytest.raises(BenchError, match=r"t\.jsonl:1: expected a JSON object"):
            read_trace(write(tmp_path, "t.jsonl", content))


OWN = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 16,
       "intermediate": 128, "vocab": 100}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(128, 256)), r"not UTF-8 text \(line 1, byte 0\)"),
        (json.dumps(OWN).encode("utf-16"), "UTF-16 text"),
        (b"[" * 100_000, "nested too deeply"),
        (json.dumps({**OWN, "unmodelled": 5}).encode(), "'unmodelled' must be a list of strings"),
        (json.dumps({**OWN, "sinks": [1]}).encode(), "'sinks' must be true or false"),
        (json.dumps({**OWN, "sliding_window": []}).encode(), "'sliding_window' must be an int"),
    ],
)
def test_bad_model_configs_are_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(BenchError, match=message) as raised:
        get_model(str(write(tmp_path, "config.json", content)))
    assert "\n" not in str(raised.value)


def test_a_model_config_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.json", codecs.BOM_UTF8 + json.dumps(OWN).encode())
    assert get_model(str(path)).hidden == 64


def test_a_ramp_csv_with_excels_byte_order_mark_reads(tmp_path: Path) -> None:
    """capacity --ramp: the month column was missing behind the mark."""
    ramp = read_ramp(write(tmp_path, "ramp.csv", codecs.BOM_UTF8 + b"month,online\n0,0\n6,1\n"))
    assert ramp.points == ((0.0, 0.0), (6.0, 1.0))
