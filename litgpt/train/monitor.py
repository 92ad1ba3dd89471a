"""What a run reports: the progress bar, metric loggers (csv always; tensorboard, wandb or mlflow on
request), throughput and MFU, the generated sample and the one-line summary. Rank 0 only."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from litgpt.precision import COMPUTE_DTYPES
from litgpt.train.args import format_count, format_duration

CSV_COLUMNS = ("step", "epoch", "tokens", "samples", "time", "loss", "val_loss", "val_ppl", "lr", "grad_norm",
               "tokens_per_sec", "samples_per_sec", "tflops_per_sec", "mfu")


class CSVMetrics:
    """`<out_dir>/logs/metrics.csv` with fixed columns; a resumed run drops rows past its step first."""

    def __init__(self, path: Path, resume_step: Optional[int] = None, extra_columns: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if row.get("step") and int(row["step"]) <= resume_step]
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS + tuple(extra_columns),
                                     extrasaction="ignore")
        self.writer.writeheader()
        for row in kept:
            self.writer.writerow(row)
        self.file.flush()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {k: _fmt(v) for k, v in metrics.items()}
        row["step"] = step
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_csv_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as dicts of floats (empty cells left out)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: float(v) for k, v in row.items() if v not in (None, "")})
    return rows


class TrackerLogger:
    """tensorboard / wandb / mlflow behind `log(metrics, step)`; imported only when chosen."""

    def __init__(self, name: str, out_dir: Path, project: str, run: str, group: Optional[str],
                 hyperparameters: dict[str, Any]) -> None:
        self.name = name
        if name == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("logger_name=tensorboard needs the tensorboard package: pip install 'litgpt[tensorboard]'") from None
            self.writer = SummaryWriter(log_dir=str(out_dir / "logs" / "tensorboard"))
        elif name == "wandb":
            try:
                import wandb
            except ImportError:
                raise ImportError("logger_name=wandb needs the wandb package: pip install wandb") from None
            self.run = wandb.init(project=project, name=run, group=group, dir=str(out_dir / "logs"),
                                  config=hyperparameters, resume="allow")
        elif name == "mlflow":
            try:
                import mlflow
            except ImportError:
                raise ImportError("logger_name=mlflow needs the mlflow package: pip install mlflow") from None
            mlflow.set_experiment(project)
            self.run = mlflow.start_run(run_name=run)
            mlflow.log_params({k: str(v)[:250] for k, v in _flatten(hyperparameters).items()})
        else:
            raise ValueError(f"unknown logger_name {name!r}; expected csv, tensorboard, wandb or mlflow")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        if self.name == "tensorboard":
            for key, value in numeric.items():
                self.writer.add_scalar(key, value, step)
        elif self.name == "wandb":
            self.run.log(numeric, step=step)
        else:
            import mlflow

            mlflow.log_metrics(numeric, step=step)

    def close(self) -> None:
        if self.name == "tensorboard":
            self.writer.close()
        elif self.name == "wandb":
            self.run.finish()
        else:
            import mlflow

            mlflow.end_run()


def check_logger_available(name: str) -> None:
    """A one-line ImportError before any work when the chosen tracker is not installed."""
    import importlib.util

    module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(name)
    if name == "litlogger":  # LitGPT's Lightning AI logger: accepted by the flags, not implemented here
        raise ValueError("logger_name=litlogger (Lightning AI's hosted logger) is not supported; use csv, "
                         "tensorboard, wandb or mlflow")
    if name not in ("csv", "tensorboard", "wandb", "mlflow"):
        raise ValueError(f"unknown logger_name {name!r}; expected csv, tensorboard, wandb or mlflow")
    if module and importlib.util.find_spec(module) is None:
        extra = "'litgpt[tensorboard]'" if name == "tensorboard" else name
        raise ImportError(f"logger_name={name} needs the {module} package: pip install {extra}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Monitor:
    """Progress bar + loggers of one run (a no-op object on ranks other than 0)."""

    def __init__(
        self,
        enabled: bool,
        out_dir: Path,
        logger_name: str,
        total_steps: Optional[int],
        start_step: int,
        project: str,
        run: str,
        group: Optional[str],
        hyperparameters: dict[str, Any],
        resume_step: Optional[int],
        extra_columns: tuple[str, ...] = (),
    ) -> None:
        self.enabled = enabled
        self.bar = None
        self.csv: Optional[CSVMetrics] = None
        self.tracker: Optional[TrackerLogger] = None
        if not enabled:
            return
        self.csv = CSVMetrics(out_dir / "logs" / "metrics.csv", resume_step, extra_columns)
        if logger_name != "csv":
            self.tracker = TrackerLogger(logger_name, out_dir, project, run, group, hyperparameters)
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr,
                        smoothing=0.1, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
                        if total_steps else None)
        self.postfix: dict[str, str] = {}

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        self.csv.log(metrics, step)
        if self.tracker is not None:
            self.tracker.log(metrics, step)
        if "loss" in metrics:
            self.postfix["loss"] = f"{metrics['loss']:.3f}"
        if "val_loss" in metrics:
            self.postfix["val"] = f"{metrics['val_loss']:.3f}"
        if "tokens_per_sec" in metrics:
            self.postfix["tok/s"] = format_count(metrics["tokens_per_sec"])
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, message: str) -> None:
        """Prints a line above the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)
        sys.stdout.flush()

    def close(self) -> None:
        """Closes the bar and the loggers (again: nothing)."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        self.csv.close()
        if self.tracker is not None:
            self.tracker.close()

    closed = False


class Throughput:
    """Tokens/s and samples/s over the window since the last log, and model FLOPs utilization."""

    def __init__(self, flops_per_token: float, peak_flops: Optional[float], world_size: int) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = world_size
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.tokens = 0
        self.samples = 0

    def add(self, tokens: int, samples: int) -> None:
        self.tokens += tokens
        self.samples += samples

    def pause(self) -> float:
        """Returns the current time; `resume(t)` later excludes the time in between (validation)."""
        return time.perf_counter()

    def resume(self, paused_at: float) -> None:
        self.t0 += time.perf_counter() - paused_at

    def compute(self) -> dict[str, float]:
        """Metrics over the window (all devices) and a fresh window."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        metrics = {"tokens_per_sec": self.tokens / elapsed, "samples_per_sec": self.samples / elapsed}
        flops = metrics["tokens_per_sec"] * self.flops_per_token
        metrics["tflops_per_sec"] = flops / 1e12
        if self.peak_flops:
            metrics["mfu"] = flops / (self.peak_flops * self.world_size)
        self.reset()
        return metrics


def peak_device_flops(device: Any, precision: str) -> Optional[float]:
    """Peak FLOP/s of one device for this precision (None where unknown, e.g. CPUs)."""
    try:
        import torch
        from lightning.fabric.utilities.throughput import get_available_flops

        dtype = COMPUTE_DTYPES.get(precision, torch.float32)
        if device.type != "cuda":
            return None
        return get_available_flops(device, dtype)
    except Exception:
        return None


def summary_line(verb: str, steps: int, tokens: int, seconds: float, val_loss: Optional[float],
                 where: Path, stopped_by: str) -> str:
    """The one line printed at the end of a run."""
    rate = tokens / seconds if seconds > 0 else 0.0
    parts = [f"{verb}: {steps} steps, {format_count(tokens)} tokens in {format_duration(seconds)} "
             f"({format_count(rate)} tok/s, stopped by {stopped_by})"]
    if val_loss is not None and math.isfinite(val_loss):
        parts.append(f"val loss {val_loss:.3f} (ppl {math.exp(min(val_loss, 50)):.1f})")
    parts.append(f"checkpoint: {where}")
    return "; ".join(parts)
