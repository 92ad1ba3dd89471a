"""Preference tuning: the losses against trl's on the same model and tokens (loss, rewards, gradients), the
preference data (row formats, bad rows, truncation, the public sets from local files), and `finetune_dpo` runs
(the CLI end to end, the reference at the start, resume)."""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from litgpt.data.preference import AnthropicHH, Preference, UltraFeedback, collate_pairs, fit_pair, parse_pairs
from litgpt.train.preference import PreferenceLoss, head_logps, logits_logps, preference_loss
from tests._tokenizers import make_hf_tokenizer, training_text
from tests._train_helpers import make_checkpoint, one_thread, read_metrics, tiny_config, write_json  # noqa: F401

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
REPO = Path(__file__).resolve().parents[1]
CHOSEN = "ok ok ok"


# --------------------------------------------------------------------------------------------------------
# the losses against trl


def _hf_llama(seed: int):
    import transformers

    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=64,
                                      tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _as_gpt(hf_model, folder: Path):
    from litgpt import GPT, Config
    from litgpt.checkpoint import load_checkpoint
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    hf_model.save_pretrained(folder)
    convert_hf_checkpoint(folder)
    model = GPT(Config.from_file(folder / "model_config.yaml"))
    load_checkpoint(model, folder / "lit_model.pth")
    return model


@pytest.fixture(scope="module")
def trl_setup(tmp_path_factory):
    """A tiny Llama policy and a different reference, in transformers and converted to ours, and a trl batch."""
    import transformers

    tmp = tmp_path_factory.mktemp("trl")
    tokenizer = transformers.AutoTokenizer.from_pretrained(make_hf_tokenizer(tmp / "tok"))
    tokenizer.pad_token = tokenizer.eos_token
    policy, reference = _hf_llama(0), _hf_llama(1)
    ours = _as_gpt(policy, tmp / "policy"), _as_gpt(reference, tmp / "reference")
    rows = [{"prompt": "The cat", "chosen": " sat on the mat", "rejected": " ran"},
            {"prompt": "Hello there", "chosen": " friend", "rejected": " enemy of mine"},
            {"prompt": "Two plus two is", "chosen": " four", "rejected": " five, I think"}]
    return tokenizer, policy, reference, ours, rows, tmp


def _trl_step(setup, loss_type: str, beta: float, label_smoothing: float):
    """trl's DPOTrainer loss (backpropagated into the policy), its logged metrics and the batch it used."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer, policy, reference, _, rows, tmp = setup
    policy, reference = copy.deepcopy(policy), copy.deepcopy(reference)
    args = DPOConfig(output_dir=str(tmp / "trl_out"), beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                     per_device_train_batch_size=len(rows), report_to=[], use_cpu=True, max_length=64, bf16=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(policy, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), metrics, batch, policy


def _our_step(setup, batch, kind: str, beta: float, label_smoothing: float):
    """Our loss on the same tokens: trl's completion mask becomes our shifted labels."""
    _, _, _, (gpt, gpt_ref), _, _ = setup
    gpt = copy.deepcopy(gpt)
    ids, mask = batch["input_ids"], batch["completion_mask"]
    inputs, labels = ids[:, :-1], torch.where(mask[:, 1:].bool(), ids[:, 1:], torch.full_like(ids[:, 1:], -100))
    spec = PreferenceLoss(kind, beta, label_smoothing).validate()
    policy = logits_logps(gpt(inputs), labels)
    with torch.no_grad():
        ref = logits_logps(gpt_ref(inputs), labels)
    lengths = (labels != -100).sum(-1)
    n = policy.numel() // 2
    losses, chosen_rewards, rejected_rewards = preference_loss(spec, policy[:n], policy[n:], ref[:n], ref[n:],
                                                               lengths[:n], lengths[n:])
    loss = losses.mean()
    loss.backward()
    metrics = {"rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
               "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
               "logps/chosen": policy[:n].detach().mean(), "logps/rejected": policy[n:].detach().mean()}
    return loss.detach(), metrics, gpt


@pytest.mark.parametrize(("kind", "trl_kind", "beta", "smoothing"),
                         [("dpo", "sigmoid", 0.1, 0.0), ("dpo", "sigmoid", 0.5, 0.0), ("ipo", "ipo", 0.3, 0.0)])
