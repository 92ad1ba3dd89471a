"""`litgpt generate_full`: LitGPT's verb for a base checkpoint plus finetuned weights, on the one generate path.

Here every finetuning run's final folder is itself a checkpoint (`litgpt generate out/finetune/full/final` does
the same); this verb keeps LitGPT's flags: the base `checkpoint_dir` gives the config and the tokenizer, and
`--finetuned_path` the weights (a `lit_model.pth`-style file, or a finetuning output folder). The loading
helpers here are shared with `generate_adapter` / `generate_adapter_v2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch.nn as nn

from litgpt.generate.engine import check_sampling_args
from litgpt.prompts import PromptStyle


def main(
    checkpoint_dir: Path,
    prompt: str = "What food do llamas eat?",
    input: str = "",
    sys_prompt: Optional[str] = None,
    finetuned_path: Path = Path("out/full/alpaca/lit_model_finetuned.pth"),
    quantize: Optional[str] = None,
    max_new_tokens: int = 100,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    precision: Optional[str] = None,
) -> None:
    """For models finetuned with `litgpt finetune_full`: generate text from a prompt with the finetuned weights.

    The text goes to stdout, a timing line to stderr, as with `litgpt generate`.

    Args:
        checkpoint_dir: The checkpoint folder the model was finetuned from (config and tokenizer).
        prompt: The prompt / instruction.
        input: Optional input for the instruction (styles with an input field, e.g. Alpaca).
        sys_prompt: Optional system prompt (default: the prompt style's).
        finetuned_path: The finetuned weights: a file (`lit_model.pth`, LitGPT's `lit_model_finetuned.pth`, a
            training checkpoint holding {'model': ...}) or a finetuning output folder (its `lit_model.pth`).
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        max_new_tokens: At most this many new tokens.
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        precision: 32-true, bf16-true or 16-true (default: bf16-true where the device computes it natively,
            else 32-true).
    """
    check_generate_args(quantize, precision, temperature, top_k, top_p, max_new_tokens)
    llm = load_finetuned(checkpoint_dir, finetuned_path)
    generate_finetuned(llm, prompt, input=input, sys_prompt=sys_prompt, quantize=quantize, precision=precision,
                       max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p, temperature=temperature)


# ------------------------------------------------------------------------------------------------------------
# shared by generate_full, generate_adapter and generate_adapter_v2


def check_generate_args(
    quantize: Optional[str], precision: Optional[str], temperature: float, top_k: Optional[int], top_p: float,
    max_new_tokens: int,
) -> None:
    """One-line ValueErrors for bad flags, before anything is loaded."""
    from litgpt.api import check_quantize
    from litgpt.precision import check_inference_precision

    check_quantize(quantize)
    check_inference_precision(precision)
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)


def weights_file(path: Path, default_name: str, what: str) -> Path:
    """`path` itself when it is a file, `path/default_name` when it is a folder; FileNotFoundError otherwise."""
    path = Path(path)
    found = path / default_name if path.is_dir() else path
    if not found.is_file():
        raise FileNotFoundError(f"{what} {found} does not exist")
    return found


def load_finetuned(checkpoint_dir: Path, finetuned_path: Path):
    """An `LLM` (not yet on a device) with the base checkpoint's config and tokenizer and the weights of
    `finetuned_path` (a file or a finetuning output folder). The base weights are never read."""
    from litgpt.api import LLM
    from litgpt.checkpoint import load_checkpoint

    weights = weights_file(finetuned_path, "lit_model.pth", "the finetuned weights file")
    llm = LLM.load(str(checkpoint_dir), distribute=None)
    model = llm.model.to("meta")  # drop the base weights (memory-mapped, so unread) before loading the new ones
    load_checkpoint(model, weights)  # also adds the adapter modules an adapter run's folder (adapter.yaml) needs
    model.reset_rope_cache()
    llm.model = model.eval()
    return _finetuned_llm(llm, weights.parent)


def _finetuned_llm(llm, weights_dir: Path):
    """The finetuning run's prompt style when its folder has one; the weights no longer come from the base
    folder, so `distribute(quantize=...)` quantizes the model in memory instead of reloading the base."""
    from litgpt.prompts import has_prompt_style, load_prompt_style

    if has_prompt_style(weights_dir):
        llm.prompt_style = load_prompt_style(weights_dir)
    llm.checkpoint_dir = None
    return llm


def generate_finetuned(
    llm, prompt: str, *, input: str, sys_prompt: Optional[str], quantize: Optional[str], precision: Optional[str],
    max_new_tokens: int, top_k: Optional[int], top_p: float, temperature: float,
) -> None:
    """Puts `llm` on its device and prints the generation as `litgpt generate` does (seed 1234, as LitGPT)."""
    from litgpt.generate.cli import print_generation

    if quantize is not None:
        peft = sorted({type(m).__name__ for m in llm.model.modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear})
        if peft:
            raise ValueError(
                f"--quantize cannot quantize the finetuned linear layers ({', '.join(peft)}): generate without "
                "--quantize, or finetune with LoRA (its merged weights quantize)"
            )
    llm.distribute(precision=precision, quantize=quantize)
    llm.prompt_style = with_input(llm.prompt_style, input)
    print_generation(llm, prompt, sys_prompt=sys_prompt, max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                     temperature=temperature)


class _FixedInput:
    """Mixin for a prompt style: every prompt gets the same `input` field (LitGPT's `--input`)."""

    fixed_input = ""

    def apply(self, prompt: str, *, sys_prompt: Optional[str] = None, **kwargs) -> str:
        kwargs.setdefault("input", self.fixed_input)
        return super().apply(prompt, sys_prompt=sys_prompt, **kwargs)


def with_input(style: PromptStyle, input: str) -> PromptStyle:
    """A copy of `style` that passes `input=input` to every `apply` (the style itself when input is empty).

    Styles without an input field (most chat styles) ignore it, as in LitGPT."""
    if not input:
        return style
    import copy

    base = type(style)
    styled = copy.copy(style)
    styled.__class__ = type(base.__name__, (_FixedInput, base), {"__module__": base.__module__})
    styled.fixed_input = input
    return styled
