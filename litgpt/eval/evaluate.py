"""`litgpt evaluate`: lm-evaluation-harness tasks and perplexity on text files, run on our own model.

The harness talks to `LitGPTLM` (`litgpt.eval.lm_eval_model`), which scores and generates with the checkpoint's
`GPT` and `Tokenizer` directly: no conversion to transformers. The special task name `perplexity` scores the
`*.txt` files of `--data_dir` instead. Results are printed as a table and written to a JSON file.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

PERPLEXITY_TASK = "perplexity"
LIST_WORDS = ("list", "help")
DEVICE_NAMES = ("auto", "cpu", "cuda", "gpu", "mps")


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
        out_dir: Folder for the results. Default: a new folder beside the checkpoint, `CHECKPOINT_DIR-evaluate`
            (`-2`, `-3`, ... when that exists), so the checkpoint folder itself is never written to. LitGPT's
            default was `CHECKPOINT_DIR/evaluate`: pass that to get it.
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
    settings = check_settings(checkpoint_dir, names, num_fewshot, batch_size, limit, seed, data_dir, max_length,
                              include_path)
    run_device, run_dtype = check_model_flags(device, dtype, quantize)
    wants_perplexity = PERPLEXITY_TASK in names
    harness_names = [n for n in names if n != PERPLEXITY_TASK]
    manager, harness_names = resolve_tasks(harness_names, include_path) if harness_names else (None, [])
    files = None
    if wants_perplexity:
        from litgpt.eval.perplexity import text_files

        files = text_files(data_dir)

    out_dir = Path(out_dir) if out_dir is not None else fresh_results_dir(Path(checkpoint_dir))
    save_filepath = Path(save_filepath) if save_filepath is not None else out_dir / "results.json"
    if save_filepath.is_dir():
        raise ValueError(f"the results file {save_filepath} is a directory; pass a file name with --save_filepath")

    model, tokenizer, quantize = load_for_evaluation(checkpoint_dir, run_device, run_dtype, quantize)
    rows: list[dict[str, Any]] = []
    raw: Optional[dict[str, Any]] = None
    if harness_names:
        with hf_token(access_token):
            raw = run_harness(model, tokenizer, run_device, manager, harness_names, num_fewshot, batch_size, limit,
                              seed, max_length)
        rows += harness_rows(raw)
    if wants_perplexity:
        rows += perplexity_rows(model, tokenizer, files, max_length, batch_size, run_device)

    payload = results_payload(checkpoint_dir, model, run_device, run_dtype, quantize, settings, rows, raw,
                              time.perf_counter() - started)
    write_json(save_filepath, payload)
    print(format_table(rows))
    print(f"Results saved to {save_filepath}")
    return payload


def fresh_results_dir(checkpoint_dir: Path) -> Path:
    """`<checkpoint_dir>-evaluate` beside the checkpoint, or `-evaluate-2`, `-3`, ... when that exists and is not
    empty: results never land in (or overwrite) the user's checkpoint folder or an earlier evaluation."""
    base = checkpoint_dir.absolute()
    candidate = base.with_name(f"{base.name}-evaluate")
    n = 2
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        candidate = base.with_name(f"{base.name}-evaluate-{n}")
        n += 1
    return candidate


