"""Requests of `litgpt serve`: schemas of the plain API and the OpenAI API, strict input checks, and
`PromptEncoder`, which turns a checked request into jobs for the inference worker.

Every bad request becomes an `ApiError`: an HTTP status (4xx) and a JSON body in OpenAI's error format,
`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`, whose message names the problem in one
line. Checks are strict: a number where a string belongs (or `true` where a number belongs) is an error, not
converted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_CHOICES = 64  # choices one request may ask for (n x number of prompts)
MAX_STOP_STRINGS = 16


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a one-line message (sent as OpenAI's error body)."""

    def __init__(
        self, status: int, message: str, *, code: Optional[str] = None, param: Optional[str] = None,
        type: Optional[str] = None,
    ) -> None:
        """
        Args:
            status: the HTTP status code.
            message: what is wrong, in one line.
            code: a machine-readable code (e.g. "model_not_found").
            param: the request field at fault, if one is.
            type: the error type; default "invalid_request_error" for 4xx, "server_error" for 5xx.
        """
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        """The JSON body: `{"error": {"message", "type", "param", "code"}}`."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------------------------
# request schemas


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


def _check_stop(value: Any) -> Optional[list[str]]:
    """`stop`: None, a string or a list of strings (each non-empty); returned as a list."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
        raise ValueError("must be a string or a list of strings")
    if any(s == "" for s in values):
        raise ValueError("stop strings must not be empty")
    if len(values) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(values)}")
    return values


class _Sampling(_Strict):
    """Sampling fields shared by every endpoint; None means the server's default."""

    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=1)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    stop: Any = None

    @field_validator("stop", mode="plain")
    @classmethod
    def _stop(cls, value: Any) -> Optional[list[str]]:
        return _check_stop(value)


class PredictRequest(_Sampling):
    """Body of the plain API (`POST /predict`). Unknown fields are errors (a misspelt field must not pass)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    prompt: str
    max_new_tokens: Optional[int] = Field(None, ge=1)
    stream: Optional[bool] = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _OpenAIRequest(_Sampling):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logprobs: Any = None
    user: Optional[str] = None
    presence_penalty: Optional[float] = None  # accepted and ignored
    frequency_penalty: Optional[float] = None  # accepted and ignored

    @field_validator("logprobs", mode="plain")
    @classmethod
    def _no_logprobs(cls, value: Any) -> None:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported")
        return None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Any
    name: Optional[str] = None

    @field_validator("content", mode="plain")
    @classmethod
    def _text(cls, value: Any) -> str:
        """A string, or a list of `{"type": "text", "text": ...}` parts (joined)."""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError('only text content is supported: a string or [{"type": "text", "text": "..."}]')
                texts.append(part["text"])
            return "".join(texts)
        raise ValueError(f"must be a string or a list of text parts, got {_json_type(value)}")


class ChatCompletionRequest(_OpenAIRequest):
    """Body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None

    @field_validator("tools", mode="plain")
    @classmethod
    def _no_tools(cls, value: Any) -> None:
        if value not in (None, []):
            raise ValueError("tools are not supported")
        return None

    @field_validator("response_format", mode="plain")
    @classmethod
    def _text_only(cls, value: Any) -> None:
        if value is not None and value != {"type": "text"}:
            raise ValueError('only {"type": "text"} is supported')
        return None


class CompletionRequest(_OpenAIRequest):
    """Body of `POST /v1/completions`: `prompt` is a string, a list of strings, or a list of token ids."""

    prompt: Any
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompts(cls, value: Any) -> list[Union[str, list[int]]]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value:
            if all(isinstance(p, str) for p in value):
                return list(value)
            if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
                return [list(value)]
        raise ValueError("must be a string, a non-empty list of strings, or a non-empty list of token ids")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: Optional[bool]) -> None:
        if value:
            raise ValueError("echo is not supported")
        return None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: Optional[str]) -> None:
        if value:
            raise ValueError("suffix is not supported")
        return None

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: Optional[int]) -> None:
        if value not in (None, 1):
            raise ValueError("best_of is not supported (use n)")
        return None


