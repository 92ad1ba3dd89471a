"""Data modules: tokenized-once text corpora, instruction rows and their errors, prompt masking, packing, and
the downloading datasets (offline, from local fixtures)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

import litgpt.data.text as text_module
from litgpt.data import (
    FLAN,
    JSON,
    LIMA,
    Alpaca,
    Alpaca2k,
    AlpacaGPT4,
    Deita,
    Dolly,
    LongForm,
    OpenWebText,
    TextFiles,
    TinyStories,
)
from litgpt.data.base import IGNORE_INDEX, ShiftedDataset, TokenWindows
from litgpt.data.packing import PackedDataset
from litgpt.prompts import PromptStyle
from litgpt.tokenizer import Tokenizer
from tests._tokenizers import make_hf_tokenizer, training_text
from tests._train_helpers import one_thread, make_corpus, make_sft_rows, write_json  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer(make_hf_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test's tokenized corpora go to its own cache folder (not the user's ~/.cache/litgpt)."""
    monkeypatch.setenv("LITGPT_CACHE_DIR", str(tmp_path / "litgpt-cache"))
    return tmp_path / "litgpt-cache"


def ready(module, tokenizer, batch_size=2, max_seq_length=32):
    module.connect(tokenizer, batch_size=batch_size, max_seq_length=max_seq_length)
    module.prepare_data()
    module.setup()
    return module


