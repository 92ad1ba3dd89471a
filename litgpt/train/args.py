"""The argument groups every training verb shares: `TrainArgs`, `EvalArgs`, `LogArgs`.

Field names follow LitGPT 0.5.x (`--train.global_batch_size`, `--eval.interval`, ...). Each field's
docstring becomes its `--help` text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from litgpt.precision import Precision  # noqa: F401 (the verbs' flag type)


@dataclass
class TrainArgs:
    """How long and how to train: batch sizes, stop rules, learning-rate schedule, checkpoints."""

    save_interval: Optional[int] = 1000
    """Save a checkpoint every this many optimizer steps (None: only at the end)."""
    log_interval: int = 1
    """Log metrics (and refresh the progress bar's loss) every this many optimizer steps."""
    global_batch_size: int = 64
    """Samples per optimizer step over all devices: micro_batch_size x devices x accumulation steps."""
    micro_batch_size: int = 4
    """Samples per forward/backward pass on one device."""
    lr_warmup_steps: Optional[int] = 100
    """Optimizer steps of linear warmup from 0 to the optimizer's lr (then cosine decay to min_lr)."""
    lr_warmup_fraction: Optional[float] = None
    """Warmup as a fraction of the total steps, in [0, 1]; replaces lr_warmup_steps when set."""
    epochs: Optional[int] = None
    """Stop after this many passes over the training set."""
    max_tokens: Optional[int] = None
    """Stop after this many training tokens (summed over devices; padding not counted)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps."""
    max_time: Optional[float] = None
    """Stop after this many seconds of training in this run (a checkpoint is saved first)."""
    max_seq_length: Optional[int] = None
    """Longest training sequence in tokens (default: the model's block_size; longer samples are cut)."""
    tie_embeddings: Optional[bool] = None
    """Share the token embedding with the LM head (pretraining only; None keeps the config's choice)."""
    max_norm: Optional[float] = None
    """Clip the global gradient norm to this value (None: no clipping)."""
    min_lr: float = 6e-5
    """Learning rate at the end of the cosine decay."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass (less memory, ~30% slower)."""
    kernels: Optional[str] = None
    """"triton": run RMSNorm, SwiGLU/GeGLU, RoPE and the LM-head cross-entropy on the Triton kernels of
    extensions/triton (a CUDA GPU and the `triton` package needed); None: PyTorch's own operations."""

    def validate(self) -> None:
        """Raises a ValueError naming the first bad field."""
        for name in ("global_batch_size", "micro_batch_size", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_interval", "epochs", "max_tokens", "max_steps", "max_seq_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name} must be >= 1 (or unset), got {value}")
        if self.micro_batch_size > self.global_batch_size:
            raise ValueError(
                f"train.micro_batch_size={self.micro_batch_size} is larger than "
                f"train.global_batch_size={self.global_batch_size}"
            )
        if self.lr_warmup_steps is not None and self.lr_warmup_steps < 0:
            raise ValueError(f"train.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.lr_warmup_fraction is not None and not 0 <= self.lr_warmup_fraction <= 1:
            raise ValueError(f"train.lr_warmup_fraction must be in [0, 1], got {self.lr_warmup_fraction}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"train.max_time must be a positive number of seconds, got {self.max_time}")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"train.max_norm must be > 0 (or unset), got {self.max_norm}")
        if self.min_lr < 0:
            raise ValueError(f"train.min_lr must be >= 0, got {self.min_lr}")
        if self.kernels not in (None, "triton"):
            raise ValueError(f"train.kernels must be 'triton' or unset, got {self.kernels!r}")
        if self.epochs is None and self.max_tokens is None and self.max_steps is None and self.max_time is None:
            raise ValueError("no stop rule: set one of train.max_steps, train.max_tokens, train.epochs, train.max_time")

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per device per optimizer step; raises unless the global batch splits evenly."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"train.micro_batch_size x devices = {self.micro_batch_size} x {world_size}"
            )
        return self.global_batch_size // per_step

    def warmup_steps(self, total_steps: Optional[int]) -> int:
        """Warmup length in optimizer steps (the fraction needs the total)."""
        if self.lr_warmup_fraction is not None:
            if total_steps is None:
                raise ValueError("train.lr_warmup_fraction needs a known number of steps (max_steps, max_tokens or epochs)")
            return int(self.lr_warmup_fraction * total_steps)
        return self.lr_warmup_steps or 0

    # LitGPT's names (litgpt.args.TrainArgs), over the methods above
    def gradient_accumulation_iters(self, devices: int, num_nodes: int = 1) -> int:
        """Micro-batches per device per optimizer step (LitGPT's name for `accumulation_steps`)."""
        return self.accumulation_steps(devices * num_nodes)

    def batch_size(self, devices: int, num_nodes: int = 1) -> int:
        """Samples per optimizer step on one device."""
        return self.global_batch_size // (devices * num_nodes)

    def warmup_iters(self, devices: int, num_nodes: int, max_iters: int, train_dataloader: Any) -> int:
        """Warmup length in micro-batch iterations: warmup steps x accumulation, or `lr_warmup_fraction` of one
        epoch of `train_dataloader` (at most `max_iters`)."""
        if self.lr_warmup_fraction is not None:
            return min(max_iters, math.ceil(self.lr_warmup_fraction * len(train_dataloader)))
        return min(max_iters, (self.lr_warmup_steps or 0) * self.gradient_accumulation_iters(devices, num_nodes))


@dataclass
class EvalArgs:
    """When and how much to validate, and the sample generated at validation time."""

    interval: int = 600
    """Validate every this many optimizer steps."""
    max_new_tokens: Optional[int] = None
    """Tokens of the sample generated at each validation (None: 50; 0: no sample)."""
    max_iters: int = 100
    """Validation batches per device (the validation set is cut there)."""
    initial_validation: bool = False
    """Validate before the first step (otherwise a 2-batch sanity check runs)."""
    final_validation: bool = True
    """Validate after the last step."""
    evaluate_example: Union[str, int] = "first"
    """Which validation sample prompts the generated text: "first", "random" or an index."""

    def validate(self) -> None:
        """Raises a ValueError naming the first bad field."""
        if self.interval < 1:
            raise ValueError(f"eval.interval must be >= 1, got {self.interval}")
        if self.max_iters < 0:
            raise ValueError(f"eval.max_iters must be >= 0, got {self.max_iters}")
        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            raise ValueError(f"eval.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        example = self.evaluate_example
        if isinstance(example, str) and example not in ("first", "random") and not example.isdigit():
            raise ValueError(f"eval.evaluate_example must be 'first', 'random' or an index, got {example!r}")


@dataclass
class LogArgs:
    """Names for the experiment trackers (wandb, mlflow)."""

    project: Optional[str] = None
    """Project name (default: the verb, e.g. "pretrain")."""
    run: Optional[str] = None
    """Run name (default: the output folder's name)."""
    group: Optional[str] = None
    """Group of runs (wandb)."""
    teamspace: Optional[str] = None
    """Lightning AI teamspace (LitGPT's litlogger; accepted in recipes, not used here)."""
    metadata: Optional[dict] = None
    """Tags of the run (LitGPT's litlogger; accepted in recipes, not used here)."""
    log_model: bool = False
    """Upload checkpoints as artifacts (LitGPT's litlogger; accepted in recipes, not used here)."""
    save_logs: bool = True
    """Upload the terminal logs (LitGPT's litlogger; accepted in recipes, not used here)."""
    checkpoint_name: Optional[str] = None
    """Name of uploaded checkpoints (LitGPT's litlogger; accepted in recipes, not used here)."""


LoggerName = Literal["csv", "tensorboard", "wandb", "mlflow", "litlogger"]  # litlogger: a one-line error at run time
Strategy = Literal["auto", "ddp", "fsdp"]


def format_duration(seconds: float) -> str:
    """'1h02m03s' / '2m05s' / '4.2s'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def format_count(n: float) -> str:
    """1234 -> '1.2K', 3_400_000 -> '3.4M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB', 3e9 -> '3.0 GB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint after `step` optimizer steps: 'step-00001000'."""
    return f"step-{step:08d}"


STEP_DIR_RE = re.compile(r"^step-(\d+)$")
