"""`tokbench validate`: published rows against the estimator, and bad files named line by line."""

import json
from pathlib import Path

import pytest
from console import tokbench

from bench import BenchError
from bench.plan.validate import COLUMNS, Check, Row, geometric_mean, kv_for, read_published, worst

HEADER = ",".join(COLUMNS)
ROWS = [
    "Llama-3.1-8B,h100-sxm,fp8,fp8,1,512,128,throughput,10000,https://example.org/a",
    "Llama-3.1-405B,h100-sxm,fp8,fp8,1,512,128,throughput,100,https://example.org/b",
    "Llama-3.1-8B,h100-sxm,fp8,unknown,1,256,32,server,8000,https://example.org/c",
]


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "published.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def row(published: float, line: int = 2) -> Row:
    return Row(line, "m", "h100-sxm", "fp8", "fp8", 1, 1, 1, "throughput", published, "s")


def test_geometric_mean_and_the_furthest_rows() -> None:
    checks = [Check(row(100), 200.0), Check(row(100), 50.0), Check(row(100), 100.0),
              Check(row(100), None, "did not fit")]  # fmt: skip
    assert geometric_mean(checks) == pytest.approx(1.0)
    assert [c.ratio for c in worst(checks, 2)] == [2.0, 0.5]


def test_an_unstated_kv_cache_is_assumed_and_said() -> None:
    assert kv_for(row(1)) == ("fp8", "")
    unknown = Row(2, "m", "g", "fp16", "unknown", 1, 1, 1, "offline", 1.0, "s")
    assert kv_for(unknown) == ("auto", "KV cache not stated: as the activations assumed")


def test_validate_command(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + ",slo", *(r + "," for r in ROWS[:2]), ROWS[2] + ",ttft=2s")
    done = tokbench("validate", str(path), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    first, unfit, server = out["rows"]
    assert first["estimate"] > 0 and first["ratio"] == pytest.approx(first["estimate"] / 10000)
    assert unfit["estimate"] is None and "does not fit H100 SXM" in unfit["note"]
    assert server["estimate"] > 0 and server["note"].startswith("KV cache not stated")
    assert out["geometric_mean"] == pytest.approx((first["ratio"] * server["ratio"]) ** 0.5)
    table = tokbench("validate", str(path))
    assert "geometric mean of est/pub over 2 rows" in " ".join(table.stdout.split())


def test_a_file_no_row_of_which_can_be_estimated_fails(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, ROWS[1])
    done = tokbench("validate", str(path))
    assert done.returncode == 2 and "no row could be estimated" in done.stderr
    assert "does not fit H100 SXM" in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (("model,gpu",), r"missing column\(s\) precision, kv_precision"),
        (
            (HEADER, ROWS[0].replace(",1,512,", ",two,512,")),
            r"published\.csv:2: tp must be a number",
        ),
        ((HEADER, ROWS[0].replace("throughput", "peak")), r"published\.csv:2: scenario 'peak'"),
        ((HEADER, ROWS[0].replace(",10000,", ",-5,")), r"tokens_per_s_per_gpu must be positive"),
        ((HEADER,), r"published\.csv: no rows"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, lines: tuple, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        read_published(write(tmp_path, *lines))


def test_the_shipped_file_reads_and_every_row_has_its_source() -> None:
    rows = read_published(Path(__file__).parent.parent / "docs" / "published.csv")
    assert len(rows) >= 20
    assert all(r.source.startswith("https://") for r in rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"{HEADER}\n{ROWS[0]}\nLlama-3.1-8B,h100-sxm,fp8\n".encode(), r"csv:3: 3 field\(s\)"),
        (f"{HEADER}\n{ROWS[0]},extra\n".encode(), r"csv:2: 11 field\(s\) where the header has 10"),
        (
            f'{HEADER}\n{ROWS[0]}\n"Llama,h100\n'.encode(),
            r"csv:3: not CSV \(unexpected end of data",
        ),
        (
            f"{HEADER}\n{ROWS[0]}\n".encode("utf-16"),
            r"csv: UTF-16 text; save the published-results CSV as UTF-8 \(Excel",
        ),
        (f"{HEADER}\nx,".encode() + b"\x80\xff", r"csv: not UTF-8 text \(line 2, byte 83\)"),
        (f"{HEADER},model\n{ROWS[0]},x\n".encode(), r"csv: column\(s\) 'model' named twice"),
        (f"{HEADER}\n{ROWS[0].replace('10000', 'inf')}\n".encode(), r"must be positive and finite"),
    ],
)
def test_damaged_csv_files_are_one_line_naming_the_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Issue 25: short rows, open quotes, UTF-16 and binary bytes were tracebacks."""
    path = tmp_path / "published.csv"
    path.write_bytes(content)
    with pytest.raises(BenchError, match=message) as raised:
        read_published(path)
    assert "\n" not in str(raised.value)


def test_a_csv_with_excels_byte_order_mark_reads(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark, once read as a missing `model`."""
    path = tmp_path / "published.csv"
    path.write_bytes(f"\ufeff{HEADER}\r\n{ROWS[0]}\r\n".encode())
    assert [r.model for r in read_published(path)] == ["Llama-3.1-8B"]


def test_a_decode_pool_row_names_its_layout_and_is_estimated_from_decode_steps(
    tmp_path: Path,
) -> None:
    from bench.plan.planner import TimeSources
    from bench.plan.validate import check_row

    line = "DeepSeek-R1,gb200,fp8,auto,1x48,2000,100,decode,9087,https://x"
    path = write(tmp_path, ",".join(COLUMNS), line)
    (found,) = read_published(path)
    assert (found.tp, found.dp, found.ep, found.scenario) == (1, 48, 48, "decode")
    check = check_row(found, lambda setup, gpu: TimeSources(gpu=gpu).layer_model(setup))
    assert check.estimate is not None and check.note == ""
