"""Pretraining corpora: documents tokenized once into a flat token file, then cut into windows.

`TokenizedCorpus` is the shared machinery (cache key, parallel tokenization, atomic cache writes,
memory-mapped loading); `TextFiles` reads a folder of .txt files. `TinyStories` and `OpenWebText` live
in their own modules and only say where their documents come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from litgpt.data.base import DataModule, TokenWindows, require_tokenizer
from litgpt.utils import litgpt_cache_dir

CACHE_FORMAT = 1
_DOCS_PER_TASK = 64


class TokenizedCorpus(DataModule):
    """A corpus whose documents are tokenized once (bos/eos per document) into `<cache>/<key>/tokens.bin`.

    The key hashes the documents' fingerprint (names, sizes, modification times), the tokenizer files and
    the split settings, so a changed corpus or tokenizer is tokenized again and an unchanged one never is.
    Subclasses define `_fingerprint()`, `_documents(split)` ("train" / "val") and `_has_val_split()`; with no
    validation documents the last `val_split_fraction` of the tokens is held out. The cache lives under
    `_cache_root()`: litgpt's cache folder (`litgpt.utils.litgpt_cache_dir()`, default ~/.cache/litgpt) unless
    a subclass says otherwise, never in a folder of the user's data.
    """

    val_split_fraction: float = 0.05
    num_workers: int = 4

    # ------------------------------------------------------------------ what subclasses provide
    def _fingerprint(self) -> Any:
        raise NotImplementedError

    def _documents(self, split: str) -> Iterator[str]:
        raise NotImplementedError

    def _has_val_split(self) -> bool:
        return False

    def _cache_root(self) -> Path:
        return litgpt_cache_dir() / "tokenized"

    # ------------------------------------------------------------------ cache
    def cache_dir(self) -> Path:
        """The folder holding this corpus tokenized with the connected tokenizer."""
        tokenizer = require_tokenizer(self)
        h = hashlib.sha256()
        h.update(json.dumps({"format": CACHE_FORMAT, "corpus": self._fingerprint(),
                             "val_split_fraction": None if self._has_val_split() else self.val_split_fraction,
                             "bos": tokenizer.use_bos, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id},
                            sort_keys=True, default=str).encode())
        for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
            path = Path(tokenizer.checkpoint_dir) / name
            if path.is_file():
                h.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
        return self._cache_root() / h.hexdigest()[:16]

    def prepare_data(self) -> None:
        """Tokenizes the corpus unless its cache exists."""
        target = self.cache_dir()
        if (target / "meta.json").is_file():
            return
        tokenizer = require_tokenizer(self)
        dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            meta: dict[str, Any] = {"dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size}
            splits = ("train", "val") if self._has_val_split() else ("train",)
            for split in splits:
                n, docs = _write_tokens(self._documents(split), tokenizer, tmp / f"{split}.bin", dtype,
                                        self.num_workers, desc=f"Tokenizing {split}")
                meta[f"{split}_tokens"], meta[f"{split}_documents"] = n, docs
            if meta["train_tokens"] == 0:
                raise ValueError(f"{type(self).__name__}: the training documents hold no text")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.replace(tmp, target)
            except OSError:  # another process finished first
                if not (target / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) token arrays, memory-mapped from the cache (prepare_data must have run)."""
        target = self.cache_dir()
        meta_path = target / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{target} holds no tokenized corpus: call prepare_data() first")
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])

        def mmap(split: str) -> np.ndarray:
            if meta.get(f"{split}_tokens", 0) == 0:
                return np.zeros(0, dtype=dtype)
            return np.memmap(target / f"{split}.bin", dtype=dtype, mode="r", shape=(meta[f"{split}_tokens"],))

        train = mmap("train")
        if self._has_val_split():
            return train, mmap("val")
        cut = len(train) - max(1, int(len(train) * self.val_split_fraction))
        return train[:cut], train[cut:]

    # ------------------------------------------------------------------ DataModule
    def setup(self, stage: str = "") -> None:
        """Builds windows of `max_seq_length + 1` tokens over the cached train and val tokens."""
        if self.max_seq_length is None or self.max_seq_length < 1:
            raise ValueError(f"{type(self).__name__} needs max_seq_length >= 1 (call connect with it)")
        train, val = self.load_tokens()
        self.train_dataset = TokenWindows(train, self.max_seq_length)
        self.val_dataset = TokenWindows(val, self.max_seq_length)
        self._val_tokens = val
        name = type(self).__name__
        need = self.max_seq_length + 1
        if len(self.train_dataset) == 0:
            raise ValueError(f"{name}: the training text has {len(train)} tokens, fewer than one sequence of {need}")
        if len(self.val_dataset) == 0:
            raise ValueError(
                f"{name}: the validation text has {len(val)} tokens, fewer than one sequence of {need}; "
                "give more validation text or a shorter train.max_seq_length"
            )

    def example_prompt(self, which: Any = "first") -> Optional[str]:
        """The first 12 tokens of the validation text, as text."""
        tokenizer = require_tokenizer(self)
        tokens = getattr(self, "_val_tokens", None)
        if tokens is None or len(tokens) == 0:
            return None
        ids = [int(t) for t in tokens[:12] if t != tokenizer.bos_id]
        return tokenizer.decode(ids) or None


