"""`litgpt chat`: history across turns, /reset, /quit, end of input, context overflow, multiline, chat templates."""

import io
import subprocess
import sys

import pytest

import litgpt.__main__ as cli
from litgpt import LLM
from litgpt.chat.base import ChatSession, interact, read_message
from litgpt.prompts import ChatTemplate, PromptStyle, save_prompt_style
from tests._gen_helpers import make_checkpoint, tiny_config, write_tokenizer_config

TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '>' + m['content'] + '</' + m['role'] + '>' }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # the tiny tokenizer spells ChatML markers out byte by byte: a roomier context than the other tests'
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), tiny_config(block_size=384))


@pytest.fixture(scope="module")
def llm(ckpt):
    return LLM.load(ckpt, distribute=None).distribute(accelerator="cpu", precision="32-true")


class Recorder(PromptStyle):
    """ChatML, remembering every conversation it renders."""

    system_format = "<|im_start|>system\n{content}<|im_end|>\n"
    user_format = "<|im_start|>user\n{content}<|im_end|>\n"
    assistant_format = "<|im_start|>assistant\n{content}<|im_end|>\n"
    generation_prompt = "<|im_start|>assistant\n"

    def __init__(self):
        self.rendered = []

    def apply_conversation(self, messages, add_generation_prompt=True):
        text = super().apply_conversation(messages, add_generation_prompt)
        self.rendered.append(text)
        return text


def chat(session, text, multiline=False):
    out, err = io.StringIO(), io.StringIO()
    answers = interact(session, io.StringIO(text), out, err, multiline=multiline)
    return answers, out.getvalue(), err.getvalue()


def test_history_is_kept_across_turns(llm):
    style = Recorder()
    session = ChatSession(llm, style, max_new_tokens=8, temperature=0)
    answers, out, err = chat(session, "first question\nsecond question\n")
    assert answers == 2
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[0]["content"] == "first question"
    first_answer = session.history[1]["content"]
    # the second turn's prompt holds the whole first turn, answer included
    second_prompt = style.rendered[-1]
    assert "first question" in second_prompt and second_prompt.index("first question") < second_prompt.index(
        "second question")
    assert f"<|im_start|>assistant\n{first_answer}<|im_end|>" in second_prompt
    # the streamed answers are on stdout, timings on stderr
    assert out.count(">> Assistant: ") == 2 and err.count("Time for inference") == 2


def test_answers_are_streamed_as_generated(llm):
    session = ChatSession(llm, Recorder(), max_new_tokens=10, temperature=0)
    pieces = list(session.respond("hello"))
    assert "".join(pieces).strip() == session.history[-1]["content"]
    fresh = ChatSession(llm, Recorder(), max_new_tokens=10, temperature=0)
    _, out, _ = chat(fresh, "hello\n")
    assert f">> Assistant: {''.join(pieces)}\n" in out


def test_reset_quit_and_end_of_input(llm):
    style = Recorder()
    session = ChatSession(llm, style, max_new_tokens=4, temperature=0)
    answers, out, _ = chat(session, "one\n/reset\ntwo\n/quit\nthree\n")
    assert answers == 2 and "(conversation cleared)" in out
    assert "one" not in style.rendered[-1] and "two" in style.rendered[-1]
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["two"]  # "three" never read
    answers, _, _ = chat(ChatSession(llm, Recorder(), max_new_tokens=4), "a\n/exit\nb\n")
    assert answers == 1
    answers, _, _ = chat(ChatSession(llm, Recorder(), max_new_tokens=4), "a\n\n   \nb")  # EOF without newline
    assert answers == 2


def test_context_overflow_drops_the_oldest_turns(llm):
    style = Recorder()
    session = ChatSession(llm, style, sys_prompt="Be kind.", max_new_tokens=10, temperature=0)
    messages = [f"message number {i} about the quick brown fox" for i in range(8)]
    answers, _, err = chat(session, "\n".join(messages) + "\n")
    assert answers == 8
    assert "oldest turn(s) to fit the context" in err
    last_prompt = style.rendered[-1]
    assert len(llm.tokenizer.encode(last_prompt)) + 10 <= llm.model.max_seq_length
    assert "message number 0 " not in last_prompt and messages[-1] in last_prompt
    assert last_prompt.startswith("<|im_start|>system\nBe kind.")  # the system prompt is never dropped
    assert len(session.history) < 16


