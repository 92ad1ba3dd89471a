"""Writes tiny checkpoints with the reference LitGPT 0.5.x (public API only) for tests/test_checkpoint_compat.py.

Run with the reference venv (`bash ../shared/bench/anchor.sh` builds it):
    $REF/bin/python tests/compat/make_reference_fixtures.py tests/fixtures/litgpt_ref
Each sub-folder holds `lit_model.pth` + `model_config.yaml` exactly as LitGPT writes them, plus
`io.pt` with an input and the reference model's logits for it.
"""

import sys
from pathlib import Path

import torch
from litgpt import GPT, Config
from litgpt.utils import save_config

TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=96, padded_vocab_size=96, block_size=64)
CASES = {
    "pythia": ("pythia-14m", dict(TINY)),
    "llama3": ("Llama-3.2-1B", dict(TINY, n_query_groups=2, intermediate_size=48)),
    "gemma2": ("Gemma-2-2b", dict(TINY, n_query_groups=2, head_size=8, intermediate_size=48, sliding_window_size=4)),
    "gemma3": ("Gemma-3-1b-it", dict(TINY, n_layer=6, n_query_groups=1, head_size=8, intermediate_size=48, sliding_window_size=4)),
    "olmo": ("OLMo-1B-hf", dict(TINY, intermediate_size=48)),
    "olmo2": ("OLMo-2-1124-7B", dict(TINY, n_query_groups=4, intermediate_size=48)),
    "mixtral": ("Mixtral-8x7B-v0.1", dict(TINY, n_query_groups=2, intermediate_size=48, n_expert=4, n_expert_per_token=2)),
    "qwen3moe": ("Qwen3-30B-A3B", dict(TINY, n_query_groups=2, head_size=8, intermediate_size=48, moe_intermediate_size=24, n_expert=4, n_expert_per_token=2)),
    "phi2": ("phi-2", dict(TINY, n_embd=40)),
    "falcon7b": ("falcon-7b", dict(TINY, n_query_groups=1)),
    "falcon40b": ("falcon-40b", dict(TINY, n_query_groups=2)),
    "qwen25": ("Qwen2.5-0.5B", dict(TINY, n_query_groups=2, intermediate_size=48)),
    "stablelm": ("stablelm-3b-4e1t", dict(TINY, intermediate_size=48)),
}

out = Path(sys.argv[1])
for case, (name, overrides) in CASES.items():
    torch.manual_seed(0)
    config = Config.from_name(name, **overrides)
    model = GPT(config)
    with torch.no_grad():  # make norms and biases non-trivial so a wrong layout shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    d = out / case
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / "lit_model.pth")
    save_config(config, d)
    idx = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        logits = model(idx)
    torch.save({"idx": idx, "logits": logits}, d / "io.pt")
    print(case, name, sum(p.numel() for p in model.parameters()))
