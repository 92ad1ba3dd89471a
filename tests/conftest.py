"""Shared test set-up."""

import os

# Triton kernels (extensions/triton) run on the CPU through Triton's interpreter in CI. The variable must be
# set before anything imports triton (lightning does), so it is set here, before any test module loads.
os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA GPU; without one they are skipped (the only reason a test may skip)."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason="no GPU"))
