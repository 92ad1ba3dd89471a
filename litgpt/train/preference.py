"""Preference tuning on the shared training loop: the DPO family of losses (DPO, IPO, SimPO, ORPO), the
log-probabilities of responses, and `PreferenceObjective`, the loop's `Objective` that puts them together.

A batch of B preference pairs reaches the objective as 2B sequences, the chosen rows first
(`litgpt.data.preference`): `input_ids` (2B, T) and shifted `labels` (2B, T) that are `ignore_index` on the
prompt and the padding, so a sequence's summed log-probability over its labels is log p(response | prompt).

The reference model of DPO / IPO is the starting point of the run: with LoRA the same model with its LoRA
layers switched off (no second copy of the weights), with full finetuning a frozen copy, or neither when the
reference log-probabilities are computed once before training (`precompute`), which also halves the forward
passes of a full-finetuning step.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.data.base import IGNORE_INDEX
from litgpt.train.loop import Objective

LOSSES = ("dpo", "ipo", "simpo", "orpo")
"""dpo: the sigmoid loss of Rafailov et al. 2023 (with optional label smoothing, "conservative DPO");
ipo: Azar et al. 2023; simpo: Meng et al. 2024 (reference-free, length-normalised, margin gamma);
orpo: Hong et al. 2024 (reference-free odds ratio plus the chosen response's language-model loss)."""
REFERENCE_FREE = ("simpo", "orpo")
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "simpo": 2.0, "orpo": 0.1}
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen",
           "logps/rejected")


@dataclass
class PreferenceLoss:
    """Which loss and its constants."""

    kind: str = "dpo"
    """dpo, ipo, simpo or orpo."""
    beta: Optional[float] = None
    """DPO/IPO: the strength of the pull towards the reference; SimPO: the reward scale; ORPO: the weight of the
    odds-ratio term (default: 0.1, and 2.0 for SimPO)."""
    label_smoothing: float = 0.0
    """DPO and SimPO: the assumed probability that a pair's preference is flipped (0: none)."""
    simpo_gamma: float = 0.5
    """SimPO: the target reward margin."""

    def validate(self) -> "PreferenceLoss":
        """Fills in the default beta; one-line errors for values that cannot work."""
        if self.kind not in LOSSES:
            raise ValueError(f"unknown loss {self.kind!r}; expected one of {', '.join(LOSSES)}")
        if self.beta is None:
            self.beta = DEFAULT_BETA[self.kind]
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.kind not in ("dpo", "simpo"):
            raise ValueError(f"label_smoothing applies to the dpo and simpo losses, not {self.kind}")
        return self

    @property
    def needs_reference(self) -> bool:
        return self.kind not in REFERENCE_FREE

    @property
    def length_normalised(self) -> bool:
        """Whether the loss compares mean per-token log-probabilities (IPO, SimPO, ORPO) instead of sums."""
        return self.kind != "dpo"


def preference_loss(
    loss: PreferenceLoss,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: Optional[torch.Tensor] = None,
    ref_rejected_logps: Optional[torch.Tensor] = None,
    chosen_lengths: Optional[torch.Tensor] = None,
    rejected_lengths: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and implicit rewards, each (B,).

    The log-probabilities are those of the responses given the prompts, summed over their tokens; ipo, simpo and
    orpo compare means per token, for which they need the responses' token counts (`*_lengths`; default 1, i.e.
    the log-probabilities given are means already). The reference ones are needed by dpo and ipo only.
    Rewards (as trl logs them): beta * (policy - reference) of the sums for dpo and ipo, beta * the mean
    per-token log-probability for simpo and orpo.
    """
    beta, smoothing = float(loss.beta), loss.label_smoothing
    if loss.length_normalised:
        means = [x if n is None or x is None else x / n for x, n in (
            (chosen_logps, chosen_lengths), (rejected_logps, rejected_lengths),
            (ref_chosen_logps, chosen_lengths), (ref_rejected_logps, rejected_lengths))]
    if loss.needs_reference:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError(f"the {loss.kind} loss needs the reference model's log-probabilities")
        chosen_rewards = beta * (chosen_logps - ref_chosen_logps).detach()
        rejected_rewards = beta * (rejected_logps - ref_rejected_logps).detach()
        if loss.kind == "dpo":
            h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
            losses = -(1 - smoothing) * F.logsigmoid(beta * h) - smoothing * F.logsigmoid(-beta * h)
        else:  # ipo: regress the margin of the mean log-ratios onto 1 / (2 beta)
            chosen, rejected, ref_chosen, ref_rejected = means
            losses = ((chosen - ref_chosen) - (rejected - ref_rejected) - 1 / (2 * beta)) ** 2
        return losses, chosen_rewards, rejected_rewards
    chosen, rejected = means[0], means[1]
    if loss.kind == "simpo":
        z = beta * (chosen - rejected) - loss.simpo_gamma
        losses = -(1 - smoothing) * F.logsigmoid(z) - smoothing * F.logsigmoid(-z)
    else:  # orpo: log odds(chosen) - log odds(rejected), odds(p) = p / (1 - p) of the mean per-token probability
        log_odds = (chosen - rejected) - (_log1m_exp(chosen) - _log1m_exp(rejected))
        losses = -chosen - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate also near 0 (where 1 - exp(x) cancels)."""
    return torch.log(-torch.expm1(x))


