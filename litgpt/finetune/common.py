"""What the training verbs share: their common flags (written once, in `TrainingFlags`), the decorator that gives
each verb a plain typed signature with `Args:` help built from them (what jsonargparse turns into flags and
`--help`), full finetuning, and the runner every finetuning verb ends in.

A verb is written as a function of its own flags plus `flags: TrainingFlags`:

    @training_verb("checkpoint_dir out_dir precision lora_r data train", out_dir=Path("out/finetune/lora"))
    def finetune_lora(lora_r: int = 8, *, flags: TrainingFlags) -> Optional[Path]:
        '''Summary.

        Args:
            lora_r: rank of the LoRA update.
        '''

The public function has the parameters `order` names, in that order (its own where it declares them, the
shared ones from `TrainingFlags`, with the verb's defaults), and `flags` arrives filled from the call.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import torch

from litgpt.checkpoint import check_base_checkpoint, load_checkpoint
from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.model import GPT
from litgpt.precision import Precision
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Strategy, TrainArgs
from litgpt.train.loop import Method, Problems, TrainingRun, fit
from litgpt.utils import check_valid_checkpoint_dir

QLoRAMode = Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8-training"]
QLORA_MODES: tuple[str, ...] = typing.get_args(QLoRAMode)


def _flag(help: str, default: Any = None, factory: Optional[Callable[[], Any]] = None, required: bool = False) -> Any:
    """A `TrainingFlags` field: its default and its `--help` text (`required`: the verbs' signatures have no
    default for it, and its type without None)."""
    metadata = {"help": help, "required": required}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainingFlags:
    """The flags the training verbs share, as one value. A verb's public signature lists those it takes (see
    `training_verb`); its body receives them here (the others keep these defaults)."""

    checkpoint_dir: Optional[Path] = _flag(
        "folder with lit_model.pth, model_config.yaml and the tokenizer (the base model).", required=True)
    out_dir: Path = _flag("folder for checkpoints, logs and the loss curve.", Path("out"))
    precision: Optional[Precision] = _flag(
        "32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on GPUs without "
        "bfloat16; with --quantize: bf16-true, or 16-true there).")
    quantize: Optional[QLoRAMode] = _flag(
        "keep the frozen base weights in a bitsandbytes format (QLoRA, with LoRA): bnb.nf4, bnb.nf4-dq, bnb.fp4, "
        'bnb.fp4-dq or bnb.int8-training (needs a "-true" precision and one device).')
    devices: Union[int, str] = _flag('devices per node (a number or "auto").', 1)
    num_nodes: int = _flag("machines taking part (see tutorials/pretrain.md for launching).", 1)
    resume: Union[bool, Literal["auto"], Path] = _flag(
        'continue an interrupted run exactly: "auto" (the latest step-* in out_dir, if any), true (the latest, '
        "which must exist) or a step-* folder.", False)
    data: Optional[DataModule] = _flag(
        "the instruction data, e.g. `--data JSON --data.json_path FILE` (default: Alpaca).")
    train: TrainArgs = _flag("batch sizes, stop rules, schedule and checkpoint interval.", factory=TrainArgs)
    eval: EvalArgs = _flag("validation interval and size, and the generated sample.", factory=EvalArgs)
    log: LogArgs = _flag("experiment-tracker names.", factory=LogArgs)
    optimizer: Union[str, dict] = _flag(
        'a torch.optim class name (AdamW) or {"class_path": ..., "init_args": {...}}.', "AdamW")
    logger_name: LoggerName = _flag(
        "csv (always written), or also tensorboard, wandb or mlflow (LitGPT's litlogger is refused in one line).", "csv")
    seed: int = _flag("random seed: the data order and the initialisation of new weights.", 1337)
    access_token: Optional[str] = _flag(
        "Hugging Face token for gated datasets (default: the HF_TOKEN environment variable).")
    strategy: Strategy = _flag("auto (FSDP on several devices), ddp or fsdp.", "auto")
    accelerator: str = _flag("auto, cpu, cuda (gpu) or mps.", "auto")
    compile: bool = _flag("compile the model with torch.compile.", False)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Not a flag: every flag of the call by name (access_token left out), written to hyperparameters.yaml."""