def quiet_git_commit_hash() -> Optional[str]:
    """The git commit of the current directory, or None outside a repository (git's error message suppressed)."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# `litgpt evaluate CKPT --tasks` (the flag without a value) means `--tasks list`: a hint for the CLI, which builds
# flags from the signature and would otherwise reject a flag without its value.
evaluate.cli_bare_flags = {"tasks": "list"}


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


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _expand(names: list[str], known: list[str]) -> tuple[list[str], list[str]]:
    """(names with glob patterns replaced by the known names they match, names that are unknown)."""
    expanded, unknown = [], []
    for name in names:
        if _is_task_file(name):
            expanded.append(name)
        elif _is_pattern(name):
            matches = fnmatch.filter(known, name)
            expanded += matches
            if not matches:
                unknown.append(name)
        elif name in known:
            expanded.append(name)
        else:
            unknown.append(name)
    return list(dict.fromkeys(expanded)), unknown


def resolve_tasks(names: list[str], include_path: Optional[Path] = None) -> tuple[Any, list[str]]:
    """(an lm-eval `TaskManager` that knows every name, the names with glob patterns expanded); a one-line
    ValueError naming close matches for an unknown name.

    Only `include_path` is indexed when it holds every name (fast); lm-eval's own tasks are indexed otherwise.

    Args:
        names: task / group / tag names, glob patterns or task YAML paths.
        include_path: a folder of extra task YAML files.
    """
    key = _path_key(include_path)
    if include_path is not None or all(_is_task_file(n) for n in names):
        local = task_manager(key, include_defaults=False)
        expanded, unknown = _expand(names, local.all_tasks)
        if not unknown:
            return local, expanded
    manager = task_manager(key)
    expanded, unknown = _expand(names, manager.all_tasks)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks + [PERPLEXITY_TASK], n=5, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean: {', '.join(close)}?)" if close else ""))
        raise ValueError(
            f"unknown task{'s' if len(unknown) > 1 else ''} {'; '.join(hints)}; run `litgpt evaluate CHECKPOINT_DIR "
            "--tasks list` for the available ones"
        )
    return manager, expanded


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
    seed: int,
    data_dir: Optional[Path],
    max_length: Optional[int],
    include_path: Optional[Path],
) -> dict[str, Any]:
    """Checks everything that can be checked before loading the model; returns the settings for the results.

    Raises one-line errors for a checkpoint without weights, config or tokenizer, and for bad numbers.
    """
    from litgpt.config import Config
    from litgpt.utils import check_int
    from litgpt.tokenizer import SENTENCEPIECE_MODEL, TOKENIZER_JSON
    from litgpt.utils import check_valid_checkpoint_dir

    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    if not any((checkpoint_dir / f).is_file() for f in (TOKENIZER_JSON, SENTENCEPIECE_MODEL)):
        raise FileNotFoundError(
            f"{checkpoint_dir} holds no tokenizer ({TOKENIZER_JSON} or {SENTENCEPIECE_MODEL}): copy the tokenizer "
            "files of the model it was trained from into it"
        )
    check_int("batch_size", batch_size, 1)
    if num_fewshot is not None:
        check_int("num_fewshot", num_fewshot, 0)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0
                              or math.isinf(limit)):
        raise ValueError(f"limit must be a number > 0 (a count, or a fraction below 1), got {limit!r}")
    if max_length is not None:
        check_int("max_length", max_length, 2)
        context = Config.from_file(checkpoint_dir / "model_config.yaml").block_size
        if max_length > context:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {context} tokens")
    if PERPLEXITY_TASK in names and data_dir is None:
        raise ValueError(f"--tasks {PERPLEXITY_TASK} needs --data_dir, a folder of .txt files to score")
    if data_dir is not None and PERPLEXITY_TASK not in names:
        raise ValueError(f"--data_dir is read by the {PERPLEXITY_TASK} task only; add it to --tasks")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if include_path is not None:
        _check_include_path(include_path)
    return {
        "tasks": names,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "limit": _limit_value(limit),
        "seed": seed,
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
    from litgpt.precision import resolve_device

    if device is None:
        return resolve_device("auto")
    if ":" not in str(device):
        if str(device).lower() not in DEVICE_NAMES:
            raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)} or cuda:N, got {device!r}")
        return resolve_device(str(device))
    try:
        resolved = torch.device(str(device))
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N, mps or auto") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available() or resolved.index >= torch.cuda.device_count()):
        raise ValueError(f"device {device} is not available (CUDA devices: {torch.cuda.device_count()})")
    return resolved


def check_model_flags(
    device: Optional[str], dtype: Optional[str], quantize: Optional[str]
) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) to run in, after checking that the device exists and runs `quantize` in that dtype.

    Args:
        device: cpu, cuda, cuda:N, mps, auto or None (auto).
        dtype: float32, bfloat16, float16 (or bf16-true / 32-true ...), None for the device's default.
        quantize: None or a mode of `litgpt.quantization.MODES`.
    """
    from litgpt.api import check_quantize
    from litgpt.precision import default_inference_precision as default_precision
    from litgpt.quantization import check_quantize_supported
    from litgpt.utils import parse_dtype

    check_quantize(quantize)
    run_dtype = parse_dtype(dtype) if dtype is not None else None
    run_device = resolve_eval_device(device)
    run_dtype = run_dtype or parse_dtype(default_precision(run_device))
    if run_device.type == "cuda" and run_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("dtype bfloat16 is not supported by this GPU; use float16 or float32")
    check_quantize_supported(quantize, run_device, run_dtype)
    return run_device, run_dtype


def load_for_evaluation(
    checkpoint_dir: Path, device: torch.device, dtype: torch.dtype, quantize: Optional[str]
) -> tuple[Any, Any, Optional[str]]:
    """(model, tokenizer, quantization mode) of a checkpoint, loaded as `LLM.distribute` loads it.

    The tokenizer is loaded first (a broken one fails before the weights are read); the weights are quantized
    tensor by tensor while loading when `quantize` is set (a folder saved by `litgpt quantize` loads as saved).

    Args:
        checkpoint_dir: the checkpoint folder.
        device: where the model runs.
        dtype: the compute dtype.
        quantize: None or a mode of `litgpt.quantization.MODES`.
    """
    from litgpt.quantization import load_model
    from litgpt.quantization.modes import read_quantization_file
    from litgpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(checkpoint_dir)
    model = load_model(checkpoint_dir, quantize=quantize, dtype=dtype, device=device)
    if quantize is None:
        saved = read_quantization_file(checkpoint_dir)
        quantize = None if saved is None else saved.mode
    return model, tokenizer, quantize


# ------------------------------------------------------------------------------------------------------------
# running


@contextlib.contextmanager
def hf_token(access_token: Optional[str]) -> Iterator[None]:
    """Sets HF_TOKEN (read by `datasets` for gated data sets) for the duration of the block, when given."""
    if access_token is None:
        yield
        return
    before = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = access_token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = before


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
    import lm_eval.evaluator
    from lm_eval import simple_evaluate

    from litgpt.eval.lm_eval_model import LitGPTLM

    # lm-eval records the git commit of the working directory by running `git describe`, which prints
    # "fatal: not a git repository" outside one: ask git quietly instead
    lm_eval.evaluator.get_git_commit_hash = quiet_git_commit_hash

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
        },
        "settings": {**settings, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                     "quantize": quantize},
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
