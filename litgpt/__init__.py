"""litgpt: pretrain, finetune, evaluate and serve LLMs. Public names: GPT, Config, LLM, PromptStyle, Tokenizer."""

import os

# OpenMP threads waiting for work sleep instead of spinning (unless you set OMP_WAIT_POLICY yourself). On a machine
# whose cores are shared with other processes, spinning threads take the cores their partners need: measured on a
# loaded 2-core machine, training steps ran 3-8x faster with PASSIVE. Read by OpenMP when torch first loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
