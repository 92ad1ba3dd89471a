"""litgpt: pretrain, finetune, evaluate and serve LLMs. Public names: GPT, Config, LLM, PromptStyle, Tokenizer."""

from litgpt.config import Config
from litgpt.model import GPT

__all__ = ["GPT", "Config", "LLM", "PromptStyle", "Tokenizer"]


def __getattr__(name):  # lazy imports keep `import litgpt` light
    if name == "Tokenizer":
        from litgpt.tokenizer import Tokenizer

        return Tokenizer
    if name == "LLM":
        from litgpt.api import LLM

        return LLM
    if name == "PromptStyle":
        from litgpt.prompts import PromptStyle

        return PromptStyle
    raise AttributeError(f"module 'litgpt' has no attribute {name!r}")