def parse_request(schema: type[BaseModel], body: bytes) -> Any:
    """Parses a request body with `schema`; an `ApiError` (400) names the first problem.

    Args:
        schema: the request model (e.g. `ChatCompletionRequest`).
        body: the raw body.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_json_type(data)}", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("missing", "value_error", "extra_forbidden"):
            message += f" (got {_short(first.get('input'))})"
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise ApiError(400, f"{field}: {message}" if field else message, param=field, code="invalid_value") from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, BaseModel) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------------------
# from a request to jobs


class PromptEncoder:
    """Turns requests into jobs: prompt style or chat template, tokenization, limits, default settings.

    Attributes:
        name: the served model's name (what `/v1/models` lists).
        aliases: the names a request's `model` may use (the name, the folder's name and its last two parts).
        context: positions per request (prompt + new tokens).
    """

    def __init__(self, checkpoint_dir: Path, config, context: int, defaults: dict) -> None:
        """
        Args:
            checkpoint_dir: the checkpoint folder (tokenizer files, prompt_style.yaml, chat template).
            config: the model's `Config` (its name, vocabulary and prompt style).
            context: positions per request.
            defaults: the server's max_new_tokens, temperature, top_k, top_p.
        """
        from litgpt.prompts import Default, resolve_prompt_style
        from litgpt.tokenizer import Tokenizer

        self.tokenizer = Tokenizer(checkpoint_dir)
        self.plain_style = resolve_prompt_style(checkpoint_dir, config, self.tokenizer)
        self.chat_style = resolve_prompt_style(checkpoint_dir, config, self.tokenizer, use_chat_template=True)
        self.raw_stop_tokens = Default().stop_tokens(self.tokenizer)
        try:  # a chat template that cannot render (jinja2 missing, bad syntax) fails now, not on a request
            self.chat_style.apply_conversation([{"role": "user", "content": "Hello"}])
        except ValueError:
            pass  # the template refuses this conversation; real requests will say why
        self.context, self.defaults, self.vocab_size = context, defaults, config.padded_vocab_size
        folder = checkpoint_dir.resolve()
        self.name = config.name or folder.name
        self.aliases = {self.name, folder.name, f"{folder.parent.name}/{folder.name}"}

    def check_model(self, model: Optional[str]) -> None:
        """An `ApiError` (404) unless `model` is empty or one of the served names."""
        if model and model not in self.aliases:
            raise ApiError(404, f"model {model!r} is not served here; this server serves {self.name!r}",
                           code="model_not_found", param="model")

    def predict_job(self, req: PredictRequest, stream: bool) -> dict:
        """The job of a plain-API request (the prompt style applied to the prompt)."""
        text = self.plain_style.apply(req.prompt)
        return self._job(self._encode(text), req, req.max_new_tokens, stream, self.plain_style)

    def chat_job(self, req: ChatCompletionRequest) -> dict:
        """The job of a chat request: the conversation rendered with the chat template / prompt style."""
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in req.messages]
        try:
            text = self.chat_style.apply_conversation(messages)
        except ValueError as err:
            raise ApiError(400, str(err), param="messages") from None
        except Exception as err:  # a Jinja template failing on this conversation (undefined variable, ...)
            raise ApiError(400, f"the chat template could not render the conversation ({type(err).__name__}: "
                                f"{err})", param="messages") from None
        max_tokens = req.max_completion_tokens or req.max_tokens
        return self._job(self._encode(text), req, max_tokens, req.stream, self.chat_style)

    def completion_jobs(self, req: CompletionRequest) -> list[dict]:
        """The jobs of a completion request, one per prompt (raw text: no template)."""
        jobs = []
        for prompt in req.prompt:
            if isinstance(prompt, list):
                bad = [t for t in prompt if not 0 <= t < self.vocab_size]
                if bad:
                    raise ApiError(400, f"prompt: token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})",
                                   param="prompt")
                ids = prompt
            else:
                ids = self._encode(prompt)
            jobs.append(self._job(ids, req, req.max_tokens, req.stream, None))
        return jobs

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).tolist()

    def _job(self, ids: list[int], req: _Sampling, max_new_tokens: Optional[int], stream: bool, style) -> dict:
        if not ids:
            raise ApiError(400, "the prompt is empty: it encodes to no tokens", param="prompt")
        if len(ids) >= self.context:
            raise ApiError(
                400,
                f"the prompt is {len(ids)} tokens but the model's context holds {self.context}: a prompt may be "
                f"at most {self.context - 1} tokens",
                code="context_length_exceeded", param="prompt",
            )
        d = self.defaults
        stop_strings = list(style.stop_strings) if style is not None else []
        stop_strings += [s for s in (req.stop or []) if s not in stop_strings]
        return {
            "prompt": ids,
            "max_new_tokens": min(max_new_tokens or d["max_new_tokens"], self.context - len(ids)),
            "temperature": d["temperature"] if req.temperature is None else req.temperature,
            "top_k": d["top_k"] if req.top_k is None else req.top_k,
            "top_p": d["top_p"] if req.top_p is None else req.top_p,
            "seed": req.seed,
            "stop_tokens": [list(s) for s in (style.stop_tokens(self.tokenizer) if style else self.raw_stop_tokens)],
            "stop_strings": stop_strings,
            "stream": stream,
        }