SHARED_FLAGS: dict[str, dataclasses.Field] = {
    f.name: f for f in dataclasses.fields(TrainingFlags) if "help" in f.metadata
}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _args_docs(doc: Optional[str]) -> tuple[str, dict[str, str]]:
    """(the text before `Args:`, {name: help}) of a Google-style docstring."""
    text = inspect.cleandoc(doc or "")
    head, _, args = text.partition("\nArgs:\n")
    docs: dict[str, str] = {}
    name = None
    for line in textwrap.dedent(args).splitlines():
        match = re.match(r"^(\w+): ?(.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2).strip()
        elif name is not None and line.strip():
            docs[name] += " " + line.strip()
    return head.rstrip(), docs


def _render(head: str, docs: dict[str, str]) -> str:
    lines = [head, "", "Args:"]
    for name, text in docs.items():
        lines += textwrap.wrap(f"{name}: {text}", width=112, initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines) + "\n"


def training_verb(order: str, help: Optional[dict[str, str]] = None, **defaults: Any) -> Callable:
    """Makes a verb's public function from `body(own flags..., *, flags: TrainingFlags)`.

    `order`: the public parameters, separated by spaces: the body's own, and `TrainingFlags` names.
    `help`: a verb's own `--help` text for shared flags; `defaults`: its own defaults for them.
    The function jsonargparse sees has a plain signature (typed, with defaults) and an `Args:` docstring.
    """
    names = order.split()
    help = help or {}

    def decorate(body: Callable) -> Callable:
        body_params = inspect.signature(body).parameters
        own = [n for n in body_params if n != "flags"]
        hints = typing.get_type_hints(body)
        shared_hints = typing.get_type_hints(TrainingFlags)
        unknown = [n for n in names if n not in own and n not in SHARED_FLAGS] + [
            n for n in list(defaults) + list(help) if n not in SHARED_FLAGS or n not in names]
        missing = [n for n in own if n not in names]
        if unknown or missing:
            raise TypeError(f"{body.__name__}: unknown flags {unknown}, or own flags not in the order: {missing}")
        head, own_docs = _args_docs(body.__doc__)
        params, docs = [], {}
        for name in names:
            if name in own:
                annotation, default, docs[name] = hints[name], body_params[name].default, own_docs[name]
            else:
                f = SHARED_FLAGS[name]
                annotation, docs[name] = shared_hints[name], help.get(name, f.metadata["help"])
                default = defaults.get(name, _default(f))
                if f.metadata["required"] and name not in defaults:
                    default = inspect.Parameter.empty
                    annotation = typing.Union[tuple(t for t in typing.get_args(annotation) if t is not type(None))]
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                            annotation=annotation))
        signature = inspect.Signature(params, return_annotation=Optional[Path])

        def verb(*args: Any, **kwargs: Any) -> Optional[Path]:
            bound = signature.bind(*args, **kwargs)
            given = set(bound.arguments)
            bound.apply_defaults()
            values = {k: v if k in given else copy.deepcopy(v) for k, v in bound.arguments.items()}
            flags = TrainingFlags(**{k: v for k, v in values.items() if k in SHARED_FLAGS and k not in own})
            flags.hyperparameters = {k: v for k, v in values.items() if k != "access_token"}
            return body(**{k: values[k] for k in own}, flags=flags)

        verb.__signature__ = signature  # type: ignore[attr-defined]
        verb.__annotations__ = {p.name: p.annotation for p in params} | {"return": Optional[Path]}
        verb.__doc__ = _render(head, docs)
        verb.__name__, verb.__qualname__, verb.__module__ = body.__name__, body.__qualname__, body.__module__
        return verb

    return decorate


FINETUNE_HEAD = "checkpoint_dir out_dir precision"
FINETUNE_RUN = "devices num_nodes resume"
FINETUNE_TAIL = "data train eval log optimizer logger_name seed access_token strategy accelerator compile"
FINETUNE_TRAIN = TrainArgs(save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1,
                           lr_warmup_steps=100, epochs=5, max_seq_length=None)
"""The `train` defaults of every finetuning verb (LitGPT's)."""


def finetune_order(*own: str, quantize: bool = False) -> str:
    """A finetuning verb's public parameters: the shared ones around the verb's own, in LitGPT's order."""
    return " ".join([FINETUNE_HEAD, "quantize" if quantize else "", FINETUNE_RUN, *own, FINETUNE_TAIL])


class FullFinetuning(Method):
    """Every weight of the checkpoint trains; checkpoints hold the whole model."""

    name = "full"

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)

    def check(self) -> None:
        check_base_checkpoint(self.checkpoint_dir)  # not a folder of PEFT weights only, nor an adapter run's

    def build_model(self, config: Config) -> GPT:
        """The checkpoint's model: built on the meta device, then its weights assigned (no random init)."""
        with torch.device("meta"):
            model = GPT(config)
        load_checkpoint(model, self.checkpoint_dir / "lit_model.pth")
        return model


def run_finetuning(method: Method, verb: str, flags: TrainingFlags, precision: Optional[str] = None,
                   extra_files: Optional[Callable[[Path], None]] = None,
                   problems: Optional[Problems] = None) -> Optional[Path]:
    """Checks the checkpoint folder, defaults the data to Alpaca, and trains with `fit`.

    `precision`: the one the method settled on (default: `flags.precision`); `extra_files(folder)` writes the
    method's own files into every checkpoint folder (e.g. `adapter.yaml`). Returns the final checkpoint folder
    (on rank 0). Every problem of the arguments is reported at once (`problems`: those the verb found first).
    """
    problems = problems or Problems()
    checkpoint_dir, config = Path(flags.checkpoint_dir), None
    with problems.check():
        checkpoint_dir = check_valid_checkpoint_dir(flags.checkpoint_dir)
        config = Config.from_file(checkpoint_dir / "model_config.yaml")
    data = flags.data
    if data is None:
        from litgpt.data import Alpaca

        data = Alpaca()
    if flags.access_token is not None and getattr(data, "access_token", "") is None:
        data.access_token = flags.access_token
    run = TrainingRun(
        verb=verb, config=config, data=data, tokenizer_dir=checkpoint_dir if config is not None else None,
        out_dir=Path(flags.out_dir),
        train=flags.train, eval=flags.eval, log=flags.log, optimizer=flags.optimizer,
        precision=precision or flags.precision, devices=flags.devices, num_nodes=flags.num_nodes,
        strategy=flags.strategy, accelerator=flags.accelerator, compile=flags.compile, resume=flags.resume,
        seed=flags.seed, logger_name=flags.logger_name, hyperparameters=flags.hyperparameters,
        extra_files=extra_files,
    )
    return fit(method, run, problems)
