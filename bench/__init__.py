"""tokbench: benchmark Triton kernels against PyTorch baselines and turn the times into tokens/s.

Importing the package imports nothing heavy: torch and Triton are imported by the commands that
measure, when they measure.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokbench")
except PackageNotFoundError:  # running from a checkout with PYTHONPATH=.
    __version__ = "0.1.0+checkout"


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ in integers (pages a sequence needs, a shard of a vocabulary)."""
    return -(-a // b)


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with status 2."""


def check_range(
    name: str,
    value: float,
    low: float = 0.0,
    high: float = float("inf"),
    *,
    closed: str = "",
    what: str = "",
) -> None:
    """Raise a BenchError naming `name` unless value is a finite number in the range from low to
    high, whose ends are open unless `closed` holds "low" and/or "high" (NaN and infinities are
    never in range)."""
    above = value >= low if "low" in closed else value > low
    below = value <= high if "high" in closed else value < high
    if value == value and abs(value) != float("inf") and above and below:
        return
    if high == float("inf"):
        rule = f"at least {low:g}" if "low" in closed else "positive" if low == 0 else f"> {low:g}"
    else:
        left, right = "[" if "low" in closed else "(", "]" if "high" in closed else ")"
        rule = f"in {left}{low:g}, {high:g}{right}"
    raise BenchError(f"{name}{what} must be {rule}, got {value:g}")
