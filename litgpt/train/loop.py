"""THE training loop shared by `pretrain` and every finetuning verb.

A verb supplies a `Method` (how to build the model, which parameters train, which files hold its
weights) and a `TrainingRun` (config, data, output folder, argument groups); `fit` does the rest:
Fabric set-up (devices, nodes, DDP / FSDP, precision), gradient accumulation, clipping, warmup + cosine
schedule, validation with a generated sample, atomic checkpoints, exact resumption, logging, the loss
PNG and the summary line.

Gradients do not depend on how a global batch is split: each micro-batch's summed token loss is divided
by the number of target tokens of the whole optimizer step (over all devices), so one process with
accumulation and several processes compute the same update.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn as nn

from litgpt.config import Config
from litgpt.data.base import IGNORE_INDEX, DataModule
from litgpt.data.packing import packing_kwargs
from litgpt.checkpoint import check_tokenizer_fits
from litgpt.model import GPT
from litgpt.precision import check_training_precision, default_training_precision
from litgpt.train.args import EvalArgs, LogArgs, TrainArgs, format_bytes, step_dir_name
from litgpt.train.checkpoint import (
    TRAINING_STATE,
    STATE_FORMAT,
    capture_rng,
    check_writable,
    find_resume_dir,
    load_training_state,
    remove_stale_partial_saves,
    restore_rng,
    step_checkpoints,
    to_plain,
    write_folder,
    write_yaml,
)
from litgpt.prompts import save_prompt_style
from litgpt.train.interrupt import InterruptFlag, TrainingInterrupted, resume_command
from litgpt.train.loader import StepSampler, loader_workers, validation_batches
from litgpt.train.loss import fused_linear_cross_entropy, install_fused_head, token_loss_sum
from litgpt.train.monitor import Monitor, Throughput, check_logger_available, peak_device_flops, summary_line
from litgpt.train.optim import OptimizerSpec, build_optimizer, build_scheduler, optimizer_lr
from litgpt.utils import copy_side_files, device_count, training_flops_per_token



class Method:
    """How a verb prepares the model it trains. Override what differs; `fit` does the rest.

    - `build_model(config)`: the model with its starting weights (random init or a checkpoint), on CPU.
    - `mark_trainable(model)`: sets `requires_grad` (default: every parameter trains).
    - `model_files(state_dict, final)`: file name -> state dict written into a checkpoint folder.
    - `resume_state_dict(folder)`: (state dict, strict) to load when resuming from a step folder.
    - `checkpoint_state(model)`: the tensors checkpoints need, when not the whole state dict (PEFT methods).
    - `check()`: one-line errors about the verb's own inputs, before any work.
    - `objective`: what a step minimises, when not the token cross-entropy (an `Objective`).
    """

    name = "full"
    objective: Optional["Objective"] = None

    def check(self) -> None:
        """Raises a one-line error for bad inputs of the method (called before anything is written)."""

    def build_model(self, config: Config) -> GPT:
        """The model to train, on CPU, with its starting weights."""
        raise NotImplementedError

    def mark_trainable(self, model: GPT) -> None:
        """Sets requires_grad on the parameters that train."""
        for p in model.parameters():
            p.requires_grad_(True)

    def model_files(self, state_dict: dict[str, torch.Tensor], final: bool) -> dict[str, dict[str, torch.Tensor]]:
        """The weight files of a checkpoint folder: {file name: state dict}."""
        return {"lit_model.pth": state_dict}

    def resume_state_dict(self, folder: Path) -> tuple[dict[str, torch.Tensor], bool]:
        """Weights to load when resuming from the step folder `folder`, and whether they cover every key."""
        from litgpt.utils import load_state_dict

        return load_state_dict(folder / "lit_model.pth"), True

    def checkpoint_state(self, model: GPT) -> Optional[dict[str, torch.Tensor]]:
        """The tensors `model_files` needs, on the CPU, when the method can name them itself on one process
        (e.g. only the trainable ones); None: the whole state dict, gathered as FSDP needs."""
        return None


class Objective:
    """What a training step minimises instead of the token cross-entropy (`Method.objective`), e.g. a preference
    loss. The loss of a micro-batch is a sum over its `units` (pairs, sequences...); the loop divides it by the
    units of the whole optimizer step, over all processes, so the step minimises the mean over units for any
    split into micro-batches and devices. Metrics are summed the same way and logged as means over the units of
    the logging window (`val_` + name at validation); `columns` names them for metrics.csv.
    """

    columns: tuple[str, ...] = ()

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many units the loss of `batch` sums over."""
        raise NotImplementedError

    def prepare(self, trainer: Any) -> None:
        """Called once the model is set up on its device, before a resumed run loads its weights (so the model
        still holds the starting weights)."""

    def loss(self, trainer: Any, batch: dict[str, torch.Tensor], training: bool
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss of `batch` summed over its units, {metric: its sum over the units}). `training`: the
        gradients flow through `trainer.model`; else (validation) no gradients, through `trainer.raw`."""
        raise NotImplementedError


@dataclass
class TrainingRun:
    """What a verb hands `fit` besides its Method (most fields are the verb's own flags)."""

    verb: str
    config: Config
    data: DataModule
    tokenizer_dir: Optional[Path]
    out_dir: Path
    train: TrainArgs
    eval: EvalArgs
    log: LogArgs = field(default_factory=LogArgs)
    optimizer: OptimizerSpec = "AdamW"
    precision: Optional[str] = None
    devices: Union[int, str] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "auto"
    compile: bool = False
    resume: Union[bool, str, Path] = False
    seed: int = 42
    logger_name: str = "csv"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    prompt_style: Any = None
    """Written as prompt_style.yaml (default: the data module's prompt style, else "default")."""
    extra_files: Optional[Callable[[Path], None]] = None
    """Writes further files into every checkpoint folder (called with the folder)."""


@dataclass
class TrainState:
    """Counters and history that a checkpoint stores and a resumed run continues from."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    tokens: int = 0
    samples: int = 0
    train_time: float = 0.0
    train_history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)


class Problems:
    """The one-line errors of independent checks, collected so that a verb reports them all at once.

    `with problems.check(): ...` records a user error (ValueError, FileNotFoundError, ...) instead of raising
    it; `raise_if_any()` raises the only one as it is, or several as one line: "3 problems: (1) ...; (2) ...".
    """

    CAUGHT = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
              NotImplementedError, ImportError)

    def __init__(self) -> None:
        self.errors: list[Exception] = []

    @staticmethod
    def line(err: Exception) -> str:
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except self.CAUGHT as err:
            if self.line(err) not in [self.line(e) for e in self.errors]:
                self.errors.append(err)

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            message = f"{len(self.errors)} problems: " + "; ".join(
                f"({i}) {self.line(e)}" for i, e in enumerate(self.errors, 1))
            try:
                err = type(self.errors[0])(message)
            except Exception:
                err = ValueError(message)
            raise err from None


def check_run(method: Method, run: TrainingRun, problems: Optional[Problems] = None) -> Optional[Path]:
    """Every check that can fail before training, with one-line errors; writes nothing. All problems are
    reported together (see `Problems`), with those the verb collected in `problems` first.

    `run.config` None means the verb could not resolve the model (and recorded why in `problems`): the checks
    that need it (block size, the tokenizer when none was given, the method's checkpoint) are skipped.
    Returns the checkpoint folder to resume from (None for a fresh start).
    """
    problems = problems or Problems()
    with problems.check():
        run.train.validate()
        world = device_count(run.accelerator, run.devices) * run.num_nodes
        run.train.accumulation_steps(world)
    with problems.check():
        run.eval.validate()
    with problems.check():
        check_logger_available(run.logger_name)
    with problems.check():
        run.precision = check_training_precision(run.precision)
    with problems.check():
        if run.strategy not in ("auto", "ddp", "fsdp"):
            raise ValueError(f"strategy must be auto, ddp or fsdp, got {run.strategy!r}")
    with problems.check():
        if run.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {run.num_nodes}")
    with problems.check():
        if run.train.kernels == "triton":
            check_triton_kernels()
    with problems.check():
        seq_len = run.train.max_seq_length or (run.config.block_size if run.config is not None else 0)
        if run.config is not None and seq_len > run.config.block_size:
            raise ValueError(
                f"train.max_seq_length={seq_len} is larger than the model's block_size={run.config.block_size}"
            )
    with problems.check():
        optimizer_lr(run.optimizer)
    with problems.check():
        check_writable(run.out_dir)
    with problems.check():
        if run.tokenizer_dir is None and run.config is not None:
            raise FileNotFoundError(
                "no tokenizer: pass --tokenizer_dir (a folder with tokenizer.json or tokenizer.model)")
        if run.tokenizer_dir is not None:
            from litgpt.tokenizer import Tokenizer

            Tokenizer(run.tokenizer_dir)
    with problems.check():
        if run.data is None:
            raise ValueError("pass a dataset, e.g. --data TextFiles --data.train_data_path DIR (or TinyLlama, "
                             "OpenWebText)")
        if not isinstance(run.data, DataModule):
            raise ValueError(f"data must be a litgpt.data DataModule, got {type(run.data).__name__}")
        run.data.check()
    if run.config is not None:
        with problems.check():
            method.check()
    resume_dir = None
    with problems.check():
        resume_dir = find_resume_dir(run.out_dir, run.resume)
    problems.raise_if_any()
    return resume_dir


def check_triton_kernels() -> None:
    """One-line errors when `--train.kernels triton` cannot run here (no triton package, no GPU)."""
    try:
        from extensions.triton._runtime import require_gpu
    except ImportError as err:
        raise ImportError(f"--train.kernels triton needs the triton package: pip install 'litgpt[triton]' ({err})")
    try:
        require_gpu()
    except RuntimeError as err:
        raise ValueError(f"--train.kernels triton: {err}") from None


def make_fabric(run: TrainingRun, activation_checkpointing: bool):
    """A Fabric for the run's accelerator, devices, nodes, strategy and precision."""
    import lightning as L

    precision = run.precision or default_training_precision(run.accelerator)
    world = device_count(run.accelerator, run.devices) * run.num_nodes
    strategy: Any = run.strategy
    if strategy == "auto":
        strategy = "fsdp" if world > 1 else "auto"
    if strategy == "fsdp":
        from lightning.fabric.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(
            parallelize_fn=partial(shard_model, activation_checkpointing=activation_checkpointing, compile=run.compile),
            data_parallel_size=world,
            tensor_parallel_size=1,
        )
    accelerator = "cuda" if run.accelerator == "gpu" else run.accelerator
    return L.Fabric(accelerator=accelerator, devices=run.devices, num_nodes=run.num_nodes, strategy=strategy,
                    precision=precision)


def shard_model(model: GPT, device_mesh: Any, activation_checkpointing: bool = False, compile: bool = False) -> GPT:
    """FSDP2: shards every transformer block, then the rest (embeddings, final norm, head)."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh["data_parallel"]
    for block in model.transformer.h:
        if activation_checkpointing:
            checkpoint_block(block)
        if compile:
            block.compile()
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class _Checkpointed:
    """A block's forward that recomputes its activations in the backward pass (while gradients are on)."""

    def __init__(self, forward: Callable) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def checkpoint_block(block: nn.Module) -> None:
    """Turns on activation checkpointing for one block, keeping its parameter names."""
    if not isinstance(block.forward, _Checkpointed):
        block.forward = _Checkpointed(block.forward)


def enable_activation_checkpointing(model: GPT) -> None:
    """Activation checkpointing for every transformer block (works on one device too)."""
    for block in model.transformer.h:
        checkpoint_block(block)


def fit(method: Method, run: TrainingRun, problems: Optional[Problems] = None) -> Optional[Path]:
    """Trains as the run says; returns the final checkpoint folder (on rank 0; None elsewhere).

    Bad input raises a one-line error before any process starts or any file is written (all problems at once,
    the verb's own `problems` first; see `check_run`).
    """
    resume_dir = check_run(method, run, problems)
    fabric = make_fabric(run, run.train.activation_checkpointing)
    fabric.launch()
    return _Trainer(fabric, method, run, resume_dir).fit()


class _Trainer:
    def __init__(self, fabric: Any, method: Method, run: TrainingRun, resume_dir: Optional[Path]) -> None:
        self.fabric, self.method, self.run, self.resume_dir = fabric, method, run, resume_dir
        self.train_args, self.eval_args = run.train, run.eval
        self.world = fabric.world_size
        self.is_fsdp = type(fabric.strategy).__name__ == "ModelParallelStrategy"
        self.state = TrainState()
        self.monitor: Optional[Monitor] = None
        self.precision = run.precision or default_training_precision(run.accelerator)

    # ---------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        from litgpt.tokenizer import Tokenizer

        fabric, run, t = self.fabric, self.run, self.train_args
        fabric.seed_everything(run.seed, verbose=False)
        self.tokenizer = Tokenizer(run.tokenizer_dir)
        check_tokenizer_fits(self.tokenizer, run.config, run.config.name or "the model")
        self.seq_len = t.max_seq_length or run.config.block_size
        data = run.data
        data.connect(self.tokenizer, batch_size=t.micro_batch_size, max_seq_length=self.seq_len)
        with fabric.rank_zero_first(local=True):
            data.prepare_data()
        data.setup()
        self.ignore_index = getattr(data, "ignore_index", IGNORE_INDEX)
        self.n_train = len(data.train_dataset)
        if self.n_train < t.global_batch_size:
            raise ValueError(
                f"the training set has {self.n_train} samples, fewer than train.global_batch_size={t.global_batch_size}"
            )
        if len(data.val_dataset) == 0:
            raise ValueError("the validation set is empty")
        self.accum = t.accumulation_steps(self.world)
        self.steps_per_epoch = self.n_train // t.global_batch_size
        self.total_steps = self._horizon()
        self.warmup = t.warmup_steps(self.total_steps)
        if self.total_steps is not None and self.warmup > self.total_steps:
            fabric.print(f"Warning: the warmup ({self.warmup} steps) is longer than the run ({self.total_steps} steps): "
                         "the learning rate never reaches its peak; lower train.lr_warmup_steps")

        model = self.method.build_model(run.config)
        model.max_seq_length = self.seq_len
        self.method.mark_trainable(model)
        self.raw = model
        if t.activation_checkpointing and not self.is_fsdp:
            enable_activation_checkpointing(model)
        self.loss_fn = fused_linear_cross_entropy
        if t.kernels == "triton":
            from extensions.triton.patch import enable

            model, self.loss_fn = enable(model)
        # the Triton loss never materialises the logits: worth it for any vocabulary
        min_vocab = 0 if t.kernels == "triton" else None
        self.fused_head = None if self.is_fsdp else install_fused_head(model, min_vocab=min_vocab)
        self.flops_per_token = _flops_per_token(model, self.seq_len)
        module = model
        if run.compile and not self.is_fsdp:
            module = torch.compile(model)
        self.model = fabric.setup_module(module)
        # the fused (single-kernel) implementations of Adam/AdamW/SGD are the fastest on CPU and CUDA
        fused = {"fused": True} if fabric.device.type in ("cpu", "cuda") and not self.is_fsdp else {}
        optimizer = build_optimizer(run.optimizer, self.raw, **fused)
        self.optimizer = fabric.setup_optimizers(optimizer)
        self.scheduler = build_scheduler(self.optimizer, self.warmup, self.total_steps, t.min_lr)
        self.objective = self.method.objective
        self._metric_sums: dict[str, torch.Tensor] = {}
        if self.objective is not None:
            self.objective.prepare(self)
        if self.resume_dir is not None:
            self._resume(self.resume_dir)
        self.prompt_style = run.prompt_style if run.prompt_style is not None else (data.get_prompt_style() or "default")

    def _horizon(self) -> Optional[int]:
        """Optimizer steps the schedule plans for: the earliest of the step, token and epoch limits."""
        t = self.train_args
        bounds = []
        if t.max_steps:
            bounds.append(t.max_steps)
        if t.epochs:
            bounds.append(t.epochs * self.steps_per_epoch)
        if t.max_tokens:
            bounds.append(max(1, math.ceil(t.max_tokens / (t.global_batch_size * self.seq_len))))
        return min(bounds) if bounds else None

    # ---------------------------------------------------------------------------------- resume
    def _resume(self, folder: Path) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        saved = load_training_state(folder)
        expected = {"global_batch_size": self.train_args.global_batch_size, "max_seq_length": self.seq_len,
                    "seed": self.run.seed, "train_samples": self.n_train}
        for key, value in expected.items():
            if saved["data"].get(key) != value:
                raise ValueError(
                    f"cannot resume from {folder}: it was trained with {key}={saved['data'].get(key)}, "
                    f"this run has {key}={value} (the data order would differ)"
                )
        weights, strict = self.method.resume_state_dict(folder)
        options = StateDictOptions(full_state_dict=True, strict=strict)
        set_model_state_dict(self.raw, weights, options=options)
        set_optimizer_state_dict(self.raw, self.optimizer.optimizer, saved["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        self._set_schedule_position(self.state_step_of(saved))
        rng = saved["rng"]
        restore_rng(rng[self.fabric.global_rank] if self.fabric.global_rank < len(rng) else rng[0])
        counters = saved["state"]
        self.state = TrainState(**{f.name: counters[f.name] for f in dataclasses.fields(TrainState) if f.name in counters})
        self.fabric.print(f"Resuming from {folder} at step {self.state.step} (epoch {self.state.epoch})")

    @staticmethod
    def state_step_of(saved: dict[str, Any]) -> int:
        return int(saved["state"]["step"])

    def _set_schedule_position(self, step: int) -> None:
        """Puts the learning-rate schedule at optimizer step `step` of this run's plan (its warmup, horizon, lr and
        min_lr): the learning rate after a resume is a pure function of the step and the current arguments, never
        the interrupted run's (possibly different) plan saved with the optimizer."""
        scheduler = self.scheduler
        scheduler.last_epoch = step
        for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["initial_lr"] = base
            group["lr"] = base * factor(step)
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---------------------------------------------------------------------------------- loop
    def fit(self) -> Optional[Path]:
        fabric, run = self.fabric, self.run
        self.setup()
        is_rank_zero = fabric.global_rank == 0
        if is_rank_zero:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            freed = remove_stale_partial_saves(run.out_dir)
            if freed is not None:
                fabric.print(f"Removed {freed[0]} partial checkpoint folder(s) left by an interrupted save in "
                             f"{run.out_dir} ({format_bytes(freed[1])} freed)")
        fabric.barrier()
        self.monitor = Monitor(
            enabled=is_rank_zero, out_dir=run.out_dir, logger_name=run.logger_name, total_steps=self.total_steps,
            start_step=self.state.step, project=run.log.project or run.verb, run=run.log.run or run.out_dir.name,
            group=run.log.group, hyperparameters=run.hyperparameters,
            resume_step=self.state.step if self.resume_dir is not None else None,
            extra_columns=self.objective.columns if self.objective is not None else (),
        )
        # denormal floats (tiny products, e.g. of near-zero probabilities) make CPU matrix products several
        # times slower; flushing them to zero changes nothing measurable in training
        flush = fabric.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            with InterruptFlag() as self.interrupt:
                return self._train()
        finally:
            self.monitor.close()
            if flush:
                torch.set_flush_denormal(False)

    def _train(self) -> Optional[Path]:
        fabric, run, t, e = self.fabric, self.run, self.train_args, self.eval_args
        is_rank_zero = fabric.global_rank == 0
        self._announce()
        throughput = Throughput(self.flops_per_token, peak_device_flops(fabric.device, self.precision), self.world)
        start_time = time.perf_counter()
        start_tokens = self.state.tokens
        last_val_step = last_save_step = -1
        if e.initial_validation and self.state.step == 0:
            self._validate(e.max_iters)
            last_val_step = 0

        window_loss = torch.zeros((), device=fabric.device)
        window_targets = 0
        compiled_reported = False
        speed_start = (start_time, start_tokens)  # the summary's tokens/s counts from here (after compilation)
        if run.compile:
            self.monitor.write("Compiling the model with torch.compile: the first step takes longer (often 30 s or "
                               "more); the speed reported afterwards is the steady state")
        stopped_by = self._stop_rule(start_time)  # a resumed run may have nothing left to do
        while stopped_by is None:
            sampler = StepSampler(self.n_train, t.global_batch_size, t.micro_batch_size, self.world,
                                  fabric.global_rank, run.seed, self.state.epoch, self.state.step_in_epoch)
            # the loader draws its workers' seed from its own generator, not from the global one that dropout
            # uses: a run resumed mid-epoch then draws the same random numbers as an uninterrupted one
            loader = torch.utils.data.DataLoader(
                run.data.train_dataset, batch_sampler=sampler, collate_fn=run.data.collate,
                num_workers=loader_workers(getattr(run.data, "loader_workers", 0)),
                generator=torch.Generator().manual_seed(run.seed + self.state.epoch),
            )
            micro_batches: list[dict[str, torch.Tensor]] = []
            for batch in loader:
                micro_batches.append(batch)
                if len(micro_batches) < self.accum:
                    continue
                step_start = time.perf_counter()
                loss_sum, targets, tokens = self._step(micro_batches)
                micro_batches = []
                if run.compile and not compiled_reported:
                    compiled_reported = True
                    self.monitor.write(f"torch.compile: the first step took {time.perf_counter() - step_start:.1f}s "
                                       "(compilation); tokens/s below exclude it")
                    throughput.reset()
                    speed_start = (time.perf_counter(), self.state.tokens + tokens)
                window_loss += loss_sum
                window_targets += targets
                throughput.add(tokens, t.global_batch_size)
                s = self.state
                s.step += 1
                s.step_in_epoch += 1
                s.tokens += tokens
                s.samples += t.global_batch_size
                self.monitor.advance()

                if s.step % t.log_interval == 0:
                    loss = self._reduce(window_loss) / max(window_targets, 1)
                    objective_metrics = self._metric_means(window_targets)
                    window_loss.zero_()
                    window_targets = 0
                    metrics = {"epoch": s.epoch, "tokens": s.tokens, "samples": s.samples,
                               "time": s.train_time + time.perf_counter() - start_time, "loss": loss,
                               "lr": self._last_lr}
                    if self._last_grad_norm is not None:
                        metrics["grad_norm"] = float(self._last_grad_norm)
                    metrics.update(throughput.compute())
                    metrics.update(objective_metrics)
                    s.train_history.append((s.step, loss))
                    self.monitor.log(metrics, s.step)

                stopped_by = self._stop_rule(start_time)
                if self._interrupted():
                    stopped_by = "interrupt"
                if s.step % e.interval == 0 and stopped_by is None:
                    paused = throughput.pause()
                    self._validate(e.max_iters)
                    last_val_step = s.step
                    throughput.resume(paused)
                if t.save_interval and s.step % t.save_interval == 0 and stopped_by is None:
                    paused = throughput.pause()
                    self._save_step(start_time)
                    last_save_step = s.step
                    throughput.resume(paused)
                if stopped_by is not None:
                    break
            else:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                if t.epochs and self.state.epoch >= t.epochs:
                    stopped_by = "epochs"

        s = self.state
        run_seconds = time.perf_counter() - start_time
        if stopped_by == "interrupt":
            s.train_time += run_seconds
            self._save_interrupted(last_save_step)
        if e.final_validation and last_val_step != s.step:
            self._validate(e.max_iters)
        s.train_time += run_seconds
        if last_save_step != s.step:
            self._save_step(None)
        final = self._save_final()
        self.monitor.close()
        if is_rank_zero:
            from litgpt.train.plot import plot_losses

            png = plot_losses(s.train_history, s.val_history, run.out_dir / "loss.png",
                              title=f"{run.verb}: loss ({run.out_dir.name})")
            val = s.val_history[-1][1] if s.val_history else None
            speed_seconds = time.perf_counter() - speed_start[0] if run.compile else run_seconds
            print(summary_line(run.verb, s.step, s.tokens - speed_start[1], speed_seconds, val, final, stopped_by),
                  flush=True)
            if png is not None:
                print(f"Loss curve: {png}", flush=True)
        fabric.barrier()
        return final if is_rank_zero else None

    def _interrupted(self) -> bool:
        """Whether Ctrl-C or SIGTERM arrived (on any process)."""
        flag = self.interrupt.signum is not None
        if self.world > 1:
            import torch.distributed as dist

            value = torch.tensor([float(flag)], device=self.fabric.device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            flag = bool(value.item())
        return flag

    def _save_interrupted(self, last_save_step: int) -> None:
        """Saves a resumable checkpoint of the current step, prints the resume command, and raises
        TrainingInterrupted. A second Ctrl-C while saving aborts the save; the previous checkpoint stays."""
        signum = self.interrupt.signum or signal.SIGINT
        code = 128 + int(signum)
        folder = self.run.out_dir / step_dir_name(self.state.step)
        self.interrupt.saving = True
        try:
            if last_save_step != self.state.step:
                self.fabric.print(f"Interrupted ({signal.Signals(signum).name}): saving step {self.state.step} "
                                  f"(Ctrl-C again to abort the save)...")
                self._save_step(None)
        except KeyboardInterrupt:
            previous = step_checkpoints(self.run.out_dir)
            where = f"the previous checkpoint {previous[-1][1]} is intact" if previous else "no checkpoint was written"
            self.fabric.print(f"Save aborted; {where}.")
            raise TrainingInterrupted(code, previous[-1][1] if previous else None) from None
        finally:
            self.interrupt.saving = False
        self.fabric.print(f"Interrupted at step {self.state.step}; resume with: {resume_command(folder)}")
        raise TrainingInterrupted(code, folder)

    def _announce(self) -> None:
        t, run = self.train_args, self.run
        n_params = sum(p.numel() for p in dict.fromkeys(self.raw.parameters()))
        n_train = sum(p.numel() for p in dict.fromkeys(self.raw.parameters()) if p.requires_grad)
        horizon = f"{self.total_steps} steps" if self.total_steps else "until train.max_time"
        self.fabric.print(
            f"{run.verb}: {run.config.name or 'model'} with {n_params:,} parameters ({n_train:,} trainable) on "
            f"{self.world} {self.fabric.device.type} process(es), precision {self.precision}; "
            f"{self.n_train:,} training samples of <= {self.seq_len} tokens, {self.steps_per_epoch} steps per epoch; "
            f"global batch {t.global_batch_size} = {t.micro_batch_size} x {self.world} x {self.accum} accumulation; "
            f"{horizon}, warmup {self.warmup}; output in {run.out_dir}"
        )

    def _stop_rule(self, start_time: float) -> Optional[str]:
        t, s = self.train_args, self.state
        if t.max_steps and s.step >= t.max_steps:
            return "max_steps"
        if t.max_tokens and s.tokens >= t.max_tokens:
            return "max_tokens"
        if t.epochs and s.epoch >= t.epochs:
            return "epochs"
        if t.max_time:
            over = time.perf_counter() - start_time >= t.max_time
            if self.world > 1:  # every process must stop at the same step
                over = bool(self.fabric.broadcast(over, src=0))
            if over:
                return "max_time"
        return None

    def _reduce(self, value: torch.Tensor) -> float:
        if self.world > 1:
            value = self.fabric.all_reduce(value.clone(), reduce_op="sum")
        return float(value)

    def _step(self, micro_batches: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, int, int]:
        """One optimizer step over this process's micro-batches; returns (summed loss on this process as a
        tensor, target tokens and input tokens over all processes)."""
        fabric, t = self.fabric, self.train_args
        targets = sum(self._units(b) for b in micro_batches)
        tokens = sum(b["input_ids"].numel() for b in micro_batches)
        if self.world > 1:
            counts = fabric.all_reduce(torch.tensor([targets, tokens], device=fabric.device, dtype=torch.float64),
                                       reduce_op="sum")
            targets, tokens = (int(x) for x in counts.tolist())
        # the gradient of the mean over all target tokens of the step; DDP/FSDP average over processes
        scale = self.world / max(targets, 1)
        total = torch.zeros((), device=fabric.device)
        for i, batch in enumerate(micro_batches):
            batch = fabric.to_device(batch)
            last = i == len(micro_batches) - 1
            sync_off = not last and self.world > 1 and not self.is_fsdp
            with fabric.no_backward_sync(self.model, enabled=sync_off):
                loss = self._loss(batch)
                fabric.backward(loss * scale)
            total += loss.detach()
        self._last_grad_norm = None
        if t.max_norm is not None:
            self._last_grad_norm = fabric.clip_gradients(self.model, self.optimizer, max_norm=t.max_norm)
        self._last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total, targets, tokens

    _last_grad_norm: Optional[torch.Tensor] = None
    _last_lr = 0.0

    objective: Optional[Objective] = None

    def _units(self, batch: dict[str, torch.Tensor]) -> int:
        """What the loss of a batch sums over: its target tokens, or the objective's units."""
        if self.objective is not None:
            return self.objective.units(batch)
        return int((batch["labels"] != self.ignore_index).sum())

    def _metric_means(self, units: int) -> dict[str, float]:
        """The objective's metrics of the logging window (means over its units); starts a new window."""
        means = {name: self._reduce(value) / max(units, 1) for name, value in self._metric_sums.items()}
        self._metric_sums = {}
        return means

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed token cross-entropy of one micro-batch (fused with the LM head when possible), or the
        objective's loss."""
        if self.objective is not None:
            loss, metrics = self.objective.loss(self, batch, training=True)
            for name, value in metrics.items():
                self._metric_sums[name] = self._metric_sums.get(name, 0) + value.detach()
            return loss
        head = self.fused_head
        extra = packing_kwargs(batch)
        if head is None:
            return token_loss_sum(self.model(batch["input_ids"], **extra), batch["labels"], self.ignore_index)
        head.emit_hidden = True
        try:
            hidden = self.model(batch["input_ids"], **extra)
        finally:
            head.emit_hidden = False
        with self.fabric.autocast():
            return self.loss_fn(hidden, head.weight, head.bias, batch["labels"], self.ignore_index)

    # ---------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self, max_iters: int) -> float:
        fabric, data = self.fabric, self.run.data
        self.raw.eval()
        batches = validation_batches(len(data.val_dataset), self.train_args.micro_batch_size, self.world,
                                     fabric.global_rank, max(1, max_iters))
        loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
        count = torch.zeros((), device=fabric.device, dtype=torch.float64)
        sums: dict[str, torch.Tensor] = {}  # the objective's metrics
        t0 = time.perf_counter()
        for indices, counts in batches:
            batch = fabric.to_device(data.collate([data.val_dataset[i] for i in indices]))
            if self.objective is not None:
                loss, extra = self.objective.loss(self, batch, training=False)
            else:
                with fabric.autocast():
                    logits = self.raw(batch["input_ids"], **packing_kwargs(batch))
                loss, extra = token_loss_sum(logits, batch["labels"], self.ignore_index), {}
            if counts:
                loss_sum += loss.double()
                count += self._units(batch)
                for name, value in extra.items():
                    sums[name] = sums.get(name, 0) + value.double()
        if self.world > 1:
            loss_sum = fabric.all_reduce(loss_sum, reduce_op="sum")
            count = fabric.all_reduce(count, reduce_op="sum")
        val_loss = float(loss_sum / count.clamp(min=1))
        s = self.state
        s.val_history.append((s.step, val_loss))
        metrics = {"epoch": s.epoch, "tokens": s.tokens, "samples": s.samples, "val_loss": val_loss,
                   "val_ppl": math.exp(min(val_loss, 50))}
        metrics.update({f"val_{name}": self._reduce(value) / max(float(count), 1) for name, value in sums.items()})
        self.monitor.log(metrics, s.step)
        sample = self._sample()
        message = f"step {s.step}: val loss {val_loss:.4f}, val ppl {math.exp(min(val_loss, 50)):.2f} " \
                  f"({time.perf_counter() - t0:.1f}s)"
        self.monitor.write(message)
        if sample:
            self.monitor.write(sample)
        self.raw.train()
        return val_loss

    def _sample(self) -> Optional[str]:
        """A continuation of the data module's example prompt, as text (rank 0), or None."""
        from litgpt.generate.engine import generate

        e = self.eval_args
        max_new = 50 if e.max_new_tokens is None else e.max_new_tokens
        if max_new == 0:
            return None
        prompt = self.run.data.example_prompt(e.evaluate_example)
        if not prompt:
            return None
        ids = self.tokenizer.encode(prompt, device=self.fabric.device)
        max_new = min(max_new, self.seq_len - ids.numel())
        if max_new <= 0:
            return None
        generator = torch.Generator(device=self.fabric.device).manual_seed(self.run.seed)
        # with sharded weights every process must run the same number of forward passes: no early stop
        stops = [] if self.is_fsdp or self.tokenizer.eos_id is None else [[self.tokenizer.eos_id]]
        try:
            with self.fabric.autocast():
                out = generate(self.raw, ids.long(), max_new, temperature=0.8, top_k=50, stop_tokens=stops,
                               include_stop=False, generator=generator)
        finally:
            self.raw.clear_kv_cache()
        text = self.tokenizer.decode(out[0])
        return f"  sample: {prompt!r} -> {text!r}"

    # ---------------------------------------------------------------------------------- checkpoints
    def _model_state(self) -> dict[str, torch.Tensor]:
        """The tensors checkpoints need on rank 0: the method's own selection (`Method.checkpoint_state`), else
        the full model state dict (gathered from the shards under FSDP; {} on other ranks)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        own = None if self.is_fsdp else self.method.checkpoint_state(self.raw)
        if own is not None:
            return own
        state = get_model_state_dict(self.raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v for k, v in state.items() if not k.endswith("._extra_state")}

    def _optimizer_state(self) -> dict[str, Any]:
        """The full optimizer state dict (keyed by parameter names) on rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.raw, self.optimizer.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _folder_writer(self, model_state: dict[str, torch.Tensor], final: bool,
                       training_state: Optional[dict[str, Any]]) -> Callable[[Path], None]:
        """Writes a checkpoint folder: weights, config, tokenizer files, prompt style, hyperparameters and,
        for step folders, the training state."""
        run = self.run

        def write(folder: Path) -> None:
            for name, sd in self.method.model_files(model_state, final).items():
                torch.save(sd, folder / name)
            self.raw.config.save(folder)  # the model's own config (a tied family may have been untied on load)
            copy_side_files(run.tokenizer_dir, folder)
            save_prompt_style(self.prompt_style, folder)
            write_yaml(to_plain(run.hyperparameters), folder / "hyperparameters.yaml")
            if run.extra_files is not None:
                run.extra_files(folder)
            if training_state is not None:
                torch.save(training_state, folder / TRAINING_STATE)

        return write

    def _save_step(self, start_time: Optional[float]) -> None:
        fabric, s = self.fabric, self.state
        model_state, optim_state = self._model_state(), self._optimizer_state()
        rng = capture_rng()
        if self.world > 1:
            import torch.distributed as dist

            rng_states: list[Any] = [None] * self.world
            dist.all_gather_object(rng_states, rng)
        else:
            rng_states = [rng]
        if fabric.global_rank == 0:
            counters = dataclasses.asdict(s)
            if start_time is not None:
                counters["train_time"] = s.train_time + time.perf_counter() - start_time
            training_state = {
                "format": STATE_FORMAT,
                "verb": self.run.verb,
                "state": counters,
                "optimizer": optim_state,
                "scheduler": _scheduler_state(self.scheduler),
                "rng": rng_states,
                "data": {"global_batch_size": self.train_args.global_batch_size, "max_seq_length": self.seq_len,
                         "seed": self.run.seed, "train_samples": self.n_train},
                "world_size": self.world,
            }
            write_folder(self.run.out_dir / step_dir_name(s.step), self._folder_writer(model_state, False, training_state))
        self._last_saved_step = s.step
        fabric.barrier()

    _last_saved_step = -1

    def _save_final(self) -> Path:
        """`out_dir/final`: hard links to the step folder of the same step when the method saves the same
        weight files in both, else written from the model."""
        fabric, s = self.fabric, self.state
        target = self.run.out_dir / "final"
        reuse = self._last_saved_step == s.step and type(self.method).model_files is Method.model_files
        model_state = None if reuse else self._model_state()
        if fabric.global_rank == 0:
            if reuse:
                writer = _linking_writer(self.run.out_dir / step_dir_name(s.step))
            else:
                writer = self._folder_writer(model_state, True, None)
            write_folder(target, writer)
        fabric.barrier()
        return target


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's position without its schedule: a resumed run keeps its own (possibly longer) plan."""
    state = scheduler.state_dict()
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
    return state


def _linking_writer(step_folder: Path) -> Callable[[Path], None]:
    """Fills a folder with hard links (copies where links fail) to a step folder's files, except its
    training state."""

    def write(folder: Path) -> None:
        import shutil

        for path in step_folder.iterdir():
            if path.is_file() and path.name != TRAINING_STATE:
                try:
                    os.link(path, folder / path.name)
                except OSError:
                    shutil.copy2(path, folder / path.name)

    return write


def _flops_per_token(model: GPT, seq_len: int) -> float:
    try:
        return training_flops_per_token(model, seq_len)
    except Exception:
        return 0.0
