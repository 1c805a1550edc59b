"""Shared test set-up: Triton's interpreter chosen first, and GPU-only tests skipped cleanly on
machines without CUDA."""

import pytest
import torch

import kernels

# Before any test module imports Triton (directly, or through torch or a kernel module).
kernels.use_interpreter_without_gpu()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> torch.device:
    """The device kernels are tested on: the GPU when there is one, else the CPU interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
