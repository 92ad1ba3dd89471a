"""Prompt styles: exact strings per family, conversations, the model table, prompt_style.yaml, chat templates."""

import pytest

from litgpt import Config
from litgpt.config import name_to_config
from litgpt.prompts import (
    MODEL_STYLES,
    STYLES,
    ChatTemplate,
    Default,
    PromptStyle,
    load_prompt_style,
    resolve_prompt_style,
    save_prompt_style,
    style_name_for_model,
)
from litgpt.tokenizer import Tokenizer
from tests._gen_helpers import add_special_tokens, write_tokenizer_config
from tests._tokenizers import make_hf_tokenizer


@pytest.mark.parametrize(
    "style, sys_prompt, expected",
    [
        ("default", None, "Hi!"),
        ("default", "Be brief.", "Be brief.\n\nHi!"),
        ("llama3", "Be brief.",
         "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("llama3", None,
         "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("llama2", "Be brief.", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST]"),
        ("llama2", None, "[INST] Hi! [/INST]"),
        ("mistral", None, "[INST] Hi! [/INST]"),
        ("mistral", "Be brief.", "[INST] Be brief.\n\nHi! [/INST]"),
        ("chatml", "S", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen2.5", None,
         "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
         "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
        ("smollm2", None,
         "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
         "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
        ("qwen3", None, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
        ("gemma", None, "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n"),
        ("gemma", "S", "<start_of_turn>user\nS\n\nHi!<end_of_turn>\n<start_of_turn>model\n"),
        ("phi-2", None, "Instruct: Hi!\nOutput:"),
        ("phi-3", None, "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n"),
        ("phi-4", None, "<|im_start|>user<|im_sep|>Hi!<|im_end|><|im_start|>assistant<|im_sep|>"),
        ("falcon", None, "User: Hi!\nFalcon:"),
        ("falcon3", None, "<|user|>\nHi!\n<|assistant|>\n"),
        ("tinyllama", "S", "<|system|>\nS</s>\n<|user|>\nHi!</s>\n<|assistant|>\n"),
        ("stablelm-zephyr", None, "<|user|>\nHi!<|endoftext|>\n<|assistant|>\n"),
        ("olmo", None, "<|user|>\nHi!\n<|assistant|>\n"),
        ("stablecode", None, "###Instruction\nHi!###Response\n"),
        ("alpaca", None,
         "Below is an instruction that describes a task. Write a response that appropriately completes the "
         "request.\n\n### Instruction:\nHi!\n\n### Response:\n"),
    ],
)
def test_exact_prompt_strings(style, sys_prompt, expected):
    assert PromptStyle.from_name(style).apply("Hi!", sys_prompt=sys_prompt) == expected


def test_alpaca_with_input_and_braces_in_messages():
    out = PromptStyle.from_name("alpaca").apply("Sum it", input="{1, 2}")
    assert out.endswith("### Instruction:\nSum it\n\n### Input:\n{1, 2}\n\n### Response:\n")
    assert "paired with an input" in out
    assert PromptStyle.from_name("chatml").apply("{content} {x}").count("{content} {x}") == 1


def test_multi_turn_conversations():
    turns = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    assert PromptStyle.from_name("chatml").apply_conversation(turns) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n"
    )
    assert PromptStyle.from_name("llama2").apply_conversation(turns) == (
        "[INST] <<SYS>>\nS\n<</SYS>>\n\nu1 [/INST] a1 </s><s>[INST] u2 [/INST]"
    )
    assert PromptStyle.from_name("gemma").apply_conversation(turns, add_generation_prompt=False) == (
        "<start_of_turn>user\nS\n\nu1<end_of_turn>\n<start_of_turn>model\na1<end_of_turn>\n"
        "<start_of_turn>user\nu2<end_of_turn>\n"
    )
    assert PromptStyle.from_name("llama3").apply_conversation(turns[1:3], add_generation_prompt=False) == (
        "<|start_header_id|>user<|end_header_id|>\n\nu1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\na1<|eot_id|>"
    )


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hello", "must be a list"),
        ([{"role": "bot", "content": "x"}], "role 'bot'"),
        ([{"role": "user"}], "must be a dict with 'role' and 'content'"),
        ([{"role": "user", "content": 3}], "content must be a str"),
    ],
)
def test_bad_messages(messages, match):
    with pytest.raises(ValueError, match=match):
        PromptStyle.from_name("chatml").apply_conversation(messages)


