import json
import random
import sys

import pytest
import torch

from litgpt.tokenizer import IncrementalDecoder, Tokenizer
from tests._tokenizers import BOS, EOS, EOT, make_hf_tokenizer, make_sentencepiece_tokenizer

TEXTS = [
    "Hello world",
    " leading space, then words",
    "\nnewline first\n\nand blank lines\n",
    "naïve café 東京",
    "🦄 Ω\ttab and emoji",
    "trailing spaces  ",
    "x",
]


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    """GPT-2 / Llama 3 style: byte-level BPE, bos added by the post-processor, two eos ids."""
    d = tmp_path_factory.mktemp("byte_level")
    return Tokenizer(make_hf_tokenizer(d, bos_in_post_processor=True, add_bos_token=None, eos_token_id=[1, 2]))


@pytest.fixture(scope="module")
def metaspace(tmp_path_factory):
    """Llama 2 / Mistral style tokenizer.json: '▁' BPE with byte fallback and a leading-space-stripping decoder."""
    d = tmp_path_factory.mktemp("metaspace")
    return Tokenizer(make_hf_tokenizer(d, kind="metaspace", bos_in_post_processor=True, add_bos_token=True))


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    d = tmp_path_factory.mktemp("sentencepiece")
    return Tokenizer(make_sentencepiece_tokenizer(d, add_bos_token=None, eos_token_id=[2, 3]))


