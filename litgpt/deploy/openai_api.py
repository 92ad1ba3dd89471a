"""Response bodies of `litgpt serve`'s OpenAI API (and the `usage` object the plain API shares): chat and
text completions, their streamed chunks, the model list, server-sent events."""

from __future__ import annotations

import json
import time
import uuid
from typing import Optional, Union


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
