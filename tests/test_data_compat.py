"""LitGPT 0.5.13 names of `litgpt.data`, `litgpt.prompts`, `litgpt.tokenizer` and `litgpt.args`, called with
LitGPT's signatures (the expected signatures were observed on LitGPT 0.5.13 with `inspect.signature`)."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from pathlib import Path

import pytest
import torch

import litgpt.data as data
from litgpt.args import EvalArgs, LogArgs, TrainArgs
from litgpt.data import (
    JSON, SFTDataset, Alpaca, Alpaca2k, AlpacaGPT4, Deita, FLAN, LIMA, LitData, LongForm, MicroLlama, OpenWebText,
    TextFiles, TinyLlama, TinyStories, get_sft_collate_fn,
)
from litgpt.prompts import (
    PromptStyle, has_prompt_style, load_prompt_style, model_name_to_prompt_style, prompt_styles, save_prompt_style,
)
from litgpt.tokenizer import Tokenizer
from tests._tokenizers import make_hf_tokenizer
from tests._train_helpers import make_sft_rows, write_json

# class -> LitGPT 0.5.13's constructor parameters (name, default), in order; ours may add keyword-only ones
SIGNATURES = {
    Alpaca: [("mask_prompt", False), ("val_split_fraction", 0.03865), ("prompt_style", "alpaca"),
             ("ignore_index", -100), ("seed", 42), ("num_workers", 4), ("download_dir", Path("data/alpaca")),
             ("file_url", "https://raw.githubusercontent.com/tloen/alpaca-lora/main/alpaca_data_cleaned_archive.json"),
             ("file_name", "alpaca_data_cleaned_archive.json")],
    AlpacaGPT4: [("mask_prompt", False), ("val_split_fraction", 0.03847), ("prompt_style", "alpaca"),
                 ("ignore_index", -100), ("seed", 42), ("num_workers", 4), ("download_dir", Path("data/alpacagpt4")),
                 ("file_url", "https://raw.githubusercontent.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM/main/data/"
                              "alpaca_gpt4_data.json"),
                 ("file_name", "alpacagpt4_data_cleaned_archive.json")],
    Alpaca2k: [("mask_prompt", False), ("val_split_fraction", 0.05), ("prompt_style", "alpaca"),
               ("ignore_index", -100), ("seed", 42), ("num_workers", 4), ("download_dir", Path("data/alpaca2k")),
               ("file_url", "https://raw.githubusercontent.com/tloen/alpaca-lora/main/alpaca_data_cleaned_archive.json"),
               ("file_name", "alpaca2k_data_cleaned_archive.json"), ("repo_id", "mhenrichsen/alpaca_2k_test")],
    Deita: [("mask_prompt", False), ("prompt_style", "alpaca"), ("ignore_index", -100), ("seed", 42),
            ("num_workers", 4), ("include_multiturn_conversations", False), ("download_dir", Path("data/deita")),
            ("repo_id", "HuggingFaceH4/deita-10k-v0-sft")],
    FLAN: [("mask_prompt", False), ("prompt_style", "flan"), ("ignore_index", -100), ("seed", 42),
           ("num_workers", 4), ("download_dir", Path("data/flan")),
           ("url", "https://huggingface.co/datasets/Muennighoff/flan/resolve/main"), ("subsets", None)],
    JSON: [("json_path", inspect.Parameter.empty), ("mask_prompt", False), ("val_split_fraction", None),
           ("prompt_style", "alpaca"), ("ignore_index", -100), ("seed", 42), ("num_workers", 4)],
    LIMA: [("mask_prompt", False), ("val_split_fraction", 0.1), ("prompt_style", "alpaca"), ("ignore_index", -100),
           ("seed", 42), ("num_workers", 4), ("include_multiturn_conversations", False), ("repo_id", "GAIR/lima"),
           ("access_token", None)],
    LongForm: [("mask_prompt", False), ("prompt_style", "longform"), ("ignore_index", -100), ("seed", 42),
               ("num_workers", 4), ("download_dir", Path("data/longform"))],
    LitData: [("data_path", Path("data")), ("split_names", None), ("seed", 42), ("num_workers", 8)],
    TinyLlama: [("data_path", Path("data")), ("seed", 42), ("num_workers", 8), ("use_starcoder", True)],
    MicroLlama: [("data_path", Path("data")), ("seed", 42), ("num_workers", 8)],
    OpenWebText: [("data_path", Path("data/openwebtext")), ("val_split_fraction", 0.0005), ("seed", 42),
                  ("num_workers", 8)],
    TextFiles: [("train_data_path", inspect.Parameter.empty), ("val_data_path", None), ("seed", 42),
                ("num_workers", 4)],
    TinyStories: [("data_path", Path("data/tinystories")), ("seed", 42), ("num_workers", 8)],
}


@pytest.mark.parametrize("cls", list(SIGNATURES), ids=lambda c: c.__name__)
def test_data_module_signature_is_litgpts(cls):
    params = list(inspect.signature(cls).parameters.values())
    expected = SIGNATURES[cls]
    assert [(p.name, p.default) for p in params[: len(expected)]] == expected
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(expected):])  # our additions


def test_every_litgpt_data_name_is_importable():
    names = {"Alpaca", "Alpaca2k", "AlpacaGPT4", "DataModule", "Deita", "FLAN", "JSON", "LIMA", "LitData", "LongForm",
             "MicroLlama", "OpenWebText", "SFTDataset", "TextFiles", "TinyLlama", "TinyStories", "get_sft_collate_fn"}
    assert names <= set(dir(data))
    from litgpt.data.alpaca_2k import Alpaca2k as A2
    from litgpt.data.alpaca_gpt4 import AlpacaGPT4 as AG
    from litgpt.data.prepare_slimpajama import SlimPajamaDataRecipe, prepare as prepare_slimpajama
    from litgpt.data.prepare_starcoder import StarcoderDataRecipe, prepare as prepare_starcoder
    from litgpt.data.text_files import TextFiles as TF

    assert (A2, AG, TF) == (Alpaca2k, AlpacaGPT4, TextFiles)
    assert inspect.signature(prepare_slimpajama).parameters["chunk_size"].default == 2049 * 16384
    assert inspect.signature(prepare_starcoder).parameters["chunk_size"].default == 2049 * 8192
    assert {"prepare_structure", "prepare_item"} <= set(dir(SlimPajamaDataRecipe)) & set(dir(StarcoderDataRecipe))


@pytest.fixture
def tokenizer(tmp_path):
    return Tokenizer(make_hf_tokenizer(tmp_path / "tok"))


def test_modules_hold_a_prompt_style_object_and_positional_json_path(tmp_path):
    assert isinstance(Alpaca().prompt_style, prompt_styles["alpaca"])
    assert isinstance(FLAN().prompt_style, prompt_styles["flan"])
    assert isinstance(LongForm().prompt_style, prompt_styles["longform"])
    module = JSON(tmp_path / "x.json", True, 0.2, "llama3")
    assert module.mask_prompt and module.val_split_fraction == 0.2 and isinstance(module.prompt_style, PromptStyle)
    with pytest.raises(ValueError, match="unknown prompt style"):
        JSON(tmp_path / "x.json", prompt_style="nope")


def test_missing_json_path_is_a_file_not_found_error(tmp_path, tokenizer):
    module = JSON(tmp_path / "missing.json")
    module.connect(tokenizer)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        module.setup()


def test_sft_dataset_and_collate_fn_follow_litgpts_layout(tokenizer, tmp_path):
    rows = make_sft_rows(3)
    dataset = SFTDataset(rows, tokenizer, "alpaca", max_seq_length=-1, mask_prompt=True, ignore_index=-1)
    item = dataset[0]
    assert item["input_ids"].shape == item["labels"].shape  # aligned, not shifted
    assert item["input_ids"][-1].item() == tokenizer.eos_id and item["labels"][-1].item() == tokenizer.eos_id
    assert item["labels"][0].item() == -1
    assert item["token_counts"]["raw_plus_prompt_template"] == item["input_ids"].numel()
    collate = get_sft_collate_fn(max_seq_length=8, pad_id=0, ignore_index=-1)
    batch = collate([item, {"input_ids": torch.tensor([5, 6]), "labels": torch.tensor([5, 6]),
                            "token_counts": {"raw": 2, "raw_plus_prompt_template": 2}}])
    assert batch["input_ids"].tolist()[1] == [5, 6, 0, 0, 0, 0, 0, 0]
    assert batch["labels"].tolist()[1] == [5, 6, -1, -1, -1, -1, -1, -1]
    assert batch["token_counts"]["raw"].shape == (2, 1)

    module = JSON(write_json(tmp_path / "rows.json", make_sft_rows(20)), val_split_fraction=0.2, num_workers=0)
    module.connect(tokenizer, batch_size=2, max_seq_length=64)
    module.setup()
    assert module.test_dataset is module.val_dataset
    first = next(iter(module.val_dataloader()))
    assert first["input_ids"].shape == first["labels"].shape and first["input_ids"].size(1) <= 64


def _fake_litdata(monkeypatch, calls):
    fake = types.ModuleType("litdata")

    class StreamingDataset(torch.utils.data.Dataset):
        def __init__(self, input_dir, item_loader=None, shuffle=False, seed=42, drop_last=None):
            calls.append(input_dir)
            self.block = item_loader.block_size

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.arange(i, i + self.block)

    fake.StreamingDataset = StreamingDataset
    fake.TokensLoader = lambda block_size=None: types.SimpleNamespace(block_size=block_size)
    fake.StreamingDataLoader = lambda dataset, **kw: torch.utils.data.DataLoader(dataset, batch_size=kw["batch_size"])
    monkeypatch.setitem(sys.modules, "litdata", fake)


def test_tinyllama_litdata_and_microllama_read_their_folders(tmp_path, monkeypatch):
    calls = []
    _fake_litdata(monkeypatch, calls)
    for sub in ("slimpajama/train", "slimpajama/val", "starcoder", "tr", "va"):
        (tmp_path / sub).mkdir(parents=True)
    tiny = TinyLlama(data_path=tmp_path)
    tiny.connect(None, batch_size=2, max_seq_length=16)
    assert tiny.seq_length == 17
    tiny.setup()
    assert calls == [f"{tmp_path}/slimpajama/train", f"{tmp_path}/starcoder", f"{tmp_path}/slimpajama/val"]
    assert len(tiny.train_dataset) == 8
    batch = tiny.collate([tiny.train_dataset[0], tiny.train_dataset[1]])
    assert batch["input_ids"].shape == (2, 16) and torch.equal(batch["labels"][0], torch.arange(1, 17))
    assert next(iter(tiny.val_dataloader())).shape == (2, 17)  # LitGPT's loader yields raw token windows

    calls.clear()
    micro = MicroLlama(data_path=tmp_path)
    micro.connect(None, 1, 8)
    micro.setup()
    assert calls == [f"{tmp_path}/slimpajama/train", f"{tmp_path}/slimpajama/val"] and not micro.use_starcoder

    calls.clear()
    lit = LitData(data_path=tmp_path, split_names=("tr", "va"))
    lit.connect(None, 1, 8)
    lit.setup()
    assert calls == [f"{tmp_path}/tr", f"{tmp_path}/va"]
    with pytest.raises(FileNotFoundError, match="slimpajama/train"):
        TinyLlama(data_path=tmp_path / "nowhere").setup()


def test_litdata_missing_is_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litdata", None)
    (tmp_path / "d").mkdir()
    module = LitData(data_path=tmp_path / "d")
    module.connect(None, 1, 8)
    with pytest.raises(ImportError, match=r"litgpt\[litdata\]"):
        module.setup()


# ------------------------------------------------------------------------------------------------ prompts
def test_prompt_registry_and_model_lookup():
    litgpt_names = {"alpaca", "flan", "longform", "stablelm-alpha", "stablelm-zephyr", "falcon",
                    "llama2-function-calling", "llama2", "freewilly2", "platypus", "stablecode", "codellama", "phi-1",
                    "phi-2", "phi-3", "phi-4", "phi-4-reasoning", "phi-4-mini", "phi-4-mini-reasoning", "tinyllama",
                    "gemma", "llama3", "olmo", "qwen2.5", "qwen2.5-math", "qwq", "qwen3", "smollm2", "salamandra"}
    assert litgpt_names <= set(prompt_styles)
    expected = {"pythia-14m": "Default", "Llama-3.2-1B-Instruct": "Llama3", "phi-1_5": "Phi1",
                "Phi-4-mini-reasoning": "Phi4MiniReasoning", "Phi-4-mini-instruct": "Phi4Mini",
                "Phi-4-reasoning": "Phi4Reasoning", "phi-4": "Phi4", "FreeWilly2": "FreeWilly2",
                "Platypus2-7B": "Platypus", "R1-Distill-Llama-8B": "R1Base",
                "Llama-2-7b-chat-hf-function-calling-v2": "Llama2FunctionCalling"}
    assert {name: type(model_name_to_prompt_style(name)).__name__ for name in expected} == expected


def test_litgpt_prompt_texts():
    assert prompt_styles["phi-3"]().apply("Hi") == (
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n")
    assert prompt_styles["phi-1"]().apply("Hi") == "Hi\n\nAnswer:"
    assert prompt_styles["platypus"]().apply("Hi") == "### Instruction:\n\nHi\n\n### Response:\n"
    assert prompt_styles["phi-4-mini"]().apply("Hi", sys_prompt="S") == "<|system|>S<|end|><|user|>Hi<|end|><|assistant|>"
    assert prompt_styles["freewilly2"]().apply("Hi").startswith("### System:\nThis is a system prompt")
    assert prompt_styles["flan"]().apply("Hi", input="ignored") == prompt_styles["alpaca"]().apply("Hi")
    chatml = prompt_styles["qwen2.5"].__mro__[1]("You are X.")
    assert chatml.apply("Hi").startswith("<|im_start|>system\nYou are X.<|im_end|>\n")


def test_apply_takes_a_list_of_messages(tmp_path):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    llama3 = prompt_styles["llama3"]()
    assert llama3.apply(messages) == llama3.apply_conversation(messages)
    assert llama3.apply(messages).endswith("U2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "A1" in prompt_styles["alpaca"]().apply(messages)
    r1 = model_name_to_prompt_style("R1-Distill-Llama-8B").apply(messages[1:])
    assert r1 == "<｜User｜>U1<｜Assistant｜>A1<｜end▁of▁sentence｜><｜User｜>U2<｜Assistant｜>"
    with pytest.raises(ValueError, match="role"):
        llama3.apply([{"role": "robot", "content": "x"}])
    save_prompt_style(chatml := prompt_styles["llama2"](), tmp_path)
    assert has_prompt_style(tmp_path) and load_prompt_style(tmp_path) == chatml


# ------------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_litgpt_members(tokenizer, tmp_path):
    import tokenizers

    assert isinstance(tokenizer.processor, tokenizers.Tokenizer)
    assert tokenizer.backend == "huggingface" and tokenizer.model_name == "tok"
    ids = tokenizer.encode("hi there", device=torch.device("cpu"), bos=True, eos=True, max_length=-1)
    assert ids[0].item() == tokenizer.bos_id and ids[-1].item() == tokenizer.eos_id
    assert tokenizer.encode("hi there", None, True, False, 2).numel() == 2
    assert tokenizer.decode(tokenizer.encode("hi there", bos=False)) == "hi there"
    stream = tokenizer.decode_stream(token_stream=iter(tokenizer.encode("hi there", bos=False)), device=None)
    assert "".join(stream) == "hi there"
    assert tokenizer.token_to_id("</s>") == tokenizer.eos_id
    assert tokenizer.check_if_bos_token_used(tokenizer.checkpoint_dir) is tokenizer.use_bos
    with pytest.raises(ValueError):
        tokenizer.token_to_id("not-a-token-zzz")
    with pytest.raises(NotADirectoryError):
        Tokenizer(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ args
def test_args_names_and_litgpt_methods():
    assert [f.name for f in dataclasses.fields(LogArgs)][:3] == ["project", "run", "group"]
    assert EvalArgs().interval == 600
    train = TrainArgs(global_batch_size=64, micro_batch_size=4, lr_warmup_steps=10)
    assert (train.gradient_accumulation_iters(2, 1), train.batch_size(2, 1)) == (8, 32)
    assert train.warmup_iters(2, 1, 1000, list(range(100))) == 80
    frac = TrainArgs(global_batch_size=64, micro_batch_size=4, lr_warmup_steps=None, lr_warmup_fraction=0.1)
    assert frac.warmup_iters(2, 1, 1000, list(range(100))) == 10
