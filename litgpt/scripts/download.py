"""`litgpt download`: fetch a model's weights and tokenizer from the Hugging Face Hub, then convert them.

Files land in `checkpoint_dir / repo_id` (e.g. `checkpoints/EleutherAI/pythia-14m`), laid out as on the Hub.
Only what litgpt uses is fetched: `config.json`, `generation_config.json`, the tokenizer files and one copy of
the weights (safetensors when the repo has them, PyTorch `.bin` files otherwise).
"""

from __future__ import annotations

import difflib
import errno
import importlib.util
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from litgpt.utils import TOKENIZER_FILES

# Files every download takes when the repo has them (besides the weights and TOKENIZER_FILES).
CONFIG_FILES = ("config.json", "generation_config.json")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# `.bin` files at the top of a repo that are training leftovers, never model weights.
_NOT_WEIGHTS = ("training_args.bin", "optimizer.bin", "scheduler.bin", "scaler.bin")

# A Hub name: letters, digits, '-', '_', '.'; not starting or ending with '-' or '.'; no '--' or '..'.
_NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")

_NETWORK_ERROR_NAMES = {
    "ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
    "TransportError", "NetworkError", "ProxyError", "SSLError", "RemoteProtocolError", "XetDownloadError",
}


def download_from_hub(
    repo_id: str,
    access_token: Optional[str] = None,
    tokenizer_only: bool = False,
    convert_checkpoint: bool = True,
    dtype: Optional[str] = None,
    checkpoint_dir: Path = Path("checkpoints"),
    model_name: Optional[str] = None,
) -> Optional[Path]:
    """Download a model from the Hugging Face Hub and convert it to a litgpt checkpoint.

    Use `litgpt download list` to print the repo ids of the models with a registry config.

    Args:
        repo_id: The Hugging Face repository, as `org/name` (e.g. `EleutherAI/pythia-14m`), or `list` to print
            the repo ids that have a registry config.
        access_token: Hugging Face access token, needed for gated and private repos. Default: the `HF_TOKEN`
            environment variable, else the token saved by `hf auth login` (read when the command runs, so
            it never shows in `--help`).
        tokenizer_only: Download only the tokenizer, `config.json` and `generation_config.json` (no weights,
            no conversion).
        convert_checkpoint: Convert the downloaded weights to `lit_model.pth` + `model_config.yaml`.
        dtype: Precision to store the converted weights in (`float32`, `float16`, `bfloat16`); default: keep
            the precision of the downloaded weights.
        checkpoint_dir: Where to put the files; they go to `checkpoint_dir/repo_id`.
        model_name: The registry config to convert with, for a repo that is not in the registry under its
            own name (e.g. a finetune of a known model). Default: the registry entry of `repo_id`, else a
            config inferred from the repo's `config.json`.

    Returns:
        The folder holding the files, or None for `list`.
    """
    if repo_id == "list":
        print("\n".join(supported_repo_ids()))
        return None

    # ---- everything that can be checked without the network ----
    _validate_repo_id(repo_id)
    access_token = access_token or os.getenv("HF_TOKEN") or None
    convert = convert_checkpoint and not tokenizer_only
    if convert:
        if dtype is not None:
            from litgpt.utils import parse_dtype

            parse_dtype(dtype)  # one-line ValueError naming the valid choices
        if model_name is not None:
            from litgpt.config import Config

            Config.from_name(model_name)  # one-line ValueError listing the closest registry names
    known = _registry_repo_ids()
    in_registry = repo_id.lower() in {r.lower() for r in known}
    checkpoint_dir = Path(checkpoint_dir)
    destination = checkpoint_dir / repo_id

    if _hub_offline():
        _use_local_copy_or_fail(repo_id, destination, tokenizer_only)
    else:
        start = time.perf_counter()
        with _translate_hub_errors(repo_id, access_token, known, destination):
            repo_files = HfApi(token=access_token).list_repo_files(repo_id)
        small, weights_plan = plan_files(repo_files, tokenizer_only, repo_id)
        if convert and "config.json" not in small and not in_registry and model_name is None:
            raise ValueError(
                f"{repo_id} has no config.json and is not in the registry, so its architecture is unknown; "
                "pass --model_name with the registry config it uses (see `litgpt download list`)"
            )
        if not tokenizer_only and not in_registry and model_name is None:
            print(
                f"Note: {repo_id} is not in the litgpt registry; conversion will infer its config from config.json "
                "(pass --model_name to use a registry config).",
                file=sys.stderr,
            )
        _enable_fast_transfer()
        with _translate_hub_errors(repo_id, access_token, known, destination):
            snapshot_download(repo_id, local_dir=destination, allow_patterns=small, token=access_token)
            if weights_plan is not None:
                weights = _weight_files(weights_plan, destination, repo_files, repo_id)
                snapshot_download(repo_id, local_dir=destination, allow_patterns=weights, token=access_token)
        what = "tokenizer" if tokenizer_only else "files"
        print(f"Downloaded {repo_id} {what} to {destination} in {time.perf_counter() - start:.1f}s", file=sys.stderr)

    if not convert:
        return destination
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    convert_hf_checkpoint(destination, model_name=model_name, dtype=dtype)
    return destination


