"""Run with the reference LitGPT venv: loads each checkpoint folder given on the command line with
LitGPT's public API (Config.from_file + GPT + strict load_state_dict) and checks its logits against the
folder's io.pt. Prints one line per folder; exits non-zero on any mismatch."""

import sys
from pathlib import Path

import torch
from litgpt import GPT, Config

failed = 0
for folder in map(Path, sys.argv[1:]):
    config = Config.from_file(folder / "model_config.yaml")
    model = GPT(config)
    model.load_state_dict(torch.load(folder / "lit_model.pth", weights_only=True), strict=True)
    model.eval()
    io = torch.load(folder / "io.pt", weights_only=True)
    with torch.no_grad():
        ok = torch.allclose(model(io["idx"]), io["logits"], rtol=1e-5, atol=1e-5)
    failed += not ok
    print(folder.name, "ok" if ok else "MISMATCH")
sys.exit(1 if failed else 0)