def test_model_table():
    expected = {
        "Llama-3.2-1B-Instruct": "llama3", "Llama-3.2-1B": "default", "Llama-2-7b-chat-hf": "llama2",
        "Mistral-7B-Instruct-v0.3": "mistral", "Mixtral-8x7B-Instruct-v0.1": "mistral", "Gemma-3-1b-it": "gemma",
        "Gemma-3-1b-pt": "default", "CodeGemma-7b-it": "codegemma", "Qwen2.5-7B-Instruct": "qwen2.5",
        "Qwen2.5-Coder-7B-Instruct": "qwen2.5", "Qwen2.5-Math-7B-Instruct": "qwen2.5-math", "Qwen3-0.6B": "qwen3",
        "Qwen3-0.6B-Base": "default", "QwQ-32B": "qwq", "QwQ-32B-Preview": "qwq-preview",
        "SmolLM2-135M-Instruct": "smollm2", "SmolLM2-135M": "default", "phi-2": "phi-2",
        "Phi-3.5-mini-instruct": "phi-3", "phi-4": "phi-4", "OLMo-2-1124-7B-Instruct": "olmo",
        "falcon-7b-instruct": "falcon", "Falcon3-7B-Instruct": "falcon3", "tiny-llama-1.1b-chat": "tinyllama",
        "stablelm-zephyr-3b": "stablelm-zephyr", "pythia-14m": "default", "gpt2": "default",
    }
    for name, style in expected.items():
        assert style_name_for_model(name) == style, name
    assert all(style in STYLES for _, style in MODEL_STYLES)
    # every instruction-tuned / chat model of the registry gets a chat format
    for name in name_to_config:
        style = style_name_for_model(name)
        assert style in STYLES
        if any(tag in name for tag in ("Instruct", "instruct", "-it", "chat")):
            assert style != "default", name
    assert isinstance(PromptStyle.from_config(Config.from_name("Llama-3.2-1B-Instruct")), STYLES["llama3"])


def test_from_name_accepts_class_names_and_rejects_unknown():
    assert type(PromptStyle.from_name("Llama3")).__name__ == "Llama3"
    assert type(PromptStyle.from_name("Qwen2_5")).__name__ == "Qwen2_5"
    with pytest.raises(ValueError, match="unknown prompt style 'nope'; known styles: .*llama3"):
        PromptStyle.from_name("nope")


@pytest.mark.parametrize("name", sorted(STYLES))
def test_prompt_style_yaml_round_trip(name, tmp_path):
    style = PromptStyle.from_name(name)
    path = save_prompt_style(style, tmp_path)
    assert path.read_text().startswith(f"class_path: litgpt.prompts.{type(style).__name__}")
    loaded = load_prompt_style(tmp_path)
    assert loaded == style
    assert loaded.apply("x", sys_prompt="y") == style.apply("x", sys_prompt="y")


def test_litgpt_style_yaml_loads(tmp_path):
    (tmp_path / "prompt_style.yaml").write_text("class_path: litgpt.prompts.Llama3\ninit_args: {}\n")
    assert type(load_prompt_style(tmp_path)).__name__ == "Llama3"
    (tmp_path / "prompt_style.yaml").write_text("class_path: litgpt.prompts.Alpaca\n")
    assert type(load_prompt_style(tmp_path)).__name__ == "Alpaca"
    (tmp_path / "prompt_style.yaml").write_text("class_path: litgpt.prompts.Vicuna\n")
    with pytest.raises(ValueError, match="unknown prompt style 'litgpt.prompts.Vicuna'; known: .*Llama3"):
        load_prompt_style(tmp_path)
    (tmp_path / "prompt_style.yaml").write_text("class_path: [oops\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_prompt_style(tmp_path)
    (tmp_path / "prompt_style.yaml").write_text("style: llama3\n")
    with pytest.raises(ValueError, match="'class_path'"):
        load_prompt_style(tmp_path)
    (tmp_path / "prompt_style.yaml").write_text("class_path: collections.OrderedDict\n")
    with pytest.raises(ValueError, match="not a litgpt.prompts.PromptStyle subclass"):
        load_prompt_style(tmp_path)
    (tmp_path / "prompt_style.yaml").unlink()
    with pytest.raises(FileNotFoundError):
        load_prompt_style(tmp_path)


class Custom(PromptStyle):
    """A user-defined style, loaded by its import path."""

    user_format = "Q: {content}\n"
    generation_prompt = "A:"


def test_custom_style_by_import_path(tmp_path):
    save_prompt_style(Custom(), tmp_path)
    assert "class_path: test_prompts.Custom" in (tmp_path / "prompt_style.yaml").read_text() or \
        "class_path: tests.test_prompts.Custom" in (tmp_path / "prompt_style.yaml").read_text()
    assert load_prompt_style(tmp_path).apply("2+2?") == "Q: 2+2?\nA:"


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tmp_path_factory):
    directory = make_hf_tokenizer(tmp_path_factory.mktemp("chat_tok"))
    add_special_tokens(directory, ("<|im_start|>", "<|im_end|>"))
    return directory


TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'A: ' + m['content'] + eos_token }}"
    "{% else %}{{ m['role'][0] | upper + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'A:' }}{% endif %}"
)


def test_chat_template_renders_conversations(chat_tokenizer_dir):
    write_tokenizer_config(chat_tokenizer_dir, chat_template=TEMPLATE)
    tok = Tokenizer(chat_tokenizer_dir)
    style = ChatTemplate.from_tokenizer(tok)
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    assert style.apply_conversation(turns) == "<s>S: S\nU: u1\nA: a1</s>U: u2\nA:"
    assert style.apply("hi") == "<s>U: hi\nA:"
    assert style.apply_conversation(turns[:2], add_generation_prompt=False) == "<s>S: S\nU: u1\n"
    # </s> is the tokenizer's eos: a stop token; <|im_end|> is in the vocabulary but not in this template
    assert style.stop_tokens(tok) == ([tok.eos_id],)


def test_chat_template_forms_and_errors(chat_tokenizer_dir, tmp_path):
    listed = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ messages[0]['content'] }}"}]
    write_tokenizer_config(chat_tokenizer_dir, chat_template=listed)
    assert ChatTemplate.from_tokenizer(Tokenizer(chat_tokenizer_dir)).apply("only") == "only"
    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    write_tokenizer_config(chat_tokenizer_dir, chat_template=chatml)
    tok = Tokenizer(chat_tokenizer_dir)
    assert [tok.token_to_id("<|im_end|>")] in ChatTemplate.from_tokenizer(tok).stop_tokens(tok)
    with pytest.raises(ValueError, match="the chat template rejected the conversation: no system"):
        ChatTemplate("{{ raise_exception('no system') }}").apply("x")
    with pytest.raises(ValueError, match="not valid Jinja"):
        ChatTemplate("{% for %}").apply("x")
    # a template in chat_template.jinja, and none at all
    plain = make_hf_tokenizer(tmp_path / "plain")
    assert ChatTemplate.from_tokenizer(Tokenizer(plain)) is None
    (plain / "chat_template.jinja").write_text("[{{ messages[-1]['content'] }}]")
    assert ChatTemplate.from_tokenizer(Tokenizer(plain)).apply("z") == "[z]"


def test_chat_template_yaml_round_trip(tmp_path):
    style = ChatTemplate(TEMPLATE, bos_token="<s>", eos_token="</s>")
    save_prompt_style(style, tmp_path)
    loaded = load_prompt_style(tmp_path)
    assert isinstance(loaded, ChatTemplate) and loaded.apply("q") == style.apply("q") == "<s>U: q\nA:"


def test_resolution_order(chat_tokenizer_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_tokenizer_config(chat_tokenizer_dir, chat_template=TEMPLATE)
    tok = Tokenizer(chat_tokenizer_dir)
    config = Config.from_name("Llama-3.2-1B-Instruct", n_layer=1)
    # no yaml: the table, or (for chat) the chat template
    assert type(resolve_prompt_style(ckpt, config, tok)).__name__ == "Llama3"
    assert isinstance(resolve_prompt_style(ckpt, config, tok, use_chat_template=True), ChatTemplate)
    assert isinstance(resolve_prompt_style(None, None), Default)
    # a prompt_style.yaml wins over both
    save_prompt_style("phi-3", ckpt)
    assert type(resolve_prompt_style(ckpt, config, tok, use_chat_template=True)).__name__ == "Phi3"