# ---------------------------------------------------------------------------------------------------------
# registry


def _registry_repo_ids() -> list[str]:
    from litgpt.config import name_to_config

    ids = set()
    for entry in name_to_config.values():
        hf = entry.get("hf_config") or {}
        if hf.get("org") and hf.get("name"):
            ids.add(f"{hf['org']}/{hf['name']}")
    return sorted(ids)


def supported_repo_ids() -> list[str]:
    """The Hugging Face repo ids that have a registry config, sorted (what `litgpt download list` prints)."""
    return _registry_repo_ids()


# ---------------------------------------------------------------------------------------------------------
# choosing the files


def _validate_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    valid = (
        len(parts) == 2
        and all(_NAME_RE.match(p) for p in parts)
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.endswith(".git")
    )
    if valid:
        return
    hint = " (use `litgpt download list` to see the supported ones)"
    if repo_id and "/" not in repo_id:  # a bare model name: suggest the registry repos of that name
        known = _registry_repo_ids()
        names = difflib.get_close_matches(repo_id.lower(), [r.split("/")[-1].lower() for r in known], n=3, cutoff=0.7)
        close = [r for name in names for r in known if r.split("/")[-1].lower() == name][:3]
        if close:
            hint = f"; did you mean {', '.join(close)}?"
    if repo_id and Path(repo_id).expanduser().exists():
        hint = f"; {repo_id} is a local path: convert a local Hugging Face folder with `litgpt convert_to_litgpt {repo_id}`"
    raise ValueError(f"invalid repo_id {repo_id!r}: expected a Hugging Face repository as 'org/name'{hint}")


def plan_files(repo_files: list[str], tokenizer_only: bool, repo_id: str = "the repo") -> tuple[list[str], Optional[str]]:
    """Which files of a repo to fetch.

    Returns the small files to fetch first (config, generation config, tokenizer files and the weights index)
    and the weight format to fetch after them: `"safetensors"`, `"bin"`, or None with `tokenizer_only`.
    Raises ValueError when the repo has no tokenizer (`tokenizer_only`) or no weights.
    """
    top = [f for f in repo_files if "/" not in f]
    tokenizer = [f for f in TOKENIZER_FILES if f in top]
    small = [f for f in CONFIG_FILES + CHAT_TEMPLATE_FILES if f in top] + tokenizer
    if tokenizer_only:
        if not tokenizer:
            raise ValueError(f"{repo_id} has no tokenizer files (looked for {', '.join(TOKENIZER_FILES)})")
        return small, None
    if any(f.endswith(".safetensors") for f in top):
        fmt, index = "safetensors", SAFETENSORS_INDEX
    elif any(_is_bin_weight(f) for f in top):
        fmt, index = "bin", BIN_INDEX
    else:
        raise ValueError(
            f"{repo_id} has no weights litgpt can read (no *.safetensors or *.bin files at the top of the repo)"
        )
    if index in top:
        small.append(index)
    return small, fmt


