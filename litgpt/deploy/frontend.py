"""The HTTP front of `litgpt serve`: an ASGI middleware, installed through LitServe's public `middlewares`
option, that answers the plain API or the OpenAI API itself and hands each checked job to the inference
worker through LitServe's own (internal) job endpoint.

Per request, in the HTTP server process: the API key, the body size and every field are checked, the prompt
style or chat template is applied and the prompt tokenized (`PromptEncoder`); a bad request is answered at once
with a 4xx and an OpenAI-style JSON error, and nothing reaches the model. Each job is then POSTed, inside the
process, to `JOB_PATH` of the wrapped LitServe app (the `EngineAPI` of `litgpt.deploy.api`, a streaming LitAPI),
whose newline-delimited JSON events are assembled here into the response: `{"output"}` for the plain API,
OpenAI objects or server-sent events for the OpenAI API. Requests from outside never reach `JOB_PATH`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from typing import AsyncIterator, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from litgpt.deploy import openai_api as oa
from litgpt.deploy import requests as rq
from litgpt.deploy.requests import ApiError, PromptEncoder

JOB_PATH = "/litgpt/internal/jobs"  # the inference worker's endpoint (LitServe's), reachable from this middleware only
OPENAI_CHAT_PATH = "/v1/chat/completions"
OPENAI_PATHS = (OPENAI_CHAT_PATH, "/v1/completions", "/v1/models")
logger = logging.getLogger(__name__)
_background: set = set()  # cancel jobs on their way (a reference keeps each task alive)


class ServeFrontend:
    """The endpoints of `litgpt serve` (an ASGI middleware around LitServe's app): the plain API at `api_path`, or
    the OpenAI API. Other paths (/health, /info, /docs) pass through to LitServe.

    LitServe builds it in each HTTP server process: `LitServer(..., middlewares=[(ServeFrontend, options)])`.
    """

    def __init__(
        self,
        app,
        *,
        encoder: PromptEncoder,
        openai: bool,
        api_path: str,
        stream: bool,
        api_key: Optional[str],
        max_request_size: int,
        created: int,
    ) -> None:
        """
        Args:
            app: the wrapped ASGI app (LitServe's).
            encoder: turns requests into jobs.
            openai: serve the OpenAI API (else the plain API at `api_path`).
            api_path: the plain API's path (with `openai`, a non-default path replaces /v1/chat/completions).
            stream: whether plain-API requests stream by default.
            api_key: if set, every request must send `Authorization: Bearer <api_key>`.
            max_request_size: larger request bodies get 413.
            created: the server's start time (Unix seconds), shown by /v1/models.
        """
        self.app = app
        self.encoder = encoder
        self.api_path = (api_path if api_path != "/predict" else OPENAI_CHAT_PATH) if openai else api_path
        self.stream_default = stream
        self.api_key = api_key
        self.max_request_size = max_request_size
        self.created = created
        if openai:
            self.routes = {self.api_path: ("POST", self.chat_completions), "/v1/completions": ("POST", self.completions),
                           "/v1/models": ("GET", self.models)}
        else:
            self.routes = {self.api_path: ("POST", self.predict)}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == JOB_PATH:  # the worker's endpoint is for this middleware only
            response = _error_response(ApiError(404, f"{path} is not an endpoint of this server", code="not_found"))
        elif path in self.routes:
            method, handler = self.routes[path]
            if scope["method"] != method:
                response = _error_response(ApiError(405, f"{path} accepts {method} requests only, got {scope['method']}",
                                                    code="method_not_allowed"))
            else:
                response = await handler(Request(scope, receive))
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    # -------------------------------------------------------------------------------------- endpoints

    async def predict(self, request: Request) -> Response:
        """`POST /predict`: `{"prompt", ...}` -> `{"output"}`, or streamed lines `{"output": piece}`."""
        return await self._serve(request, self._predict)

    async def chat_completions(self, request: Request) -> Response:
        """`POST /v1/chat/completions`."""
        return await self._serve(request, self._chat)

    async def completions(self, request: Request) -> Response:
        """`POST /v1/completions`."""
        return await self._serve(request, self._completions)

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`: the served model."""
        try:
            self._authorize(request)
        except ApiError as err:
            return _error_response(err)
        return JSONResponse(oa.model_list([self.encoder.name], self.created))

    # -------------------------------------------------------------------------------------- handlers

    async def _predict(self, body: bytes, scope: dict):
        req = rq.parse_request(rq.PredictRequest, body)
        stream = self.stream_default if req.stream is None else req.stream
        job = await asyncio.to_thread(self.encoder.predict_job, req, stream)
        events = await _prefetch(self._events(job, scope))
        if stream:
            async def lines():
                async for event in events:
                    out = {"output": event["text"]}
                    if event["done"]:
                        out.update(finish_reason=event["finish_reason"],
                                   usage=oa.usage(event["prompt_tokens"], event["completion_tokens"]))
                    yield json.dumps(out, ensure_ascii=False) + "\n"

            return StreamingResponse(_guarded(lines(), _ndjson_error), media_type="application/x-ndjson")
        text, last = await _collect(events)
        return JSONResponse({
            "output": text, "finish_reason": last["finish_reason"],
            "usage": oa.usage(last["prompt_tokens"], last["completion_tokens"]),
        })

    async def _chat(self, body: bytes, scope: dict):
        req = rq.parse_request(rq.ChatCompletionRequest, body)
        self.encoder.check_model(req.model)
        job = await asyncio.to_thread(self.encoder.chat_job, req)
        return await self._openai_response(req, [job], scope, chat=True)

    async def _completions(self, body: bytes, scope: dict):
        req = rq.parse_request(rq.CompletionRequest, body)
        self.encoder.check_model(req.model)
        if len(req.prompt) * req.n > rq.MAX_CHOICES:
            raise ApiError(400, f"n x prompts = {len(req.prompt) * req.n} choices; at most {rq.MAX_CHOICES} "
                                "per request", param="n")
        jobs = await asyncio.to_thread(self.encoder.completion_jobs, req)
        return await self._openai_response(req, jobs, scope, chat=False)

    async def _openai_response(self, req, jobs: list[dict], scope: dict, chat: bool):
        """Runs n choices per job and answers with one OpenAI object or a stream of chunks."""
        choice_jobs = [_with_seed(job, req.seed, j) for job in jobs for j in range(req.n)]
        prompt_tokens = sum(len(job["prompt"]) for job in jobs)
        model = req.model or self.encoder.name
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        merged = await _prefetch(_merge([self._events(job, scope) for job in choice_jobs]))
        if not req.stream:
            texts = [[] for _ in choice_jobs]
            reasons: list[str] = [""] * len(choice_jobs)
            completion_tokens = 0
            async for i, event in merged:
                texts[i].append(event["text"])
                if event["done"]:
                    reasons[i] = event["finish_reason"]
                    completion_tokens += event["completion_tokens"]
            build = oa.chat_response if chat else oa.completion_response
            choices = [("".join(t), r) for t, r in zip(texts, reasons)]
            return JSONResponse(build(rid, model, choices, oa.usage(prompt_tokens, completion_tokens)))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def chunks():
            completion_tokens = 0
            if chat:
                for i in range(len(choice_jobs)):
                    yield oa.sse(oa.chat_chunk(rid, model, i, {"role": "assistant", "content": ""}))
            async for i, event in merged:
                if event["text"]:
                    yield oa.sse(oa.chat_chunk(rid, model, i, {"content": event["text"]}) if chat
                                 else oa.completion_chunk(rid, model, i, event["text"]))
                if event["done"]:
                    completion_tokens += event["completion_tokens"]
                    yield oa.sse(oa.chat_chunk(rid, model, i, {}, event["finish_reason"]) if chat
                                 else oa.completion_chunk(rid, model, i, "", event["finish_reason"]))
            if include_usage:
                obj = "chat.completion.chunk" if chat else "text_completion"
                yield oa.sse(oa.usage_chunk(rid, model, obj, oa.usage(prompt_tokens, completion_tokens)))
            yield oa.sse("[DONE]")

        return StreamingResponse(_guarded(chunks(), _sse_error), media_type="text/event-stream")

    # -------------------------------------------------------------------------------------- plumbing

    async def _serve(self, request, handler):
        """Auth, body size and JSON errors around a handler; every `ApiError` becomes its JSON response."""
        try:
            self._authorize(request)
            body = await self._read_body(request)
            return await handler(body, request.scope)
        except ApiError as err:
            return _error_response(err)
        except Exception as err:  # a bug: still a JSON answer, and the server goes on
            logger.exception("error while handling %s", request.url.path)
            return _error_response(ApiError(500, f"internal error ({type(err).__name__}: {err})"))

    def _authorize(self, request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key", type="authentication_error")

    async def _read_body(self, request) -> bytes:
        limit = self.max_request_size
        too_large = ApiError(413, f"the request body is larger than the limit of {limit} bytes",
                             code="request_too_large")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def _events(self, job: dict, scope: dict) -> AsyncIterator[dict]:
        """Sends a job to the inference worker (a POST to `JOB_PATH` of the wrapped app, inside this process) and
        yields its events (dicts) until the last one. Leaving early cancels the job in the worker."""
        uid = str(uuid.uuid4())
        call = _InnerCall(self.app, scope, {**job, "id": uid})
        finished = False
        try:
            status, lines = await call.start()
            if status != 200:
                finished = True
                raise _worker_error(status, b"".join([line async for line in lines]))
            async for line in lines:
                event = json.loads(line)
                if "error" in event:
                    finished = True
                    raise ApiError(event["error"]["status"], event["error"]["message"])
                finished = event["done"]
                yield event
                if finished:
                    return
            finished = True
            raise ApiError(500, "the inference worker ended the stream early (see the server's log)")
        finally:
            call.close()
            if not finished:  # the client went away: free the job's slot (best effort, in the background)
                task = asyncio.ensure_future(_InnerCall(self.app, scope, {"cancel": uid}).run())
                _background.add(task)
                task.add_done_callback(_background.discard)


class _InnerCall:
    """One POST of a JSON body to `JOB_PATH` of an ASGI app, answered with newline-delimited JSON lines."""

    def __init__(self, app, scope: dict, body: dict) -> None:
        data = json.dumps(body).encode()
        self.app = app
        self.data = data
        self.scope = {
            **{k: v for k, v in scope.items() if k in ("type", "asgi", "http_version", "scheme", "server", "client",
                                                         "root_path", "app", "state", "extensions")},
            "method": "POST", "path": JOB_PATH, "raw_path": JOB_PATH.encode(), "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
        self.messages: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()
        self.task: Optional[asyncio.Task] = None
        self.sent = False

    async def _receive(self) -> dict:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.data, "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict) -> None:
        await self.messages.put(message)

    async def _run_app(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        finally:
            await self.messages.put(None)

    async def start(self) -> tuple[int, AsyncIterator[bytes]]:
        """Starts the call; returns the status and an iterator over the body's lines."""
        self.task = asyncio.create_task(self._run_app())
        message = await self.messages.get()
        if message is None or message["type"] != "http.response.start":
            await self.task  # the app failed before answering: its exception propagates
            return 500, _no_lines()
        return message["status"], self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        pending = b""
        while True:
            message = await self.messages.get()
            if message is None:
                break
            pending += message.get("body", b"")
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
            if not message.get("more_body", False):
                break
        if pending.strip():
            yield pending

    async def run(self) -> None:
        """Runs the call to its end, ignoring the answer (for a cancel job)."""
        try:
            _, lines = await self.start()
            async for _ in lines:
                pass
        except Exception:  # the server is shutting down
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Ends the call (the app sees the client leave)."""
        self.closed.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _no_lines() -> AsyncIterator[bytes]:
    return
    yield


def _with_seed(job: dict, seed: Optional[int], index: int) -> dict:
    """The job of choice `index` (choice i of a seeded request samples with seed + i)."""
    if index == 0:
        return job
    return {**job, "seed": None if seed is None else (seed + index) % 2**63}


def _worker_error(status: int, body: bytes) -> ApiError:
    """The error of a job the worker's endpoint refused (LitServe answers {"detail": ...})."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    message = f"the inference worker refused the job ({status}): {detail or body[:200].decode(errors='replace')}"
    return ApiError(status if 400 <= status < 600 else 500, message)


def _error_response(err: ApiError):
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _prefetch(events: AsyncIterator) -> AsyncIterator:
    """Waits for the first item (so that an early error is still an HTTP error status) and returns an
    iterator over all items."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest():
        if first is None:
            return
        yield first
        async for item in events:
            yield item

    return rest()


async def _collect(events: AsyncIterator[dict]) -> tuple[str, dict]:
    """The joined text of a job's events and its last event."""
    pieces, last = [], None
    async for event in events:
        pieces.append(event["text"])
        last = event
    return "".join(pieces), last


async def _merge(streams: list[AsyncIterator[dict]]) -> AsyncIterator[tuple[int, dict]]:
    """Yields `(stream index, event)` from several event streams as the events arrive."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield 0, event
        return
    inbox: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(index: int, stream: AsyncIterator[dict]) -> None:
        try:
            async for event in stream:
                await inbox.put((index, event))
        except Exception as err:  # handed to the consumer
            await inbox.put((index, err))
        finally:
            await inbox.put((index, end))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    open_streams = len(streams)
    try:
        while open_streams:
            index, item = await inbox.get()
            if item is end:
                open_streams -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


async def _guarded(chunks: AsyncIterator[str], format_error) -> AsyncIterator[str]:
    """A streamed body that ends with an error line instead of breaking off when generation fails midway."""
    try:
        async for chunk in chunks:
            yield chunk
    except ApiError as err:
        yield format_error(err)
    except Exception as err:
        logger.exception("error while streaming a response")
        yield format_error(ApiError(500, f"internal error ({type(err).__name__}: {err})"))


def _sse_error(err: ApiError) -> str:
    return oa.sse(err.body()) + oa.sse("[DONE]")


def _ndjson_error(err: ApiError) -> str:
    return json.dumps(err.body()) + "\n"
