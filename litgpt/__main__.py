"""The `litgpt` command line: one table verb -> function; flags and help come from each signature.

Every verb also takes `--config FILE.yaml` (its flags as YAML). A ValueError / FileNotFoundError raised by
a verb is printed as one line (`LITGPT_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
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
    "convert_to_gguf": (
        "litgpt.scripts.convert_to_gguf", "convert_to_gguf",
        "Export a checkpoint as one GGUF file for llama.cpp, Ollama and LM Studio (f16, bf16, q8_0, q4_0, f32).",
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
    "finetune_dpo": (
        "litgpt.finetune.dpo", "finetune_dpo",
        "Preference-tune a checkpoint (DPO, IPO, SimPO, ORPO) on chosen/rejected pairs, full or with LoRA.",
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


def unknown_flags(parser, argv: list[str]) -> list[str]:
    """One line per `--flag` in `argv` that the verb does not take, with its closest valid flags.

    A flag under an option that takes a class (`--data.json_path`, `--optimizer.lr`) is left to the parser, which
    knows the chosen class's arguments only while parsing.
    """
    import difflib

    known = {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    problems = []
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        flag = arg.split("=", 1)[0]
        if flag in known:
            continue
        head = flag.split(".", 1)[0]
        nested = {k for k in known if k.startswith(head + ".")} - {head + ".help"}
        if "." in flag and head in known and not nested:
            continue
        close = difflib.get_close_matches(flag, sorted(known), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        problems.append(f"unknown flag {flag}{hint}")
    return problems


def expand_model_config_file(argv: list[str]) -> list[str]:
    """`--model_config FILE.yaml` (a file of Config fields, e.g. a checkpoint's model_config.yaml) becomes the
    config itself, as the parser expects a Config there."""
    out = list(argv)
    for i, arg in enumerate(out):
        flag, eq, value = arg.partition("=")
        if flag != "--model_config" or not (eq or i + 1 < len(out)):
            continue
        value = value if eq else out[i + 1]
        if not value.lstrip().startswith("{") and Path(value).is_file():
            import json

            from litgpt.config import Config

            expanded = json.dumps(Config.from_file(value).to_dict())
            if eq:
                out[i] = f"--model_config={expanded}"
            else:
                out[i + 1] = expanded
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
    problems = unknown_flags(parser, rest)
    if problems:
        print(f"litgpt {verb}: error: {'; '.join(problems)}. `litgpt {verb} --help` lists the flags.",
              file=sys.stderr)
        return 2
    args = parser.parse_args(_fill_bare_flags(expand_model_config_file(rest), getattr(fn, "cli_bare_flags", {})))
    kwargs = parser.instantiate(args).as_dict()
    kwargs.pop("config", None)
    try:
        fn(**kwargs)
    except KeyboardInterrupt as err:  # Ctrl-C; training verbs save first and say how to resume
        if os.environ.get("LITGPT_DEBUG"):
            raise
        code = getattr(err, "exit_code", 130)
        if not hasattr(err, "exit_code"):
            print(f"\nlitgpt {verb}: interrupted", file=sys.stderr)
        return code
    except USER_ERRORS as err:
        if os.environ.get("LITGPT_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"litgpt {verb}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
