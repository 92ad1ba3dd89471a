"""Shared test set-up."""

import os

# Triton kernels (extensions/triton) run on the CPU through Triton's interpreter in CI. The variable must be
# set before anything imports triton (lightning does), so it is set here, before any test module loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