@pytest.fixture(params=["byte_level", "metaspace", "sentencepiece"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def test_attributes(byte_level, metaspace, sentencepiece):
    assert byte_level.backend == metaspace.backend == "huggingface"
    assert sentencepiece.backend == "sentencepiece"
    assert byte_level.model_name == byte_level.checkpoint_dir.name
    assert (byte_level.vocab_size, metaspace.vocab_size, sentencepiece.vocab_size) == (256, 400, 400)
    assert (byte_level.bos_id, byte_level.eos_id) == (0, 1)
    assert (metaspace.bos_id, metaspace.eos_id) == (1, 2)
    assert (sentencepiece.bos_id, sentencepiece.eos_id) == (1, 2)
    assert byte_level.stop_tokens == (1, 2)  # eos first, then generation_config's extra eos ids
    assert metaspace.stop_tokens == (2,)
    assert sentencepiece.stop_tokens == (2, 3)
    # use_bos: post-processor detection, add_bos_token, SentencePiece convention
    assert byte_level.use_bos and metaspace.use_bos and sentencepiece.use_bos
    assert "backend='sentencepiece'" in repr(sentencepiece)


def test_round_trip(byte_level, sentencepiece):
    for tok in (byte_level, sentencepiece):
        for text in TEXTS:
            ids = tok.encode(text)
            assert ids.dtype == torch.int32 and ids.dim() == 1
            assert ids[0].item() == tok.bos_id
            assert tok.decode(ids) == text  # bos is skipped
            assert tok.decode(ids.tolist()) == text


def test_metaspace_round_trip(metaspace):
    for text in ["Hello world", "\nnewline first\n\n", "naïve café 東京", "🦄 Ω\ttab", "trailing  "]:
        assert metaspace.decode(metaspace.encode(text)) == text
    # unseen characters go through <0xNN> byte fallback tokens, not <unk>
    ids = metaspace.encode("🦄", bos=False).tolist()
    assert [metaspace.id_to_token(i) for i in ids[-4:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x84>"]


def test_bos_eos(tokenizer):
    plain = tokenizer.encode("hello there", bos=False).tolist()
    assert tokenizer.bos_id not in plain
    assert tokenizer.encode("hello there", bos=True).tolist() == [tokenizer.bos_id] + plain
    assert tokenizer.encode("hello there").tolist() == [tokenizer.bos_id] + plain  # use_bos is True here
    assert tokenizer.encode("hello there", bos=False, eos=True).tolist() == plain + [tokenizer.eos_id]
    both = tokenizer.encode("hello there", bos=True, eos=True).tolist()
    assert both == [tokenizer.bos_id] + plain + [tokenizer.eos_id]
    assert tokenizer.decode(both) == tokenizer.decode(plain)


def test_no_double_bos(byte_level, metaspace):
    for tok in (byte_level, metaspace):
        ids = tok.encode(f"{BOS}hello").tolist()  # the text itself starts with the bos token
        assert ids[0] == tok.bos_id and ids[1] != tok.bos_id
        assert ids == tok.encode(f"{BOS}hello", bos=False).tolist()


def test_max_length(tokenizer):
    full = tokenizer.encode("a somewhat longer sentence to cut", eos=True)
    assert len(full) > 5
    cut = tokenizer.encode("a somewhat longer sentence to cut", eos=True, max_length=5)
    assert cut.tolist() == full[:5].tolist()
    assert len(tokenizer.encode("hi", max_length=100)) == len(tokenizer.encode("hi"))
    for bad in (0, -2):
        with pytest.raises(ValueError, match="max_length"):
            tokenizer.encode("hi", max_length=bad)


def test_encode_device_and_input_checks(byte_level):
    assert byte_level.encode("hi", device="cpu").device.type == "cpu"
    assert byte_level.encode("", bos=False).tolist() == []
    assert byte_level.encode("").tolist() == [byte_level.bos_id]
    with pytest.raises(TypeError, match="str"):
        byte_level.encode(b"bytes")
    assert byte_level.decode(torch.tensor(72)) == byte_level.decode([72])
    with pytest.raises(ValueError, match="shape"):
        byte_level.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        byte_level.decode(torch.zeros(2))
    with pytest.raises(ValueError, match="must not be negative"):
        byte_level.decode([5, -1])
    # ids in a model's padded vocabulary rows (past the tokenizer's) decode to nothing, in streams too
    assert byte_level.decode([72, 256, 300, 72]) == byte_level.decode([72, 72])
    assert "".join(byte_level.decode_stream([72, 256, 300, 72])) == byte_level.decode([72, 72])


@pytest.mark.parametrize("add_bos_token", [True, False])
@pytest.mark.parametrize("in_post_processor", [True, False])
def test_use_bos_prefers_add_bos_token(tmp_path, add_bos_token, in_post_processor):
    tok = Tokenizer(make_hf_tokenizer(tmp_path, add_bos_token=add_bos_token, bos_in_post_processor=in_post_processor))
    assert tok.use_bos is add_bos_token
    assert (tok.encode("hi")[0].item() == tok.bos_id) is add_bos_token
    # an explicit argument wins over the default
    assert tok.encode("hi", bos=True)[0].item() == tok.bos_id
    assert tok.encode("hi", bos=False)[0].item() != tok.bos_id


def test_use_bos_from_post_processor(tmp_path):
    without = Tokenizer(make_hf_tokenizer(tmp_path / "a", add_bos_token=None, bos_in_post_processor=False))
    assert not without.use_bos and without.bos_id == 0
    assert without.encode("hi")[0].item() != 0


def test_sentencepiece_add_bos_token(tmp_path):
    tok = Tokenizer(make_sentencepiece_tokenizer(tmp_path, add_bos_token=False))
    assert not tok.use_bos
    assert tok.encode("hi").tolist() == tok.encode("hi", bos=False).tolist()


def test_special_ids_from_generation_config_only(tmp_path):
    make_hf_tokenizer(tmp_path, tokenizer_config={"bos_token": None, "eos_token": None}, eos_token_id=[2, 1])
    tok = Tokenizer(tmp_path)
    assert tok.bos_id == 0 and tok.eos_id == 2 and tok.stop_tokens == (2, 1)


def test_special_ids_without_any_config(tmp_path):
    make_hf_tokenizer(tmp_path, write_configs=False)
    tok = Tokenizer(tmp_path)
    assert tok.bos_id is None and tok.eos_id is None and tok.stop_tokens == () and not tok.use_bos
    assert tok.tokenizer_config == {} and tok.generation_config == {}
    with pytest.raises(ValueError, match="no bos token"):
        tok.encode("hi", bos=True)
    with pytest.raises(ValueError, match="no eos token"):
        tok.encode("hi", eos=True)
    # the SentencePiece model knows its own bos/eos pieces
    make_sentencepiece_tokenizer(tmp_path / "sp", write_configs=False)
    sp = Tokenizer(tmp_path / "sp")
    assert (sp.bos_id, sp.eos_id, sp.stop_tokens, sp.use_bos) == (1, 2, (2,), True)


def test_special_tokens_map_and_config_precedence(tmp_path):
    make_hf_tokenizer(tmp_path, tokenizer_config={"eos_token": None}, generation_config={"eos_token_id": 1})
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": {"content": EOT}}))
    tok = Tokenizer(tmp_path)
    assert tok.eos_id == 2  # special_tokens_map.json before generation_config.json
    assert tok.stop_tokens == (2, 1)
    assert tok.encode("x", bos=False, eos=True).tolist()[-1] == 2


def test_config_errors(tmp_path):
    make_hf_tokenizer(tmp_path / "a", tokenizer_config={"bos_token": "<nope>"})
    with pytest.raises(ValueError, match=r"tokenizer_config.json: bos_token '<nope>' is not in the vocabulary"):
        Tokenizer(tmp_path / "a")
    make_hf_tokenizer(tmp_path / "b", eos_token_id=[1, 9999])
    with pytest.raises(ValueError, match="eos_token_id 9999 is outside the vocabulary"):
        Tokenizer(tmp_path / "b")
    make_hf_tokenizer(tmp_path / "c", generation_config={"eos_token_id": "2"})
    with pytest.raises(ValueError, match="must be an int or a list of ints"):
        Tokenizer(tmp_path / "c")
    make_hf_tokenizer(tmp_path / "d")
    (tmp_path / "d" / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer_config.json is not valid JSON"):
        Tokenizer(tmp_path / "d")
    make_hf_tokenizer(tmp_path / "e", tokenizer_config={"add_bos_token": "yes"})
    with pytest.raises(ValueError, match="add_bos_token must be true or false"):
        Tokenizer(tmp_path / "e")


def test_prefers_tokenizer_json(tmp_path):
    make_sentencepiece_tokenizer(tmp_path)
    make_hf_tokenizer(tmp_path, kind="metaspace")
    assert Tokenizer(tmp_path).backend == "huggingface"
    (tmp_path / "tokenizer.json").unlink()
    assert Tokenizer(tmp_path).backend == "sentencepiece"


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "tokenizer_config.json").write_text("{}")
    message = r"empty holds no tokenizer: looked for tokenizer.json and tokenizer.model"
    with pytest.raises(FileNotFoundError, match=message):
        Tokenizer(tmp_path / "empty")


def test_corrupt_tokenizer_files(tmp_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match=r"tokenizer.json is not a valid Hugging Face tokenizer file"):
        Tokenizer(tmp_path / "json")
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "tokenizer.model").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"tokenizer.model is not a valid SentencePiece model"):
        Tokenizer(tmp_path / "sp")


def test_sentencepiece_not_installed(tmp_path, monkeypatch):
    make_sentencepiece_tokenizer(tmp_path)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # makes `import sentencepiece` fail
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'litgpt\[sentencepiece\]'"):
        Tokenizer(tmp_path)


def test_token_to_id(tokenizer):
    assert tokenizer.token_to_id(BOS) == tokenizer.bos_id
    assert tokenizer.token_to_id(EOS) == tokenizer.eos_id
    assert tokenizer.id_to_token(tokenizer.eos_id) == EOS
    assert tokenizer.token_to_id(EOT) in (2, 3)
    with pytest.raises(ValueError, match=r"token '<\|missing\|>' is not in the vocabulary"):
        tokenizer.token_to_id("<|missing|>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.id_to_token(tokenizer.vocab_size)


def test_sentencepiece_unk_piece(sentencepiece):
    assert sentencepiece.token_to_id("<unk>") == 0  # the unknown piece itself is in the vocabulary


def _stream(tok, ids, **kwargs):
    return list(tok.decode_stream(ids, **kwargs))


STREAM_TEXTS = TEXTS + ["  two spaces\n  indented\n", "東京タワー🦄🦄 ok", "a</s>b <|eot|> c"]


@pytest.mark.parametrize("text", STREAM_TEXTS)
def test_stream_equals_full_decode(tokenizer, text):
    ids = tokenizer.encode(text, eos=True).tolist()
    pieces = _stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    with_special = tokenizer.decode(ids, skip_special_tokens=False)
    assert "".join(_stream(tokenizer, ids, skip_special_tokens=False)) == with_special
    assert all("\ufffd" not in p for p in pieces)  # incomplete characters are held back, never emitted
    # tensors work as input, one 0-d tensor at a time
    assert "".join(tokenizer.decode_stream(torch.tensor(ids))) == tokenizer.decode(ids)


def test_stream_keeps_word_spaces(metaspace, sentencepiece):
    # decoding tokens one by one drops the '▁' space; the stream must not
    for tok in (metaspace, sentencepiece):
        ids = tok.encode("one two three four", bos=False).tolist()
        naive = "".join(tok.decode([i]) for i in ids)
        assert naive != "one two three four"
        assert "".join(_stream(tok, ids)) == "one two three four"


def test_stream_random_ids(tokenizer):
    # random ids include invalid byte sequences and special tokens in odd places: still identical to decode
    rng = random.Random(0)
    for _ in range(100):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.choice([2, 10, 60]))]
        for skip in (True, False):
            assert "".join(_stream(tokenizer, ids, skip_special_tokens=skip)) == tokenizer.decode(ids, skip)


def test_incremental_decoder_is_incremental(byte_level):
    ids = byte_level.encode("ab 東", bos=False).tolist()
    east = byte_level.encode("東", bos=False).tolist()
    assert len(east) == 3 and ids[-3:] == east  # one token per UTF-8 byte in this tiny vocabulary
    decoder = byte_level.incremental_decoder()
    out = [decoder.add(i) for i in ids]
    # ASCII comes out token by token; the character only once its last byte arrives
    assert all(out[:-3]) and "".join(out[:-3]) == "ab "
    assert out[-3:] == ["", "", "東"]
    assert decoder.flush() == ""
    # a character left incomplete at the end comes out on flush, as `decode` renders it
    assert decoder.add(east[0]) == ""
    assert decoder.flush() == byte_level.decode(east[:1]) == "\ufffd"
    with pytest.raises(ValueError, match="one token id at a time"):
        decoder.add([1, 2])


def test_incremental_decoder_window_stays_small(sentencepiece, monkeypatch):
    ids = sentencepiece.encode("naïve café 東京, " * 300, bos=False).tolist()
    longest = 0
    original = Tokenizer.decode

    def spy(self, tokens, skip_special_tokens=True):
        nonlocal longest
        longest = max(longest, len(tokens))
        return original(self, tokens, skip_special_tokens)

    monkeypatch.setattr(Tokenizer, "decode", spy)
    decoder = IncrementalDecoder(sentencepiece)
    text = "".join(decoder.add(i) for i in ids) + decoder.flush()
    assert text == original(sentencepiece, ids)
    assert len(ids) > 1000 and longest <= 2 * IncrementalDecoder.max_pending


@pytest.mark.parametrize("kind", ["byte_level", "metaspace"])
@pytest.mark.parametrize("add_bos", [True, False])
def test_parity_with_transformers(tmp_path, kind, add_bos):
    import transformers
    extra = {"tokenizer_class": "LlamaTokenizer"} if kind == "metaspace" else {}
    make_hf_tokenizer(tmp_path, kind=kind, add_bos_token=add_bos, bos_in_post_processor=add_bos, tokenizer_config=extra)
    ours = Tokenizer(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    for text in TEXTS + [f"x{EOS}y {EOT}"]:
        ids = ours.encode(text).tolist()
        assert ids == auto(text)["input_ids"], text
        assert ids == fast(text)["input_ids"], text
        assert ours.decode(ids) == auto.decode(ids, skip_special_tokens=True)
    # the one intended difference: transformers doubles a bos the text already starts with, we do not
    expected = auto(f"{BOS}already there")["input_ids"]
    if add_bos:
        assert expected[:2] == [ours.bos_id, ours.bos_id]
        expected = expected[1:]
    assert ours.encode(f"{BOS}already there").tolist() == expected
    assert ours.eos_id == auto.eos_token_id and ours.bos_id == auto.bos_token_id


def test_public_import():
    import litgpt

    assert litgpt.Tokenizer is Tokenizer


def test_padded_vocab_ids_decode_to_nothing(tokenizer):
    ids = tokenizer.encode("hi there", bos=False).tolist()
    padded = ids[:1] + [tokenizer.vocab_size, tokenizer.vocab_size + 7] + ids[1:]
    assert tokenizer.decode(padded) == tokenizer.decode(ids) == "hi there"
    assert "".join(tokenizer.decode_stream(padded)) == "hi there"
