"""`Tokenizer`: one interface over a Hugging Face `tokenizer.json` or a SentencePiece `tokenizer.model`.

Special tokens and the bos convention come from the checkpoint folder's `tokenizer_config.json`,
`special_tokens_map.json` and `generation_config.json`. Text produced token by token (generation, chat,
serving) is decoded with `IncrementalDecoder`, which gives exactly the text of a full `decode`.
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import torch

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"
_REPLACEMENT_CHAR = "\ufffd"  # what decoding an incomplete UTF-8 sequence yields


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, {} when the file does not exist, a one-line ValueError when it is broken."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(obj).__name__}")
    return obj


def _token_content(value: Any) -> Optional[str]:
    """A special token as written in tokenizer_config.json: a string, or a dict with "content" (AddedToken)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _id_list(value: Any, path: Path, key: str) -> list[int]:
    """`eos_token_id`-style values: None, an int, or a list of ints."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{path}: {key} must be an int or a list of ints, got {value!r}")
    return list(values)


class MissingDirectoryError(FileNotFoundError, NotADirectoryError):
    """A tokenizer folder that does not exist: catchable as FileNotFoundError and as LitGPT's NotADirectoryError."""


class Tokenizer:
    """Encodes text to token ids and back, with the special-token conventions of a checkpoint folder.

    Attributes:
        checkpoint_dir: the folder the tokenizer was loaded from.
        model_name: the folder's name (e.g. "Llama-3.2-1B").
        backend: "huggingface" (tokenizer.json, preferred when both exist) or "sentencepiece" (tokenizer.model).
        vocab_size: number of ids the tokenizer can produce, added tokens included.
        bos_id / eos_id: ids of the beginning- and end-of-sequence tokens, or None when the tokenizer has none.
        use_bos: whether `encode` prepends bos by default.
        stop_tokens: every id that ends generation (eos_id first, then the extra `eos_token_id`s of
            generation_config.json).
        tokenizer_config / generation_config: the parsed JSON files ({} when absent), e.g. for the chat template.
        processor: the backend object, as in LitGPT: a `tokenizers.Tokenizer` or a
            `sentencepiece.SentencePieceProcessor`.
    """

    def __init__(self, checkpoint_dir: Union[str, Path]) -> None:
        """Loads the tokenizer files in `checkpoint_dir`.

        Args:
            checkpoint_dir: folder holding `tokenizer.json` or `tokenizer.model`, and optionally
                `tokenizer_config.json`, `special_tokens_map.json` and `generation_config.json`.
        """
        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise MissingDirectoryError(f"tokenizer directory {checkpoint_dir} does not exist")
        self.checkpoint_dir = checkpoint_dir
        self.model_name = checkpoint_dir.name or checkpoint_dir.resolve().name

        json_path, model_path = checkpoint_dir / TOKENIZER_JSON, checkpoint_dir / SENTENCEPIECE_MODEL
        self._hf = self._sp = None
        if json_path.is_file():
            self.backend = "huggingface"
            self._hf = _load_hf(json_path)
            self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        elif model_path.is_file():
            self.backend = "sentencepiece"
            self._sp = _load_sentencepiece(model_path)
            self.vocab_size = self._sp.vocab_size()
        else:
            raise FileNotFoundError(
                f"{checkpoint_dir} holds no tokenizer: looked for {TOKENIZER_JSON} and {SENTENCEPIECE_MODEL}"
            )

        config_path = checkpoint_dir / "tokenizer_config.json"
        generation_path = checkpoint_dir / "generation_config.json"
        self.tokenizer_config = _read_json(config_path)
        self.generation_config = _read_json(generation_path)
        special_map_path = checkpoint_dir / "special_tokens_map.json"
        special_map = _read_json(special_map_path)

        self.bos_id = self._special_id("bos", config_path, special_map_path, special_map, generation_path)
        self.eos_id = self._special_id("eos", config_path, special_map_path, special_map, generation_path)

        stop = [] if self.eos_id is None else [self.eos_id]
        for i in _id_list(self.generation_config.get("eos_token_id"), generation_path, "eos_token_id"):
            if i not in stop:
                self._check_id(i, f"{generation_path}: eos_token_id")
                stop.append(i)
        self.stop_tokens: tuple[int, ...] = tuple(stop)
        self.use_bos = self._default_use_bos(config_path)

    # ----------------------------------------------------------------------------------------- setup

    def _special_id(
        self, kind: str, config_path: Path, special_map_path: Path, special_map: dict, generation_path: Path
    ) -> Optional[int]:
        """The id of the bos or eos token: tokenizer_config.json, special_tokens_map.json, generation_config.json,
        then the SentencePiece model's own setting, in that order."""
        key = f"{kind}_token"
        for path, source in ((config_path, self.tokenizer_config), (special_map_path, special_map)):
            token = _token_content(source.get(key))
            if token is not None:
                found = self._lookup(token)
                if found is None:
                    raise ValueError(f"{path}: {key} {token!r} is not in the vocabulary of {self._source}")
                return found
        ids = _id_list(self.generation_config.get(f"{key}_id"), generation_path, f"{key}_id")
        if ids:
            self._check_id(ids[0], f"{generation_path}: {key}_id")
            return ids[0]
        if self._sp is not None:
            own = self._sp.bos_id() if kind == "bos" else self._sp.eos_id()
            return own if own >= 0 else None
        return None

    def _default_use_bos(self, config_path: Path) -> bool:
        if self.bos_id is None:
            return False
        add_bos = self.tokenizer_config.get("add_bos_token")
        if add_bos is not None:
            if not isinstance(add_bos, bool):
                raise ValueError(f"{config_path}: add_bos_token must be true or false, got {add_bos!r}")
            return add_bos
        if self._hf is not None:  # does the tokenizer.json post-processor add bos itself?
            with_special = self._hf.encode("a", add_special_tokens=True).ids
            plain = self._hf.encode("a", add_special_tokens=False).ids
            return bool(with_special) and with_special[0] == self.bos_id and plain[:1] != [self.bos_id]
        return True  # SentencePiece models with a bos piece (Llama 2, Gemma, ...) expect it

    @property
    def processor(self) -> Any:
        """The backend object: a `tokenizers.Tokenizer` (huggingface) or a `SentencePieceProcessor`."""
        return self._hf if self._hf is not None else self._sp

    def check_if_bos_token_used(self, checkpoint_dir: Union[str, Path]) -> bool:
        """Whether `encode` adds the bos token by default for this checkpoint (LitGPT's name for `use_bos`).

        Args:
            checkpoint_dir: the tokenizer's folder (kept for LitGPT's signature; `use_bos` was read from it).
        """
        if Path(checkpoint_dir).resolve() != self.checkpoint_dir.resolve():
            return Tokenizer(checkpoint_dir).use_bos
        return self.use_bos

    @property
    def _source(self) -> Path:
        return self.checkpoint_dir / (TOKENIZER_JSON if self._hf is not None else SENTENCEPIECE_MODEL)

    def _lookup(self, token: str) -> Optional[int]:
        if self._hf is not None:
            return self._hf.token_to_id(token)
        i = self._sp.piece_to_id(token)
        if i == self._sp.unk_id() and self._sp.id_to_piece(i) != token:
            return None
        return i

    def _byte_run_ids(self, skip_special_tokens: bool) -> frozenset[int]:
        """With a byte-fallback Hugging Face model: ids of the "<0xNN>" byte tokens, plus the special tokens when
        those are skipped (a skipped token does not end a run of bytes). Empty otherwise."""
        if self._hf is None or not getattr(self._hf.model, "byte_fallback", False):
            return frozenset()
        ids = {self._hf.token_to_id(f"<0x{b:02X}>") for b in range(256)} - {None}
        if skip_special_tokens:
            ids |= {i for i, added in self._hf.get_added_tokens_decoder().items() if added.special}
        return frozenset(ids)

    def _check_id(self, i: int, what: str) -> None:
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"{what} {i} is outside the vocabulary of {self._source} (size {self.vocab_size})")

    # ---------------------------------------------------------------------------------------- public

    def token_to_id(self, token: str) -> int:
        """The id of `token` (a vocabulary entry such as "<|eot_id|>").

        Args:
            token: the token's text exactly as stored in the vocabulary.
        """
        found = self._lookup(token)
        if found is None:
            raise ValueError(f"token {token!r} is not in the vocabulary of {self._source}")
        return found

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of `token_id` (raw piece, e.g. "▁the" or "Ġthe").

        Args:
            token_id: an id in `[0, vocab_size)`.
        """
        self._check_id(int(token_id), "token id")
        if self._hf is not None:
            return self._hf.id_to_token(int(token_id))
        return self._sp.id_to_piece(int(token_id))

    def encode(
        self,
        string: str,
        device: Optional[Union[str, torch.device]] = None,
        bos: Optional[bool] = None,
        eos: bool = False,
        max_length: int = -1,
    ) -> torch.Tensor:
        """Token ids of `string` as a 1-d int32 tensor.

        Args:
            string: the text to encode. Special tokens written in it (e.g. "<|eot_id|>") become their ids
                with the Hugging Face backend.
            device: device of the returned tensor.
            bos: prepend the bos token; None follows `use_bos`. Never added twice: a text that already starts
                with the bos token keeps just that one.
            eos: append the eos token.
            max_length: keep only the first `max_length` ids (bos included); -1 keeps all.
        """
        if not isinstance(string, str):
            raise TypeError(f"encode expects a str, got {type(string).__name__}")
        if max_length == 0 or max_length < -1:
            raise ValueError(f"max_length must be a positive number of tokens or -1 (no limit), got {max_length}")
        if bos is None:
            bos = self.use_bos
        if self._hf is not None:
            ids = self._hf.encode(string, add_special_tokens=False).ids
        else:
            ids = self._sp.encode(string)
        if bos:
            if self.bos_id is None:
                raise ValueError(f"{self._source} has no bos token; call encode with bos=False")
            if not ids or ids[0] != self.bos_id:
                ids = [self.bos_id] + ids
        if eos:
            if self.eos_id is None:
                raise ValueError(f"{self._source} has no eos token; call encode with eos=False")
            ids = ids + [self.eos_id]
        if max_length > 0:
            ids = ids[:max_length]
        return torch.tensor(ids, dtype=torch.int, device=device)

    def decode(self, tensor: Union[torch.Tensor, Iterable[int]], skip_special_tokens: bool = True) -> str:
        """The text of a sequence of token ids.

        Args:
            tensor: a 0-d or 1-d tensor of ids, or a list of ints. Ids past the vocabulary (the padding rows
                a model's embedding matrix may have, which an untrained model can sample) decode to "".
            skip_special_tokens: leave special tokens (bos, eos, ...) out of the text. SentencePiece control
                pieces always decode to "".
        """
        ids = _as_id_list(tensor)
        if ids and min(ids) < 0:
            raise ValueError(f"token ids must not be negative, got {min(ids)}")
        if ids and max(ids) >= self.vocab_size:
            ids = [i for i in ids if i < self.vocab_size]
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._sp.decode(ids)

    def incremental_decoder(self, skip_special_tokens: bool = True) -> "IncrementalDecoder":
        """A fresh `IncrementalDecoder` over this tokenizer (one per generated sequence).

        Args:
            skip_special_tokens: as in `decode`.
        """
        return IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)

    def decode_stream(
        self,
        token_stream: Iterable[Union[int, torch.Tensor]],
        device: Optional[Union[str, torch.device]] = None,
        skip_special_tokens: bool = True,
    ) -> Iterator[str]:
        """Yields text pieces as tokens arrive; their concatenation equals `decode(list(token_stream))`.

        Args:
            token_stream: token ids, e.g. a generator yielding one sampled token at a time (ints or tensors).
            device: accepted for LitGPT's signature; decoding runs on the CPU whatever the tokens' device.
            skip_special_tokens: as in `decode`.
        """
        decoder = IncrementalDecoder(self, skip_special_tokens=skip_special_tokens)
        for token_id in token_stream:
            piece = decoder.add(token_id)
            if piece:
                yield piece
        rest = decoder.flush()
        if rest:
            yield rest

    def __repr__(self) -> str:
        return (
            f"Tokenizer({str(self.checkpoint_dir)!r}, backend={self.backend!r}, vocab_size={self.vocab_size}, "
            f"bos_id={self.bos_id}, eos_id={self.eos_id}, use_bos={self.use_bos})"
        )


class IncrementalDecoder:
    """Turns token ids arriving one at a time into text pieces whose concatenation is the full `decode`.

    Decoding tokens one by one is wrong in two ways: SentencePiece-style decoders drop the "▁" space of a
    sequence's first token (so every word would lose its leading space), and byte-level tokens may end in the
    middle of a multi-byte UTF-8 character. So each step decodes a short window: the tokens emitted last (as
    context) followed by the tokens not emitted yet, and emits the text past the context's own text. A window
    ending in an incomplete character (or, for byte-fallback tokenizers, inside a run of "<0xNN>" tokens) is
    held back until the character completes. Older tokens leave the window, so the cost per token stays
    constant however long the output grows.

    Example:
        decoder = tokenizer.incremental_decoder()
        for token in generated_ids:
            print(decoder.add(token), end="", flush=True)
        print(decoder.flush())
    """

    # Give up waiting after this many pending tokens: a model may emit bytes that never form a valid
    # character, and holding them forever would grow the window (valid UTF-8 never needs more than a few).
    max_pending = 32
    # Byte-fallback decoders (Llama 2 style "<0xE6>" tokens) decode a whole run of byte tokens at once, and
    # turn every byte of an invalid run into "\ufffd"; holding a run until it ends (up to this many tokens)
    # keeps even invalid runs identical to the full decode.
    max_byte_run = 16

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        """
        Args:
            tokenizer: the tokenizer whose `decode` the output must match.
            skip_special_tokens: as in `Tokenizer.decode`.
        """
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._byte_ids = tokenizer._byte_run_ids(skip_special_tokens)
        self.reset()

    def reset(self) -> None:
        """Forgets all tokens: the next `add` starts a new sequence."""
        self._window: list[int] = []  # already-emitted context tokens, then tokens not yet emitted
        self._emitted = 0  # how many tokens at the start of the window have been emitted
        self._emitted_text = ""  # decode(window[:_emitted])

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: Union[int, torch.Tensor]) -> str:
        """Takes the next token id; returns the new text it completes ("" while a character is incomplete).

        Args:
            token_id: the next id (an int or a one-element tensor).
        """
        ids = _as_id_list(token_id)
        if len(ids) != 1:
            raise ValueError(f"add takes one token id at a time, got {len(ids)}")
        self._window.append(ids[0])
        return self._step(force=False)

    def flush(self) -> str:
        """Returns whatever is still held back (end of the sequence); the decoder is then empty."""
        piece = self._step(force=True) if len(self._window) > self._emitted else ""
        self.reset()
        return piece

    def _step(self, force: bool) -> str:
        pending = len(self._window) - self._emitted
        if not force and self._window[-1] in self._byte_ids and pending < self.max_byte_run:
            return ""  # inside a run of byte-fallback tokens: wait for its end
        text = self._decode(self._window)
        force = force or pending >= self.max_pending
        if not force and text.endswith(_REPLACEMENT_CHAR):
            return ""  # the last token ends inside a multi-byte character: wait for the rest of it
        if not (len(text) > len(self._emitted_text) and text.startswith(self._emitted_text)):
            if text == self._emitted_text and force:
                # Tokens that decode to nothing (skipped special tokens): forget them, keep the context.
                del self._window[self._emitted :]
                return ""
            if not force:
                return ""  # nothing new yet, or (unusual decoders) the context's text changed: wait
        piece = text[len(os.path.commonprefix([text, self._emitted_text])) :]
        # The tokens just emitted become the context for the next step: the next word's leading space is then
        # never the window's first character, which SentencePiece-style decoders would strip.
        self._window = self._window[self._emitted :]
        self._emitted = len(self._window)
        self._emitted_text = self._decode(self._window)
        return piece


def _as_id_list(value: Union[torch.Tensor, Iterable[int], int]) -> list[int]:
    """Token ids from a 0-d/1-d integer tensor, a single int or an iterable of ints (numpy ints included)."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 1:
            raise ValueError(f"expected a 0-d or 1-d tensor of token ids, got shape {tuple(value.shape)}")
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"token ids must be integers, got a {value.dtype} tensor")
        return value.reshape(-1).tolist()
    items = [value] if not isinstance(value, Iterable) else list(value)
    ids = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"token ids must be integers, got {item!r}")
        try:
            ids.append(operator.index(item))
        except TypeError:
            raise ValueError(f"token ids must be integers, got {item!r}") from None
    return ids


def _load_hf(path: Path):
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return HFTokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises a bare Exception for malformed files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a valid Hugging Face tokenizer file ({first})") from None


def _load_sentencepiece(path: Path):
    try:
        import sentencepiece
    except ImportError:
        raise ModuleNotFoundError(
            f"{path} is a SentencePiece model, which needs the sentencepiece package: "
            "pip install 'litgpt[sentencepiece]'"
        ) from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is not a valid SentencePiece model ({first})") from None
    return processor
