"""`litgpt serve` decodes with the engine of `litgpt generate`: the same greedy text in bfloat16 from a real
server on loopback, the `litgpt generate` CLI and `LLM.generate` (on AVX512-BF16 CPUs all three take the
native CPU decode step; elsewhere the PyTorch modules)."""

import subprocess
import sys

import requests

from litgpt.api import LLM
from litgpt.deploy.serve import BackgroundServer
from tests._gen_helpers import make_checkpoint, tiny_config

PROMPTS = ["Once upon a time", "What do llamas eat?"]


def test_serve_generate_and_llm_give_the_same_greedy_text_in_bf16(tmp_path):
    # a sliding window on one layer: the configuration whose bf16 text differed before serve used the native step
    config = tiny_config(block_size=128, sliding_window_size=6, sliding_window_indices=[1, 0])
    ckpt = make_checkpoint(tmp_path / "ckpt", config)
    flags = dict(precision="bf16-true", accelerator="cpu")
    llm = LLM.load(str(ckpt), distribute=None)
    llm.distribute(**flags)
    by_llm = [llm.generate(p, max_new_tokens=24, temperature=0) for p in PROMPTS]
    by_cli = []
    for prompt in PROMPTS:
        out = subprocess.run(
            [sys.executable, "-m", "litgpt", "generate", str(ckpt), "--prompt", prompt, "--max_new_tokens", "24",
             "--temperature", "0", "--precision", "bf16-true"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        by_cli.append(out.stdout)
    with BackgroundServer(ckpt, log_path=tmp_path / "server.log", **flags) as server:
        by_serve = []
        for prompt in PROMPTS:
            r = requests.post(f"{server.url}/predict", timeout=60, json={
                "prompt": prompt, "max_new_tokens": 24, "temperature": 0, "stream": False})
            assert r.status_code == 200, r.text
            by_serve.append(r.json()["output"])
    assert by_serve == by_llm
    for text, printed in zip(by_llm, by_cli):
        assert text in printed  # the CLI prints the text (and a summary on stderr)
    assert len(set(by_llm)) > 1
