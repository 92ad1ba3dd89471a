"""The finetuning core of the PEFT verbs (`finetune_lora`, `finetune_adapter`, `finetune_adapter_v2`): one
`PEFTFinetuning` method on the shared training loop, which each verb specialises only in how the model is changed.

What they share: the base checkpoint loaded frozen (quantized with bitsandbytes while loading with --quantize,
or in the dtypes the precision wants), only the injected tensors train and are saved alone in step folders
(`lit_model.pth.lora` / `lit_model.pth.adapter`, resumable), and the final folder also holds the full
`lit_model.pth` that generate, chat, serve, `LLM.load` and `convert_from_litgpt` read.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from litgpt.adapter import (
    ADAPTER_FILE,
    AdapterSettings,
    adapter_trainable_names,
    combine_adapter_weights,
    inject_adapter,
    write_adapter_config,
)
from litgpt.checkpoint import check_base_checkpoint, load_checkpoint
from litgpt.config import Config
from litgpt.finetune.common import QLORA_MODES, TrainingFlags, run_finetuning
from litgpt.lora import LORA_FILE, LoRASettings, inject_lora, is_lora_key, linear_sites, merge_lora_state
from litgpt.model import GPT
from litgpt.precision import MIXED_PRECISIONS, check_training_precision, resolve_device
from litgpt.precision import default_training_precision as default_precision
from litgpt.train.loop import Method, Problems
from litgpt.utils import load_state_dict, parse_dtype


# --------------------------------------------------------------------------------------------------------
# precision, device and quantization checks (before any work)


def training_precision(precision: Optional[str], quantize: Optional[str], accelerator: str) -> str:
    """The precision a PEFT run trains in: the given one, or the loop's default (bf16-mixed); with --quantize,
    a "-true" precision (default bf16-true, 16-true on GPUs without bfloat16). Mixed precision with quantized
    weights is a one-line error."""
    precision = check_training_precision(precision)
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
    device = resolve_device(accelerator)
    if device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


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

    def __init__(self, flags: TrainingFlags) -> None:
        self.flags = flags
        self.checkpoint_dir = Path(flags.checkpoint_dir)
        self.quantize, self.devices, self.num_nodes = flags.quantize, flags.devices, flags.num_nodes
        self.precision = training_precision(flags.precision, flags.quantize, flags.accelerator)
        self.device = training_device(flags.accelerator) if flags.quantize is not None else torch.device("cpu")
        self.trainable: set[str] = set()
        self.config: Optional[Config] = None

    def check(self) -> None:
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

    def write_config(self, folder: Path) -> None:
        """Writes the method's own files into a checkpoint folder (none by default)."""

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

    def __init__(self, flags: TrainingFlags, settings: LoRASettings) -> None:
        super().__init__(flags)
        self.settings = settings

    def check(self) -> None:
        self.settings.validate()
        super().check()

    def inject(self, model: GPT) -> None:
        inject_lora(model, self.settings)

    def trainable_names(self, model: GPT) -> list[str]:
        return [name for name, _ in model.named_parameters() if is_lora_key(name)]

    def full_weights(self, base: dict[str, torch.Tensor], peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return merge_lora_state(base, peft, self.settings, self.config)


class AdapterFinetuning(PEFTFinetuning):
    """LLaMA-Adapter (v1) or Adapter v2 on the loaded base model; every checkpoint folder gets `adapter.yaml`."""

    peft_file = ADAPTER_FILE

    def __init__(self, flags: TrainingFlags, settings: AdapterSettings) -> None:
        super().__init__(flags)
        self.settings = settings
        self.name = settings.method

    def check(self) -> None:
        self.settings.validate()
        super().check()
        self.settings.validate(Config.from_file(self.checkpoint_dir / "model_config.yaml").n_layer)

    def inject(self, model: GPT) -> None:
        inject_adapter(model, self.settings)

    def trainable_names(self, model: GPT) -> list[str]:
        return adapter_trainable_names(model, self.settings)

    def full_weights(self, base: dict[str, torch.Tensor], peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return combine_adapter_weights(base, peft)

    def write_config(self, folder: Path) -> None:
        write_adapter_config(folder, self.settings, self.checkpoint_dir)


def run_peft(method: PEFTFinetuning, verb: str) -> Optional[Path]:
    """Checks the PEFT-specific inputs first (a step folder given as the base, QLoRA support, the settings),
    then trains with the shared finetuning runner; returns the final checkpoint folder (on rank 0)."""
    problems = Problems()
    with problems.check():
        method.check()
    return run_finetuning(method, verb, method.flags, precision=method.precision, extra_files=method.write_config,
                          problems=problems)
