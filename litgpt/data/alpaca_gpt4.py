"""`AlpacaGPT4` where LitGPT has it (`litgpt.data.alpaca_gpt4`); the class lives in `litgpt.data.alpaca`."""

from litgpt.data.alpaca import AlpacaGPT4

__all__ = ["AlpacaGPT4"]