def test_dpo_loss_rewards_and_gradients_match_trl(trl_setup, kind, trl_kind, beta, smoothing):
    trl_loss, trl_metrics, batch, hf_policy = _trl_step(trl_setup, trl_kind, beta, smoothing)
    loss, metrics, gpt = _our_step(trl_setup, batch, kind, beta, smoothing)
    assert abs(float(loss) - float(trl_loss)) < 1e-5, (float(loss), float(trl_loss))
    for name, value in metrics.items():
        assert abs(float(value) - trl_metrics[name]) < 1e-5 * max(1.0, abs(trl_metrics[name])), name
    assert abs(float(trl_loss) - math.log(2)) > 1e-3  # the reference differs: a real comparison
    pairs = [(gpt.lm_head.weight, hf_policy.lm_head.weight), (gpt.transformer.wte.weight,
             hf_policy.model.embed_tokens.weight), (gpt.transformer.h[0].mlp.proj.weight,
             hf_policy.model.layers[0].mlp.down_proj.weight)]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)


def test_label_smoothing_is_conservative_dpo():
    """trl 1.16 applies label_smoothing only to its "robust" and EXO losses; ours is cDPO (Mitchell 2023): the
    DPO loss against labels flipped with probability eps, checked here against the formula written out."""
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-torch.rand(5, generator=gen) * 20 for _ in range(4))
    pc.requires_grad_(True)
    beta, eps = 0.3, 0.15
    losses, c, r = preference_loss(PreferenceLoss("dpo", beta, eps).validate(), pc, pr, rc, rr)
    h = (pc - rc) - (pr - rr)
    sigma = lambda x: 1 / (1 + torch.exp(-x))
    expected = -(1 - eps) * torch.log(sigma(beta * h)) - eps * torch.log(sigma(-beta * h))
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(torch.autograd.grad(losses.sum(), pc)[0], torch.autograd.grad(expected.sum(), pc)[0])
    torch.testing.assert_close(c, beta * (pc - rc).detach()), torch.testing.assert_close(r, beta * (pr - rr))