# --------------------------------------------------------------------------------------------------------
# log-probabilities of the labels


def logits_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-sequence sums of log p(label) over the labels that are not `ignore_index`: logits (B, T, V) (or a
    list of chunks along T), labels (B, T) -> (B,), in float32."""
    if isinstance(logits, (list, tuple)):
        logits = torch.cat(list(logits), dim=1)
    logits = logits.float()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    logps = picked - logits.logsumexp(-1)
    return torch.where(valid, logps, torch.zeros_like(logps)).sum(-1)


def _rows_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], labels: torch.Tensor
                ) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()  # (c, V)
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def head_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], labels: torch.Tensor,
               ignore_index: int = IGNORE_INDEX, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """The same as `logits_logps(hidden @ weight.T + bias, labels)` from the final hidden states (B, T, C),
    without the full logits: only the positions with a label go through the head, `chunk_rows` at a time, and
    each block's logits are recomputed in the backward pass instead of being kept."""
    from torch.utils.checkpoint import checkpoint

    B, T, C = hidden.shape
    flat = labels.reshape(-1)
    rows = (flat != ignore_index).nonzero().squeeze(-1)
    if chunk_rows is None:
        chunk_rows = max(1, (16 << 20) // weight.size(0))  # about 16M logits (64 MB in float32) per block
    # the products in the autocast dtype when autocast is on, else in the hidden states' (as the fused loss does)
    dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    h = hidden.reshape(-1, C).index_select(0, rows).to(dtype)
    y = flat.index_select(0, rows)
    parts = []
    for start in range(0, rows.numel(), chunk_rows):
        stop = start + chunk_rows
        if torch.is_grad_enabled():
            parts.append(checkpoint(_rows_logps, h[start:stop], weight, bias, y[start:stop], use_reentrant=False))
        else:
            parts.append(_rows_logps(h[start:stop], weight, bias, y[start:stop]))
    out = torch.zeros(B, dtype=torch.float32, device=hidden.device)
    if not parts:
        return out
    return out.index_add(0, torch.div(rows, T, rounding_mode="floor"), torch.cat(parts))


@contextlib.contextmanager
def lora_switched_off(model: nn.Module) -> Iterator[None]:
    """Runs the model as its base: every LoRA layer computes only its base linear (the layers' own "merged"
    path, taken while the update is not in the weight; restored afterwards)."""
    from litgpt.lora import LoRALayer

    layers = [m for m in model.modules() if isinstance(m, LoRALayer) and not m.merged]
    for layer in layers:
        layer.merged = True
    try:
        yield
    finally:
        for layer in layers:
            layer.merged = False


# --------------------------------------------------------------------------------------------------------
# the objective


class PreferenceObjective(Objective):
    """The loop's objective for preference pairs: the loss is the mean of `preference_loss` over the pairs of
    an optimizer step; the metrics are the mean rewards, reward accuracy and margin, and log-probabilities.

    `reference`: "lora_off" (the trained model with its LoRA layers switched off) or "copy" (a frozen copy of
    the starting weights, made before training); unused by the reference-free losses. `precompute`: compute the
    reference log-probabilities of every pair once before training (cached in `out_dir`).
    """

    CACHE_FILE = "reference_logps.pt"

    def __init__(self, loss: PreferenceLoss, reference: str = "lora_off", precompute: bool = False) -> None:
        if reference not in ("lora_off", "copy"):
            raise ValueError(f"reference must be lora_off or copy, got {reference!r}")
        self.loss_spec = loss.validate()
        self.reference_kind = reference
        self.precompute = precompute and loss.needs_reference
        self.reference: Optional[nn.Module] = None
        self.columns = METRICS + tuple(f"val_{name}" for name in METRICS)

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].size(0) // 2

    # ---- before training
    def prepare(self, trainer: Any) -> None:
        data = trainer.run.data
        for note in getattr(data, "notes", ()):
            trainer.fabric.print(note)
        if not self.loss_spec.needs_reference:
            return
        if self.precompute:
            self._precompute(trainer)
        elif self.reference_kind == "copy":
            if trainer.is_fsdp:
                raise ValueError("full finetuning with FSDP cannot hold a reference copy: pass --precompute_ref true "
                                 "(or use --method lora)")
            self.reference = copy.deepcopy(trainer.raw).eval().requires_grad_(False)

    def _precompute(self, trainer: Any) -> None:
        fabric, run, data = trainer.fabric, trainer.run, trainer.run.data
        datasets = {"train": data.train_dataset, "val": data.val_dataset}
        key = self._fingerprint(trainer, datasets)
        cache = Path(run.out_dir) / self.CACHE_FILE
        stored = torch.load(cache, weights_only=True) if cache.is_file() else None
        if stored is not None and stored.get("key") == key:
            for name, dataset in datasets.items():
                dataset.reference_logps = stored[name]
            fabric.print(f"Reference log-probabilities: read from {cache}")
            return
        t0 = time.perf_counter()
        raw = trainer.raw
        was_training = raw.training
        raw.eval()
        values = {}
        micro = trainer.train_args.micro_batch_size
        try:
            for name, dataset in datasets.items():
                dataset.reference_logps = None
                out = []
                for start in range(0, len(dataset), micro):
                    batch = data.collate([dataset[i] for i in range(start, min(start + micro, len(dataset)))])
                    logps = self._reference_logps(trainer, fabric.to_device(batch)).float().cpu()
                    n = logps.numel() // 2
                    out.append(torch.stack((logps[:n], logps[n:]), dim=1))  # (n, 2): chosen, rejected
                values[name] = torch.cat(out)
        finally:
            raw.train(was_training)
        for name, dataset in datasets.items():
            dataset.reference_logps = values[name]
        if fabric.global_rank == 0:
            from litgpt.utils import atomic_path

            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                torch.save({"key": key, **values}, tmp)
        pairs = sum(len(d) for d in datasets.values())
        fabric.print(f"Reference log-probabilities of {pairs:,} pairs computed in {time.perf_counter() - t0:.1f}s "
                     f"(cached in {cache})")

    def _fingerprint(self, trainer: Any, datasets: dict[str, Any]) -> str:
        """Identifies the reference values: the starting weights' file, the tokenized pairs, the precision."""
        digest = hashlib.sha256()
        weights = getattr(trainer.method, "checkpoint_dir", None)
        if weights is not None:
            path = Path(weights) / "lit_model.pth"
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(f"{trainer.precision}:{trainer.ignore_index}".encode())
        for name, dataset in datasets.items():
            digest.update(name.encode())
            digest.update(dataset.digest().encode())
        return digest.hexdigest()

    # ---- each batch
    def _sequence_logps(self, trainer: Any, model: nn.Module, batch: dict[str, torch.Tensor],
                        autocast: bool) -> torch.Tensor:
        """(2B,) summed log-probabilities of the labels under `model` (through the loop's fused head when there
        is one, so the full logits never exist)."""
        fabric, head = trainer.fabric, trainer.fused_head
        if head is not None and model is self.reference:  # the copy has its own head
            head = model.lm_head
        context = fabric.autocast() if autocast else contextlib.nullcontext()
        if head is None:
            with context:
                logits = model(batch["input_ids"])
            return logits_logps(logits, batch["labels"], trainer.ignore_index)
        head.emit_hidden = True
        try:
            with context:
                hidden = model(batch["input_ids"])
        finally:
            head.emit_hidden = False
        with fabric.autocast():
            return head_logps(hidden, head.weight, head.bias, batch["labels"], trainer.ignore_index)

    @torch.no_grad()
    def _reference_logps(self, trainer: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"].float()
        if self.reference is not None:
            return self._sequence_logps(trainer, self.reference, batch, autocast=True)
        switch = lora_switched_off(trainer.raw) if self.reference_kind == "lora_off" else contextlib.nullcontext()
        with switch:
            return self._sequence_logps(trainer, trainer.raw, batch, autocast=True)

    def loss(self, trainer: Any, batch: dict[str, torch.Tensor], training: bool
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        spec = self.loss_spec
        reference = self._reference_logps(trainer, batch) if spec.needs_reference else None
        if training:
            policy = self._sequence_logps(trainer, trainer.model, batch, autocast=False)  # Fabric's module autocasts
        else:
            policy = self._sequence_logps(trainer, trainer.raw, batch, autocast=True)
        n = policy.numel() // 2
        lengths = (batch["labels"] != trainer.ignore_index).sum(-1).clamp(min=1).float()
        chosen, rejected = policy[:n], policy[n:]
        ref_chosen, ref_rejected = (None, None) if reference is None else (reference[:n], reference[n:])
        losses, chosen_rewards, rejected_rewards = preference_loss(spec, chosen, rejected, ref_chosen, ref_rejected,
                                                                   lengths[:n], lengths[n:])
        metrics = {
            "rewards/chosen": chosen_rewards.sum(),
            "rewards/rejected": rejected_rewards.sum(),
            "rewards/accuracy": (chosen_rewards > rejected_rewards).float().sum(),
            "rewards/margin": (chosen_rewards - rejected_rewards).sum(),
            "logps/chosen": chosen.detach().sum(),
            "logps/rejected": rejected.detach().sum(),
        }
        return losses.sum(), metrics
