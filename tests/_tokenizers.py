"""Builders of tiny tokenizers for the tests: trained in milliseconds on a few KB of Python's own docs.

Other test modules import these to get a real checkpoint-style tokenizer folder without the HF hub:

    from tests._tokenizers import make_hf_tokenizer, make_sentencepiece_tokenizer
    make_hf_tokenizer(tmp_path)                  # tokenizer.json + tokenizer_config.json + generation_config.json
    make_sentencepiece_tokenizer(tmp_path)       # tokenizer.model + the two config files

Special tokens share their ids across builders where possible:
  byte_level (GPT-2 / Llama 3 style):       <s>=0, </s>=1, <|eot|>=2
  metaspace  (Llama 2 / Mistral tokenizer.json style) and sentencepiece: <unk>=0, <s>=1, </s>=2, <|eot|>=3
Training is cached per process, so calling a builder many times only costs the file writes.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any, Optional, Union

BOS, EOS, EOT, UNK = "<s>", "</s>", "<|eot|>", "<unk>"

# A few lines beyond the English docs so that merges also form inside multi-byte characters.
_EXTRA_LINES = (
    "naïve café déjà vu, crème brûlée à la carte",
    "東京 大阪 京都 東京タワー 日本語のテキスト",
    "Grüße aus München: Straße, Übermut, Ärger",
    "    indented code:\n\tx = [1, 2, 3]  # comment\n\n",
)


@functools.lru_cache(maxsize=1)
def training_text() -> str:
    """About 12 KB of English prose and code from `pydoc_data.topics`, plus some accented and CJK lines."""
    from pydoc_data.topics import topics

    english = "\n".join(topics[key] for key in sorted(topics)[:6])[:12000]
    return english + "\n" + "\n".join(_EXTRA_LINES * 3)


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-to-character table used by byte-level BPE (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# Byte-level alphabet without the control bytes real text never holds (except \t \n \r): 226 symbols.
# Keeping them out lets a byte-level vocabulary be as small as 256 while every UTF-8 character still encodes.
_TEXT_BYTES = [0x09, 0x0A, 0x0D] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100))


@functools.lru_cache(maxsize=16)
def _byte_level_json(vocab_size: int, bos_in_post_processor: bool) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = [BOS, EOS, EOT]
    minimum = len(_TEXT_BYTES) + len(specials) + 1
    if vocab_size < minimum:
        raise ValueError(f"a byte-level tokenizer needs vocab_size >= {minimum}, got {vocab_size}")
    table = _bytes_to_unicode()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=[table[b] for b in _TEXT_BYTES],
        show_progress=False,
    )
    tok.train_from_iterator(training_text().splitlines(keepends=True), trainer)
    if bos_in_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the training text only allows {tok.get_vocab_size()} tokens, {vocab_size} were asked")
    return tok.to_str()


@functools.lru_cache(maxsize=16)
def _metaspace_json(vocab_size: int, bos_in_post_processor: bool) -> str:
    """A Llama-2-style tokenizer.json: BPE over '▁'-joined words with byte fallback and a stripping decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = [UNK, BOS, EOS, EOT]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trained_size = vocab_size - len(byte_tokens)
    alphabet = len(set(training_text().replace(" ", "▁")))
    minimum = len(byte_tokens) + len(specials) + alphabet + 1
    if vocab_size < minimum:
        raise ValueError(f"a metaspace tokenizer needs vocab_size >= {minimum}, got {vocab_size}")

    trainer_tok = Tokenizer(models.BPE(unk_token=UNK))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=trained_size, special_tokens=specials, show_progress=False)
    trainer_tok.train_from_iterator(training_text().splitlines(), trainer)
    trained = json.loads(trainer_tok.to_str())["model"]

    # Re-number: specials, then the 256 byte-fallback tokens, then everything the trainer learned.
    vocab = {token: i for i, token in enumerate(specials + byte_tokens)}
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True))
    # The current (non-legacy) form of Llama / Mistral tokenizer.json files.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(specials)
    if bos_in_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
        )
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the training text only allows {tok.get_vocab_size()} tokens, {vocab_size} were asked")
    return tok.to_str()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")


def _merge(base: dict[str, Any], extra: Optional[dict[str, Any]]) -> None:
    for key, value in (extra or {}).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value


