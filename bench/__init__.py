"""tokbench: benchmark Triton kernels against PyTorch baselines and turn the times into tokens/s."""

from importlib.metadata import PackageNotFoundError, version

# First, before anything imports triton (torch.nn.attention.bias does, through torch._dynamo):
# without a GPU, `kernels` switches Triton to its interpreter, which must happen before
# triton is imported.
import kernels  # noqa: F401

try:
    __version__ = version("tokbench")
except PackageNotFoundError:  # running from a checkout with PYTHONPATH=.
    __version__ = "0.1.0+checkout"


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""
