"""`litgpt evaluate`: lm-evaluation-harness tasks and perplexity on text files, run on our own model.

The harness talks to `LitGPTLM` (`litgpt.eval.lm_eval_model`), which scores and generates with the checkpoint's
`GPT` and `Tokenizer` directly: no conversion to transformers. The special task name `perplexity` scores the
`*.txt` files of `--data_dir` instead. Results are printed as a table and written to a JSON file.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch

PERPLEXITY_TASK = "perplexity"
LIST_WORDS = ("list", "help")


def evaluate(
    checkpoint_dir: Path,
    tasks: Optional[str] = None,
    out_dir: Optional[Path] = None,
    num_fewshot: Optional[int] = None,
    batch_size: int = 1,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    quantize: Optional[str] = None,
    limit: Optional[float] = None,
    seed: int = 1234,
    save_filepath: Optional[Path] = None,
    access_token: Optional[str] = None,
    data_dir: Optional[Path] = None,
    max_length: Optional[int] = None,
    include_path: Optional[Path] = None,
) -> Optional[dict[str, Any]]:
    """Evaluate a checkpoint on lm-evaluation-harness tasks, or its perplexity on a folder of text files.

    Prints a table of the results and writes them (with the model and the settings) to a JSON file. Without
    --tasks (or with `--tasks list`) it prints the names of the available tasks instead.

    Args:
        checkpoint_dir: Folder with lit_model.pth, model_config.yaml and the tokenizer files.
        tasks: Comma-separated task names, e.g. "hellaswag,arc_easy"; glob patterns ("mmlu_*") and paths of task
            YAML files work too. `perplexity` scores the .txt files of --data_dir. "list" (or leaving it out)
            lists the available tasks.
        out_dir: Folder for the results (default: CHECKPOINT_DIR/evaluate).
        num_fewshot: Few-shot examples per prompt (default: each task's own setting).
        batch_size: Sequences per forward pass.
        device: cpu, cuda, cuda:1, mps or auto (default: auto, a GPU when there is one).
        dtype: float32, bfloat16 or float16 (default: bfloat16 where the device computes it natively, else
            float32).
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        limit: Evaluate at most this many examples per task (a value below 1 is a fraction of each task); for
            quick checks, not for reporting.
        seed: Random seed (Python, NumPy, PyTorch and the few-shot sampler).
        save_filepath: The JSON results file (default: OUT_DIR/results.json).
        access_token: Hugging Face token for gated datasets (default: the HF_TOKEN environment variable).
        data_dir: Folder of .txt files (searched recursively) for the `perplexity` task.
        max_length: Most tokens the model reads at once (default and maximum: the model's context); longer
            contexts are cut from the left, longer texts are scored in windows.
        include_path: A folder of your own lm-eval task YAML files (e.g. tasks over local json/jsonl data).

    Returns:
        The JSON results as a dict, or None when the tasks were listed.
    """
    started = time.perf_counter()
    names = parse_tasks(tasks)
    if names is None:
        list_tasks(include_path)
        return None
    settings = check_settings(checkpoint_dir, names, num_fewshot, batch_size, limit, data_dir, max_length, include_path)
    wants_perplexity = PERPLEXITY_TASK in names
    harness_names = [n for n in names if n != PERPLEXITY_TASK]
    manager = resolve_tasks(harness_names, include_path) if harness_names else None
    files = None
    if wants_perplexity:
        from litgpt.eval.perplexity import text_files

        files = text_files(data_dir)

    model, tokenizer, run_device, run_dtype, quantize = load_for_evaluation(checkpoint_dir, device, dtype, quantize)
    if max_length is not None:
        from litgpt.eval.perplexity import check_max_length

        check_max_length(model, max_length)
    if access_token is not None:
        os.environ["HF_TOKEN"] = access_token

    rows: list[dict[str, Any]] = []
    raw: Optional[dict[str, Any]] = None
    if harness_names:
        raw = run_harness(model, tokenizer, run_device, manager, harness_names, num_fewshot, batch_size, limit, seed,
                          max_length)
        rows += harness_rows(raw)
    if wants_perplexity:
        rows += perplexity_rows(model, tokenizer, files, max_length, batch_size, run_device)

    out_dir = Path(out_dir) if out_dir is not None else Path(checkpoint_dir) / "evaluate"
    save_filepath = Path(save_filepath) if save_filepath is not None else out_dir / "results.json"
    payload = results_payload(checkpoint_dir, model, run_device, run_dtype, quantize, settings, rows, raw,
                              time.perf_counter() - started)
    write_json(save_filepath, payload)
    print(format_table(rows))
    print(f"Results saved to {save_filepath}")
    return payload


# ------------------------------------------------------------------------------------------------------------
# tasks


def parse_tasks(tasks: Optional[Union[str, list[str], tuple[str, ...]]]) -> Optional[list[str]]:
    """Task names from a comma-separated string (or a list); None when the tasks should be listed.

    Args:
        tasks: e.g. "hellaswag, arc_easy", ["hellaswag"], None or "list".
    """
    if tasks is None:
        return None
    parts = tasks if isinstance(tasks, (list, tuple)) else str(tasks).split(",")
    names = list(dict.fromkeys(p.strip() for p in parts if str(p).strip()))
    if not names or (len(names) == 1 and names[0].lower() in LIST_WORDS):
        return None
    return names


@functools.lru_cache(maxsize=4)
def task_manager(include_path: Optional[str] = None, include_defaults: bool = True):
    """An lm-eval `TaskManager` (cached: indexing lm-eval's thousands of task files takes seconds).

    Args:
        include_path: a folder of extra task YAML files.
        include_defaults: index lm-eval's own tasks too.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _path_key(include_path: Optional[Path]) -> Optional[str]:
    return None if include_path is None else str(Path(include_path).resolve())


def list_tasks(include_path: Optional[Path] = None) -> list[str]:
    """Prints the names of every available task, group and tag (one per line); returns them.

    Args:
        include_path: a folder of extra task YAML files to list too.
    """
    if include_path is not None:
        _check_include_path(include_path)
    names = task_manager(_path_key(include_path)).all_tasks
    print("\n".join(names))
    print(f"\n{len(names)} tasks, groups and tags. Run `litgpt evaluate CHECKPOINT_DIR --tasks NAME[,NAME...]` "
          f"(`{PERPLEXITY_TASK}` with --data_dir scores text files).")
    return names


def _is_task_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def _unknown_names(names: list[str], known: list[str]) -> list[str]:
    unknown = []
    for name in names:
        if _is_task_file(name):
            continue
        if any(ch in name for ch in "*?["):
            if not fnmatch.filter(known, name):
                unknown.append(name)
        elif name not in known:
            unknown.append(name)
    return unknown


def resolve_tasks(names: list[str], include_path: Optional[Path] = None):
    """The lm-eval `TaskManager` that knows every name; a one-line ValueError naming close matches otherwise.

    Only `include_path` is indexed when it holds every name (fast); lm-eval's own tasks are indexed otherwise.

    Args:
        names: task / group / tag names, glob patterns or task YAML paths.
        include_path: a folder of extra task YAML files.
    """
    key = _path_key(include_path)
    if include_path is not None or all(_is_task_file(n) for n in names):
        local = task_manager(key, include_defaults=False)
        if not _unknown_names(names, local.all_tasks):
            return local
    manager = task_manager(key)
    unknown = _unknown_names(names, manager.all_tasks)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks + [PERPLEXITY_TASK], n=5, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean: {', '.join(close)}?)" if close else ""))
        raise ValueError(
            f"unknown task{'s' if len(unknown) > 1 else ''} {'; '.join(hints)}; run `litgpt evaluate CHECKPOINT_DIR "
            "--tasks list` for the available ones"
        )
    return manager


def _check_include_path(include_path: Path) -> None:
    if not Path(include_path).is_dir():
        raise FileNotFoundError(f"--include_path {include_path} is not a directory")


# ------------------------------------------------------------------------------------------------------------
# checks and loading


def check_settings(
    checkpoint_dir: Path,
    names: list[str],
    num_fewshot: Optional[int],
    batch_size: int,
    limit: Optional[float],
    data_dir: Optional[Path],
    max_length: Optional[int],
    include_path: Optional[Path],
) -> dict[str, Any]:
    """Checks everything that can be checked before loading the model; returns the settings for the results.

    Raises one-line errors for a checkpoint without weights, config or tokenizer, and for bad numbers.
    """
    from litgpt.tokenizer import SENTENCEPIECE_MODEL, TOKENIZER_JSON
    from litgpt.utils import check_valid_checkpoint_dir

    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    if not any((checkpoint_dir / f).is_file() for f in (TOKENIZER_JSON, SENTENCEPIECE_MODEL)):
        raise FileNotFoundError(
            f"{checkpoint_dir} holds no tokenizer ({TOKENIZER_JSON} or {SENTENCEPIECE_MODEL}): copy the tokenizer "
            "files of the model it was trained from into it"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if num_fewshot is not None and (isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or num_fewshot < 0):
        raise ValueError(f"num_fewshot must be an integer >= 0, got {num_fewshot!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0
                              or math.isinf(limit)):
        raise ValueError(f"limit must be a number > 0 (a count, or a fraction below 1), got {limit!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    if PERPLEXITY_TASK in names and data_dir is None:
        raise ValueError(f"--tasks {PERPLEXITY_TASK} needs --data_dir, a folder of .txt files to score")
    if data_dir is not None and PERPLEXITY_TASK not in names:
        raise ValueError(f"--data_dir is read by the {PERPLEXITY_TASK} task only; add it to --tasks")
    if include_path is not None:
        _check_include_path(include_path)
    return {
        "tasks": names,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "limit": _limit_value(limit),
        "max_length": max_length,
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "include_path": None if include_path is None else str(Path(include_path).resolve()),
    }


def _limit_value(limit: Optional[float]) -> Optional[Union[int, float]]:
    """lm-eval reads an int as a count and a float below 1 as a fraction."""
    if limit is None:
        return None
    return int(limit) if limit >= 1 else float(limit)


def resolve_eval_device(device: Optional[str]) -> torch.device:
    """`--device` as a torch device: None / auto picks CUDA, then MPS, then the CPU; "cuda:1" picks a GPU.

    Args:
        device: the device name.
    """
    from litgpt.api import resolve_device

    if device is None or ":" not in str(device):
        return resolve_device("auto" if device is None else str(device))
    try:
        resolved = torch.device(str(device))
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available() or resolved.index >= torch.cuda.device_count()):
        raise ValueError(f"device {device} is not available (CUDA devices: {torch.cuda.device_count()})")
    return resolved


def load_for_evaluation(
    checkpoint_dir: Path, device: Optional[str], dtype: Optional[str], quantize: Optional[str]
) -> tuple[Any, Any, torch.device, torch.dtype, Optional[str]]:
    """(model, tokenizer, device, dtype, quantization mode) for a checkpoint, loaded as `LLM.distribute` does.

    The tokenizer is loaded first (a broken one fails before the weights are read); the weights are quantized
    tensor by tensor while loading when `quantize` is set (or the folder was saved quantized).
    """
    from litgpt.api import check_quantize, default_precision
    from litgpt.quantization import check_quantize_supported, load_model
    from litgpt.quantization.modes import read_quantization_file
    from litgpt.tokenizer import Tokenizer
    from litgpt.utils import parse_dtype

    check_quantize(quantize)
    run_device = resolve_eval_device(device)
    run_dtype = parse_dtype(dtype) if dtype is not None else parse_dtype(default_precision(run_device))
    if run_device.type == "cuda" and run_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("dtype bfloat16 is not supported by this GPU; use float16 or float32")
    check_quantize_supported(quantize, run_device, run_dtype)
    tokenizer = Tokenizer(checkpoint_dir)
    model = load_model(checkpoint_dir, quantize=quantize, dtype=run_dtype, device=run_device)
    if quantize is None:
        saved = read_quantization_file(checkpoint_dir)
        quantize = None if saved is None else saved.mode
    return model, tokenizer, run_device, run_dtype, quantize


# ------------------------------------------------------------------------------------------------------------
# running


def run_harness(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    manager: Any,
    names: list[str],
    num_fewshot: Optional[int],
    batch_size: int,
    limit: Optional[float],
    seed: int,
    max_length: Optional[int],
) -> dict[str, Any]:
    """lm-eval's `simple_evaluate` on our model class; returns its results dict."""
    from lm_eval import simple_evaluate

    from litgpt.eval.lm_eval_model import LitGPTLM

    lm = LitGPTLM(model, tokenizer, batch_size=batch_size, max_length=max_length, device=device)
    results = simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=str(device),
        limit=_limit_value(limit),
        log_samples=False,
        task_manager=manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return results


def harness_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task or group, metric, filter) of lm-eval's results: value and stderr (None if not computed).

    Args:
        raw: the dict `lm_eval.simple_evaluate` returns.
    """
    rows = []
    sections = {**raw.get("results", {}), **raw.get("groups", {})}
    for task, metrics in sections.items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            rows.append({
                "task": task,
                "metric": metric,
                "filter": filter_name,
                "value": _number(value),
                "stderr": _number(stderr),
                "higher_is_better": raw.get("higher_is_better", {}).get(task, {}).get(metric),
                "num_fewshot": _number(raw.get("n-shot", {}).get(task)),
                "samples": _number((raw.get("n-samples", {}).get(task) or {}).get("effective")),
            })
    return rows


def perplexity_rows(
    model: Any, tokenizer: Any, files: list[Path], max_length: Optional[int], batch_size: int, device: torch.device
) -> list[dict[str, Any]]:
    """The rows of the `perplexity` task: perplexity, mean NLL per token and the number of tokens scored."""
    from litgpt.eval.perplexity import perplexity

    result = perplexity(model, tokenizer, files, max_length=max_length, batch_size=batch_size, device=device)
    base = {"task": PERPLEXITY_TASK, "filter": "none", "stderr": None, "num_fewshot": 0, "samples": result.documents}
    return [
        {**base, "metric": "perplexity", "value": result.perplexity, "higher_is_better": False},
        {**base, "metric": "nll", "value": result.nll, "higher_is_better": False},
        {**base, "metric": "tokens", "value": result.tokens, "higher_is_better": None},
    ]


def _number(value: Any) -> Any:
    """Plain Python numbers for JSON (NumPy scalars unwrapped, NaN and "N/A" as None)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return None if value.strip().upper() in ("N/A", "") else value
    return value


# ------------------------------------------------------------------------------------------------------------
# output


def results_payload(
    checkpoint_dir: Path,
    model: Any,
    device: torch.device,
    dtype: torch.dtype,
    quantize: Optional[str],
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    raw: Optional[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """The content of the results JSON file."""
    from importlib.metadata import PackageNotFoundError, version

    def package_version(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    payload = {
        "results": rows,
        "model": {
            "checkpoint_dir": str(Path(checkpoint_dir).resolve()),
            "name": model.config.name,
            "context": model.max_seq_length,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "quantize": quantize,
        },
        "settings": settings,
        "versions": {"litgpt": package_version("litgpt"), "lm_eval": package_version("lm_eval"),
                     "torch": torch.__version__},
        "seconds": round(seconds, 3),
    }
    if raw is not None:
        payload["lm_eval"] = {key: raw[key] for key in ("results", "groups", "n-shot", "n-samples", "versions")
                              if key in raw}
    return payload


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Writes `payload` as indented JSON through a temporary file and a rename."""
    from litgpt.utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return Path(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table: task, metric (with an arrow telling which way is better), value,
    stderr, few-shot count and samples."""
    header = ["Task", "Metric", "Filter", "Value", "Stderr", "Shots", "Samples"]
    arrows = {True: " ↑", False: " ↓"}
    body = [
        [
            str(r["task"]),
            str(r["metric"]) + arrows.get(r.get("higher_is_better"), ""),
            str(r.get("filter", "none")),
            _format_value(r["value"]),
            "" if r.get("stderr") is None else "± " + _format_value(r["stderr"]),
            "" if r.get("num_fewshot") is None else str(r["num_fewshot"]),
            "" if r.get("samples") is None else str(r["samples"]),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(cells) for cells in body])


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)