def test_simpo_and_orpo_match_trl_on_the_same_logps():
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    gen = torch.Generator().manual_seed(0)
    chosen, rejected = -torch.rand(6, generator=gen) * 3 - 0.01, -torch.rand(6, generator=gen) * 3 - 0.01
    device = types.SimpleNamespace(device=torch.device("cpu"))

    cpo = CPOTrainer.__new__(CPOTrainer)
    cpo.__dict__.update(beta=2.0, loss_type="simpo", simpo_gamma=0.7, label_smoothing=0.1, alpha=0.0,
                        accelerator=device)  # alpha=0: CPOConfig's default (no AlphaPO reward shaping)
    trl_losses, trl_c, trl_r = cpo.cpo_loss(chosen, rejected)
    losses, c, r = preference_loss(PreferenceLoss("simpo", 2.0, 0.1, 0.7).validate(), chosen, rejected)
    for a, b in ((losses, trl_losses), (c, trl_c), (r, trl_r)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    orpo = ORPOTrainer.__new__(ORPOTrainer)
    orpo.__dict__.update(beta=0.2, accelerator=device)
    trl_terms, trl_c, trl_r = orpo.odds_ratio_loss(chosen, rejected)[:3]
    losses, c, r = preference_loss(PreferenceLoss("orpo", 0.2).validate(), chosen, rejected)
    # ORPO = the chosen answer's language-model loss (minus its mean log-probability) minus trl's odds-ratio term
    torch.testing.assert_close(losses, -chosen - trl_terms, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c, trl_c), torch.testing.assert_close(r, trl_r)


def test_head_logps_equals_full_logits_with_gradients():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 7, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    bias = torch.randn(50, generator=gen, requires_grad=True)
    labels = torch.randint(0, 50, (4, 7), generator=gen)
    labels[:, :3] = -100
    labels[2, 5:] = -100
    expected = logits_logps(torch.nn.functional.linear(hidden, weight, bias), labels)
    grads = torch.autograd.grad((expected * torch.arange(1.0, 5.0)).sum(), (hidden, weight, bias))
    actual = head_logps(hidden, weight, bias, labels, chunk_rows=3)  # several blocks, recomputed in backward
    torch.testing.assert_close(actual, expected)
    for a, b in zip(torch.autograd.grad((actual * torch.arange(1.0, 5.0)).sum(), (hidden, weight, bias)), grads):
        torch.testing.assert_close(a, b)


def test_preference_loss_bad_settings():
    with pytest.raises(ValueError, match="unknown loss 'kto'"):
        PreferenceLoss("kto").validate()
    with pytest.raises(ValueError, match="beta must be > 0"):
        PreferenceLoss("dpo", beta=0).validate()
    with pytest.raises(ValueError, match="label_smoothing applies to the dpo and simpo"):
        PreferenceLoss("ipo", label_smoothing=0.1).validate()
    with pytest.raises(ValueError, match="needs the reference"):
        preference_loss(PreferenceLoss().validate(), torch.zeros(1), torch.zeros(1))
    assert PreferenceLoss("simpo").validate().beta == 2.0


# --------------------------------------------------------------------------------------------------------
# data


class _Tok:
    """Characters as tokens (bos 1, eos 2): lengths are easy to count."""

    bos_id, eos_id = 1, 2

    def encode(self, text, bos=True, eos=False, device=None):
        ids = ([1] if bos else []) + [3 + (ord(c) % 200) for c in text] + ([2] if eos else [])
        return torch.tensor(ids, dtype=torch.int)


def test_row_formats_and_batch_layout(tmp_path):
    conv = [{"role": "user", "content": "hi"}]
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": conv, "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [
            {"role": "assistant", "content": "go away"}]},
        {"prompt": "hi", "chosen": conv + [{"role": "assistant", "content": "hey"}],  # UltraFeedback's layout
         "rejected": conv + [{"role": "assistant", "content": "no"}]},
        {"chosen": conv + [{"role": "assistant", "content": "yo"}], "rejected": conv + [
            {"role": "assistant", "content": "nah"}]},
    ]
    data = Preference(write_json(tmp_path / "pairs.json", rows), prompt_style="chatml", val_split_fraction=0.25)
    pairs = parse_pairs(rows, "x")
    assert pairs[1]["prompt"] == conv and pairs[2]["prompt"] == conv and pairs[3]["prompt"] == conv
    assert data.format_prompt(conv) == data.format_prompt("hi")  # a string prompt is one user message
    data.connect(_Tok(), batch_size=2, max_seq_length=100)
    data.setup()
    assert len(data.train_dataset) == 3 and len(data.val_dataset) == 1
    item = data.train_dataset[0]
    batch = collate_pairs([item, data.train_dataset[1]])
    assert batch["input_ids"].shape[0] == 4
    n_prompt, n_chosen = item["prompt_ids"].numel(), item["chosen_ids"].numel()
    labels = batch["labels"][0]
    assert (labels[: n_prompt - 1] == -100).all()  # the prompt takes no loss; the first answer token does
    assert labels[n_prompt - 1 : n_prompt - 1 + n_chosen].tolist() == item["chosen_ids"].tolist()
    assert batch["input_ids"][2, :n_prompt].tolist() == item["prompt_ids"].tolist()  # the rejected rows follow


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "a", "chosen": "b"}, r"pairs.jsonl: row 1 has no 'rejected' \(it has: chosen, prompt\)"),
    ({"prompt": "a", "rejected": "b"}, r"pairs.jsonl: row 1 has no 'chosen'"),
    ({"prompt": "a", "chosen": "same", "rejected": "same"}, r"pairs.jsonl: row 1: 'chosen' and 'rejected' are identical"),
    ({"prompt": "  ", "chosen": "b", "rejected": "c"}, r"pairs.jsonl: row 1 has an empty prompt"),
    ({"chosen": "b", "rejected": "c"}, r"pairs.jsonl: row 1 has an empty prompt"),
])
def test_bad_rows_are_one_line_errors_before_anything_is_written(tmp_path, row, message):
    from litgpt.finetune.dpo import finetune_dpo

    path = write_json(tmp_path / "pairs.jsonl", [{"prompt": "x", "chosen": "y", "rejected": "z"}, row], jsonl=True)
    with pytest.raises(ValueError, match=message) as err:
        finetune_dpo(make_checkpoint(tmp_path / "ckpt"), out_dir=tmp_path / "out", data=Preference(path))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_fit_pair_cuts_the_prompt_from_the_start():
    prompt, chosen, rejected = torch.arange(20), torch.arange(100, 105), torch.arange(200, 208)
    p, c, r, cut = fit_pair(prompt, chosen, rejected, 16, keep_first=True)
    assert cut and p.tolist() == [0] + list(range(13, 20)) and c.equal(chosen) and r.equal(rejected)
    assert p.numel() + r.numel() == 16
    p, c, r, cut = fit_pair(prompt, chosen, rejected, 40, keep_first=True)
    assert not cut and p.equal(prompt)
    p, c, r, cut = fit_pair(prompt, torch.arange(30), torch.arange(50), 24, keep_first=False)  # answers too long
    assert cut and p.tolist() == list(range(14, 20)) and r.numel() == 18 and c.numel() == 18


