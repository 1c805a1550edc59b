"""tokbench: benchmark Triton kernels against PyTorch baselines and turn the times into tokens/s.

Importing the package imports nothing heavy: torch and Triton are imported by the commands that
measure, when they measure.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokbench")
except PackageNotFoundError:  # running from a checkout with PYTHONPATH=.
    __version__ = "0.1.0+checkout"


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with status 2."""
