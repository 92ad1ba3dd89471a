"""`Alpaca2k` where LitGPT has it (`litgpt.data.alpaca_2k`); the class lives in `litgpt.data.alpaca`."""

from litgpt.data.alpaca import Alpaca2k

__all__ = ["Alpaca2k"]
