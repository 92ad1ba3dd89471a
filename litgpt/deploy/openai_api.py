"""Request schemas, input checks and response bodies of `litgpt serve`: the plain API and the OpenAI API.

Every bad request becomes an `ApiError`: an HTTP status (4xx) and a JSON body in OpenAI's error format,
`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`, whose message names the problem in one
line. Checks are strict: a number where a string belongs (or `true` where a number belongs) is an error, not
converted.
"""

from __future__ import annotations

import json
import time
import uuid
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
# responses


def new_id(prefix: str) -> str:
    """A fresh response id such as `chatcmpl-3f2a...`."""
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's `usage` object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, choices: list[tuple[str, str]], used: dict) -> dict:
    """A `chat.completion` object; `choices` holds (text, finish_reason) per choice."""
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": used,
    }


def chat_chunk(rid: str, model: str, index: int, delta: dict, finish_reason: Optional[str] = None) -> dict:
    """A `chat.completion.chunk` with one choice."""
    return {
        "id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def completion_response(rid: str, model: str, choices: list[tuple[str, str]], used: dict) -> dict:
    """A `text_completion` object; `choices` holds (text, finish_reason) per choice."""
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": used,
    }


def completion_chunk(rid: str, model: str, index: int, text: str, finish_reason: Optional[str] = None) -> dict:
    """A streamed `text_completion` with one choice."""
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(rid: str, model: str, obj: str, used: dict) -> dict:
    """The last streamed object when `stream_options.include_usage` is set: no choices, the usage."""
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [], "usage": used}


def model_list(names: list[str], created: int) -> dict:
    """The body of `GET /v1/models`."""
    return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "litgpt"}
                                       for n in names]}


def sse(data: Union[dict, str]) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
