"""The shared training loop: exact resume, atomic checkpoints, stop rules, schedule, optimizer groups, fused
loss, batching, validation output and the errors raised before anything is written."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import litgpt.train.loop as loop
from litgpt.data import JSON, TextFiles
from litgpt.pretrain import pretrain
from litgpt.train.checkpoint import TRAINING_STATE, find_resume_dir, load_training_state
from litgpt.train.loader import StepSampler, validation_batches
from litgpt.train.loss import fused_linear_cross_entropy, token_loss_sum
from litgpt.train.optim import WarmupCosine, build_optimizer, build_scheduler, parameter_groups
from litgpt.train.plot import plot_losses
from litgpt.utils import load_state_dict
from tests._tokenizers import make_hf_tokenizer
from tests._train_helpers import (  # noqa: F401 (one_thread is an autouse fixture)
    one_thread,
    OPTIMIZER,
    fast_eval,
    fast_train,
    make_corpus,
    make_sft_rows,
    read_metrics,
    tiny_config,
    train_losses,
    write_json,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_hf_tokenizer(root / "tok")
    make_corpus(root / "texts")
    return root


def run_pretrain(corpus: Path, out_dir: Path, **overrides):
    kwargs = dict(model_config=tiny_config(), data=TextFiles(corpus / "texts", num_workers=1),
                  tokenizer_dir=corpus / "tok", out_dir=out_dir, train=fast_train(), eval=fast_eval(),
                  optimizer=OPTIMIZER, precision="32-true", accelerator="cpu", devices=1, seed=7)
    kwargs.update(overrides)
    return pretrain(**kwargs)


class _Crash(Exception):
    pass


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(corpus, tmp_path, monkeypatch):
    full = run_pretrain(corpus, tmp_path / "full", train=fast_train(save_interval=3))

    original = loop._Trainer._save_step

    def crash_after_step_3(self, start_time):
        original(self, start_time)
        if self.state.step == 3:
            raise _Crash

    monkeypatch.setattr(loop._Trainer, "_save_step", crash_after_step_3)
    with pytest.raises(_Crash):
        run_pretrain(corpus, tmp_path / "cut", train=fast_train(save_interval=3))
    monkeypatch.setattr(loop._Trainer, "_save_step", original)
    assert find_resume_dir(tmp_path / "cut", "auto").name == "step-00000003"
    resumed = run_pretrain(corpus, tmp_path / "cut", train=fast_train(save_interval=3), resume="auto")

    expected, got = train_losses(tmp_path / "full"), train_losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 7))
    assert got == expected  # bit-identical loss curve, steps 4-6 computed after the restart
    a, b = load_state_dict(full / "lit_model.pth"), load_state_dict(resumed / "lit_model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_training_state(tmp_path / "cut" / "step-00000006")
    assert state["state"]["step"] == 6
    assert [s for s, _ in state["state"]["train_history"]] == list(range(1, 7))


def test_a_crash_while_writing_a_checkpoint_keeps_the_last_good_one(corpus, tmp_path, monkeypatch):
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if Path(path).name == TRAINING_STATE and obj["state"]["step"] == 6:
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        run_pretrain(corpus, tmp_path / "out", train=fast_train(save_interval=3))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("step", "."))) == ["step-00000003"]
    assert load_training_state(out / "step-00000003")["state"]["step"] == 3


def test_stop_rules_each_end_the_run(corpus, tmp_path):
    # max_tokens: 4 samples x 32 tokens per step -> 3 steps, though max_steps allows 50
    run_pretrain(corpus, tmp_path / "tokens", train=fast_train(max_steps=50, max_tokens=3 * 4 * 32),
                 eval=fast_eval(final_validation=False))
    assert max(train_losses(tmp_path / "tokens")) == 3
    # epochs: a training set of 8 windows of 32 tokens holds 2 global batches of 4
    small = corpus / "small"
    small.mkdir(exist_ok=True)
    text = (corpus / "texts" / "part0.txt").read_text()
    (small / "a.txt").write_text(text[:1400])
    data = TextFiles(small, num_workers=1, val_split_fraction=0.3)
    run_pretrain(corpus, tmp_path / "epochs", data=data, train=fast_train(max_steps=None, epochs=2),
                 eval=fast_eval(final_validation=False))
    metrics = read_metrics(tmp_path / "epochs")
    steps_per_epoch = max(r["step"] for r in metrics if r["epoch"] == 0)
    assert steps_per_epoch >= 1 and max(r["step"] for r in metrics) == 2 * steps_per_epoch
    # max_time: stops long before max_steps and still writes a resumable checkpoint and final/
    run_pretrain(corpus, tmp_path / "time", train=fast_train(max_steps=10_000, max_time=0.5),
                 eval=fast_eval(final_validation=False))
    steps = max(train_losses(tmp_path / "time"))
    assert 1 <= steps < 10_000
    assert (tmp_path / "time" / f"step-{steps:08d}" / TRAINING_STATE).is_file()
    assert (tmp_path / "time" / "final" / "lit_model.pth").is_file()


def test_validation_logs_val_loss_and_prints_a_sample(corpus, tmp_path, capsys):
    run_pretrain(corpus, tmp_path / "out", train=fast_train(max_steps=4), eval=fast_eval(interval=2, max_new_tokens=5))
    out = capsys.readouterr().out
    assert out.count("val loss") >= 2 and "sample:" in out
    assert "pretrain: 4 steps" in out.splitlines()[-2]  # the summary line, then the PNG's path
    vals = [r for r in read_metrics(tmp_path / "out") if "val_loss" in r]
    assert [int(r["step"]) for r in vals] == [2, 4]
    png = (tmp_path / "out" / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_accumulation_checkpointing_and_the_fused_loss_give_the_same_run(corpus, tmp_path, monkeypatch):
    run_pretrain(corpus, tmp_path / "accum", train=fast_train(max_steps=3), eval=fast_eval(final_validation=False))
    monkeypatch.setattr("litgpt.train.loss.FUSED_LOSS_MIN_VOCAB", 0)
    run_pretrain(corpus, tmp_path / "fused", train=fast_train(max_steps=3), eval=fast_eval(final_validation=False))
    monkeypatch.undo()
    run_pretrain(corpus, tmp_path / "whole", train=fast_train(max_steps=3, micro_batch_size=4),
                 eval=fast_eval(final_validation=False))
    run_pretrain(corpus, tmp_path / "ckpt", train=fast_train(max_steps=3, activation_checkpointing=True),
                 eval=fast_eval(final_validation=False))
    a, b, c, d = (train_losses(tmp_path / n) for n in ("accum", "whole", "ckpt", "fused"))
    assert a == pytest.approx(b, rel=1e-5) and a == pytest.approx(c, rel=1e-6) and a == pytest.approx(d, rel=1e-5)


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "case, error, match",
    [
        ("micro_gt_global", ValueError, "micro_batch_size=8 is larger than train.global_batch_size=4"),
        ("seq_gt_block", ValueError, "max_seq_length=128 is larger than the model's block_size=64"),
        ("no_tokenizer", FileNotFoundError, "holds no tokenizer"),
        ("empty_folder", ValueError, "holds no .txt files"),
        ("unwritable", PermissionError, "is not writable"),
        ("out_dir_under_file", NotADirectoryError, "cannot be created"),
        ("no_stop_rule", ValueError, "no stop rule"),
        ("bad_json_row", ValueError, r"row 3 has no 'output' \(it has: input, instruction, response\)"),
    ],
)
def test_bad_input_fails_in_one_line_before_writing_anything(corpus, tmp_path, monkeypatch, case, error, match):
    out = tmp_path / "out"
    kwargs = {}
    if case == "micro_gt_global":
        kwargs["train"] = fast_train(micro_batch_size=8)
    elif case == "seq_gt_block":
        kwargs["train"] = fast_train(max_seq_length=128)
    elif case == "no_tokenizer":
        (tmp_path / "empty_tok").mkdir()
        kwargs["tokenizer_dir"] = tmp_path / "empty_tok"
    elif case == "empty_folder":
        (tmp_path / "no_text").mkdir()
        kwargs["data"] = TextFiles(tmp_path / "no_text")
    elif case == "unwritable":  # root ignores permission bits: make the folder look read-only
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "out"
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    elif case == "out_dir_under_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "no_stop_rule":
        kwargs["train"] = fast_train(max_steps=None)
    elif case == "bad_json_row":
        rows = make_sft_rows(6)
        rows[3] = {"instruction": "x", "input": "", "response": "y"}
        kwargs["data"] = JSON(write_json(tmp_path / "rows.json", rows))
    with pytest.raises(error, match=match) as info:
        run_pretrain(corpus, out, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()


# --------------------------------------------------------------------------------------------- pieces
def test_warmup_then_cosine_schedule():
    f = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1)
    assert f(100) == pytest.approx(0.1)
    assert WarmupCosine(0, None, 0.0)(50) == 1.0
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="min_lr=0.01 is larger than the optimizer's lr=0.001"):
        build_scheduler(opt, 1, 10, min_lr=0.01)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    from litgpt.model import GPT

    model = GPT(tiny_config(tie_embeddings=True))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}  # tied: wte's name wins
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert "transformer.h.0.attn.qkv.weight" in decayed and "transformer.h.1.mlp.proj.weight" in decayed
    assert {"transformer.wte.weight", "transformer.ln_f.weight", "transformer.h.0.attn.qkv.bias"} <= undecayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied head once


def test_optimizer_by_name_or_class_path():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    sgd = build_optimizer("SGD", model)
    assert isinstance(sgd, torch.optim.SGD)
    adam = build_optimizer({"class_path": "torch.optim.Adam", "init_args": {"lr": 0.5, "weight_decay": 0.2}}, model)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.5
    assert [g["weight_decay"] for g in adam.param_groups] == [0.2, 0.0]
    with pytest.raises(ValueError, match="unknown optimizer 'Adamm'"):
        build_optimizer("Adamm", model)
    with pytest.raises(ValueError, match="takes no argument"):
        build_optimizer({"class_path": "SGD", "init_args": {"lr": 0.1, "betas": [0.9, 0.9]}}, model)


@pytest.mark.parametrize("bias, compiled", [(False, False), (True, False), (False, True)])
def test_fused_linear_cross_entropy_matches_logits_then_cross_entropy(bias, compiled):
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True) if bias else None
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :3] = -100
    ref = token_loss_sum(F.linear(hidden, weight, b), labels)
    ref.backward()
    grads = [t.grad.clone() for t in (hidden, weight, b) if t is not None]
    for t in (hidden, weight, b):
        if t is not None:
            t.grad = None
    got = fused_linear_cross_entropy(hidden, weight, b, labels, chunk_size=5, compiled=compiled)
    (got * 1.0).backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for g, t in zip(grads, [t for t in (hidden, weight, b) if t is not None]):
        torch.testing.assert_close(t.grad, g, rtol=1e-4, atol=1e-5)


def test_fused_linear_cross_entropy_without_any_target_is_zero_with_zero_gradients():
    hidden = torch.randn(2, 4, 8, requires_grad=True)
    weight = torch.randn(40, 8, requires_grad=True)
    got = fused_linear_cross_entropy(hidden, weight, None, torch.full((2, 4), -100), compiled=False)
    got.backward()
    assert got.item() == 0.0
    assert not hidden.grad.any() and (weight.grad is None or not weight.grad.any())


def test_step_sampler_gives_the_same_global_batches_for_any_process_count():
    one = list(StepSampler(20, global_batch_size=8, micro_batch_size=2, seed=3, epoch=1))
    two = [list(StepSampler(20, 8, 2, world_size=2, rank=r, seed=3, epoch=1)) for r in range(2)]
    assert len(one) == 8  # 2 full global batches of 4 micro-batches; the last 4 samples are skipped
    for step in range(2):
        global_batch = sum(one[step * 4 : step * 4 + 4], [])
        assert sum(two[0][step * 2 : step * 2 + 2] + two[1][step * 2 : step * 2 + 2], []) == global_batch
    assert list(StepSampler(20, 8, 2, seed=3, epoch=1, start_step=1)) == one[4:]
    assert list(StepSampler(20, 8, 2, seed=3, epoch=2)) != one
    batches = [validation_batches(5, 2, 2, r, max_iters=10) for r in range(2)]
    assert batches[0] == [([0, 1], True), ([4], True)] and batches[1] == [([2, 3], True), ([2, 3], False)]


def test_loss_png_is_a_valid_image(tmp_path):
    path = plot_losses([(1, 5.0), (2, 4.0), (3, 3.5)], [(3, 3.9)], tmp_path / "loss.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == height * (1 + 3 * width)
    assert plot_losses([], [], tmp_path / "none.png") is None
    assert not math.isnan(width)