def _is_bin_weight(name: str) -> bool:
    return name.endswith(".bin") and name not in _NOT_WEIGHTS and not name.startswith("rng_state")


def _weight_files(fmt: str, destination: Path, repo_files: list[str], repo_id: str) -> list[str]:
    """The weight files to fetch: those the downloaded index names, else `model.safetensors` /
    `pytorch_model.bin`, else every top-level weight file of the format."""
    top = [f for f in repo_files if "/" not in f]
    index, single = (SAFETENSORS_INDEX, "model.safetensors") if fmt == "safetensors" else (BIN_INDEX, "pytorch_model.bin")
    if (destination / index).is_file():
        try:
            weight_map = json.loads((destination / index).read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{repo_id}: {index} is not a valid weights index (no 'weight_map')") from None
        missing = [n for n in names if n not in repo_files]
        if missing:
            raise ValueError(f"{repo_id}: {index} names files the repo does not have: {', '.join(missing[:3])}")
        return names
    if single in top:
        return [single]
    if fmt == "safetensors":
        return sorted(f for f in top if f.endswith(".safetensors"))
    return sorted(f for f in top if _is_bin_weight(f))


# ---------------------------------------------------------------------------------------------------------
# hub access


def _hub_offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(getattr(hub_constants, "HF_HUB_OFFLINE", False)) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _local_folder_hint(destination: Path) -> str:
    has_weights = destination.is_dir() and (
        any(destination.glob("*.safetensors")) or any(destination.glob("*.bin"))
    )
    if has_weights:
        return f"{destination} already holds downloaded files: convert them with `litgpt convert_to_litgpt {destination}`"
    return (
        "to use a model you already have, put its Hugging Face files (config.json, weights, tokenizer) in a "
        "folder and run `litgpt convert_to_litgpt DIR`"
    )


def _use_local_copy_or_fail(repo_id: str, destination: Path, tokenizer_only: bool) -> None:
    """With HF_HUB_OFFLINE set, go on with the files already in `destination` when they are all there."""
    if tokenizer_only:
        have = any((destination / f).is_file() for f in TOKENIZER_FILES)
    else:
        have = (destination / "config.json").is_file() and (
            any(destination.glob("*.safetensors")) or any(_is_bin_weight(p.name) for p in destination.glob("*.bin"))
        )
    if have:
        print(f"HF_HUB_OFFLINE is set: using the files already in {destination}", file=sys.stderr)
        return
    raise ConnectionError(
        f"cannot download {repo_id}: the Hugging Face Hub is unreachable (HF_HUB_OFFLINE is set); "
        + _local_folder_hint(destination)
    )


def _status_code(err: BaseException) -> Optional[int]:
    try:
        return int(err.response.status_code)  # type: ignore[attr-defined]
    except Exception:
        return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _is_network_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError, LocalEntryNotFoundError)):
        return True
    if isinstance(err, HfHubHTTPError):
        return False
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & _NETWORK_ERROR_NAMES:
        return True
    import socket

    return isinstance(err, socket.gaierror)


def _suggest(repo_id: str, known: list[str]) -> str:
    lowered = {r.lower(): r for r in known}
    close = difflib.get_close_matches(repo_id.lower(), list(lowered), n=3, cutoff=0.6)
    if not close:  # the same model name under another org
        name = repo_id.split("/")[-1].lower()
        names = difflib.get_close_matches(name, [r.split("/")[-1].lower() for r in known], n=3, cutoff=0.8)
        close = [r.lower() for r in known if r.split("/")[-1].lower() in names][:3]
    if close:
        return f"; did you mean {', '.join(lowered[c] for c in close)}?"
    return "; see `litgpt download list` for the supported repo ids"