def test_a_message_longer_than_the_context_is_an_error_not_a_crash(llm):
    session = ChatSession(llm, Recorder(), max_new_tokens=4, temperature=0)
    answers, out, err = chat(session, "the " * 600 + "\nshort\n")
    assert "error: the message is too long" in err
    assert answers == 1 and len(session.history) == 2


def test_multiline_messages(llm):
    stream = io.StringIO("line one\n\nline three\n/send\nnext\n/send\n")
    assert read_message(stream, True, ">> ", io.StringIO()) == "line one\n\nline three"
    assert read_message(stream, True, ">> ", io.StringIO()) == "next"
    assert read_message(stream, True, ">> ", io.StringIO()) is None
    session = ChatSession(llm, Recorder(), max_new_tokens=4, temperature=0)
    answers, out, _ = chat(session, "a\nb\n/send\n/quit\n", multiline=True)
    assert answers == 1 and session.history[0]["content"] == "a\nb"
    assert "/send" in out.splitlines()[0]


def test_chat_template_from_tokenizer_config(tmp_path, capsys, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    write_tokenizer_config(ckpt, chat_template=TEMPLATE)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\nagain\n"))
    rendered = []
    original = ChatTemplate.apply_conversation

    def spy(self, messages, add_generation_prompt=True):
        rendered.append(original(self, messages, add_generation_prompt))
        return rendered[-1]

    monkeypatch.setattr(ChatTemplate, "apply_conversation", spy)
    assert cli.main(["chat", str(ckpt), "--max_new_tokens", "5", "--temperature", "0", "--sys_prompt", "S"]) == 0
    assert rendered[0] == "<system>S</system><user>hi</user><assistant>"
    assert rendered[1].startswith("<system>S</system><user>hi</user><assistant>")
    assert rendered[1].endswith("</assistant><user>again</user><assistant>")
    assert capsys.readouterr().out.count(">> Assistant: ") == 2
    # a prompt_style.yaml takes precedence over the template
    save_prompt_style("chatml", ckpt)
    rendered.clear()
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert cli.main(["chat", str(ckpt), "--max_new_tokens", "3"]) == 0
    assert rendered == []


def test_bad_flags_are_one_line_errors(ckpt, capsys):
    assert cli.main(["chat", str(ckpt), "--quantize", "int3"]) == 1
    assert capsys.readouterr().err.strip() == (
        "litgpt chat: error: unknown quantization mode 'int3'; expected one of bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8, int8, int4, int4-g32, int4-g64, int4-g128")
    assert cli.main(["chat", str(ckpt), "--top_p", "2"]) == 1
    assert capsys.readouterr().err.strip() == "litgpt chat: error: top_p must be in (0, 1], got 2.0"


def test_python_dash_m_litgpt_chat_through_stdin(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", tiny_config(name="SmolLM2-135M-Instruct", block_size=512))
    proc = subprocess.run(
        [sys.executable, "-m", "litgpt", "chat", str(ckpt), "--max_new_tokens", "6", "--temperature", "0"],
        input="hello\nwhat did I say?\n/exit\n", capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(">> Assistant: ") == 2
    assert proc.stderr.count("Time for inference") == 2


def test_ctrl_c_stops_only_the_current_answer(llm, monkeypatch):
    session = ChatSession(llm, Recorder(), max_new_tokens=4, temperature=0)
    real = session.respond

    def interrupted(message):
        if message == "stop me":
            def pieces():
                yield "partial"
                raise KeyboardInterrupt
            return pieces()
        return real(message)

    monkeypatch.setattr(session, "respond", interrupted)
    answers, out, _ = chat(session, "stop me\nfine\n")
    assert "partial\n(answer interrupted)" in out
    assert answers == 1 and [m["content"] for m in session.history if m["role"] == "user"] == ["fine"]
