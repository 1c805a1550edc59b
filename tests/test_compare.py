"""`tokbench compare`: matching, the noise-aware gate, projections, estimates and errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from console import start
from resultdocs import CPU, case, doc, estimate, timing, write
from rich.console import Console

from bench import BenchError
from bench.compare import (
    Verdict,
    compare,
    parse_fail_on,
    parse_prices,
    project_cell,
    projection_factor,
    tables,
    verdict,
)
from bench.hardware import SPECS

BIG = (4096, 4096, 4096)  # compute-bound on an H100 (intensity 1365 FLOP/byte)


def text(comparison) -> str:
    console = Console(record=True, width=250)
    console.print(*tables(comparison))
    return console.export_text()


def two_files(tmp_path: Path, new_ms: float, new_spread: float = 0.02) -> list[Path]:
    """A baseline at 1.0 ms ± 1% and a second run of the same case at new_ms."""
    return [
        write(tmp_path, "a.json", doc(case(*BIG, 1.0))),
        write(tmp_path, "b.json", doc(case(*BIG, new_ms, spread=new_spread))),
    ]


# --- the verdict and the gate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_ms", "new_spread", "threshold", "expected"),
    [
        (1.10, 0.02, 0.05, Verdict.REGRESSION),  # 10% slower, intervals apart
        (0.90, 0.02, 0.05, Verdict.IMPROVEMENT),
        (1.10, 0.30, 0.05, Verdict.SAME),  # 10% slower but inside the new run's spread
        (1.03, 0.02, 0.05, Verdict.SLOWER),  # beyond noise, under the threshold
        (1.10, 0.02, None, Verdict.SLOWER),  # no gate: never called a regression
        (0.90, 0.02, None, Verdict.FASTER),
    ],
)
def test_verdict(new_ms: float, new_spread: float, threshold, expected: Verdict) -> None:
    assert verdict(timing(1.0), timing(new_ms, new_spread), threshold) is expected


def test_verdict_is_symmetric_in_ratio() -> None:
    # 1/1.06 is 6% faster as a ratio, so it counts as an improvement at 5%; 1/1.04 does not.
    assert verdict(timing(1.0), timing(1 / 1.06), 0.05) is Verdict.IMPROVEMENT
    assert verdict(timing(1.0), timing(1 / 1.04), 0.05) is Verdict.FASTER


GATE_CASES = {  # name: (new median ms, new spread, exit code, word in the table)
    "regression": (1.10, 0.02, 1, "regression"),
    "improvement": (0.90, 0.02, 0, "improvement"),
    "noise": (1.10, 0.30, 0, "same (within noise)"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every console-script run of this module, started at once: each one pays for importing
    torch, so running them side by side keeps the module fast."""
    commands = {}
    for name, (new_ms, new_spread, _, _) in GATE_CASES.items():
        files = two_files(tmp_path_factory.mktemp(name), new_ms, new_spread)
        commands[name] = ["compare", *map(str, files), "--fail-on", "slower:5%"]
    malformed = tmp_path_factory.mktemp("malformed")
    bad = malformed / "truncated.json"
    good = two_files(malformed, 1.0)[0]
    bad.write_text('{"format": "tokbench.results", "schema_')
    commands["malformed"] = ["compare", str(good), str(bad)]
    procs = {name: start(*args) for name, args in commands.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    return done


@pytest.mark.parametrize("name", GATE_CASES)
def test_gate_exit_codes_through_the_console_script(cli_runs, name: str) -> None:
    _, _, code, word = GATE_CASES[name]
    done = cli_runs[name]
    assert done.returncode == code, done.stdout + done.stderr
    assert word in done.stdout
    if code:
        assert "regression: matmul 4096×4096×4096 bf16 torch: B is 10.0% slower than A" in (
            done.stdout
        )
    else:
        assert "gate slower:5%: passed (1 comparisons)" in done.stdout


@pytest.mark.parametrize(
    ("new_ms", "new_spread", "failures"), [(1.10, 0.02, 1), (0.90, 0.02, 0), (1.10, 0.30, 0)]
)
def test_gate_directly(tmp_path: Path, new_ms: float, new_spread: float, failures: int) -> None:
    comparison = compare(two_files(tmp_path, new_ms, new_spread), threshold=0.05)
    assert len(comparison.regressions()) == failures
    assert comparison.judged() == 1


def test_interpreted_cases_are_shown_but_never_gated(tmp_path: Path) -> None:
    a = doc(case(64, 64, 64, 40.0, impl="triton", interpreted=True), case(*BIG, 1.0))
    b = doc(case(64, 64, 64, 400.0, impl="triton", interpreted=True), case(*BIG, 1.0))
    comparison = compare(
        [write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)], threshold=0.05
    )
    assert comparison.regressions() == []
    interp = next(r for r in comparison.rows if r.case.impl == "triton")
    assert interp.verdicts == [None, None] and interp.speedups == [None, None]
    assert "400 ms interp." in text(comparison)


