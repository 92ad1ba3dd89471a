"""Prompt styles: how each model family expects a prompt, a system prompt and a multi-turn conversation.

A checkpoint's style is chosen by `resolve_prompt_style`: the `prompt_style.yaml` in the checkpoint folder if
there is one, else (for chat) the Jinja chat template of its `tokenizer_config.json`, else the entry of
`MODEL_STYLES` that matches the config's name (base models get the plain `Default` style).

`prompt_style.yaml` files are LitGPT-compatible: `class_path: litgpt.prompts.Llama3` (plus optional
`init_args`). Special tokens written in a prompt (e.g. "<|eot_id|>") become their ids when the tokenizer is a
Hugging Face `tokenizer.json`; the bos token is left to the tokenizer (`Tokenizer.encode` adds it once).
"""

from __future__ import annotations

import importlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, Union

import yaml

PROMPT_STYLE_FILE = "prompt_style.yaml"
ROLES = ("system", "user", "assistant")
Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def check_messages(messages: Sequence[Message]) -> list[Message]:
    """Returns the messages as a list after checking each is {"role": system|user|assistant, "content": str}.

    Args:
        messages: the conversation, oldest first.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a str, got {type(m['content']).__name__}")
        out.append(m)
    return out


class PromptStyle:
    """How a model expects its input. This base class is the plain style: the prompt is used as it is.

    Subclasses describe a family's turn format with the class attributes below (`{content}` marks where a
    message's text goes); override `apply_conversation` for formats they cannot express.
    """

    name: ClassVar[str] = "default"
    """Short name used by `from_name` and in `MODEL_STYLES`."""
    prefix: ClassVar[str] = ""
    """Text once at the start of every prompt (the bos token is left to the tokenizer)."""
    system_format: ClassVar[Optional[str]] = "{content}\n\n"
    """A system message; None when the format has no system role (then `merge_format` is used)."""
    merge_format: ClassVar[str] = "{system}\n\n{content}"
    """How a system prompt joins the first user message when there is no system role."""
    user_format: ClassVar[str] = "{content}"
    assistant_format: ClassVar[str] = "{content}\n\n"
    """A finished assistant turn (history)."""
    generation_prompt: ClassVar[str] = ""
    """Text that opens the assistant's answer at the end of a prompt."""
    default_system: ClassVar[Optional[str]] = None
    """System prompt used when none is given (some families' templates insert one)."""
    end_tokens: ClassVar[tuple[str, ...]] = ()
    """Special tokens that end a turn; the ones in the tokenizer's vocabulary become stop tokens."""
    stop_strings: ClassVar[tuple[str, ...]] = ()
    """Text that ends the answer (for formats whose turns end with plain text, not a special token)."""

    def apply(self, prompt: Union[str, list[Message]], *, sys_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The text to feed the model for one user prompt (and optional system prompt), or for a whole
        conversation.

        Args:
            prompt: the user's message, or a list of `{"role", "content"}` messages (multi-turn; see
                `apply_conversation`).
            sys_prompt: a system prompt; None uses the style's default (if it has one). With a list of
                messages it is used only when the list has no system message.
            kwargs: style-specific fields (e.g. `input` for Alpaca).
        """
        return self.apply_conversation(_as_messages(prompt, sys_prompt))

    def apply_conversation(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The text of a whole conversation, ending (by default) where the assistant's next answer starts.

        Args:
            messages: `{"role": "system" | "user" | "assistant", "content": str}` dicts, oldest first; a
                system message, if any, comes first.
            add_generation_prompt: end with the text that opens the assistant's answer.
        """
        messages = check_messages(messages)
        system = self.default_system
        if messages and messages[0]["role"] == "system":
            system, messages = messages[0]["content"], messages[1:]
        out = self.prefix
        merge_into_first_user = False
        if system is not None:
            if self.system_format is not None:
                out += _fill(self.system_format, system)
            else:
                merge_into_first_user = True
        for i, m in enumerate(messages):
            content = m["content"]
            if m["role"] == "system":
                if self.system_format is None:
                    raise ValueError(f"{type(self).__name__} has no system role: only the first message may be a system prompt")
                out += _fill(self.system_format, content)
            elif m["role"] == "user":
                if merge_into_first_user:
                    content = self.merge_format.replace("{system}", system).replace("{content}", content)
                    merge_into_first_user = False
                out += _fill(self.user_format, content)
            else:
                out += _fill(self.assistant_format, content)
        if add_generation_prompt:
            out += self.generation_prompt
        return out

    def stop_tokens(self, tokenizer) -> tuple[list[int], ...]:
        """Sequences of ids that end the answer: the tokenizer's stop tokens (eos, generation_config's
        eos_token_id) and the style's end-of-turn tokens that exist in the vocabulary.

        Args:
            tokenizer: a `litgpt.Tokenizer`.
        """
        ids = list(getattr(tokenizer, "stop_tokens", ()) or ())
        if not ids and getattr(tokenizer, "eos_id", None) is not None:
            ids = [tokenizer.eos_id]
        for token in self.end_tokens:
            found = _token_id(tokenizer, token)
            if found is not None and found not in ids:
                ids.append(found)
        return tuple([i] for i in ids)

    def init_args(self) -> dict[str, Any]:
        """Constructor arguments written to `prompt_style.yaml` (none for the built-in styles)."""
        return {}

    @classmethod
    def from_name(cls, name: str) -> "PromptStyle":
        """The style called `name`: a short name ("llama3", "chatml", ...) or a class name ("Llama3").

        Args:
            name: the style's name.
        """
        found = _STYLES_BY_NAME.get(name.lower()) or _STYLES_BY_NAME.get(name.lower().replace("_", "-"))
        if found is None:
            raise ValueError(f"unknown prompt style {name!r}; known styles: {', '.join(sorted(STYLES))}")
        return found()

    @classmethod
    def from_config(cls, config) -> "PromptStyle":
        """The style for a model config, looked up by `config.name` in `MODEL_STYLES`.

        Args:
            config: a `litgpt.Config` (or anything with a `name`).
        """
        return cls.from_name(style_name_for_model(getattr(config, "name", "") or ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.init_args() == other.init_args()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(type(self))


def _as_messages(prompt: Union[str, Sequence[Message]], sys_prompt: Optional[str]) -> list[Message]:
    """`apply`'s arguments as a conversation: [system?, user] for a str, the list itself (after an optional
    system message) for a list of messages."""
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
        messages = check_messages(prompt)
    else:
        raise ValueError(f"prompt must be a str or a list of messages, got {type(prompt).__name__}")
    if sys_prompt is not None and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": sys_prompt}] + list(messages)
    return messages


def _fill(template: str, content: str) -> str:
    # str.replace, not str.format: a message may hold braces
    return template.replace("{content}", content)


def _token_id(tokenizer, token: str) -> Optional[int]:
    try:
        return tokenizer.token_to_id(token)
    except (ValueError, KeyError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------------------
# the styles


class Default(PromptStyle):
    """The plain style for base models: the prompt as it is (a system prompt, if given, and a blank line first)."""

    name = "default"


class Alpaca(PromptStyle):
    """The Alpaca instruction format (an optional `input` field adds context); the system prompt replaces the
    preamble."""

    name = "alpaca"
    default_system = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    )
    with_input_system: ClassVar[str] = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request."
    )
    system_format = "{content}\n\n"
    user_format = "### Instruction:\n{content}\n\n"
    assistant_format = "### Response:\n{content}\n\n"
    generation_prompt = "### Response:\n"

    def apply(self, prompt: str, *, sys_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The Alpaca prompt; `input=...` adds the "### Input:" section (and the matching preamble)."""
        text = kwargs.get("input") or ""
        if not text or not isinstance(prompt, str):
            return super().apply(prompt, sys_prompt=sys_prompt)
        system = self.with_input_system if sys_prompt is None else sys_prompt
        return f"{system}\n\n### Instruction:\n{prompt}\n\n### Input:\n{text}\n\n### Response:\n"


class Llama2(PromptStyle):
    """Llama 2 chat and CodeLlama Instruct: `[INST] ... [/INST]`, the system prompt in `<<SYS>>` inside the
    first instruction."""

    name = "llama2"
    system_format = None
    merge_format = "<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
    user_format = "[INST] {content} [/INST]"
    assistant_format = " {content} </s><s>"


class CodeLlama(Llama2):
    """CodeLlama Instruct (the Llama 2 chat format)."""

    name = "codellama"


class Llama3(PromptStyle):
    """Llama 3 / 3.1 / 3.2 / 3.3 Instruct: header tokens around each role, `<|eot_id|>` after each turn."""

    name = "llama3"
    system_format = "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>"
    user_format = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
    assistant_format = "<|start_header_id|>assistant<|end_header_id|>\n\n{content}<|eot_id|>"
    generation_prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    end_tokens = ("<|eot_id|>", "<|end_of_text|>")


class Mistral(PromptStyle):
    """Mistral / Mixtral Instruct: `[INST] ... [/INST]`; a system prompt goes before the first instruction."""

    name = "mistral"
    system_format = None
    user_format = "[INST] {content} [/INST]"
    assistant_format = "{content}</s>"


class ChatML(PromptStyle):
    """ChatML: `<|im_start|>role\\n...<|im_end|>` (Qwen, SmolLM2, Salamandra and others)."""

    name = "chatml"
    system_format = "<|im_start|>system\n{content}<|im_end|>\n"
    user_format = "<|im_start|>user\n{content}<|im_end|>\n"
    assistant_format = "<|im_start|>assistant\n{content}<|im_end|>\n"
    generation_prompt = "<|im_start|>assistant\n"
    end_tokens = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, system_message: Optional[str] = None) -> None:
        """
        Args:
            system_message: system prompt used when none is given (None: the style's own default, if any).
        """
        self.system_message = system_message
        if system_message is not None:
            self.default_system = system_message

    def init_args(self) -> dict[str, Any]:
        return {} if self.system_message is None else {"system_message": self.system_message}


class Qwen2_5(ChatML):
    """Qwen2.5 (and Coder) Instruct: ChatML with Qwen's default system prompt."""

    name = "qwen2.5"
    default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


class Qwen2_5_Math(ChatML):
    """Qwen2.5-Math Instruct: ChatML with a step-by-step default system prompt."""

    name = "qwen2.5-math"
    default_system = "Please reason step by step, and put your final answer within \\boxed{}."


class QwQ(ChatML):
    """QwQ-32B: ChatML; the answer opens with a `<think>` block."""

    name = "qwq"
    generation_prompt = "<|im_start|>assistant\n<think>\n"


class QwQPreview(ChatML):
    """QwQ-32B-Preview: ChatML with its default system prompt."""

    name = "qwq-preview"
    default_system = (
        "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should think step-by-step."
    )


class Qwen3(ChatML):
    """Qwen3 (the chat models; the `-Base` ones are plain): ChatML."""

    name = "qwen3"


class SmolLM2(ChatML):
    """SmolLM2 Instruct: ChatML with SmolLM's default system prompt."""

    name = "smollm2"
    default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class Salamandra(ChatML):
    """Salamandra instruct: ChatML."""

    name = "salamandra"


class Gemma(PromptStyle):
    """Gemma / Gemma 2 / Gemma 3 instruction-tuned: `<start_of_turn>user|model ... <end_of_turn>`; no system
    role (a system prompt goes before the first user message)."""

    name = "gemma"
    system_format = None
    user_format = "<start_of_turn>user\n{content}<end_of_turn>\n"
    assistant_format = "<start_of_turn>model\n{content}<end_of_turn>\n"
    generation_prompt = "<start_of_turn>model\n"
    end_tokens = ("<end_of_turn>",)


class CodeGemma(Gemma):
    """CodeGemma instruction-tuned (the Gemma format)."""

    name = "codegemma"


class Phi2(PromptStyle):
    """Phi-2: `Instruct: ...\\nOutput:`."""

    name = "phi-2"
    system_format = "{content}\n"
    user_format = "Instruct: {content}\n"
    assistant_format = "Output: {content}\n"
    generation_prompt = "Output:"


class Phi3(PromptStyle):
    """Phi-3 / Phi-3.5: `<|user|>\\n...<|end|>\\n<|assistant|>\\n`."""

    name = "phi-3"
    default_system = "You are a helpful assistant."
    system_format = "<|system|>\n{content}<|end|>\n"
    user_format = "<|user|>\n{content}<|end|>\n"
    assistant_format = "<|assistant|>\n{content}<|end|>\n"
    generation_prompt = "<|assistant|>\n"
    end_tokens = ("<|end|>", "<|endoftext|>")


class Phi4(PromptStyle):
    """Phi-4: ChatML-like with `<|im_sep|>` after the role."""

    name = "phi-4"
    system_format = "<|im_start|>system<|im_sep|>{content}<|im_end|>"
    user_format = "<|im_start|>user<|im_sep|>{content}<|im_end|>"
    assistant_format = "<|im_start|>assistant<|im_sep|>{content}<|im_end|>"
    generation_prompt = "<|im_start|>assistant<|im_sep|>"
    end_tokens = ("<|im_end|>", "<|endoftext|>")


class Falcon(PromptStyle):
    """Falcon instruct / chat: `User: ...\\nFalcon:`; the answer ends where the next `User:` line starts."""

    name = "falcon"
    system_format = "System: {content}\n"
    user_format = "User: {content}\n"
    assistant_format = "Falcon: {content}\n"
    generation_prompt = "Falcon:"
    stop_strings = ("\nUser:",)


class Falcon3(PromptStyle):
    """Falcon3 Instruct: `<|user|>\\n...\\n<|assistant|>\\n`."""

    name = "falcon3"
    system_format = "<|system|>\n{content}\n"
    user_format = "<|user|>\n{content}\n"
    assistant_format = "<|assistant|>\n{content}<|endoftext|>\n"
    generation_prompt = "<|assistant|>\n"
    end_tokens = ("<|endoftext|>",)


class StableLMAlpha(PromptStyle):
    """StableLM tuned alpha: `<|SYSTEM|>...<|USER|>...<|ASSISTANT|>` with its default system prompt."""

    name = "stablelm-alpha"
    default_system = (
        "# StableLM Tuned (Alpha version)\n- StableLM is a helpful and harmless open-source AI language model "
        "developed by StabilityAI.\n- StableLM is excited to be able to help the user, but will refuse to do "
        "anything that could be considered harmful to the user.\n- StableLM is more than just an information "
        "source, StableLM is also able to write poetry, short stories, and make jokes.\n- StableLM will refuse "
        "to participate in anything that could harm a human."
    )
    system_format = "<|SYSTEM|>{content}"
    user_format = "<|USER|>{content}"
    assistant_format = "<|ASSISTANT|>{content}"
    generation_prompt = "<|ASSISTANT|>"
    end_tokens = ("<|SYSTEM|>", "<|USER|>", "<|ASSISTANT|>")


class StableLMZephyr(PromptStyle):
    """StableLM Zephyr: `<|user|>\\n...<|endoftext|>\\n<|assistant|>\\n`."""

    name = "stablelm-zephyr"
    system_format = "<|system|>\n{content}<|endoftext|>\n"
    user_format = "<|user|>\n{content}<|endoftext|>\n"
    assistant_format = "<|assistant|>\n{content}<|endoftext|>\n"
    generation_prompt = "<|assistant|>\n"
    end_tokens = ("<|endoftext|>",)


class StableCode(PromptStyle):
    """StableCode instruct: `###Instruction\\n...###Response\\n`."""

    name = "stablecode"
    system_format = "{content}\n"
    user_format = "###Instruction\n{content}"
    assistant_format = "###Response\n{content}\n"
    generation_prompt = "###Response\n"


class TinyLlama(PromptStyle):
    """TinyLlama chat (the Zephyr format): `<|user|>\\n...</s>\\n<|assistant|>\\n`."""

    name = "tinyllama"
    system_format = "<|system|>\n{content}</s>\n"
    user_format = "<|user|>\n{content}</s>\n"
    assistant_format = "<|assistant|>\n{content}</s>\n"
    generation_prompt = "<|assistant|>\n"


class OLMo(PromptStyle):
    """OLMo Instruct and OLMo-2 SFT / DPO / Instruct (the Tülu format): `<|user|>\\n...\\n<|assistant|>\\n`."""

    name = "olmo"
    system_format = "<|system|>\n{content}\n"
    user_format = "<|user|>\n{content}\n"
    assistant_format = "<|assistant|>\n{content}<|endoftext|>\n"
    generation_prompt = "<|assistant|>\n"
    end_tokens = ("<|endoftext|>",)


class FLAN(Alpaca):
    """FLAN instruction tuning (`--data FLAN`): the Alpaca format without the `input` section."""

    name = "flan"

    def apply(self, prompt: Union[str, list[Message]], *, sys_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The Alpaca prompt without an "### Input:" section (an `input` field is ignored)."""
        return PromptStyle.apply(self, prompt, sys_prompt=sys_prompt)


class Longform(FLAN):
    """LongForm instruction tuning (`--data LongForm`): FLAN's format with Alpaca's with-input preamble."""

    name = "longform"
    default_system = Alpaca.with_input_system


class Phi1(PromptStyle):
    """Phi-1 / Phi-1.5: the question, a blank line, then `Answer:`."""

    name = "phi-1"
    system_format = "{content}\n\n"
    user_format = "{content}\n\n"
    assistant_format = "Answer: {content}\n\n"
    generation_prompt = "Answer:"
    end_tokens = ("<|endoftext|>",)


class Phi4Mini(PromptStyle):
    """Phi-4-mini instruct: `<|user|>...<|end|><|assistant|>` (no newlines)."""

    name = "phi-4-mini"
    system_format = "<|system|>{content}<|end|>"
    user_format = "<|user|>{content}<|end|>"
    assistant_format = "<|assistant|>{content}<|end|>"
    generation_prompt = "<|assistant|>"
    end_tokens = ("<|end|>", "<|endoftext|>")


class Phi4MiniReasoning(Phi4Mini):
    """Phi-4-mini-reasoning: Phi-4-mini's format with its math-expert default system prompt."""

    name = "phi-4-mini-reasoning"
    default_system = "Your name is Phi, an AI math expert developed by Microsoft."


class Phi4Reasoning(Phi4):
    """Phi-4-reasoning (and -plus): Phi-4's format with its think-then-solve default system prompt."""

    name = "phi-4-reasoning"
    default_system = (
        "You are Phi, a language model trained by Microsoft to help users. Your role as an assistant involves "
        "thoroughly exploring questions through a systematic thinking process before providing the final precise "
        "and accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, "
        "exploration, reassessment, reflection, backtracing, and iteration to develop well-considered thinking "
        "process. Please structure your response into two main sections: Thought and Solution using the specified "
        "format: <think> {Thought section} </think> {Solution section}. In the Thought section, detail your "
        "reasoning process in steps. Each step should include detailed considerations such as analysing "
        "questions, summarizing relevant findings, brainstorming new ideas, verifying the accuracy of the current "
        "steps, refining any errors, and revisiting previous steps. In the Solution section, based on various "
        "attempts, explorations, and reflections from the Thought section, systematically present the final "
        "solution that you deem correct. The Solution section should be logical, accurate, and concise and "
        "detail necessary steps needed to reach the conclusion. Now, try to solve the following question through "
        "the above guidelines:"
    )


class FreeWilly2(PromptStyle):
    """FreeWilly2 (Stable Beluga 2): `### System:` / `### User:` / `### Assistant:` sections."""

    name = "freewilly2"
    default_system = "This is a system prompt, please behave and help the user."
    system_format = "### System:\n{content}\n\n"
    user_format = "### User:\n{content}\n\n"
    assistant_format = "### Assistant:\n{content}\n\n"
    generation_prompt = "### Assistant:\n"


class Platypus(PromptStyle):
    """Platypus 2: `### Instruction:` then `### Response:`, each followed by a blank line."""

    name = "platypus"
    user_format = "### Instruction:\n\n{content}\n\n"
    assistant_format = "### Response:\n{content}\n\n"
    generation_prompt = "### Response:\n"


class Llama2FunctionCalling(PromptStyle):
    """Llama-2-7b-chat-hf-function-calling-v2: the available functions as JSON, then a Llama 2 instruction."""

    name = "llama2-function-calling"
    functions: ClassVar[str] = (
        '{"function": "search_bing", "description": "Search the web for content on Bing. This allows users to '
        'search online/the internet/the web for content.", "arguments": [{"name": "query", "type": "string", '
        '"description": "The search query string"}]}'
    )
    default_system = (
        "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible. "
        "Your only response should be JSON formatted functions"
    )
    system_format = None
    merge_format = "<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
    user_format = "[INST]{content}[/INST]\n\n"
    assistant_format = "{content}</s><s>"

    prefix = f"<FUNCTIONS>{functions}</FUNCTIONS>\n\n"


class R1Base(PromptStyle):
    """DeepSeek-R1 and its distilled models: `<｜User｜>...<｜Assistant｜>`; a system prompt goes first as is."""

    name = "r1"
    system_format = "{content}"
    user_format = "<｜User｜>{content}"
    assistant_format = "<｜Assistant｜>{content}<｜end▁of▁sentence｜>"
    generation_prompt = "<｜Assistant｜>"
    end_tokens = ("<｜end▁of▁sentence｜>",)


# End-of-turn tokens a chat template may use; those the template mentions and the vocabulary holds stop generation.
_TEMPLATE_END_TOKENS = (
    "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>",
    "<|end_of_turn|>", "<|eom_id|>",
)


class ChatTemplate(PromptStyle):
    """A Jinja chat template (the `chat_template` of a Hugging Face `tokenizer_config.json`), rendered with
    `jinja2` (the `chat` extra: `pip install 'litgpt[chat]'`)."""

    name = "chat-template"

    def __init__(self, template: str, bos_token: str = "", eos_token: str = "") -> None:
        """
        Args:
            template: the Jinja source.
            bos_token, eos_token: the values of `bos_token` / `eos_token` inside the template.
        """
        if not isinstance(template, str) or not template.strip():
            raise ValueError("a chat template must be a non-empty string")
        self.template = template
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self._compiled = None

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Optional["ChatTemplate"]:
        """The chat template of a tokenizer's folder (tokenizer_config.json's `chat_template`, or a
        `chat_template.jinja` / `chat_template.json` file), None when it has none.

        Args:
            tokenizer: a `litgpt.Tokenizer`.
        """
        config = getattr(tokenizer, "tokenizer_config", {}) or {}
        template = _pick_template(config.get("chat_template"))
        folder = getattr(tokenizer, "checkpoint_dir", None)
        if template is None and folder is not None:
            jinja_file, json_file = Path(folder) / "chat_template.jinja", Path(folder) / "chat_template.json"
            if jinja_file.is_file():
                template = jinja_file.read_text(encoding="utf-8")
            elif json_file.is_file():
                import json

                try:
                    template = _pick_template(json.loads(json_file.read_text(encoding="utf-8")).get("chat_template"))
                except (json.JSONDecodeError, AttributeError) as err:
                    raise ValueError(f"{json_file} is not a valid chat template file ({err})") from None
        if template is None:
            return None

        def token_text(key: str, token_id: Optional[int]) -> str:
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
            if token_id is not None:
                try:
                    return tokenizer.id_to_token(token_id)
                except (ValueError, AttributeError):
                    return ""
            return ""

        return cls(template, token_text("bos_token", getattr(tokenizer, "bos_id", None)),
                   token_text("eos_token", getattr(tokenizer, "eos_id", None)))

    def _jinja(self):
        if self._compiled is None:
            try:
                import jinja2
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError:
                raise ImportError(
                    "rendering a chat template needs the jinja2 package: pip install 'litgpt[chat]'"
                ) from None

            def raise_exception(message: str) -> None:
                raise ValueError(f"the chat template rejected the conversation: {message}")

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            env.filters["tojson"] = _tojson
            try:
                self._compiled = env.from_string(self.template)
            except jinja2.TemplateSyntaxError as err:
                raise ValueError(f"the chat template is not valid Jinja (line {err.lineno}: {err.message})") from None
        return self._compiled

    def apply_conversation(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Renders the template with `messages`, `add_generation_prompt`, `bos_token` and `eos_token`."""
        messages = check_messages(messages)
        return self._jinja().render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def apply(self, prompt: str, *, sys_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The template rendered for one user message (after an optional system message)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a str, got {type(prompt).__name__}")
        messages = ([{"role": "system", "content": sys_prompt}] if sys_prompt is not None else [])
        return self.apply_conversation(messages + [{"role": "user", "content": prompt}])

    def stop_tokens(self, tokenizer) -> tuple[list[int], ...]:
        """The tokenizer's stop tokens plus the common end-of-turn tokens the template uses."""
        ids = [s[0] for s in super().stop_tokens(tokenizer)]
        for token in _TEMPLATE_END_TOKENS:
            if token in self.template:
                found = _token_id(tokenizer, token)
                if found is not None and found not in ids:
                    ids.append(found)
        return tuple([i] for i in ids)

    def init_args(self) -> dict[str, Any]:
        return {"template": self.template, "bos_token": self.bos_token, "eos_token": self.eos_token}

    def __repr__(self) -> str:
        return f"ChatTemplate(<{len(self.template)} characters>)"


def _pick_template(value: Any) -> Optional[str]:
    """tokenizer_config.json's `chat_template`: a string, or a list of {"name", "template"} (the "default" one)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) and chosen.strip() else None
    return None


def _tojson(value: Any, indent: Optional[int] = None) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=indent)


# ------------------------------------------------------------------------------------------------------------
# registry of styles and the model table

STYLES: dict[str, type[PromptStyle]] = {
    cls.name: cls
    for cls in (
        Default, Alpaca, FLAN, Longform, Llama2, Llama2FunctionCalling, CodeLlama, Llama3, Mistral, ChatML,
        Qwen2_5, Qwen2_5_Math, QwQ, QwQPreview, Qwen3, SmolLM2, Salamandra, Gemma, CodeGemma, Phi1, Phi2, Phi3,
        Phi4, Phi4Reasoning, Phi4Mini, Phi4MiniReasoning, Falcon, Falcon3, FreeWilly2, Platypus, StableLMAlpha,
        StableLMZephyr, StableCode, TinyLlama, OLMo, R1Base,
    )
}
"""Style name -> class (ChatTemplate is not here: it needs a template)."""

_STYLES_BY_NAME: dict[str, type[PromptStyle]] = {
    **{cls.__name__.lower(): cls for cls in STYLES.values()},
    **STYLES,
}

MODEL_STYLES: list[tuple[str, str]] = [
    # (regular expression matched against the start of Config.name, style name); the first match wins
    (r"Llama-2-.*-function-calling", "llama2-function-calling"),
    (r"Llama-2-.*-chat", "llama2"),
    (r"CodeLlama-.*-Instruct", "codellama"),
    (r"Llama-3.*-Instruct", "llama3"),
    (r"Mi[sx]tral-.*-Instruct", "mistral"),
    (r"CodeGemma-.*-it$", "codegemma"),
    (r"Gemma-.*-it$", "gemma"),
    (r"phi-1", "phi-1"),
    (r"phi-2$", "phi-2"),
    (r"Phi-3", "phi-3"),
    (r"(?i)phi-4-mini-reasoning", "phi-4-mini-reasoning"),
    (r"(?i)phi-4-mini", "phi-4-mini"),
    (r"(?i)phi-4-reasoning", "phi-4-reasoning"),
    (r"(?i)phi-4", "phi-4"),
    (r"Qwen2\.5-Math-.*-Instruct", "qwen2.5-math"),
    (r"Qwen2\.5-.*-Instruct", "qwen2.5"),
    (r"QwQ-.*-Preview", "qwq-preview"),
    (r"QwQ-", "qwq"),
    (r"Qwen3-(?!.*-Base$)", "qwen3"),
    (r"OLMo-.*-(Instruct|SFT|DPO)", "olmo"),
    (r"falcon-.*-(instruct|chat)$", "falcon"),
    (r"Falcon3-.*-Instruct", "falcon3"),
    (r"SmolLM2-.*-Instruct", "smollm2"),
    (r"tiny-llama-.*-chat", "tinyllama"),
    (r"salamandra-.*-instruct", "salamandra"),
    (r"stablelm-tuned-alpha", "stablelm-alpha"),
    (r"stablelm-zephyr", "stablelm-zephyr"),
    (r"stablecode-instruct", "stablecode"),
    (r"FreeWilly2", "freewilly2"),
    (r".*Platypus", "platypus"),
    (r".*R1", "r1"),
]
"""Which style a registry model uses, by name; names that match nothing (base models) use "default"."""


prompt_styles = STYLES
"""LitGPT's name for the registry: style name -> class."""


def model_name_to_prompt_style(model_name: str) -> PromptStyle:
    """The style (an instance) `MODEL_STYLES` gives `model_name`; `Default` when no entry matches.

    Args:
        model_name: a `Config.name` such as "Llama-3.2-1B-Instruct".
    """
    return PromptStyle.from_name(style_name_for_model(model_name))


def style_name_for_model(model_name: str) -> str:
    """The style name `MODEL_STYLES` gives `model_name` ("default" when no entry matches).

    Args:
        model_name: a `Config.name` such as "Llama-3.2-1B-Instruct".
    """
    for pattern, style in MODEL_STYLES:
        if re.match(pattern, model_name):
            return style
    return "default"


# ------------------------------------------------------------------------------------------------------------
# prompt_style.yaml


def has_prompt_style(checkpoint_dir: Union[str, Path]) -> bool:
    """Whether `checkpoint_dir` holds a `prompt_style.yaml`.

    Args:
        checkpoint_dir: a checkpoint folder.
    """
    return (Path(checkpoint_dir) / PROMPT_STYLE_FILE).is_file()


def save_prompt_style(style: Union[str, PromptStyle], checkpoint_dir: Union[str, Path]) -> Path:
    """Writes `prompt_style.yaml` (`class_path: litgpt.prompts.<Class>`, LitGPT's format) atomically.

    Args:
        style: a `PromptStyle` or a style name.
        checkpoint_dir: the folder to write into (created if missing).

    Returns:
        The path of the file.
    """
    from litgpt.utils import atomic_path

    if isinstance(style, str):
        style = PromptStyle.from_name(style)
    if not isinstance(style, PromptStyle):
        raise ValueError(f"style must be a PromptStyle or a style name, got {type(style).__name__}")
    cls = type(style)
    data: dict[str, Any] = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}
    args = style.init_args()
    if args:
        data["init_args"] = args
    path = Path(checkpoint_dir) / PROMPT_STYLE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def load_prompt_style(checkpoint_dir: Union[str, Path]) -> PromptStyle:
    """Reads `checkpoint_dir/prompt_style.yaml` (ours or LitGPT's).

    `class_path` names a class of `litgpt.prompts` (e.g. `litgpt.prompts.Llama3`) or, for a custom style,
    an importable `module.Class` that subclasses `PromptStyle`; `init_args` holds its constructor arguments.

    Args:
        checkpoint_dir: a checkpoint folder holding `prompt_style.yaml`.
    """
    path = Path(checkpoint_dir) / PROMPT_STYLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    from litgpt.utils import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("class_path"), str):
        raise ValueError(f"{path} must hold a mapping with a 'class_path' (e.g. class_path: litgpt.prompts.Llama3)")
    class_path = data["class_path"]
    init_args = data.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"{path}: init_args must be a mapping, got {type(init_args).__name__}")
    module_name, _, class_name = class_path.rpartition(".")
    if module_name in ("litgpt.prompts", ""):
        cls = globals().get(class_name)
        if not (isinstance(cls, type) and issubclass(cls, PromptStyle)):
            raise ValueError(
                f"{path}: unknown prompt style {class_path!r}; known: "
                + ", ".join(sorted(c.__name__ for c in STYLES.values()) + ["ChatTemplate"])
            )
    else:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{path}: cannot import prompt style {class_path!r} ({err})") from None
        if not (isinstance(cls, type) and issubclass(cls, PromptStyle)):
            raise ValueError(f"{path}: {class_path!r} is not a litgpt.prompts.PromptStyle subclass")
    try:
        return cls(**init_args)
    except TypeError as err:
        raise ValueError(f"{path}: bad init_args for {class_path} ({err})") from None


def resolve_prompt_style(
    checkpoint_dir: Optional[Union[str, Path]], config=None, tokenizer=None, use_chat_template: bool = False
) -> PromptStyle:
    """The style for a checkpoint: its `prompt_style.yaml`, else (with `use_chat_template`) the tokenizer's
    chat template, else `MODEL_STYLES` by `config.name`.

    Args:
        checkpoint_dir: the checkpoint folder (None: skip the yaml).
        config: the model's `Config` (for the table lookup).
        tokenizer: the `Tokenizer` (for its chat template).
        use_chat_template: consider the tokenizer's chat template (chat does, generate does not).
    """
    if checkpoint_dir is not None and has_prompt_style(checkpoint_dir):
        return load_prompt_style(checkpoint_dir)
    if use_chat_template and tokenizer is not None:
        template = ChatTemplate.from_tokenizer(tokenizer)
        if template is not None:
            return template
    return PromptStyle.from_config(config) if config is not None else Default()
