"""Running the `tokbench` console script from tests.

Where the script is not installed (the GPU machine runs the checkout with PYTHONPATH=.), the
same entry point runs as `python -m bench`. One thread per process keeps CPU timings steady
while tests run side by side.
"""

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).parent / "tokbench"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bench"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tokbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run tokbench to completion and return its exit status and output."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=ENV,
        check=False,
    )


def start(*args: str) -> subprocess.Popen:
    """Start tokbench in the background, for tests that run several at once."""
    return subprocess.Popen(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def invoke(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run the console script's entry point in this process, for commands that do not measure
    (no torch import to wait for): its exit status and output, as the script gives them."""
    from bench.__main__ import main

    argv, sys.argv = sys.argv, ["tokbench", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)
