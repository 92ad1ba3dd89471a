"""litgpt: pretrain, finetune, evaluate and serve LLMs. Public names: GPT, Config, LLM, PromptStyle, Tokenizer."""

import os


def _sleep_waiting_threads_when_busy() -> None:
    """Sets OMP_WAIT_POLICY=PASSIVE (OpenMP threads that wait for work sleep instead of spinning) when the machine
    is already busy: the load average is over 1.5x the CPUs this process may use. There, spinning threads take the
    cores their partners need (measured on 2 cores at a load of 6-8: training steps 3-8x faster, decoding 2-20x);
    on a quiet machine spinning is faster (a LoRA step 0.61 s instead of 0.82 s), so nothing changes. Read by
    OpenMP when torch first loads it; an OMP_WAIT_POLICY you set yourself always wins."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        cpus = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return
    if load > 1.5 * cpus:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_sleep_waiting_threads_when_busy()

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