@contextmanager
def _translate_hub_errors(repo_id: str, access_token: Optional[str], known: list[str], destination: Path) -> Iterator[None]:
    """Turns huggingface_hub and network exceptions into one-line errors that say what to do."""
    page = f"https://huggingface.co/{repo_id}"
    try:
        yield
    except GatedRepoError:
        if access_token or _stored_token():
            raise PermissionError(
                f"{repo_id} is a gated model and the access token has no access to it: accept the licence on "
                f"{page} with the account that owns the token, then retry"
            ) from None
        raise PermissionError(
            f"{repo_id} is a gated model: accept the licence on {page}, then pass --access_token or set HF_TOKEN "
            "(a token from https://huggingface.co/settings/tokens)"
        ) from None
    except RepositoryNotFoundError:
        auth = " (or it is private and the access token has no access)" if access_token or _stored_token() else (
            " (if it is private, pass --access_token or set HF_TOKEN)"
        )
        raise ValueError(f"repository {repo_id} was not found on the Hugging Face Hub{auth}{_suggest(repo_id, known)}") from None
    except RevisionNotFoundError:
        raise ValueError(f"{repo_id} has no 'main' revision on the Hugging Face Hub") from None
    except OSError as err:
        if isinstance(err, HfHubHTTPError):
            code = _status_code(err)
            if code in (401, 403):
                raise PermissionError(
                    f"the Hugging Face Hub refused access to {repo_id} (HTTP {code}): check --access_token / HF_TOKEN"
                ) from None
            raise ConnectionError(
                f"the Hugging Face Hub failed while downloading {repo_id} (HTTP {code or '?'}): {_first_line(err)}; retry later"
            ) from None
        if getattr(err, "errno", None) == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device holding {destination} while downloading {repo_id}") from None
        if _is_network_error(err):
            raise ConnectionError(_unreachable(repo_id, destination, err)) from None
        raise
    except Exception as err:
        if _is_network_error(err):
            raise ConnectionError(_unreachable(repo_id, destination, err)) from None
        raise


def _stored_token() -> bool:
    """Whether huggingface_hub has a token of its own (`hf auth login`)."""
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def _unreachable(repo_id: str, destination: Path, err: BaseException) -> str:
    return (
        f"cannot download {repo_id}: the Hugging Face Hub is unreachable ({type(err).__name__}: {_first_line(err)}); "
        + _local_folder_hint(destination)
    )


def _enable_fast_transfer() -> None:
    """Lets huggingface_hub < 1.0 use `hf_transfer` when it is installed (and not switched off by the user).

    Newer huggingface_hub versions download through `hf_xet` by themselves when it is installed.
    """
    if os.environ.get("HF_HUB_ENABLE_HF_TRANSFER") is not None:
        return  # the user decided
    if not hasattr(hub_constants, "HF_HUB_ENABLE_HF_TRANSFER"):
        return  # this huggingface_hub no longer uses hf_transfer
    if importlib.util.find_spec("hf_transfer") is not None:
        hub_constants.HF_HUB_ENABLE_HF_TRANSFER = True


def auto_download_checkpoint(model_name: str, access_token: Optional[str] = None,
                             ignore_tokenizer_files: bool = False) -> Path:
    """The checkpoint folder of `model_name`: a local folder (or `checkpoints/<model_name>`) when it holds a
    checkpoint, else `checkpoints/<org>/<name>` downloaded and converted from the Hub first. `model_name` is a
    folder, a Hub repo id (`EleutherAI/pythia-14m`) or a registry name (`pythia-14m`)."""
    from litgpt.config import Config
    from litgpt.utils import check_valid_checkpoint_dir, extend_checkpoint_dir

    local = extend_checkpoint_dir(model_name)
    if (local / "lit_model.pth").is_file() and (local / "model_config.yaml").is_file():
        return local
    repo_id = str(model_name)
    if "/" not in repo_id:
        hf = Config.from_name(repo_id).hf_config or {}
        if not hf.get("org") or not hf.get("name"):
            raise ValueError(f"the registry entry {model_name!r} has no Hugging Face repo to download from")
        repo_id = f"{hf['org']}/{hf['name']}"
    folder = Path("checkpoints") / repo_id
    if not ((folder / "lit_model.pth").is_file() and (folder / "model_config.yaml").is_file()):
        download_from_hub(repo_id, access_token=access_token, checkpoint_dir=Path("checkpoints"))
    return check_valid_checkpoint_dir(folder)
