"""`TextFiles` where LitGPT has it (`litgpt.data.text_files`); the class lives in `litgpt.data.text`."""

from litgpt.data.text import TextFiles

__all__ = ["TextFiles"]
