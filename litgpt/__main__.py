"""The `litgpt` command line: one table verb -> function; flags and help come from each signature.

Every verb also takes `--config FILE.yaml` (its flags as YAML). A ValueError / FileNotFoundError raised by
a verb is printed as one line (`LITGPT_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Optional

# verb -> (module, function, one-line help). The table is read without importing the verbs' modules, so
# `litgpt --help` is instant; a verb's own `--help` comes from its function's signature and docstring.
VERBS: dict[str, tuple[str, str, str]] = {
    "download": (
        "litgpt.scripts.download", "download_from_hub",
        "Download a model from the Hugging Face Hub (and convert it); `litgpt download list` lists them.",
    ),
    "convert_to_litgpt": (
        "litgpt.scripts.convert_hf_checkpoint", "convert_hf_checkpoint",
        "Convert a Hugging Face checkpoint folder into lit_model.pth + model_config.yaml.",
    ),
    "convert_from_litgpt": (
        "litgpt.scripts.convert_lit_checkpoint", "convert_lit_checkpoint",
        "Export a litgpt checkpoint as a folder that transformers loads (config.json + safetensors).",
    ),
    "generate": (
        "litgpt.generate.cli", "main",
        "Generate text from a prompt with a checkpoint (streamed; time and tokens/s on stderr).",
    ),
    "generate_full": (
        "litgpt.generate.full", "main",
        "Generate with a base checkpoint and finetune_full weights (LitGPT's flags; `generate FOLDER` does the same).",
    ),
    "generate_adapter": (
        "litgpt.generate.adapter", "main",
        "Generate with a base checkpoint and an Adapter run's tensors (LitGPT's flags).",
    ),
    "generate_adapter_v2": (
        "litgpt.generate.adapter_v2", "main",
        "Generate with a base checkpoint and an Adapter v2 run's tensors (LitGPT's flags).",
    ),
    "generate_sequentially": (
        "litgpt.generate.sequentially", "main",
        "Generate with the layers split across devices / processes, run one after another (pipeline).",
    ),
    "generate_tp": (
        "litgpt.generate.tp", "main",
        "Generate with tensor parallelism: every layer's weights split across devices / processes.",
    ),
    "chat": (
        "litgpt.chat.base", "main",
        "Chat with a checkpoint interactively; the conversation is remembered (/reset, /quit).",
    ),
    "generate_speculatively": (
        "litgpt.generate.speculative", "main",
        "Generate with a draft model proposing tokens for the target (greedy output equals the target's).",
    ),
    "pretrain": (
        "litgpt.pretrain", "pretrain",
        "Pretrain a model from random weights (or continue pretraining a checkpoint) on a text corpus.",
    ),
    "finetune_full": (
        "litgpt.finetune.full", "finetune_full",
        "Finetune every weight of a checkpoint on instruction data.",
    ),
    "finetune_lora": (
        "litgpt.finetune.lora", "finetune_lora",
        "Finetune a checkpoint with LoRA (or QLoRA with --quantize bnb.nf4); the final folder is merged.",
    ),
    "finetune": (
        "litgpt.finetune.lora", "finetune_lora",
        "Same as finetune_lora.",
    ),
    "finetune_adapter": (
        "litgpt.finetune.adapter", "finetune_adapter",
        "Finetune a checkpoint with LLaMA-Adapter (learned prefix, zero-init gating).",
    ),
    "finetune_adapter_v2": (
        "litgpt.finetune.adapter_v2", "finetune_adapter_v2",
        "Finetune a checkpoint with LLaMA-Adapter v2 (prefix plus bias and scale on the linears).",
    ),
    "convert_pretrained_checkpoint": (
        "litgpt.scripts.convert_pretrained_checkpoint", "convert_pretrained_checkpoint",
        "Turn a pretraining checkpoint folder into a plain checkpoint folder (model weights, config, tokenizer).",
    ),
    "validate": (
        "litgpt.scripts.validate", "validate",
        "Check a checkpoint folder before a long job: files, config, tokenizer, shapes, dtype and memory.",
    ),
    "merge_lora": (
        "litgpt.scripts.merge_lora", "merge_lora",
        "Merge the LoRA weights of a finetuning run into the base weights (lit_model.pth).",
    ),
    "export_peft": (
        "litgpt.scripts.export_peft", "export_peft",
        "Export a LoRA run as a PEFT adapter (adapter_config.json + adapter_model.safetensors).",
    ),
    "serve": (
        "litgpt.deploy.serve", "run_server",
        "Serve a checkpoint over HTTP with LitServe (plain or OpenAI API, streaming, continuous batching).",
    ),
    "evaluate": (
        "litgpt.eval.evaluate", "evaluate",
        "Evaluate a checkpoint with the lm-evaluation-harness tasks, or its perplexity on text files.",
    ),
    "quantize": (
        "litgpt.quantization.cli", "quantize_checkpoint",
        "Save a quantized copy of a checkpoint (int8, int4, bnb.*) that generate/chat/serve load directly.",
    ),
}

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
               NotImplementedError, ImportError, ConnectionError)


def resolve(verb: str) -> Callable:
    """The function behind `verb`."""
    module, name, _ = VERBS[verb]
    return getattr(importlib.import_module(module), name)


def _top_level_help() -> str:
    width = max(map(len, VERBS))
    lines = [
        "usage: litgpt VERB [ARGS] [--config FILE.yaml]",
        "",
        "Pretrain, finetune, evaluate and serve LLMs. `litgpt VERB --help` shows a verb's flags.",
        "",
        "verbs:",
    ]
    lines += [f"  {verb.ljust(width)}  {summary}" for verb, (_, _, summary) in VERBS.items()]
    return "\n".join(lines)


def build_parser(verb: str):
    """A jsonargparse parser for one verb, built from its function's signature and docstring."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from litgpt.utils import configure_jsonargparse

    configure_jsonargparse()
    fn = resolve(verb)
    parser = ArgumentParser(prog=f"litgpt {verb}", description=VERBS[verb][2], exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with the verb's flags.")
    parser.add_function_arguments(fn, as_positional=True)
    return parser, fn


def _fill_bare_flags(argv: list[str], bare: dict[str, str]) -> list[str]:
    """Gives a flag that a verb allows without a value (e.g. `evaluate --tasks`) its default value."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--") and arg[2:] in bare and (nxt is None or nxt.startswith("--")):
            out.append(bare[arg[2:]])
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `litgpt` console script and `python -m litgpt`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        if argv:  # `-h` exits through SystemExit like any CLI (and like LitGPT's); no argument returns 0
            raise SystemExit(0)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        import difflib

        close = difflib.get_close_matches(verb, VERBS, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(f"litgpt: error: unknown verb {verb!r}.{hint} Run `litgpt --help` for the list.", file=sys.stderr)
        return 2
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\n"
    parser, fn = build_parser(verb)
    args = parser.parse_args(_fill_bare_flags(rest, getattr(fn, "cli_bare_flags", {})))
    kwargs = parser.instantiate(args).as_dict()
    kwargs.pop("config", None)
    try:
        fn(**kwargs)
    except USER_ERRORS as err:
        if os.environ.get("LITGPT_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"litgpt {verb}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