def test_truncation_is_counted(tmp_path):
    rows = [{"prompt": "p" * (5 + 40 * (i % 2)), "chosen": "yes", "rejected": "no"} for i in range(20)]
    data = Preference(write_json(tmp_path / "p.json", rows), prompt_style="default", val_split_fraction=0.5)
    data.connect(_Tok(), batch_size=1, max_seq_length=30)
    data.setup()
    assert any("training pairs are longer than max_seq_length=30" in note for note in data.notes)
    assert max(len(s["prompt_ids"]) + 4 for s in data.train_dataset.samples) <= 31


def test_public_sets_read_local_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    conv = lambda answer: [{"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": answer}]
    rows = [{"prompt": "Name a fruit", "chosen": conv("apple"), "rejected": conv("rock"), "score_chosen": 9.0}] * 3
    (tmp_path / "uf" / "data").mkdir(parents=True)
    for split in ("train_prefs", "test_prefs"):
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "uf" / "data" / f"{split}-00000-of-00001.parquet")
    uf = UltraFeedback(download_dir=tmp_path / "uf", max_rows=2)
    train, val = uf.rows()
    assert len(train) == 2 and len(val) == 3 and train[0]["chosen"] == "apple"
    assert train[0]["prompt"] == [{"role": "user", "content": "Name a fruit"}]

    hh = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: "
    good = {"chosen": hh + "Why did the chicken cross the road?", "rejected": hh + "No."}
    for split in ("train", "test"):
        (tmp_path / "hh" / "helpful-base").mkdir(parents=True, exist_ok=True)
        with gzip.open(tmp_path / "hh" / "helpful-base" / f"{split}.jsonl.gz", "wt") as f:
            f.write("\n".join(json.dumps(r) for r in [good, good, {"chosen": "junk", "rejected": "junk 2"}]))
    data = AnthropicHH(subsets=("helpful-base",), download_dir=tmp_path / "hh")
    train, val = data.rows()
    assert len(train) == 2 and train[0]["rejected"] == "No." and len(train[0]["prompt"]) == 3
    assert "skipped 2 rows" in data.load_notes[0]


# --------------------------------------------------------------------------------------------------------
# the verb


def _synthetic_pairs(n: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """Prompts of three random words; chosen is always the same pattern, rejected three other words."""
    words = training_text().split()
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.sample(words, 3)), "chosen": CHOSEN, "rejected": " ".join(rng.sample(words, 3))}
            for _ in range(n)]


def _flags(tmp_path: Path, **train) -> list[str]:
    steps = dict(max_steps=4, global_batch_size=4, micro_batch_size=2, max_seq_length=40, lr_warmup_steps=1,
                 save_interval=None)
    steps.update(train)
    out = [f"--train.{k}={'null' if v is None else v}" for k, v in steps.items()]
    return out + ["--eval.interval=1000", "--eval.max_iters=2", "--eval.max_new_tokens=0", "--precision=32-true"]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "litgpt", "finetune_dpo", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def _greedy(folder: Path, prompt_ids: torch.Tensor, n: int) -> list[int]:
    from litgpt import GPT, Config
    from litgpt.checkpoint import load_checkpoint

    model = GPT(Config.from_file(folder / "model_config.yaml"))
    load_checkpoint(model, folder / "lit_model.pth")
    ids = prompt_ids.clone()
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat((ids, model(ids[None])[0, -1].argmax()[None]))
    return ids[prompt_ids.numel():].tolist()


