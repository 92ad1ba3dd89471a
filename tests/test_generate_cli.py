"""`litgpt generate`: the text on stdout, the timing line on stderr, one-line errors for bad flags."""

import re
import subprocess
import sys

import pytest

import litgpt.__main__ as cli
from litgpt import LLM
from tests._gen_helpers import make_checkpoint

TIMING = re.compile(r"^Time for inference: [\d.]+ sec total, [\d.]+ tokens/sec \((\d+) tokens, (\d+) samples?, cpu, ")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_generate_prints_the_text_and_a_timing_line(ckpt, capsys):
    args = ["generate", str(ckpt), "--prompt", "The quick brown fox", "--max_new_tokens", "12",
            "--temperature", "0", "--precision", "32-true"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    llm = LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision="32-true")
    expected = llm.generate("The quick brown fox", max_new_tokens=12, temperature=0)
    assert captured.out == expected + "\n"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    match = TIMING.match(lines[0])
    assert match, lines[0]
    n_ids = len(llm.generate("The quick brown fox", max_new_tokens=12, temperature=0, return_as_token_ids=True))
    assert int(match.group(1)) >= n_ids and match.group(2) == "1"


def test_num_samples_are_one_batch_and_the_seed_repeats_them(ckpt, capsys):
    args = ["generate", str(ckpt), "--prompt", "Hello", "--max_new_tokens", "6", "--num_samples", "3",
            "--top_k", "20", "--seed", "7"]
    assert cli.main(args) == 0
    first = capsys.readouterr()
    assert [f"--- sample {i} of 3 ---" in first.out for i in (1, 2, 3)] == [True] * 3
    match = TIMING.match(first.err.strip().splitlines()[-1])
    assert match and match.group(2) == "3" and int(match.group(1)) <= 18
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first.out


def test_stop_strings_and_sys_prompt_flags(ckpt, capsys):
    base = ["generate", str(ckpt), "--prompt", "The quick brown fox", "--max_new_tokens", "30", "--temperature", "0",
            "--precision", "32-true"]
    assert cli.main(base) == 0
    full = capsys.readouterr().out[:-1]
    stop = full[5:8]
    assert cli.main(base + ["--stop", f'["{stop}"]']) == 0
    assert capsys.readouterr().out == full[: full.index(stop)] + "\n"
    assert cli.main(base + ["--sys_prompt", "You are terse."]) == 0  # the plain style puts it first
    assert capsys.readouterr().out  # some text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quantize", "int3"], "litgpt generate: error: unknown quantization mode 'int3'; expected one of bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8, int8, int4, int4-g32, int4-g64, int4-g128"),
        (["--temperature", "-1"], "litgpt generate: error: temperature must be >= 0, got -1.0"),
        (["--top_p", "0"], "litgpt generate: error: top_p must be in (0, 1], got 0.0"),
        (["--top_k", "0"], "litgpt generate: error: top_k must be >= 1 (or None), got 0"),
        (["--max_new_tokens", "0"], "litgpt generate: error: max_new_tokens must be >= 1, got 0"),
        (["--num_samples", "0"], "litgpt generate: error: num_samples must be >= 1, got 0"),
        (["--precision", "bf16-mixed"], "litgpt generate: error: precision must be one of 32-true, bf16-true, 16-true"),
        (["--prompt", "the " * 300], "litgpt generate: error: the prompt is"),
    ],
)
def test_bad_flags_give_one_line_errors(ckpt, capsys, flags, message):
    assert cli.main(["generate", str(ckpt), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message), err


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"litgpt generate: error: checkpoint directory {tmp_path / 'nope'} does not exist"


def test_max_new_tokens_beyond_the_context_is_clipped(ckpt, capsys):
    with pytest.warns(UserWarning, match="generating at most"):
        assert cli.main(["generate", str(ckpt), "--prompt", "the " * 100, "--max_new_tokens", "500", "--top_k", "1"]) == 0
    match = TIMING.match(capsys.readouterr().err.strip().splitlines()[-1])
    assert match and int(match.group(1)) < 128 - 100


def test_python_dash_m_litgpt_generate(ckpt):
    proc = subprocess.run(
        [sys.executable, "-m", "litgpt", "generate", str(ckpt), "--prompt", "Hello", "--max_new_tokens", "5",
         "--temperature", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert TIMING.match(proc.stderr.strip().splitlines()[-1])
    assert proc.stdout.endswith("\n")
