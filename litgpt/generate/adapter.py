"""`litgpt generate_adapter`: LitGPT's verb for a base checkpoint plus an Adapter run's trained tensors, on the
one generate path (`generate_adapter_v2` is the same verb for Adapter v2).

Here an adapter run's final folder is itself a checkpoint (`litgpt generate out/finetune/adapter/final` does the
same); this verb keeps LitGPT's flags: `checkpoint_dir` is the base model, `--adapter_path` the file of trained
tensors (`lit_model.pth.adapter`, ours or LitGPT's layout) or the run's folder. Which adapter they need comes
from the run's `adapter.yaml`, or, for a LitGPT run, from the tensors themselves (prefix length, first layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from litgpt.generate.full import check_generate_args, generate_finetuned

ADAPTER_FILES = ("lit_model.pth.adapter", "lit_model.pth.adapter_v2")
"""Names of the trained-tensor file in an adapter run's folder (ours; LitGPT's Adapter v2)."""


def make_generate_adapter_verb(version: Literal["v1", "v2"], default_adapter_path: str, summary: str):
    """The verb function of one adapter version: the same flags, its own default `adapter_path` and description
    (the CLI reads both from the returned function's signature and docstring)."""

    def main(
        checkpoint_dir: Path,
        prompt: str = "What food do llamas eat?",
        input: str = "",
        sys_prompt: Optional[str] = None,
        adapter_path: Path = Path(default_adapter_path),
        quantize: Optional[str] = None,
        max_new_tokens: int = 100,
        top_k: Optional[int] = 50,
        top_p: float = 1.0,
        temperature: float = 0.8,
        precision: Optional[str] = None,
    ) -> None:
        check_generate_args(quantize, precision, temperature, top_k, top_p, max_new_tokens)
        llm = load_with_adapter(checkpoint_dir, adapter_path, version)
        generate_finetuned(llm, prompt, input=input, sys_prompt=sys_prompt, quantize=quantize, precision=precision,
                           max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p, temperature=temperature)

    main.__doc__ = summary + GENERATE_ADAPTER_ARGS
    return main


GENERATE_ADAPTER_ARGS = """

    The text goes to stdout, a timing line to stderr, as with `litgpt generate`.

    Args:
        checkpoint_dir: The base checkpoint the adapter was trained on (weights, config and tokenizer).
        prompt: The prompt / instruction.
        input: Optional input for the instruction (styles with an input field, e.g. Alpaca).
        sys_prompt: Optional system prompt (default: the prompt style's).
        adapter_path: The trained adapter tensors: a `lit_model.pth.adapter` file (ours or LitGPT's, also
            LitGPT's `lit_model.pth.adapter_v2`) or the run's output folder.
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (Adapter only; Adapter v2's linear layers do not quantize).
        max_new_tokens: At most this many new tokens.
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        precision: 32-true, bf16-true or 16-true (default: bf16-true where the device computes it natively,
            else 32-true).
    """


def adapter_file(adapter_path: Path) -> Path:
    """The trained-tensor file: `adapter_path` itself, or the adapter file in the folder it names."""
    path = Path(adapter_path)
    if path.is_dir():
        for name in ADAPTER_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no {' or '.join(ADAPTER_FILES)}")
    if not path.is_file():
        raise FileNotFoundError(f"the adapter weights file {path} does not exist")
    return path


def infer_adapter_settings(state: dict, version: Literal["v1", "v2"], n_layer: int):
    """`AdapterSettings` from the trained tensors of a run that recorded none (LitGPT's): the prefix length from
    the prefix's rows, the start layer from the first layer that has one, v2 when there are v2 tensors."""
    from litgpt.adapter import settings_from_litgpt_state_dict

    if not any(k.endswith(".attn.adapter_prefix") for k in state):
        raise ValueError("the adapter weights hold no adapter_prefix tensor: is this an adapter run's file?")
    if any(k.endswith(("adapter_bias", "adapter_scale")) for k in state):
        version = "v2"
    return settings_from_litgpt_state_dict(state, version, n_layer)


def load_with_adapter(checkpoint_dir: Path, adapter_path: Path, version: Literal["v1", "v2"] = "v1"):
    """An `LLM` (not yet on a device): the base checkpoint with the adapter modules added and the run's trained
    tensors loaded (the base weights stay memory-mapped; only the trained ones are read)."""
    from litgpt.adapter import inject_adapter, is_adapter_key, read_adapter_config
    from litgpt.api import LLM
    from litgpt.checkpoint import check_base_checkpoint
    from litgpt.generate.full import _finetuned_llm
    from litgpt.lora import from_litgpt_state_dict
    from litgpt.utils import load_state_dict

    path = adapter_file(adapter_path)
    check_base_checkpoint(checkpoint_dir)
    state = from_litgpt_state_dict(load_state_dict(path))
    llm = LLM.load(str(checkpoint_dir), distribute=None)
    model = llm.model
    found = read_adapter_config(path.parent)
    settings = found[0] if found is not None else infer_adapter_settings(state, version, model.config.n_layer)
    inject_adapter(model, settings.validate(model.config.n_layer))
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if is_adapter_key(k) and k not in state]
    if unexpected or missing:
        what = f"unexpected {unexpected[:3]}" if unexpected else f"missing {missing[:3]}"
        raise ValueError(f"{path} does not fit a {settings.method} model of {checkpoint_dir}: {what}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)
    return _finetuned_llm(llm, path.parent)


main = make_generate_adapter_verb(
    "v1", "out/finetune/adapter/final/lit_model.pth.adapter",
    "For models finetuned with `litgpt finetune_adapter`: generate text with the base checkpoint and the\n"
    "    run's adapter tensors.",
)
