"""Checkpoints written by LitGPT 0.5.x load into our GPT unchanged and give the same logits.

The fixtures in tests/fixtures/litgpt_ref were written by the reference package itself
(tests/compat/make_reference_fixtures.py): its `lit_model.pth`, its `model_config.yaml` (which lacks our
extra explicit fields, recovered from the registry by name) and its logits for a fixed input.
The other direction (our files into LitGPT) is checked by tests/compat/check_reference_loads_ours.py.
"""

from pathlib import Path

import pytest
import torch

from litgpt import GPT, Config
from litgpt.checkpoint import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "litgpt_ref"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_reference_checkpoint_loads_with_same_logits(case):
    d = FIXTURES / case
    config = Config.from_checkpoint(d)
    model = GPT(config)
    load_checkpoint(model, d / "lit_model.pth")  # strict: same names and shapes
    model.eval()
    io = torch.load(d / "io.pt", weights_only=True)
    with torch.no_grad():
        logits = model(io["idx"])
    torch.testing.assert_close(logits, io["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["pythia", "gemma2"])
def test_our_config_file_keeps_litgpt_fields_only(case, tmp_path):
    """The yaml we write for a LitGPT-known architecture has no field LitGPT would reject."""
    import yaml

    config = Config.from_checkpoint(FIXTURES / case)
    config.save(tmp_path)
    ours = yaml.safe_load((tmp_path / "model_config.yaml").read_text())
    theirs = yaml.safe_load((FIXTURES / case / "model_config.yaml").read_text())
    assert set(ours) == set(theirs)
    assert Config.from_file(tmp_path / "model_config.yaml") == config


def _write_ours(case: str, out: Path) -> None:
    """Loads a LitGPT-written fixture into our GPT and saves it back the way our verbs save checkpoints."""
    src = FIXTURES / case
    config = Config.from_checkpoint(src)
    model = GPT(config)
    load_checkpoint(model, src / "lit_model.pth")
    out.mkdir(parents=True)
    torch.save(model.state_dict(), out / "lit_model.pth")
    model.config.save(out)


@pytest.mark.parametrize("case", CASES)
def test_our_checkpoints_have_litgpts_layout(case, tmp_path):
    """What LitGPT's `GPT(Config.from_file(p)).load_state_dict(torch.load(...), strict=True)` needs from our files:
    every yaml key is a field of LitGPT's Config with the value LitGPT wrote (the fixture's yaml is LitGPT's
    `asdict(config)`, so its keys are exactly LitGPT's fields), and the state dict has LitGPT's keys and shapes."""
    import yaml

    _write_ours(case, tmp_path / case)
    ours = yaml.safe_load((tmp_path / case / "model_config.yaml").read_text())
    theirs = yaml.safe_load((FIXTURES / case / "model_config.yaml").read_text())
    assert set(ours) <= set(theirs), f"fields LitGPT's Config does not have: {sorted(set(ours) - set(theirs))}"
    assert {k: ours[k] for k in ours} == {k: theirs[k] for k in ours}
    mine = torch.load(tmp_path / case / "lit_model.pth", weights_only=True)
    ref = torch.load(FIXTURES / case / "lit_model.pth", weights_only=True)
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert all(torch.equal(mine[k], ref[k]) for k in ref)


def test_reference_loads_our_checkpoints(tmp_path):
    """Our `lit_model.pth` + `model_config.yaml` load into LitGPT itself with the same logits.

    The default suite checks the layout against LitGPT-written files (test_our_checkpoints_have_litgpts_layout);
    with the reference venv this also runs LitGPT on our files: set LITGPT_REFERENCE_PYTHON to its python, e.g.
    `LITGPT_REFERENCE_PYTHON=$(bash ../shared/bench/anchor.sh)/bin/python make test`. Without it, it loads our
    files the way LitGPT's users do (strict `load_state_dict` into a model built from the yaml alone).
    """
    import os
    import shutil
    import subprocess

    folders = []
    for case in CASES:
        out = tmp_path / case
        _write_ours(case, out)
        shutil.copy(FIXTURES / case / "io.pt", out / "io.pt")
        folders.append(str(out))
    ref_python = os.environ.get("LITGPT_REFERENCE_PYTHON")
    if ref_python:
        script = Path(__file__).parent / "compat" / "reference_load.py"
        proc = subprocess.run([ref_python, str(script), *folders], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        return
    for folder in map(Path, folders):
        model = GPT(Config.from_file(folder / "model_config.yaml"))
        model.load_state_dict(torch.load(folder / "lit_model.pth", weights_only=True), strict=True)
        io = torch.load(folder / "io.pt", weights_only=True)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(io["idx"]), io["logits"], rtol=1e-5, atol=1e-5)


def test_tied_family_stays_tied_when_matrices_match_and_unties_when_they_differ(tmp_path):
    config = Config.from_checkpoint(FIXTURES / "llama3")  # Llama 3.2 is tied in the registry
    assert config.tie_embeddings
    state = torch.load(FIXTURES / "llama3" / "lit_model.pth", weights_only=True)
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    torch.save(state, tmp_path / "lit_model.pth")
    for device in ("cpu", "meta"):
        with torch.device(device):
            model = GPT(config)
        load_checkpoint(model, tmp_path / "lit_model.pth")
        assert model.lm_head.weight is model.transformer.wte.weight
        assert torch.equal(model.lm_head.weight, state["transformer.wte.weight"])
    # the fixture itself was trained untied by LitGPT: it loads untied, and saving keeps LitGPT's fields
    model = GPT(config)
    load_checkpoint(model, FIXTURES / "llama3" / "lit_model.pth")
    assert model.lm_head.weight is not model.transformer.wte.weight and not model.config.tie_embeddings
    model.config.save(tmp_path)
    assert "tie_embeddings" not in (tmp_path / "model_config.yaml").read_text()
