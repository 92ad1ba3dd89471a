"""The `litgpt chat` verb: an interactive, streamed conversation that remembers the earlier turns.

Each turn renders the whole conversation (system prompt, earlier turns, the new message) with the
checkpoint's prompt style or its tokenizer's chat template, and generates the answer token by token. When
the conversation no longer fits the context, the oldest turns are dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Optional, TextIO

import torch

from litgpt.generate.base import generate_fn, litgpt_sampling
from litgpt.generate.engine import Generation, TextRow, check_sampling_args, model_context
from litgpt.prompts import Message, PromptStyle

QUIT_COMMANDS = ("/quit", "/exit", "!quit", "!exit")
RESET_COMMANDS = ("/reset", "!reset")
SEND_COMMAND = "/send"


class ChatSession:
    """A conversation with a model: formats the history with a prompt style, streams each answer and keeps it.

    Attributes:
        history: the user / assistant messages so far, oldest first (the system prompt is kept apart).
        last_generation: the `Generation` of the latest answer (its timings and token counts).
        dropped_turns: how many of the oldest turns the latest message pushed out of the context.
    """

    def __init__(
        self,
        llm,
        prompt_style: Optional[PromptStyle] = None,
        *,
        sys_prompt: Optional[str] = None,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_k: Optional[int] = 50,
        top_p: float = 1.0,
        stop: Optional[list[str]] = None,
    ) -> None:
        """
        Args:
            llm: a `litgpt.LLM` already on its device (`distribute`).
            prompt_style: how turns are formatted (default: the LLM's style).
            sys_prompt: a system prompt for the whole conversation (default: the style's, if any).
            max_new_tokens: at most this many tokens per answer; also the room kept free in the context.
            temperature, top_k, top_p: sampling (see `LLM.generate`).
            stop: strings that end an answer (default: the style's).
        """
        check_sampling_args(temperature, top_k, top_p, max_new_tokens)
        if llm.device is None:
            raise RuntimeError("the model is not on a device yet: call llm.distribute(...) first")
        self.llm = llm
        self.prompt_style = prompt_style or llm.prompt_style
        self.sys_prompt = sys_prompt
        self.max_new_tokens = max_new_tokens
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        self.stop_strings = list(self.prompt_style.stop_strings if stop is None else stop)
        self.stop_tokens = self.prompt_style.stop_tokens(llm.tokenizer)
        self.history: list[Message] = []
        self.last_generation: Optional[Generation] = None
        self.dropped_turns = 0
        self._warned_budget = False

    @property
    def reserve(self) -> int:
        """Room kept free for the answer when older turns are dropped: max_new_tokens, but at most half the
        context, so a budget larger than the context does not push the whole history out on every turn."""
        return max(1, min(self.max_new_tokens, self.context // 2))

    @property
    def context(self) -> int:
        """Tokens the model can hold (prompt + answer)."""
        return model_context(self.llm.model, self.llm.fixed_kv_cache_size)

    def reset(self) -> None:
        """Forgets the conversation (the system prompt stays)."""
        self.history.clear()

    def messages(self, message: str) -> list[Message]:
        """The conversation to render for a new user `message`: system prompt, history, the message.

        Args:
            message: the user's new message.
        """
        system = [{"role": "system", "content": self.sys_prompt}] if self.sys_prompt is not None else []
        return system + self.history + [{"role": "user", "content": message}]

    def encode(self, message: str) -> torch.Tensor:
        """The token ids of the conversation with `message` appended, after dropping the oldest turns until
        the prompt leaves `max_new_tokens` free (or no older turn is left). Sets `dropped_turns`.

        Args:
            message: the user's new message.
        """
        dropped = 0
        while True:
            text = self.prompt_style.apply_conversation(self.messages(message))
            ids = self.llm.tokenizer.encode(text, device=self.llm.device)
            if ids.numel() + self.reserve <= self.context or not self.history:
                break
            del self.history[:2]  # the oldest user message and its answer
            dropped += 1
        self.dropped_turns = dropped
        if ids.numel() >= self.context:
            raise ValueError(
                f"the message is too long: the prompt is {ids.numel()} tokens and the model's context holds "
                f"{self.context}"
            )
        return ids

    def respond(self, message: str) -> Iterator[str]:
        """Streams the answer to `message` as text pieces; once it is complete, both join the history.

        Args:
            message: the user's new message.
        """
        ids = self.encode(message)
        budget = min(self.max_new_tokens, self.context - ids.numel())
        if budget < self.max_new_tokens and not self._warned_budget:
            self._warned_budget = True
            print(f"(note: max_new_tokens={self.max_new_tokens} is more than the model's context of {self.context} "
                  f"tokens leaves after the conversation; answers stop at the room left)", file=sys.stderr)
        row = TextRow(self.llm.tokenizer, self.stop_tokens, self.stop_strings)
        generation = Generation(
            self.llm.model, [ids], [row], budget, **self.sampling, step_fn=self.llm.step_fn,
            fixed_cache_len=self.llm.fixed_kv_cache_size, bucket_cache=self.llm.step_fn is not None,
        )
        self.last_generation = generation
        return self._stream(generation, row, message)

    def _stream(self, generation: Generation, row: TextRow, message: str) -> Iterator[str]:
        for _, piece in generation:
            yield piece
        self.history.append({"role": "user", "content": message})
        self.history.append({"role": "assistant", "content": row.text.strip()})


def read_message(stream: TextIO, multiline: bool, prompt: str, out: TextIO) -> Optional[str]:
    """Reads the user's next message; None at the end of the input.

    Args:
        stream: where the user types (sys.stdin).
        multiline: read lines until one holding only `/send` (or the end of the input); otherwise one line.
        prompt: shown before the message.
        out: where the prompt is shown.
    """
    interactive = stream is sys.stdin and stream.isatty()

    def read_line(shown: str) -> Optional[str]:
        if interactive:
            try:
                return input(shown)
            except EOFError:
                return None
        out.write(shown)
        out.flush()
        line = stream.readline()
        return None if line == "" else line.rstrip("\n")

    first = read_line(prompt)
    if first is None or not multiline:
        return first
    if first.strip() in QUIT_COMMANDS + RESET_COMMANDS:
        return first
    lines = [first]
    while lines[-1].strip() != SEND_COMMAND:
        line = read_line("")
        if line is None:
            break
        lines.append(line)
    if lines[-1].strip() == SEND_COMMAND:
        lines.pop()
    return "\n".join(lines)


def interact(
    session: ChatSession, stream: TextIO, out: TextIO, err: TextIO, multiline: bool = False, name: str = "the model"
) -> int:
    """The chat loop: reads messages, handles `/reset` and `/quit` / `/exit` / end of input, streams answers.

    Ctrl-C during an answer stops that answer (it is not added to the history); at the prompt it ends the chat.

    Args:
        session: the conversation.
        stream: the user's input.
        out: where the conversation is written.
        err: where notes and timings go.
        multiline: messages span several lines and end with a line holding only `/send`.
        name: the model's name, for the banner.

    Returns:
        The number of answers given.
    """
    ending = f"end a message with a line holding only {SEND_COMMAND}" if multiline else "press Enter to send"
    print(f"Now chatting with {name}: {ending}; /reset clears the history, /quit, /exit or Ctrl-D ends.", file=out)
    answers = 0
    while True:
        try:
            message = read_message(stream, multiline, ">> User: ", out)
        except KeyboardInterrupt:
            message = None
        if message is None:
            out.write("\n")
            break
        command = message.strip()
        if not command:
            continue
        if command in QUIT_COMMANDS:
            break
        if command in RESET_COMMANDS:
            session.reset()
            print("(conversation cleared)", file=out)
            continue
        try:
            pieces = session.respond(message)
        except ValueError as error:
            print(f"error: {error}", file=err)
            continue
        if session.dropped_turns:
            print(f"(dropped the {session.dropped_turns} oldest turn(s) to fit the context)", file=err)
        out.write(">> Assistant: ")
        out.flush()
        try:
            for piece in pieces:
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:  # Ctrl-C stops this answer (it is not kept) and the chat goes on
            print("\n(answer interrupted)", file=out)
            continue
        out.write("\n")
        out.flush()
        answers += 1
        g = session.last_generation
        print(
            f"Time for inference: {g.seconds:.02f} sec total, {g.tokens_per_second:.02f} tokens/sec "
            f"({g.tokens_generated} tokens)",
            file=err,
        )
    return answers


# ------------------------------------------------------------------------------------------------------------
# LitGPT's names (thin wrappers over the engine)


def generate(
    model,
    prompt: torch.Tensor,
    max_returned_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    stop_tokens: tuple[list[int], ...] = (),
) -> Iterator[torch.Tensor]:
    """LitGPT's `litgpt.chat.base.generate`: yields each new token as a (1,) tensor, without the prompt and
    without the stop sequence (`litgpt.generate.base.generate_fn` with include_prompt and include_eos off)."""
    return generate_fn(
        model, prompt, max_returned_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        stop_tokens=stop_tokens, include_prompt=False, include_eos=False,
    )


def process_prompt(
    prompt, model, tokenizer, prompt_style, fabric, temperature, max_new_tokens, top_k, top_p, stop_tokens
) -> None:
    """LitGPT's `process_prompt`: answers one prompt (formatted with `prompt_style`), streaming the text after
    ">> Reply: " through `fabric.print` (plain `print` when fabric is None), then a timing line on stderr.

    Args:
        prompt: the user's message.
        model: the model, in eval mode (the KV cache is set up as needed).
        tokenizer: a `litgpt.Tokenizer`.
        prompt_style: a `litgpt.prompts.PromptStyle`.
        fabric: a Lightning Fabric (its `device` and `print` are used) or None.
        temperature, max_new_tokens, top_k, top_p: sampling (top_p=0: greedy, as in LitGPT).
        stop_tokens: id sequences that end the answer.
    """
    say = print if fabric is None else fabric.print
    device = model.lm_head.weight.device if fabric is None else fabric.device
    ids = tokenizer.encode(prompt_style.apply(prompt=prompt), device=device)
    row = TextRow(tokenizer, stop_tokens)
    generation = Generation(model, [ids], [row], max_new_tokens, **litgpt_sampling(temperature, top_k, top_p))
    say(">> Reply: ", end="")
    for _, piece in generation:
        say(piece, end="", flush=True)
    say(
        f"\nTime for inference: {generation.seconds:.02f} sec total, {generation.tokens_per_second:.02f} tokens/sec,"
        f" {generation.tokens_generated} tokens",
        file=sys.stderr,
    )
    say()


def main(
    checkpoint_dir: Path,
    *,
    sys_prompt: Optional[str] = None,
    max_new_tokens: int = 512,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    temperature: float = 0.8,
    stop: Optional[list[str]] = None,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    compile: bool = False,
    multiline: bool = False,
    access_token: Optional[str] = None,
    seed: Optional[int] = None,
) -> None:
    """Chat with a model: answers are streamed and the conversation is remembered.

    Turns are formatted with the checkpoint's prompt_style.yaml, else the chat template in its
    tokenizer_config.json (rendered with jinja2: pip install 'litgpt[chat]'), else its family's prompt style.
    When the conversation outgrows the context, the oldest turns are dropped. Type /reset to clear the
    history and /quit, /exit or Ctrl-D to end.

    Args:
        checkpoint_dir: A checkpoint folder (lit_model.pth, model_config.yaml and the tokenizer files).
        sys_prompt: A system prompt for the conversation (default: the prompt style's, if any).
        max_new_tokens: At most this many tokens per answer, and never more than the room the conversation leaves
            in the context (a note says so once); up to this much room (at most half the context) is kept free
            by dropping the oldest turns.
        top_k: Sample among the k most likely tokens only (1 is greedy).
        top_p: Sample among the most likely tokens whose probability mass reaches top_p, in (0, 1].
        temperature: Sampling temperature; 0 is greedy decoding.
        stop: Strings that end an answer; default: the prompt style's.
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        precision: 32-true, bf16-true or 16-true. Default: bf16-true on GPUs and CPUs with native bf16,
            else 32-true.
        compile: Compile the decode step with torch.compile (the first answer waits for the compilation).
        multiline: Messages may span several lines; end each with a line holding only /send.
        access_token: Hugging Face token, to download `checkpoint_dir` (a model name) when it is not on disk.
        seed: Random seed for sampling (default: not seeded).
    """
    from litgpt.api import LLM, check_quantize
    from litgpt.precision import check_inference_precision as check_precision
    from litgpt.prompts import resolve_prompt_style
    from litgpt.utils import check_valid_checkpoint_dir

    check_quantize(quantize)
    check_precision(precision)
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if access_token is not None and not Path(checkpoint_dir).is_dir():
        from litgpt.utils import auto_download_checkpoint

        checkpoint_dir = auto_download_checkpoint(str(checkpoint_dir), access_token=access_token)
    check_valid_checkpoint_dir(checkpoint_dir)
    llm = LLM.load(str(checkpoint_dir), distribute=None)
    llm.distribute(precision=precision, quantize=quantize, compile=compile)
    style = resolve_prompt_style(checkpoint_dir, llm.config, llm.tokenizer, use_chat_template=True)
    if seed is not None:
        torch.manual_seed(seed)
    session = ChatSession(
        llm, style, sys_prompt=sys_prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
        top_p=top_p, stop=stop,
    )
    interact(session, sys.stdin, sys.stdout, sys.stderr, multiline=multiline, name=llm.config.name or "the model")
