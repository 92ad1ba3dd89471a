"""Optional accelerated kernels for litgpt (see extensions/README.md). Nothing here is imported by litgpt's core."""
