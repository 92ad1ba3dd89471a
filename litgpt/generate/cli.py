"""The `litgpt generate` verb: text from a prompt, streamed to stdout, with a timing line on stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Union

import torch

from litgpt.generate.engine import check_sampling_args


def main(
    checkpoint_dir: Path,
    prompt: str = "What food do llamas eat?",
    *,
    sys_prompt: Optional[str] = None,
    num_samples: int = 1,
    max_new_tokens: int = 50,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    stop: Union[list[str], str, None] = None,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    compile: bool = False,
    seed: int = 1234,
) -> None:
    """Generate text from a prompt with a checkpoint; the text goes to stdout, a timing line to stderr.

    The checkpoint's prompt style (its prompt_style.yaml, else the one of its model family) is applied to
    the prompt. Generation stops at the tokenizer's stop tokens, at a stop string, or after max_new_tokens.

    Args:
        checkpoint_dir: A checkpoint folder (lit_model.pth, model_config.yaml and the tokenizer files).
        prompt: The prompt.
        sys_prompt: A system prompt (default: the prompt style's, if it has one).
        num_samples: How many samples to draw for the prompt; they are generated together as one batch.
        max_new_tokens: At most this many new tokens per sample (clipped, with a warning, to the context).
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        stop: A string that ends the text (`--stop .`), or a list of them (`--stop '["\\n\\n", "###"]'`);
            default: the prompt style's.
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        precision: 32-true, bf16-true or 16-true. Default: bf16-true on GPUs and CPUs with native bf16,
            else 32-true.
        compile: Compile the decode step with torch.compile (the first tokens wait for the compilation).
        seed: Random seed for sampling.
    """
    from litgpt.api import LLM, check_quantize
    from litgpt.precision import check_inference_precision as check_precision
    from litgpt.utils import check_valid_checkpoint_dir

    # everything that can be checked before loading the model
    check_quantize(quantize)
    check_precision(precision)
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_valid_checkpoint_dir(checkpoint_dir)

    llm = LLM.load(str(checkpoint_dir), distribute=None)
    llm.distribute(precision=precision, quantize=quantize, compile=compile)
    print_generation(llm, prompt, sys_prompt=sys_prompt, num_samples=num_samples, max_new_tokens=max_new_tokens,
                     top_k=top_k, top_p=top_p, temperature=temperature, stop=stop, seed=seed)


def print_generation(
    llm,
    prompt: str,
    *,
    sys_prompt: Optional[str] = None,
    num_samples: int = 1,
    max_new_tokens: int = 50,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    stop: Union[list[str], str, None] = None,
    seed: int = 1234,
    out=None,
    err=None,
):
    """Generates with a distributed `LLM` as the generate verbs do: the text streamed to `out` (samples one after
    another when num_samples > 1), the timing line to `err` (default: stdout and stderr). Returns the `Generation`."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    torch.manual_seed(seed)
    prompts = [prompt] * num_samples
    generation = llm.generation(
        prompt if num_samples == 1 else prompts, sys_prompt=sys_prompt, max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, stop=stop,
    )
    if num_samples == 1:
        for _, piece in generation:
            out.write(piece)
            out.flush()
        out.write("\n")
    else:
        generation.run()
        for i, text in enumerate(generation.texts):
            out.write(f"--- sample {i + 1} of {num_samples} ---\n{text}\n")
    out.flush()
    print(
        f"Time for inference: {generation.seconds:.02f} sec total, {generation.tokens_per_second:.02f} tokens/sec "
        f"({generation.tokens_generated} tokens, {num_samples} sample{'s' if num_samples > 1 else ''}, "
        f"{llm.device.type}, {llm.precision})",
        file=err,
    )
    if llm.device.type == "cuda":
        print(f"Memory used: {torch.cuda.max_memory_allocated(llm.device) / 1e9:.02f} GB", file=err)
    return generation