def test_cli_learns_the_chosen_pattern(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    pairs = write_json(tmp_path / "pairs.jsonl", _synthetic_pairs(), jsonl=True)
    out = tmp_path / "out"
    result = _run_cli([str(ckpt), "--method=full", "--precompute_ref=true", "--data=Preference",
                       f"--data.json_path={pairs}", "--data.prompt_style=default", f"--out_dir={out}", "--beta=0.5",
                       '--optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}',
                       *_flags(tmp_path, max_steps=24)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Reference log-probabilities of 48 pairs computed" in result.stdout
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-5  # the policy starts as the reference
    assert rows[-1]["rewards/accuracy"] >= 0.9 and rows[-1]["rewards/margin"] > rows[0]["rewards/margin"]
    val = [r for r in read_metrics(out) if "val_rewards/accuracy" in r][-1]
    assert val["val_rewards/accuracy"] >= 0.9
    assert {"lit_model.pth", "model_config.yaml", "tokenizer.json", "hyperparameters.yaml"} <= {
        p.name for p in (out / "final").iterdir()}
    assert (out / "reference_logps.pt").is_file()

    from litgpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(ckpt)
    target = tokenizer.encode(CHOSEN, bos=False).tolist()
    prompt = tokenizer.encode(_synthetic_pairs(1, seed=7)[0]["prompt"])
    match = lambda out_ids: sum(a == b for a, b in zip(out_ids, target))
    before, after = _greedy(ckpt, prompt, len(target)), _greedy(out / "final", prompt, len(target))
    assert match(after) > match(before) and match(after) >= len(target) // 2, (before, after, target)


def test_cli_bad_row_is_one_line(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    pairs = write_json(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                   {"prompt": "a", "chosen": "b"}], jsonl=True)
    result = _run_cli([str(ckpt), "--data=Preference", f"--data.json_path={pairs}", f"--out_dir={tmp_path / 'out'}"])
    assert result.returncode != 0
    assert "row 1 has no 'rejected'" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("method", "precompute"), [("lora", False), ("lora", True), ("full", False)])
def test_the_reference_is_the_starting_model(tmp_path, method, precompute):
    """At the first step the policy equals its reference: every pair's loss is log 2 and the rewards are 0."""
    from litgpt.finetune.dpo import finetune_dpo
    from litgpt.train.args import EvalArgs, TrainArgs

    data = Preference(write_json(tmp_path / "p.json", _synthetic_pairs(16)), prompt_style="default")
    finetune_dpo(make_checkpoint(tmp_path / "ckpt"), out_dir=tmp_path / "out", precision="32-true", method=method,
                 precompute_ref=precompute, data=data, lora_dropout=0.0,
                 train=TrainArgs(max_steps=1, global_batch_size=4, micro_batch_size=2, max_seq_length=40,
                                 lr_warmup_steps=1, save_interval=None),
                 eval=EvalArgs(interval=1000, max_iters=1, max_new_tokens=0, final_validation=False))
    row = [r for r in read_metrics(tmp_path / "out") if "loss" in r][0]
    assert abs(row["loss"] - math.log(2)) < 1e-6 and abs(row["rewards/margin"]) < 1e-6


def test_resume_continues_exactly(tmp_path):
    from litgpt.finetune.dpo import finetune_dpo
    from litgpt.train.args import EvalArgs, TrainArgs
    from litgpt.utils import load_state_dict

    ckpt = make_checkpoint(tmp_path / "ckpt")
    path = write_json(tmp_path / "p.json", _synthetic_pairs(24))

    def run(out: Path, max_steps: int, resume=False):
        finetune_dpo(ckpt, out_dir=out, precision="32-true", data=Preference(path, prompt_style="default"),
                     resume=resume, train=TrainArgs(max_steps=max_steps, global_batch_size=4, micro_batch_size=2,
                                                    max_seq_length=40, lr_warmup_steps=1, save_interval=2),
                     eval=EvalArgs(interval=1000, max_iters=1, max_new_tokens=0, final_validation=False),
                     optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}})

    run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4, resume=True)
    losses = lambda out: {int(r["step"]): r["loss"] for r in read_metrics(out) if "loss" in r}
    assert len(losses(tmp_path / "a")) == 4 and losses(tmp_path / "a") == losses(tmp_path / "b")
    a, b = (load_state_dict(tmp_path / x / "final" / "lit_model.pth.lora") for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_recipe_parses():
    import litgpt.__main__ as cli
    from litgpt.config import Config

    for path in sorted((REPO / "config_hub" / "finetune").glob("*/dpo*.yaml")):
        parser, _ = cli.build_parser("finetune_dpo")
        kwargs = parser.instantiate(parser.parse_args(["--config", str(path)])).as_dict()
        assert isinstance(kwargs["data"], UltraFeedback | AnthropicHH | Preference)
        Config.from_name(Path(kwargs["checkpoint_dir"]).name)
        kwargs["train"].validate()
        PreferenceLoss(kwargs["loss"], kwargs["beta"], kwargs["label_smoothing"]).validate()
