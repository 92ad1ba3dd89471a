"""LitGPT's remaining verbs through the real CLI (subprocess): generate_full, generate_adapter(_v2),
generate_sequentially and generate_tp (2 CPU processes over gloo give the one-process greedy text),
convert_pretrained_checkpoint, validate and convert_from_litgpt's `model.pth`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import litgpt.__main__ as cli
from litgpt import LLM
from litgpt.config import Config
from litgpt.adapter import ADAPTER_FILE, AdapterSettings, inject_adapter, is_adapter_key, write_adapter_config
from litgpt.model import GPT
from litgpt.utils import load_state_dict
from tests._gen_helpers import make_checkpoint, tiny_config
from tests._tokenizers import make_hf_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The quick brown fox"


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "litgpt", *args], capture_output=True, env=env, timeout=timeout,
                            cwd=ROOT)
    # decoded without newline translation: generated text may hold a bare "\r"
    result.stdout, result.stderr = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    return result


def greedy(folder: Path, max_new_tokens: int = 10) -> str:
    llm = LLM.load(str(folder), distribute=None).distribute(accelerator="cpu", precision="32-true")
    return llm.generate(PROMPT, max_new_tokens=max_new_tokens, temperature=0)


GREEDY = ["--prompt", PROMPT, "--temperature", "0", "--max_new_tokens", "10", "--precision", "32-true"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("base"))


# ------------------------------------------------------------------------------------------------------------
# flags


@pytest.mark.parametrize("verb, flags", [
    ("generate_full", ["prompt", "input", "sys_prompt", "finetuned_path", "quantize", "max_new_tokens", "top_k",
                       "top_p", "temperature", "precision"]),
    ("generate_adapter", ["prompt", "input", "sys_prompt", "adapter_path", "quantize", "max_new_tokens", "top_k",
                          "top_p", "temperature", "precision"]),
    ("generate_adapter_v2", ["prompt", "input", "sys_prompt", "adapter_path", "quantize", "max_new_tokens", "top_k",
                             "top_p", "temperature", "precision"]),
    ("generate_sequentially", ["prompt", "sys_prompt", "num_samples", "max_new_tokens", "top_k", "top_p",
                               "temperature", "quantize", "precision", "compile"]),
    ("generate_tp", ["prompt", "sys_prompt", "num_samples", "max_new_tokens", "top_k", "top_p", "temperature",
                     "quantize", "precision", "compile"]),
    ("convert_pretrained_checkpoint", []),
    ("convert_from_litgpt", []),
])
def test_each_verb_takes_litgpt_flags_and_defaults(verb, flags):
    parser, _ = cli.build_parser(verb)
    defaults = parser.get_defaults()
    for flag in flags:
        assert flag in defaults, f"{verb} lacks --{flag}"
    if "max_new_tokens" in flags:  # LitGPT's defaults
        assert defaults["max_new_tokens"] == (100 if verb.startswith("generate_adapter") or verb == "generate_full" else 50)
        assert defaults["top_k"] == 50 and defaults["temperature"] == 0.8


# ------------------------------------------------------------------------------------------------------------
# generate_full, generate_adapter, generate_adapter_v2


def test_generate_full_reads_litgpt_style_finetuned_weights(base, tmp_path):
    finetuned = make_checkpoint(tmp_path / "final", seed=1)
    litgpt_file = tmp_path / "alpaca" / "lit_model_finetuned.pth"  # LitGPT's name, in a folder without config
    litgpt_file.parent.mkdir()
    shutil.copy(finetuned / "lit_model.pth", litgpt_file)
    result = run("generate_full", str(base), "--finetuned_path", str(litgpt_file), *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy(finetuned) + "\n"
    assert result.stdout != greedy(base) + "\n"
    assert "Time for inference" in result.stderr
    # a finetuning output folder works too; a missing file is a one-line error
    assert run("generate_full", str(base), "--finetuned_path", str(finetuned), *GREEDY).stdout == result.stdout
    missing = run("generate_full", str(base), "--finetuned_path", str(tmp_path / "nope.pth"))
    assert missing.returncode == 1 and "nope.pth does not exist" in missing.stderr


def test_input_reaches_the_alpaca_prompt():
    from litgpt.generate.full import with_input
    from litgpt.prompts import PromptStyle

    style = with_input(PromptStyle.from_name("alpaca"), "some context")
    assert "### Input:\nsome context" in style.apply("Summarize")
    assert with_input(PromptStyle.from_name("alpaca"), "") == PromptStyle.from_name("alpaca")


def _adapter_run(base: Path, out: Path, version: str) -> Path:
    """A finished adapter run folder as finetune_adapter writes it, with non-trivial trained tensors."""
    model = GPT(tiny_config())
    model.load_state_dict(load_state_dict(base / "lit_model.pth"))
    settings = AdapterSettings(version, prompt_length=3, start_layer=1)
    inject_adapter(model, settings)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter_key(name):
                p.add_(torch.randn_like(p) * 0.5)
    out.mkdir(parents=True)
    state = model.state_dict()
    torch.save(state, out / "lit_model.pth")
    torch.save({k: v for k, v in state.items() if is_adapter_key(k)}, out / ADAPTER_FILE)
    model.config.save(out)
    make_hf_tokenizer(out)
    write_adapter_config(out, settings, base)
    return out


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_generate_adapter_equals_the_run_folder(base, tmp_path, version):
    run_dir = _adapter_run(base, tmp_path / "run", version)
    verb = "generate_adapter" if version == "v1" else "generate_adapter_v2"
    result = run(verb, str(base), "--adapter_path", str(run_dir / ADAPTER_FILE), *GREEDY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy(run_dir) + "\n"
    assert result.stdout != greedy(base) + "\n"


def _word_tokenizer(folder: Path, size: int) -> None:
    """A word-level tokenizer of `size` tokens (the LitGPT fixtures have tiny vocabularies)."""
    import json

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, size)}}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))


@pytest.mark.parametrize("case, file", [("adapter_llama", "lit_model.pth.adapter"),
                                        ("adapter_v2_llama", "lit_model.pth.adapter_v2")])
def test_litgpt_adapter_files_load_with_their_settings_inferred(tmp_path, case, file):
    from litgpt.generate.adapter import load_with_adapter

    fixture = ROOT / "tests" / "fixtures" / "litgpt_peft" / case
    base = tmp_path / "base"
    base.mkdir()
    for name in ("lit_model.pth", "model_config.yaml"):
        shutil.copy(fixture / name, base / name)
    _word_tokenizer(base, Config.from_file(fixture / "model_config.yaml").padded_vocab_size)
    llm = load_with_adapter(base, fixture / file, "v1")  # v2 is recognised from the tensors
    # the same model built by hand from LitGPT's full state dict (prefix of 3 vectors from layer 1 on)
    from litgpt.lora import from_litgpt_state_dict

    expected = GPT(Config.from_file(fixture / "model_config.yaml"))
    inject_adapter(expected, AdapterSettings("v2" if "v2" in case else "v1", prompt_length=3, start_layer=1))
    expected.load_state_dict(from_litgpt_state_dict(torch.load(fixture / "full_state.pth")))
    idx = torch.load(fixture / "io.pt")["idx"]
    with torch.inference_mode():
        torch.testing.assert_close(llm.model.float()(idx), expected(idx))


def test_quantize_refuses_adapter_v2_linears(base, tmp_path):
    run_dir = _adapter_run(base, tmp_path / "run", "v2")
    result = run("generate_adapter_v2", str(base), "--adapter_path", str(run_dir), "--quantize", "int8")
    assert result.returncode == 1 and "cannot quantize the finetuned linear layers" in result.stderr


# ------------------------------------------------------------------------------------------------------------
# generate_tp and generate_sequentially: 2 CPU processes


def test_generate_tp_on_two_processes_gives_the_one_process_text(tmp_path):
    config = tiny_config(bias=True, n_head=4, n_query_groups=2)  # biases: row-parallel ones must count once
    folder = make_checkpoint(tmp_path / "ckpt", config)
    result = run("generate_tp", str(folder), *GREEDY, "--accelerator", "cpu", "--devices", "2")
    assert result.returncode == 0, result.stderr
    assert "GLOBAL_RANK: 1" in result.stderr and "(2 processes on cpu)" in result.stderr
    assert result.stdout == greedy(folder) + "\n"
    assert result.stderr.count("Time for inference") == 1  # the first process prints


def test_generate_tp_names_an_impossible_split_before_launching(base):
    result = run("generate_tp", str(base), "--accelerator", "cpu", "--devices", "3")
    assert result.returncode == 1
    assert "n_head=4 is not divisible by 3 processes" in result.stderr and "GLOBAL_RANK" not in result.stderr


def test_generate_sequentially_on_two_processes_gives_the_one_process_text(tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt", tiny_config(n_layer=3))  # 3 layers: split 2 + 1
    result = run("generate_sequentially", str(folder), *GREEDY, "--accelerator", "cpu", "--devices", "2")
    assert result.returncode == 0, result.stderr
    assert "GLOBAL_RANK: 1" in result.stderr
    assert result.stdout == greedy(folder) + "\n"


def test_layer_split_helpers():
    from litgpt.generate.sequentially import chunk_sizes, layer_to_device
    from litgpt.model import Block

    assert chunk_sizes(5, 2) == [3, 2] and chunk_sizes(4, 4) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="cannot split 2 layers over 3"):
        chunk_sizes(2, 3)
    with torch.device("meta"):
        model = GPT(tiny_config(n_layer=3))
    assert list(layer_to_device(model, Block, [2, 1]).items()) == [
        ("transformer.h.0", 0), ("transformer.h.1", 0), ("transformer.h.2", 1)]


# ------------------------------------------------------------------------------------------------------------
# convert_pretrained_checkpoint, validate, convert_from_litgpt --model_pth


def test_convert_pretrained_checkpoint_keeps_the_model_only(base, tmp_path):
    pretrain = tmp_path / "pretrain" / "final"  # LitGPT's pretrain layout: the training state inside lit_model.pth
    pretrain.mkdir(parents=True)
    state = load_state_dict(base / "lit_model.pth")
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "optimizer": {"state": {}},
                "iter_num": 7, "step_count": 3}, pretrain / "lit_model.pth")
    for name in ("model_config.yaml", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, pretrain / name)
    (pretrain / "hyperparameters.yaml").write_text("max_tokens: 100\n")
    out = tmp_path / "converted"
    result = run("convert_pretrained_checkpoint", str(pretrain), str(out))
    assert result.returncode == 0, result.stderr
    saved = torch.load(out / "lit_model.pth")
    assert sorted(saved) == sorted(state) and all(torch.equal(saved[k], state[k]) for k in state)
    assert {p.name for p in out.iterdir()} >= {"lit_model.pth", "model_config.yaml", "tokenizer.json"}
    assert not (out / "hyperparameters.yaml").exists()
    assert greedy(out) == greedy(base)
    missing = run("convert_pretrained_checkpoint", str(tmp_path / "nope"), str(out))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_validate_passes_a_good_folder_and_lists_every_problem(base, tmp_path):
    good = run("validate", str(base))
    assert good.returncode == 0, good.stderr
    assert "PROBLEM" not in good.stdout and "memory:" in good.stdout and "is ready to use" in good.stdout
    bad = tmp_path / "bad"
    shutil.copytree(base, bad)
    (bad / "tokenizer.json").unlink()
    state = torch.load(bad / "lit_model.pth")  # not memory-mapped: the file is overwritten below
    state["transformer.wte.weight"] = state["transformer.wte.weight"][:100]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, bad / "lit_model.pth")
    result = run("validate", str(bad))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 3, result.stdout
    assert "no tokenizer" in problems[0] and "extra.weight" in problems[1] and "(100, 32)" in problems[2]
    assert "failed 3 check(s)" in result.stderr


def test_convert_from_litgpt_writes_litgpt_model_pth_too(base, tmp_path):
    from safetensors.torch import load_file

    result = run("convert_from_litgpt", str(base), str(tmp_path / "hf"))  # LitGPT's command, LitGPT's file
    assert result.returncode == 0, result.stderr
    pth = torch.load(tmp_path / "hf" / "model.pth")
    st = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(pth) == sorted(st) and all(torch.equal(pth[k], st[k]) for k in st)
    # LitGPT's follow-up: a transformers model of the config.json, given the state dict of model.pth
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tmp_path / "hf"))).eval()
    missing, unexpected = model.load_state_dict(pth, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # a tied head is not in the file
    ids = torch.tensor([[1, 5, 9, 30]])
    ours = LLM.load(str(base), distribute=None).model
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)
    # --model_pth false leaves it out, and removes the one an earlier export wrote
    assert run("convert_from_litgpt", str(base), str(tmp_path / "hf"), "--model_pth", "false").returncode == 0
    assert not (tmp_path / "hf" / "model.pth").exists()


def test_validate_takes_litgpts_flags(base):
    result = run("validate", str(base), "--model_filename", "lit_model.pth", "--dtype", "bfloat16", "--training", "true")
    assert result.returncode == 0, result.stderr
    assert "bfloat16 + gradients and AdamW state" in result.stdout
    missing = run("validate", str(base), "--model_filename", "nope.pth")
    assert missing.returncode == 1 and "nope.pth is missing" in missing.stdout