# ----------------------------------------------------------------------------------------------- TextFiles
def test_text_files_are_tokenized_once_and_again_when_they_change(tokenizer, tmp_path, monkeypatch, private_cache):
    folder = make_corpus(tmp_path / "texts")
    calls = []
    real = text_module._write_tokens
    monkeypatch.setattr(text_module, "_write_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = ready(TextFiles(folder, num_workers=1), tokenizer)
    assert len(calls) == 1
    # the cache is in litgpt's cache folder; the text folder holds only the user's files
    assert data.cache_dir().parent == private_cache / "tokenized" and (data.cache_dir() / "meta.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["part0.txt", "part1.txt"]
    ready(TextFiles(folder, num_workers=1), tokenizer)
    assert len(calls) == 1  # cached
    (folder / "part1.txt").write_text((folder / "part1.txt").read_text() + " more text", encoding="utf-8")
    ready(TextFiles(folder, num_workers=1), tokenizer)
    assert len(calls) == 2

    # the training windows hold the files' tokens in order, each file + eos, without gaps or overlaps
    expected = []
    for name in ("part0.txt", "part1.txt"):
        expected += tokenizer.encode((folder / name).read_text(), eos=True).tolist()
    train, val = data.load_tokens()
    assert len(val) == max(1, int(len(expected) * 0.05))
    assert train.tolist() + val.tolist() == expected
    first = data.train_dataset[0]
    assert first["input_ids"].tolist() == expected[:32] and first["labels"].tolist() == expected[1:33]
    assert data.train_dataset[1]["input_ids"][0].item() == expected[32]


def test_text_files_use_a_separate_validation_folder_and_parallel_workers(tokenizer, tmp_path):
    train = make_corpus(tmp_path / "train", n_files=4)
    val = make_corpus(tmp_path / "val", n_files=1)
    one = ready(TextFiles(train, val_data_path=val, num_workers=1, cache_dir_path=tmp_path / "c1"), tokenizer)
    two = ready(TextFiles(train, val_data_path=val, num_workers=2, cache_dir_path=tmp_path / "c2"), tokenizer)
    for a, b in zip(one.load_tokens(), two.load_tokens()):
        assert a.tolist() == b.tolist()
    assert len(one.load_tokens()[1]) == len(tokenizer.encode(training_text(), eos=True))
    assert one.example_prompt()  # the start of the validation text


@pytest.mark.parametrize("case", ["missing", "no_txt", "empty_files", "not_utf8"])
def test_text_files_bad_input(tokenizer, tmp_path, case):
    folder = tmp_path / "texts"
    if case != "missing":
        folder.mkdir()
    if case == "no_txt":
        (folder / "notes.md").write_text("x")
    if case == "empty_files":
        (folder / "a.txt").write_text("")
    if case == "not_utf8":
        (folder / "a.txt").write_bytes(b"caf\xe9 au lait")
    data = TextFiles(folder, num_workers=1)
    match = {"missing": "does not exist", "no_txt": "holds no .txt files", "empty_files": "every .txt file is empty",
             "not_utf8": "is not UTF-8 text"}[case]
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        data.check()
        ready(data, tokenizer)
    assert not (folder / ".litgpt_cache").exists()
    assert not list(tmp_path.glob("litgpt-cache/tokenized/*/meta.json"))  # no half-written cache left behind


def test_token_windows_predict_every_token_once():
    windows = TokenWindows(list(range(11)), seq_length=4)
    assert len(windows) == 2
    assert windows[1]["input_ids"].tolist() == [4, 5, 6, 7] and windows[1]["labels"].tolist() == [5, 6, 7, 8]
    with pytest.raises(IndexError):
        windows[2]


# ----------------------------------------------------------------------------------------------- JSON
def test_json_rows_with_masked_prompt_and_a_seeded_split(tokenizer, tmp_path):
    rows = make_sft_rows(20)
    path = write_json(tmp_path / "rows.json", rows)
    data = ready(JSON(path, val_split_fraction=0.2, mask_prompt=True, prompt_style="alpaca"), tokenizer,
                 max_seq_length=512)
    assert len(data.train_dataset) == 16 and len(data.val_dataset) == 4
    again = ready(JSON(path, val_split_fraction=0.2), tokenizer, max_seq_length=512)
    assert data.val_dataset.data == again.val_dataset.data
    other_seed = ready(JSON(path, val_split_fraction=0.2, seed=1), tokenizer, max_seq_length=512)
    assert other_seed.val_dataset.data != data.val_dataset.data

    row = data.train_dataset.data[0]
    sample = data.train_dataset[0]
    prompt = PromptStyle.from_name("alpaca").apply(row["instruction"], input=row["input"])
    n_prompt = tokenizer.encode(prompt).numel()
    full = torch.cat([tokenizer.encode(prompt), tokenizer.encode(row["output"], bos=False, eos=True)]).tolist()
    assert sample["input_ids"].tolist() == full  # LitGPT's layout: labels aligned with input_ids
    labels = sample["labels"].tolist()
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == full[n_prompt:]  # the response and eos carry the loss
    batch = data.collate([sample])  # the loop's batch is shifted
    assert batch["input_ids"][0].tolist() == full[:-1] and batch["labels"][0].tolist() == labels[1:]

    unmasked = ready(JSON(path, val_split_fraction=0.2), tokenizer, max_seq_length=512).train_dataset[0]
    assert unmasked["labels"].tolist() == full
    short = ready(JSON(path, val_split_fraction=0.2), tokenizer, max_seq_length=10).train_dataset[0]
    assert short["input_ids"].numel() == 10

    batch = data.collate([data.train_dataset[0], data.train_dataset[1]])
    longest = max(data.train_dataset[i]["input_ids"].numel() for i in (0, 1)) - 1  # shifted
    assert batch["input_ids"].shape == batch["labels"].shape == (2, longest)


def test_json_folder_jsonl_and_conversations(tokenizer, tmp_path):
    rows = make_sft_rows(6)
    write_json(tmp_path / "d" / "train.jsonl", rows[:4], jsonl=True)
    write_json(tmp_path / "d" / "val.json", rows[4:])
    data = ready(JSON(tmp_path / "d"), tokenizer, max_seq_length=256)
    assert len(data.train_dataset) == 4 and len(data.val_dataset) == 2
    chats = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
             for i in range(5)]
    data = ready(JSON(write_json(tmp_path / "chat.json", chats), val_split_fraction=0.2, prompt_style="chatml",
                      mask_prompt=True), tokenizer, max_seq_length=256)
    prompt, response = data.val_dataset.prompt_and_response(0)
    assert prompt.startswith("<|im_start|>user\nhi ") and response.startswith("hello ")


@pytest.mark.parametrize(
    "content, match",
    [
        ('[{"instruction": "a", "output": "b"}, {"instruction": "c", "answer": "d"}]',
         r"row 1 has no 'output' \(it has: answer, instruction\)"),
        ('{"instruction": "a"}', "must hold a JSON list of objects"),
        ('[{"instruction": "a", "output": 3}, {"instruction": "a", "output": "b"}]', "row 0: 'output' must be a string"),
        ('[{"instruction": "a", "output": "b"},', "is not valid JSON"),
        ('["just text", "more"]', "row 0 is a str"),
    ],
)
def test_json_bad_rows_are_named(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        JSON(path).check()
    assert "\n" not in str(info.value)


def test_jsonl_bad_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not valid JSON"):
        JSON(path).check()


# ----------------------------------------------------------------------------------------------- packing
def test_packing_keeps_every_sample_token_with_its_label_and_position(tokenizer, tmp_path):
    path = write_json(tmp_path / "rows.json", make_sft_rows(30))
    data = ready(JSON(path, val_split_fraction=0.1, mask_prompt=True, prompt_style="default"), tokenizer,
                 max_seq_length=64)
    plain = ShiftedDataset(data.train_dataset)
    packed = PackedDataset(plain, max_seq_length=64, seed=0)
    assert len(packed) < len(plain) and packed.packing_efficiency() > 0.7

    def triples(sample, positions=None, segments=None):
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        pos = positions if positions is not None else list(range(len(ids)))
        return list(zip(ids, labels, pos))

    expected = sorted(t for i in range(len(plain)) for t in triples(plain[i]))
    got = []
    for i in range(len(packed)):
        item = packed[i]
        assert item["input_ids"].numel() <= 64
        segs = item["segment_ids"].tolist()
        assert segs == sorted(segs) and segs[0] == 0
        starts = [j for j in range(len(segs)) if j == 0 or segs[j] != segs[j - 1]]
        assert all(item["positions"][j].item() == 0 for j in starts)
        got += triples(item, item["positions"].tolist())
    assert sorted(got) == expected  # same tokens, same labels (same loss), positions restart per sample
    data.packing = True  # a packing module's collate takes packed (already shifted) items
    batch = data.collate([packed[0], packed[1]])
    assert set(batch) == {"input_ids", "labels", "positions", "segment_ids"}
    short = min(packed[0]["input_ids"].numel(), packed[1]["input_ids"].numel())
    if short < batch["input_ids"].size(1):
        row = 0 if packed[0]["input_ids"].numel() == short else 1
        assert batch["segment_ids"][row, -1].item() == -1 and batch["labels"][row, -1].item() == IGNORE_INDEX


@pytest.mark.parametrize("family", ["llama", "gpt2", "mistral_window"])
def test_a_packed_sequence_gives_each_sample_its_own_logits_and_loss(family):
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.train.loss import token_loss_sum

    fields = dict(name="tiny", n_layer=2, n_embd=32, n_head=4, vocab_size=64, padded_vocab_size=64, block_size=32)
    if family == "gpt2":  # learned positions: they must restart too
        fields.update(learned_pos_embedding=True, rotary_percentage=0.0, bias=True)
    else:
        fields.update(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48, bias=False,
                      parallel_residual=False, n_query_groups=2)
    if family == "mistral_window":
        fields.update(sliding_window_size=3, sliding_window_indices=[1, 0])
    torch.manual_seed(0)
    model = GPT(Config(**fields)).eval()
    lengths = (5, 7, 4)
    samples = [torch.randint(0, 64, (n,)) for n in lengths]
    labels = [torch.randint(0, 64, (n,)) for n in lengths]
    pad = 3
    ids = torch.cat([*samples, torch.zeros(pad, dtype=torch.long)])[None]
    positions = torch.cat([*(torch.arange(n) for n in lengths), torch.zeros(pad, dtype=torch.long)])[None]
    segments = torch.cat([*(torch.full((n,), i) for i, n in enumerate(lengths)), torch.full((pad,), -1)])[None]
    packed_labels = torch.cat([*labels, torch.full((pad,), IGNORE_INDEX)])[None]
    with torch.no_grad():
        packed = model(ids, positions=positions, segment_ids=segments)[0]
        alone = torch.cat([model(x[None])[0] for x in samples])
        assert torch.isfinite(packed).all()
        torch.testing.assert_close(packed[: sum(lengths)], alone, rtol=1e-5, atol=1e-5)
        loss_packed = token_loss_sum(packed[None], packed_labels, IGNORE_INDEX)
        loss_alone = sum(token_loss_sum(model(x[None]), y[None], IGNORE_INDEX) for x, y in zip(samples, labels))
    torch.testing.assert_close(loss_packed, loss_alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="without a KV cache"):
        model.set_kv_cache(1)
        model(ids, input_pos=torch.arange(ids.size(1)), segment_ids=segments)


def test_finetuning_with_packing_trains_on_packed_sequences(tmp_path):
    from litgpt.finetune.full import finetune_full
    from tests._train_helpers import fast_train, make_checkpoint, train_losses

    ckpt = make_checkpoint(tmp_path / "ckpt")
    data = JSON(write_json(tmp_path / "rows.json", make_sft_rows(24)), packing=True, val_split_fraction=0.2,
                num_workers=0)
    out = finetune_full(ckpt, data=data, out_dir=tmp_path / "out", accelerator="cpu", precision="32-true",
                        train=fast_train(max_steps=3, max_seq_length=48))
    assert isinstance(data.train_dataset, PackedDataset)
    assert len(train_losses(tmp_path / "out")) == 3
    assert (out / "lit_model.pth").is_file()


# ----------------------------------------------------------------------------------------------- downloads
def _fake_file(content: str):
    def fake(url_or_repo, target_or_file, *rest, **kwargs):
        target = Path(target_or_file) if isinstance(target_or_file, Path) else Path(rest[0]) / target_or_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        return target
    return fake


def test_alpaca_family_and_dolly_from_local_fixtures(tokenizer, tmp_path, monkeypatch):
    rows = make_sft_rows(40)
    monkeypatch.setattr("litgpt.data.alpaca.download_url", _fake_file(json.dumps(rows)))
    for cls in (Alpaca, AlpacaGPT4):
        data = ready(cls(download_dir=tmp_path / cls.__name__, val_split_fraction=0.1), tokenizer, max_seq_length=256)
        assert len(data.train_dataset) == 36 and len(data.val_dataset) == 4
        assert "### Instruction:" in data.example_prompt()

    def fake_snapshot(repo_id, target_dir, patterns, token=None, revision=None):
        write_json(Path(target_dir) / "data" / "train.jsonl", rows, jsonl=True)
        return target_dir

    monkeypatch.setattr("litgpt.data.alpaca.hf_dataset_files", fake_snapshot)
    data = ready(Alpaca2k(download_dir=tmp_path / "a2k"), tokenizer, max_seq_length=256)
    assert len(data.train_dataset) + len(data.val_dataset) == 40

    dolly = [{"instruction": r["instruction"], "context": r["input"], "response": r["output"], "category": "x"}
             for r in rows]
    monkeypatch.setattr("litgpt.data.dolly.hf_dataset_file",
                        _fake_file("\n".join(json.dumps(r) for r in dolly)))
    data = ready(Dolly(download_dir=tmp_path / "dolly"), tokenizer, max_seq_length=256)
    assert len(data.val_dataset) == 4
    assert set(data.train_dataset.data[0]) == {"instruction", "input", "output"}


def test_conversation_datasets_from_local_fixtures(tokenizer, tmp_path, monkeypatch):
    lima = [{"conversations": [f"question {i}", f"answer {i}", f"follow-up {i}", f"second answer {i}"]}
            for i in range(10)]
    monkeypatch.setattr("litgpt.data.lima.hf_dataset_file", _fake_file("\n".join(json.dumps(r) for r in lima)))
    single = ready(LIMA(download_dir=tmp_path / "lima", prompt_style="chatml"), tokenizer, max_seq_length=256)
    multi = ready(LIMA(download_dir=tmp_path / "lima", prompt_style="chatml", include_multiturn_conversations=True),
                  tokenizer, max_seq_length=256)
    assert len(single.train_dataset) == 9 and len(multi.train_dataset) == 18
    prompts = [multi.train_dataset.prompt_and_response(i) for i in range(len(multi.train_dataset))]
    second = next(p for p, r in prompts if r.startswith("second answer"))
    assert "question" in second and "follow-up" in second and "answer" in second

    def fake_deita(repo_id, target_dir, patterns, token=None, revision=None):
        for split, n in (("train_sft", 6), ("test_sft", 2)):
            convs = [{"prompt": "p", "messages": [{"role": "system", "content": ""},
                                                   {"role": "user", "content": f"u{i}"},
                                                   {"role": "assistant", "content": f"a{i}"},
                                                   {"role": "user", "content": "unanswered"}]} for i in range(n)]
            write_json(Path(target_dir) / "data" / f"{split}-00000.jsonl", convs, jsonl=True)
        return target_dir

    monkeypatch.setattr("litgpt.data.deita.hf_dataset_files", fake_deita)
    data = ready(Deita(download_dir=tmp_path / "deita", prompt_style="chatml"), tokenizer, max_seq_length=256)
    assert len(data.train_dataset) == 6 and len(data.val_dataset) == 2
    assert data.train_dataset.prompt_and_response(0)[1] == "a0"


def test_longform_and_flan_from_local_fixtures(tokenizer, tmp_path, monkeypatch):
    pairs = [{"input": f"Write about {i}", "output": f"Text {i}"} for i in range(5)]
    monkeypatch.setattr("litgpt.data.longform.download_url", _fake_file(json.dumps(pairs)))
    data = ready(LongForm(download_dir=tmp_path / "lf"), tokenizer, max_seq_length=128)
    assert len(data.train_dataset) == 5
    assert data.example_prompt() == PromptStyle.from_name("longform").apply("Write about 0")

    urls = []

    def fake_flan(url, target):
        urls.append(url)
        split = "test" if url.endswith("_test.jsonl") else "train"
        rows = [{"inputs": f"Q{i} {split}", "targets": f"A{i}"} for i in range(3)]
        return write_json(Path(target), rows, jsonl=True)

    monkeypatch.setattr("litgpt.data.flan.download_url", fake_flan)
    data = ready(FLAN(download_dir=tmp_path / "flan", subsets="aeslc_10templates"), tokenizer, max_seq_length=128)
    assert urls[:2] == [f"https://huggingface.co/datasets/Muennighoff/flan/resolve/main/{split}/aeslc_10templates_{split}"
                    ".jsonl" for split in ("train", "test")]
    flan_style = PromptStyle.from_name("flan")
    assert len(data.train_dataset) == 3
    assert data.val_dataset.prompt_and_response(0) == (flan_style.apply("Q0 test"), "A0")


def test_tinystories_and_openwebtext_from_local_fixtures(tokenizer, tmp_path, monkeypatch):
    stories = [f"Once upon a time there was a robot number {i}. It liked {training_text()[i * 40:i * 40 + 200]}"
               for i in range(40)]

    def fake_archive(repo_id, filename, target_dir, token=None):
        archive = Path(target_dir) / filename
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            for shard in range(3):
                data = json.dumps([{"story": s} for s in stories[shard::3]]).encode()
                info = tarfile.TarInfo(f"data{shard:02d}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return archive

    monkeypatch.setattr("litgpt.data.tinystories.hf_dataset_file", fake_archive)
    data = ready(TinyStories(data_path=tmp_path / "ts", num_workers=1), tokenizer)
    train, val = data.load_tokens()
    expected_val = [t for s in stories[0::3] for t in tokenizer.encode(s.strip(), eos=True).tolist()]
    assert val.tolist() == expected_val  # the first shard is the validation set
    assert len(data.train_dataset) > len(data.val_dataset) > 0

    def fake_owt(repo_id, target_dir, patterns, token=None, revision=None):
        write_json(Path(target_dir) / "plain_text" / "train" / "0000.jsonl",
                   [{"text": s} for s in stories], jsonl=True)
        return target_dir

    monkeypatch.setattr("litgpt.data.openwebtext.hf_dataset_files", fake_owt)
    data = ready(OpenWebText(data_path=tmp_path / "owt", num_workers=1, val_split_fraction=0.1), tokenizer)
    train, val = data.load_tokens()
    assert len(val) == int((len(train) + len(val)) * 0.1)


def test_downloads_fail_in_one_line_when_offline(tmp_path):
    with pytest.raises(ConnectionError, match="cannot download"):
        Alpaca(download_dir=tmp_path / "a", file_url="http://127.0.0.1:9/none.json").prepare_data()