def _write_tokens(
    documents: Iterable[str], tokenizer: Any, path: Path, dtype: Any, num_workers: int, desc: str
) -> tuple[int, int]:
    """Encodes documents (bos per the tokenizer, eos after each) into a raw token file; returns (tokens, docs)."""
    from tqdm import tqdm

    batches = _batched(documents, _DOCS_PER_TASK)
    n_tokens = n_docs = 0
    with open(path, "wb") as f, tqdm(desc=desc, unit=" docs", disable=None, leave=False) as bar:
        if num_workers > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(num_workers, initializer=_init_worker, initargs=(str(tokenizer.checkpoint_dir),)) as pool:
                for ids, docs in pool.imap(_encode_batch, batches, chunksize=1):
                    f.write(np.asarray(ids, dtype=dtype).tobytes())
                    n_tokens, n_docs = n_tokens + len(ids), n_docs + docs
                    bar.update(docs)
        else:
            global _worker_tokenizer
            _worker_tokenizer = tokenizer
            for batch in batches:
                ids, docs = _encode_batch(batch)
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                n_tokens, n_docs = n_tokens + len(ids), n_docs + docs
                bar.update(docs)
    return n_tokens, n_docs


_worker_tokenizer: Any = None


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    from litgpt.tokenizer import Tokenizer

    _worker_tokenizer = Tokenizer(tokenizer_dir)


def _encode_batch(docs: list[str]) -> tuple[list[int], int]:
    tok = _worker_tokenizer
    eos = tok.eos_id is not None
    ids: list[int] = []
    count = 0
    for doc in docs:
        if not doc:
            continue
        ids.extend(tok.encode(doc, eos=eos).tolist())
        count += 1
    return ids, count


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _list_text_files(folder: Path, what: str) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ValueError(f"{what} {folder} holds no .txt files")
    return files


def _file_fingerprint(files: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


@dataclass
class TextFiles(TokenizedCorpus):
    """Pretraining on a folder of plain-text files (`*.txt`, searched recursively), tokenized once and cached.

    Each file is one document: bos (when the tokenizer uses it) + text + eos. Without `val_data_path` the
    last `val_split_fraction` of the tokens is the validation set.
    """

    train_data_path: Path
    """Folder of .txt files (or a single .txt file) to train on."""
    val_data_path: Optional[Path] = None
    """Folder of .txt files (or a single file) to validate on (default: split off the training text)."""
    seed: int = 42
    """Kept for LitGPT compatibility (the training loop's seed orders the samples)."""
    num_workers: int = 4
    """Processes that tokenize the files in parallel."""
    val_split_fraction: float = field(default=0.05, kw_only=True)
    """Fraction of the training tokens held out for validation when val_data_path is not given."""
    cache_dir_path: Optional[Path] = field(default=None, kw_only=True)
    """Where the tokenized corpus is cached (default: `$XDG_CACHE_HOME/litgpt/tokenized`, i.e.
    ~/.cache/litgpt/tokenized; `$LITGPT_CACHE_DIR/tokenized` when that is set). Nothing is written into
    train_data_path or val_data_path."""

    def __post_init__(self) -> None:
        self.train_data_path = Path(self.train_data_path)
        if self.val_data_path is not None:
            self.val_data_path = Path(self.val_data_path)
        if not 0 < self.val_split_fraction < 1:
            raise ValueError(f"val_split_fraction must be between 0 and 1, got {self.val_split_fraction}")

    def _files(self, split: str) -> list[Path]:
        if split == "train":
            return _list_text_files(self.train_data_path, "train_data_path")
        return _list_text_files(self.val_data_path, "val_data_path")

    def _fingerprint(self) -> Any:
        fp = {"train": _file_fingerprint(self._files("train"))}
        if self.val_data_path is not None:
            fp["val"] = _file_fingerprint(self._files("val"))
        return fp

    def _has_val_split(self) -> bool:
        return self.val_data_path is not None

    def _documents(self, split: str) -> Iterator[str]:
        for path in self._files(split):
            yield _read_text(path)

    def _cache_root(self) -> Path:
        return Path(self.cache_dir_path) if self.cache_dir_path is not None else super()._cache_root()

    def check(self) -> None:
        """Raises a one-line error for a missing or empty folder (called before any work)."""
        files = self._files("train")
        if self.val_data_path is not None:
            self._files("val")
        if all(p.stat().st_size == 0 for p in files):
            raise ValueError(f"train_data_path {self.train_data_path}: every .txt file is empty")
