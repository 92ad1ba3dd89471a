"""bitsandbytes on a CUDA GPU: every mode loads a checkpoint through `LLM`, runs the bitsandbytes layers,
stays close to the bf16 model and generates; and a QLoRA (nf4) run of `litgpt finetune_lora` trains.

Marked `cuda`: skipped without a GPU (tests/test_quantize.py covers what bitsandbytes runs on the CPU).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from litgpt import LLM
from tests._gen_helpers import make_checkpoint, tiny_config
from tests._train_helpers import make_checkpoint as make_train_checkpoint
from tests._train_helpers import make_sft_rows, train_losses, write_json
from tests._train_helpers import tiny_config as train_config

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
MIN_COSINE = {"bnb.nf4": 0.9, "bnb.nf4-dq": 0.9, "bnb.fp4": 0.85, "bnb.int8": 0.99}  # CPU: 0.97, 0.98, 0.96, 0.9998


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # 128 wide: whole 64-element blocks for the 4-bit kernels
    config = tiny_config(n_embd=128, intermediate_size=256, block_size=128)
    return make_checkpoint(tmp_path_factory.mktemp("bnb") / "tiny", config, seed=3)


@pytest.fixture(scope="module")
def reference(checkpoint):
    return LLM.load(str(checkpoint), distribute=None).distribute(accelerator="cuda", precision="bf16-true")


@pytest.mark.parametrize("mode", list(MIN_COSINE))
def test_mode_loads_runs_its_layers_stays_close_and_generates(checkpoint, reference, mode):
    import bitsandbytes as bnb

    llm = LLM.load(str(checkpoint), distribute=None).distribute(accelerator="cuda", precision="bf16-true",
                                                                quantize=mode)
    layer = bnb.nn.Linear8bitLt if mode == "bnb.int8" else bnb.nn.Linear4bit
    quantized = [m for m in llm.model.modules() if isinstance(m, layer)]
    assert quantized and all(m.weight.device.type == "cuda" for m in quantized)
    idx = torch.randint(0, 256, (2, 24), device="cuda")
    with torch.no_grad():
        want, got = reference.model(idx).float(), llm.model(idx).float()
    assert torch.isfinite(got).all()
    assert F.cosine_similarity(got.flatten(), want.flatten(), dim=0) > MIN_COSINE[mode]
    ids = llm.generate("Llamas eat", max_new_tokens=8, temperature=0.0, return_as_token_ids=True)
    assert 1 <= ids.numel() <= 8
    assert isinstance(llm.generate("Llamas eat", max_new_tokens=4, temperature=0.0), str)


def test_qlora_nf4_step_trains_on_the_gpu(tmp_path):
    ckpt = make_train_checkpoint(tmp_path / "ckpt", train_config(n_embd=128, block_size=128))
    data = write_json(tmp_path / "sft.json", make_sft_rows(16))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "litgpt", "finetune_lora", str(ckpt), "--quantize", "bnb.nf4", "--precision",
           "bf16-true", "--accelerator", "cuda", "--devices", "1", "--data", "JSON", "--data.json_path", str(data),
           "--data.val_split_fraction", "0.25", "--data.num_workers", "0", "--train.max_steps", "2",
           "--train.global_batch_size", "2", "--train.micro_batch_size", "2", "--train.max_seq_length", "64",
           "--train.lr_warmup_steps", "1", "--train.save_interval", "100", "--eval.interval", "100",
           "--eval.final_validation", "false", "--eval.max_new_tokens", "0", "--out_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = train_losses(out)
    assert sorted(losses) == [1, 2] and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (out / "final" / "lit_model.pth").is_file()