def _configs(
    directory: Path,
    bos_id: int,
    eos_id: int,
    add_bos_token: Optional[bool],
    eos_token_id: Union[int, list[int], None],
    tokenizer_config: Optional[dict[str, Any]],
    generation_config: Optional[dict[str, Any]],
    write_configs: bool,
) -> None:
    if not write_configs:
        return
    # bos as a plain string, eos in the older AddedToken-dict form: real checkpoints use both.
    eos_entry = {"__type": "AddedToken", "content": EOS, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
    tc: dict[str, Any] = {"bos_token": BOS, "eos_token": eos_entry}
    if add_bos_token is not None:
        tc["add_bos_token"] = add_bos_token
    _merge(tc, tokenizer_config)
    gc: dict[str, Any] = {"bos_token_id": bos_id, "eos_token_id": eos_id if eos_token_id is None else eos_token_id}
    _merge(gc, generation_config)
    _write_json(directory / "tokenizer_config.json", tc)
    _write_json(directory / "generation_config.json", gc)


def make_hf_tokenizer(
    directory: Union[str, Path],
    vocab_size: Optional[int] = None,
    *,
    kind: str = "byte_level",
    add_bos_token: Optional[bool] = True,
    bos_in_post_processor: bool = False,
    eos_token_id: Union[int, list[int], None] = None,
    tokenizer_config: Optional[dict[str, Any]] = None,
    generation_config: Optional[dict[str, Any]] = None,
    write_configs: bool = True,
) -> Path:
    """Writes a tiny trained Hugging Face `tokenizer.json` (plus config files) into `directory`.

    Args:
        directory: folder to write into (created if missing).
        vocab_size: exact vocabulary size, special tokens included. Defaults to 256 for `byte_level`
            (the minimum is 230) and 400 for `metaspace` (the minimum is about 350).
        kind: "byte_level" (GPT-2 / Llama 3 style byte-level BPE, specials <s>=0 </s>=1 <|eot|>=2) or
            "metaspace" (Llama 2 style '▁' BPE with byte fallback, <unk>=0 <s>=1 </s>=2 <|eot|>=3).
        add_bos_token: value of `add_bos_token` in tokenizer_config.json; None leaves the key out.
        bos_in_post_processor: whether the tokenizer.json post-processor prepends <s> (as Llama's do).
        eos_token_id: `eos_token_id` for generation_config.json (an int or a list); default: the id of </s>.
        tokenizer_config: extra keys merged into tokenizer_config.json (a None value removes a key).
        generation_config: extra keys merged into generation_config.json (a None value removes a key).
        write_configs: write tokenizer_config.json and generation_config.json at all.

    Returns:
        `directory` as a Path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "byte_level":
        text = _byte_level_json(256 if vocab_size is None else vocab_size, bos_in_post_processor)
    elif kind == "metaspace":
        text = _metaspace_json(400 if vocab_size is None else vocab_size, bos_in_post_processor)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'byte_level' or 'metaspace'")
    (directory / "tokenizer.json").write_text(text, encoding="utf-8")
    vocab = json.loads(text)["model"]["vocab"]
    _configs(directory, vocab[BOS], vocab[EOS], add_bos_token, eos_token_id, tokenizer_config, generation_config,
             write_configs)
    return directory


@functools.lru_cache(maxsize=8)
def _sentencepiece_bytes(vocab_size: int) -> bytes:
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text().splitlines()),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,  # characters never seen in training become <0xNN> pieces, as in Llama 2
        character_coverage=1.0,
        normalization_rule_name="identity",  # keep newlines, tabs and repeated spaces as they are
        remove_extra_whitespaces=False,
        control_symbols=[EOT],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return buffer.getvalue()


def make_sentencepiece_tokenizer(
    directory: Union[str, Path],
    vocab_size: int = 400,
    *,
    add_bos_token: Optional[bool] = True,
    eos_token_id: Union[int, list[int], None] = None,
    tokenizer_config: Optional[dict[str, Any]] = None,
    generation_config: Optional[dict[str, Any]] = None,
    write_configs: bool = True,
) -> Path:
    """Writes a tiny trained SentencePiece `tokenizer.model` (plus config files) into `directory`.

    Args:
        directory: folder to write into (created if missing).
        vocab_size: vocabulary size (about 350 at least: 256 byte-fallback pieces plus the characters seen).
        add_bos_token: value of `add_bos_token` in tokenizer_config.json; None leaves the key out.
        eos_token_id: `eos_token_id` for generation_config.json (an int or a list); default: the id of </s>.
        tokenizer_config: extra keys merged into tokenizer_config.json (a None value removes a key).
        generation_config: extra keys merged into generation_config.json (a None value removes a key).
        write_configs: write tokenizer_config.json and generation_config.json at all.

    Returns:
        `directory` as a Path. Pieces: <unk>=0, <s>=1, </s>=2, <|eot|>=3, then <0x00>..<0xFF>, then the rest.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(_sentencepiece_bytes(vocab_size))
    _configs(directory, 1, 2, add_bos_token, eos_token_id, tokenizer_config, generation_config, write_configs)
    return directory
