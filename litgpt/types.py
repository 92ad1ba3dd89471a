"""Type aliases shared across the package (LitGPT has a `litgpt.types` module; it is a place for these).

Layer 0: imports nothing from the project.
"""

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]
"""A file system path given as a string or a Path."""