def test_parse_fail_on() -> None:
    assert parse_fail_on("slower:5%") == pytest.approx(0.05)
    assert parse_fail_on("slower:2.5") == pytest.approx(0.025)
    with pytest.raises(BenchError, match="expected slower:PERCENT"):
        parse_fail_on("faster:5%")


# --- matching ------------------------------------------------------------------------------------


def test_matching_with_missing_and_extra_cases(tmp_path: Path) -> None:
    a = doc(case(*BIG, 1.0), case(1024, 1024, 1024, 0.1), case(256, 256, 256, 0.02))
    b = doc(case(*BIG, 0.5), case(1024, 1024, 1024, 0.2), case(512, 512, 512, 0.05))
    comparison = compare([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    assert len(comparison.rows) == 4
    by_m = {r.case.shape["M"]: r for r in comparison.rows}
    assert by_m[4096].speedups == [1.0, 2.0]
    assert by_m[1024].speedups == [1.0, 0.5]
    assert by_m[256].cells[1] is None and by_m[512].cells[0] is None
    assert {r.case.shape["M"] for r in comparison.partial()} == {256, 512}
    # Geometric mean over the two cases timed in both: sqrt(2 × 0.5) = 1.
    assert comparison.geomeans()["matmul"][1] == (pytest.approx(1.0), 2)
    out = text(comparison)
    assert "cases present in only some files" in out
    assert "256×256×256" in out and "512×512×512" in out


def test_cases_match_on_dtype_and_impl(tmp_path: Path) -> None:
    a = doc(case(*BIG, 1.0, dtype="bf16"), case(*BIG, 1.0, impl="triton"))
    b = doc(case(*BIG, 1.0, dtype="fp16"), case(*BIG, 2.0, impl="triton"))
    comparison = compare([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    assert len(comparison.rows) == 3
    triton = next(r for r in comparison.rows if r.case.impl == "triton")
    assert triton.speedups[1] == pytest.approx(0.5)


def test_three_files_each_compared_with_the_first(tmp_path: Path) -> None:
    files = [
        write(tmp_path, f"{n}.json", doc(case(*BIG, ms)))
        for n, ms in zip("abc", (1, 2, 4), strict=True)
    ]
    (row,) = compare(files).rows
    assert row.speedups == [1.0, 0.5, 0.25]


# --- projections ---------------------------------------------------------------------------------


def test_projection_of_a_compute_bound_case() -> None:
    # 4096³ bf16: 2·4096³ FLOP over 3·4096²·2 bytes = 1365 FLOP/byte, above the H100 ridge of
    # 989.4e12 / 3350e9 = 295.3, so it scales by the dense bf16 peaks: 989.4 / 2250 = 0.43973.
    cell = project_cell(case(*BIG, 1.0), SPECS["h100-sxm"], SPECS["b200"])
    assert cell.bound == "compute"
    assert cell.median_ms == pytest.approx(0.439733, rel=1e-5)
    assert cell.tflops == pytest.approx(2 * 4096**3 / 0.439733e-3 / 1e12, rel=1e-5)
    # The same fraction of peak on both GPUs: 137.4 TFLOP/s of 989.4 = 13.9%.
    assert cell.peak_fraction == pytest.approx(0.138911, rel=1e-4)


def test_projection_of_a_memory_bound_case() -> None:
    # 1×4096×4096 bf16 (a decode GEMV): about 1 FLOP/byte, so bandwidth: 3350 / 8000 = 0.41875.
    cell = project_cell(case(1, 4096, 4096, 0.05), SPECS["h100-sxm"], SPECS["b200"])
    assert cell.bound == "memory"
    assert cell.median_ms == pytest.approx(0.05 * 0.41875)


def test_projection_switches_bound_at_the_ridge_point() -> None:
    # A cube n³ in bf16 has n/3 FLOP/byte; the H100 bf16 ridge is 295.34, between n=886 and 887.
    h100, h200 = SPECS["h100-sxm"], SPECS["h200"]
    assert projection_factor(case(886, 886, 886, 1.0), h100, h200) == (
        pytest.approx(3350 / 4800),
        "memory",
    )
    assert projection_factor(case(887, 887, 887, 1.0), h100, h200) == (1.0, "compute")


def test_projection_skips_a_dtype_the_target_lacks(tmp_path: Path) -> None:
    fp8 = case(*BIG, 1.0, dtype="fp8")  # Ampere has no fp8 peak, in either direction
    assert projection_factor(fp8, SPECS["h100-sxm"], SPECS["a100-sxm"]) is None
    assert projection_factor(fp8, SPECS["a100-sxm"], SPECS["h100-sxm"]) is None
    path = write(tmp_path, "a.json", doc(case(*BIG, 1.0), case(*BIG, 0.6, dtype="fp8")))
    comparison = compare([path], project=["a100-sxm"])
    projected = comparison.columns[1]
    assert projected.projected_from == "A" and len(projected.cells) == 1
    assert any("1 comparable cases of A not projected" in n for n in comparison.notes)


def test_projected_column_is_labelled_and_not_gated(tmp_path: Path) -> None:
    files = two_files(tmp_path, 1.0)
    comparison = compare(files, threshold=0.05, project=["b200"])
    row = comparison.rows[0]
    assert row.verdicts[2] is None
    assert row.speedups[2] == pytest.approx(2250 / 989.4)
    out = text(comparison)
    assert "C time (proj.)" in out
    assert "B200: PROJECTION from A through the spec table" in out
    assert "2.27× compute-bound" in out


# --- estimates -----------------------------------------------------------------------------------


def test_estimates_side_by_side_per_watt_and_per_dollar(tmp_path: Path) -> None:
    a = doc(case(*BIG, 1.0), estimates=(estimate("H100 SXM", "h100-sxm", 7000.0),))
    b = doc(
        case(*BIG, 1.0),
        estimates=(estimate("B200", "b200", 16000.0, projected=True),),
    )
    comparison = compare(
        [write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)],
        prices=parse_prices(["h100-sxm=2.5"]),
    )
    out = text(comparison)
    assert "per-model estimates" in out
    # 7000 tok/s / 700 W = 10 tok/s per W; 7000 × 3600 / $2.5 = 10.1 M tokens per dollar.
    (h100_line,) = [line for line in out.splitlines() if "H100 SXM" in line and "llama" in line]
    assert "10 " in h100_line and "10.1" in h100_line and "7,000" in h100_line
    (b200_line,) = [line for line in out.splitlines() if "B200 (projection)" in line]
    # 16000 / 1000 W = 16; 16000 / 7000 = 2.29× the first file's decode.
    assert "2.29×" in b200_line and "16 " in b200_line


def test_parse_prices_rejects_bad_input() -> None:
    assert parse_prices(["B200=4.5"]) == {"b200": 4.5}
    with pytest.raises(BenchError, match="unknown GPU 'z100'"):
        parse_prices(["z100=1"])
    with pytest.raises(BenchError, match="expected GPU=USD per GPU-hour"):
        parse_prices(["b200=free"])


# --- errors --------------------------------------------------------------------------------------


def test_malformed_file_is_one_clear_line_and_exit_2(cli_runs) -> None:
    done = cli_runs["malformed"]
    bad = done.args[-1]
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: not valid JSON (Unterminated string starting at at line 1); "
        "the file may be truncated"
    ]


@pytest.mark.parametrize(
    ("docs", "kwargs", "message"),
    [
        ([doc(case(*BIG, 1.0))], {}, "needs at least two result files"),
        (
            [doc(case(*BIG, 1.0)), doc(case(1, 2, 3, 1.0))],
            {},
            "b.json shares no case (op, implementation, shape, dtype) with",
        ),
        ([doc(case(*BIG, 1.0))], {"project": ["z100"]}, "unknown GPU 'z100'"),
        (
            [doc(case(*BIG, 1.0, spec=None), device=CPU, spec=None)],
            {"project": ["b200"]},
            "cannot project to B200: no file was measured on a GPU in the spec table",
        ),
        (
            [doc(case(8, 8, 8, 1.0, interpreted=True))] * 2,
            {"threshold": 0.05},
            "nothing to gate",
        ),
    ],
)
def test_mismatched_inputs_are_clear_errors(tmp_path: Path, docs, kwargs, message: str) -> None:
    paths = [write(tmp_path, f"{n}.json", d) for n, d in zip("abc", docs, strict=False)]
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare(paths, **kwargs)


def test_a_file_that_is_not_a_result_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"benchmarks": []}')
    with pytest.raises(BenchError, match=r"other.json: not a tokbench result file"):
        compare([write(tmp_path, "a.json", doc(case(*BIG, 1.0))), other])


def test_large_slowdowns_read_as_a_factor(tmp_path: Path) -> None:
    comparison = compare(two_files(tmp_path, 20.0), threshold=0.05)
    assert comparison.regressions() == [
        "matmul 4096×4096×4096 bf16 torch: B is 20.0× slower than A"
    ]
