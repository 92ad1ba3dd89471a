"""`litgpt finetune_lora` (also `litgpt finetune`): LoRA, or QLoRA with `--quantize bnb.*`, on instruction data.

The training loop is the one every verb shares (`litgpt.train.loop.fit`): resume, packing, logging, progress
and stop rules work as for `finetune_full`. What differs is the `Method`: LoRA layers are injected into the
loaded base model, only they train, step folders hold only `lit_model.pth.lora`, and the final folder also
holds the merged `lit_model.pth` that generate, chat, serve, `LLM.load` and `convert_from_litgpt` read.

`PEFTFinetuning` is shared with the adapter verbs (`litgpt.finetune.adapter`): loading the base (quantized
with bitsandbytes while loading, or in the dtypes the precision wants), the trainable-tensor files, resume.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Literal, Optional, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.finetune.common import run_finetuning
from litgpt.lora import LORA_FILE, LoRASettings, inject_lora, is_lora_key, linear_sites, merge_lora_weights
from litgpt.model import GPT
from litgpt.train.args import EvalArgs, LoggerName, LogArgs, Precision, Strategy, TrainArgs
from litgpt.train.loop import Method
from litgpt.precision import MIXED_PRECISIONS, default_training_precision as default_precision
from litgpt.utils import load_state_dict, parse_dtype
from litgpt.checkpoint import load_checkpoint

QLoRAMode = Literal["bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8-training"]
QLORA_MODES = ("bnb.nf4", "bnb.nf4-dq", "bnb.fp4", "bnb.fp4-dq", "bnb.int8-training")


# --------------------------------------------------------------------------------------------------------
# precision, device and quantization checks (before any work)


def training_precision(precision: Optional[str], quantize: Optional[str], accelerator: str) -> str:
    """The precision a PEFT run trains in: the given one, or the loop's default (bf16-mixed); with --quantize,
    a "-true" precision (default bf16-true, 16-true on GPUs without bfloat16). Mixed precision with quantized
    weights is a one-line error."""
    if quantize is None:
        return precision or default_precision(accelerator)
    if precision is None:
        return "16-true" if default_precision(accelerator) == "16-mixed" else "bf16-true"
    if precision.endswith("-mixed"):
        raise ValueError(
            f"--quantize {quantize} cannot train with --precision {precision}: the quantized weights have no float32 "
            "copy to mix with; use bf16-true, 16-true or 32-true"
        )
    return precision


def training_device(accelerator: str) -> torch.device:
    """The single device a quantized run loads its weights onto (where Fabric will run it)."""
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("mps" if accelerator == "mps" else "cpu")


@functools.lru_cache(maxsize=None)
def _bnb_trains_on(mode: str, device_type: str, dtype: torch.dtype) -> Optional[str]:
    """None if bitsandbytes back-propagates through a `mode` layer on this device in `dtype`, else why not."""
    from litgpt.quantization.bnb import bnb_linear, problem_of
    from litgpt.quantization.modes import parse_quantize

    def probe() -> Optional[str]:
        gen = torch.Generator().manual_seed(0)
        device = torch.device(device_type)
        layer = bnb_linear(parse_quantize(mode), torch.randn(64, 64, generator=gen), None, device, dtype)
        x = torch.randn(2, 64, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
        layer(x).float().sum().backward()
        if x.grad is None or not torch.isfinite(x.grad).all():
            return "no usable gradient through the quantized layer"
        return None

    return problem_of(probe)


def check_quantized_training(quantize: str, precision: str, device: torch.device, devices: Union[int, str],
                             num_nodes: int) -> None:
    """One-line errors unless bitsandbytes can train `quantize` on `device` in `precision` (one device only)."""
    from litgpt.quantization.loading import check_quantize_supported

    if quantize not in QLORA_MODES:
        raise ValueError(f"--quantize must be one of {', '.join(QLORA_MODES)}, got {quantize!r}")
    if str(devices) not in ("1", "auto") or num_nodes != 1:
        raise ValueError(f"--quantize {quantize} trains on one device only; got devices={devices}, num_nodes={num_nodes}")
    spec = bnb_spec(quantize)
    dtype = parse_dtype(precision)
    check_quantize_supported(spec, device, dtype)  # bitsandbytes installed, and runs the mode there
    problem = _bnb_trains_on(spec.mode, device.type, dtype)
    if problem is not None:
        raise ValueError(f"--quantize {quantize} cannot train on {device.type} in {precision} ({problem})")


def bnb_spec(quantize: str):
    """The QuantSpec of a `--quantize` training mode (bnb.int8-training: frozen LLM.int8() weights)."""
    from litgpt.quantization.modes import parse_quantize

    return parse_quantize("bnb.int8" if quantize == "bnb.int8-training" else quantize)


def set_training_dtypes(model: GPT, precision: str) -> None:
    """Puts the loaded base model in the dtypes the run trains in.

    "-true" precisions: everything in that dtype. Mixed precision: the frozen linear weights in the low
    precision (autocast would cast them on every forward pass anyway: the same numbers, without the copies),
    everything else (norms, embeddings) in float32; a head tied to the embedding gets its own low-precision
    copy of the (frozen) matrix.
    """
    dtype = parse_dtype(precision.replace("-mixed", "-true"))
    if precision not in MIXED_PRECISIONS:
        model.to(dtype)
        return
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linears = [site.module for site in linear_sites(model)]
    model.to(torch.float32)
    for module in linears:
        if id(module.weight) in embeddings:
            module.weight = nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
        else:
            module.to(dtype)


def release_file(model: GPT, mapped: dict[str, torch.Tensor]) -> None:
    """Copies into memory the tensors of `model` that still live in the memory-mapped checkpoint (`mapped`: the
    state dict as loaded), so the file's mapping, and the pages of it that were read, are released."""
    spans = [(t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in mapped.values() if t.numel()]
    if not spans:
        return
    low, high = min(a for a, _ in spans), max(b for _, b in spans)
    mapped.clear()
    for module in model.modules():
        for _, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is not None and low <= tensor.data_ptr() < high:
                tensor.data = tensor.data.clone()


# --------------------------------------------------------------------------------------------------------
# the methods


class PEFTFinetuning(Method):
    """What LoRA and the adapters share: a frozen base (bitsandbytes-quantized with --quantize), injected
    trainable tensors saved alone in `peft_file`, and a final folder whose `lit_model.pth` generate reads."""

    peft_file = ""

    def __init__(self, checkpoint_dir: Path, precision: str, quantize: Optional[str] = None,
                 accelerator: str = "auto", devices: Union[int, str] = 1, num_nodes: int = 1) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.precision, self.quantize = precision, quantize
        self.devices, self.num_nodes = devices, num_nodes
        self.device = training_device(accelerator)
        self.trainable: set[str] = set()
        self.config: Optional[Config] = None

    def check(self) -> None:
        from litgpt.checkpoint import check_base_checkpoint

        check_base_checkpoint(self.checkpoint_dir)
        if self.quantize is not None:
            check_quantized_training(self.quantize, self.precision, self.device, self.devices, self.num_nodes)

    # ---- what each method defines
    def inject(self, model: GPT) -> None:
        """Adds the method's trainable modules to the loaded base model."""
        raise NotImplementedError

    def trainable_names(self, model: GPT) -> list[str]:
        """Names of the parameters that train."""
        raise NotImplementedError

    def full_weights(self, base: dict[str, torch.Tensor], peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The final `lit_model.pth` from the base checkpoint's state dict and the trained tensors."""
        raise NotImplementedError

    # ---- the Method interface
    def build_model(self, config: Config) -> GPT:
        """The base checkpoint (quantized while loading with --quantize) with the method's modules injected."""
        if self.quantize is None:
            with torch.device("meta"):
                model = GPT(config)
            load_checkpoint(model, self.checkpoint_dir / "lit_model.pth")
            mapped = dict(model.state_dict())  # views of the memory-mapped checkpoint file
            set_training_dtypes(model, self.precision)
            release_file(model, mapped)
        else:
            from litgpt.quantization.loading import load_model

            model = load_model(self.checkpoint_dir, quantize=bnb_spec(self.quantize),
                               dtype=parse_dtype(self.precision), device=self.device)
            model.train()
            for module in model.modules():
                # bitsandbytes repacks 4-bit weights in place into a CPU inference layout the first time they run
                # in eval mode (validation); training needs them in the layout it computes gradients with
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        self.config = model.config
        self.inject(model)
        return model

    def mark_trainable(self, model: GPT) -> None:
        self.trainable = set(self.trainable_names(model))
        for name, param in model.named_parameters():
            param.requires_grad_(name in self.trainable)

    def model_files(self, state_dict: dict[str, torch.Tensor], final: bool) -> dict[str, dict[str, torch.Tensor]]:
        """Step folders: the trained tensors only. The final folder: also the full `lit_model.pth`, built from
        the base checkpoint on disk (full precision even when the run trained on quantized weights)."""
        peft = {k: v for k, v in state_dict.items() if k in self.trainable}
        files = {self.peft_file: peft}
        if final:
            from litgpt.utils import return_freed_memory

            return_freed_memory()  # the heap's freed activations go back to the OS before the base is read again
            base = load_state_dict(self.checkpoint_dir / "lit_model.pth")
            files["lit_model.pth"] = self.full_weights(base, peft)
        return files

    def checkpoint_state(self, model: GPT) -> dict[str, torch.Tensor]:
        """Only the trainable tensors: nothing else is saved (and quantized layers stay untouched)."""
        return {name: p.detach().cpu() for name, p in model.named_parameters() if name in self.trainable}

    def resume_state_dict(self, folder: Path) -> tuple[dict[str, torch.Tensor], bool]:
        state = load_state_dict(folder / self.peft_file)
        if set(state) != self.trainable:
            missing = sorted(self.trainable - set(state))
            unexpected = sorted(set(state) - self.trainable)
            raise ValueError(
                f"cannot resume from {folder}: its {self.peft_file} does not match this run's settings "
                f"(missing {missing[:2]}, unexpected {unexpected[:2]}); resume with the settings it was trained with"
            )
        return state, False


class LoRAFinetuning(PEFTFinetuning):
    """LoRA layers on the targeted linears; the final folder holds the merged weights."""

    name = "lora"
    peft_file = LORA_FILE

    def __init__(self, checkpoint_dir: Path, settings: LoRASettings, precision: str, **kwargs) -> None:
        super().__init__(checkpoint_dir, precision, **kwargs)
        self.settings = settings

    def check(self) -> None:
        self.settings.validate()
        super().check()

    def inject(self, model: GPT) -> None:
        inject_lora(model, self.settings)

    def trainable_names(self, model: GPT) -> list[str]:
        return [name for name, _ in model.named_parameters() if is_lora_key(name)]

    def full_weights(self, base: dict[str, torch.Tensor], peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return merge_lora_weights(base, peft, self.settings, self.config)


# --------------------------------------------------------------------------------------------------------
# the verb


def finetune_lora(
    checkpoint_dir: Path,
    out_dir: Path = Path("out/finetune/lora"),
    precision: Optional[Precision] = None,
    quantize: Optional[QLoRAMode] = None,
    devices: Union[int, str] = 1,
    num_nodes: int = 1,
    resume: Union[bool, Literal["auto"], Path] = False,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    lora_query: bool = True,
    lora_key: bool = False,
    lora_value: bool = True,
    lora_projection: bool = False,
    lora_mlp: bool = False,
    lora_head: bool = False,
    data: Optional[DataModule] = None,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=16, micro_batch_size=1, lr_warmup_steps=100,
        epochs=5, max_seq_length=None,
    ),
    eval: EvalArgs = EvalArgs(interval=100, max_new_tokens=100, max_iters=100),
    log: LogArgs = LogArgs(),
    optimizer: Union[str, dict] = "AdamW",
    logger_name: LoggerName = "csv",
    seed: int = 1337,
    access_token: Optional[str] = None,
    strategy: Strategy = "auto",
    accelerator: str = "auto",
    compile: bool = False,
) -> Optional[Path]:
    """Finetune a checkpoint with LoRA (QLoRA with --quantize) on instruction data.

    Only the LoRA weights train. `out_dir/step-*/` hold `lit_model.pth.lora` (small; resumable); `out_dir/final/`
    also holds the merged `lit_model.pth` with the config, tokenizer files and the data's prompt style, which
    generate, chat, serve and convert_from_litgpt read. `litgpt merge_lora` merges a step folder;
    `litgpt export_peft` writes the LoRA weights in the PEFT library's format.

    Args:
        checkpoint_dir: folder with lit_model.pth, model_config.yaml and the tokenizer (the base model).
        out_dir: folder for checkpoints, logs and the loss curve.
        precision: 32-true, bf16-mixed, bf16-true, 16-mixed or 16-true (default: bf16-mixed, or 16-mixed on GPUs
            without bfloat16; with --quantize: bf16-true, or 16-true there).
        quantize: QLoRA: keep the frozen base weights in a bitsandbytes format: bnb.nf4, bnb.nf4-dq, bnb.fp4,
            bnb.fp4-dq or bnb.int8-training (needs a "-true" precision and one device).
        devices: devices per node (a number or "auto").
        num_nodes: machines taking part.
        resume: continue an interrupted run exactly: "auto" (the latest step-* in out_dir, if any), true (the
            latest, which must exist) or a step-* folder.
        lora_r: rank of the LoRA update (>= 1).
        lora_alpha: scaling: the update is multiplied by lora_alpha / lora_r.
        lora_dropout: dropout on the LoRA branch's input during training.
        lora_query: LoRA on the query part of the attention projection.
        lora_key: LoRA on the key part of the attention projection.
        lora_value: LoRA on the value part of the attention projection.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP's linear layers (every expert's, for mixtures of experts).
        lora_head: LoRA on the output head.
        data: the instruction data, e.g. `--data JSON --data.json_path FILE` (default: Alpaca).
        train: batch sizes, stop rules, schedule and checkpoint interval.
        eval: validation interval and size, and the generated sample.
        log: experiment-tracker names.
        optimizer: a torch.optim class name (AdamW) or {"class_path": ..., "init_args": {...}}.
        logger_name: csv (always written), or also tensorboard, wandb or mlflow.
        seed: seed of the data order and of the LoRA initialisation.
        access_token: Hugging Face token for gated datasets (default: the HF_TOKEN environment variable).
        strategy: auto (FSDP on several devices), ddp or fsdp.
        accelerator: auto, cpu, cuda (gpu) or mps.
        compile: compile the model with torch.compile.
    """
    hyperparameters = dict(locals())
    hyperparameters.pop("access_token")
    settings = LoRASettings(lora_r, lora_alpha, lora_dropout, lora_query, lora_key, lora_value, lora_projection,
                            lora_mlp, lora_head)
    settings.validate()
    precision = training_precision(precision, quantize, accelerator)
    method = LoRAFinetuning(checkpoint_dir, settings, precision, quantize=quantize, accelerator=accelerator,
                            devices=devices, num_nodes=num_nodes)
    method.check()  # PEFT-specific errors first (a step folder given as the base, QLoRA support)
    return run_peft_verb(method, "finetune_lora", hyperparameters, data, access_token, precision)


def run_peft_verb(method: PEFTFinetuning, verb: str, hyperparameters: dict, data: Optional[DataModule],
                  access_token: Optional[str], precision: str,
                  extra_files: Optional[Callable[[Path], None]] = None) -> Optional[Path]:
    """Hands a PEFT method and the verb's flags to the shared finetuning runner."""
    h = hyperparameters
    if access_token is not None and data is not None and hasattr(data, "access_token") and data.access_token is None:
        data.access_token = access_token
    return run_finetuning(
        method, verb, h["checkpoint_dir"], h["out_dir"], precision, h["devices"], h["num_nodes"], h["resume"], data,
        h["train"], h["eval"], h["log"], h["optimizer"], h["logger_name"], h["seed"], h["strategy"],
        h["accelerator"], h["compile"], hyperparameters, extra_files=extra_files,
    )


setup = finetune_lora  # LitGPT's Python name (`from litgpt.finetune.lora import setup`)
