"""`litgpt serve`: a checkpoint behind an HTTP API, on LitServe, with continuous batching.

Processes (LitServe's layout): the HTTP server (uvicorn, FastAPI) and one inference worker per device.

* HTTP side (`ServeSpec`, a LitServe spec): checks the API key, the body size and every field of the request,
  applies the prompt style or chat template, tokenizes, and only then hands a compact job (token ids and
  settings) to the worker. A bad request is answered at once with a 4xx and a JSON error; nothing reaches the
  model. Responses are assembled here: `{"output"}` for the plain API, OpenAI objects or server-sent events for
  the OpenAI API.
* Worker side (`LitGPTAPI`, an async LitAPI): loads the model and runs a `Scheduler`. Each job becomes a
  request of the scheduler, whose engine thread decodes all running requests together (continuous batching);
  the worker streams the text back as it is generated.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import pickle
import signal
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator, Optional

try:
    import litserve as ls
    from fastapi import HTTPException, Request, Response
    from fastapi.responses import JSONResponse, StreamingResponse
    from litserve.specs.base import LitSpec
    from litserve.utils import LitAPIStatus, ResponseBufferItem
except ImportError as _err:
    raise ImportError(f"`litgpt serve` needs LitServe ({_err}): pip install 'litgpt[serve]'") from None

from litgpt.deploy import openai_api as oa
from litgpt.deploy.openai_api import ApiError
from litgpt.deploy.scheduler import check_int
from litgpt.generate.base import check_sampling_args

DEFAULT_MAX_REQUEST_SIZE = 4 * 1024 * 1024
OPENAI_CHAT_PATH = "/v1/chat/completions"
OPENAI_PATHS = (OPENAI_CHAT_PATH, "/v1/completions", "/v1/models")
RESERVED_PATHS = ("/", "/health", "/info", "/docs", "/openapi.json", "/shutdown") + OPENAI_PATHS
HOSTS = ("127.0.0.1", "0.0.0.0", "::")
logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# HTTP side: from a request to jobs for the worker


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

    def predict_job(self, req: oa.PredictRequest, stream: bool) -> dict:
        """The job of a plain-API request (the prompt style applied to the prompt)."""
        text = self.plain_style.apply(req.prompt)
        return self._job(self._encode(text), req, req.max_new_tokens, stream, self.plain_style)

    def chat_job(self, req: oa.ChatCompletionRequest) -> dict:
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

    def completion_jobs(self, req: oa.CompletionRequest) -> list[dict]:
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

    def _job(self, ids: list[int], req: oa._Sampling, max_new_tokens: Optional[int], stream: bool, style) -> dict:
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


class ServeSpec(LitSpec):
    """The HTTP endpoints (a LitServe spec): the plain API or the OpenAI API.

    The spec runs in the HTTP server process. It validates and encodes each request (`PromptEncoder`), puts
    the jobs on LitServe's request queue for the inference worker, and turns the worker's events into the
    response (JSON, newline-delimited JSON, or server-sent events).
    """

    def __init__(
        self,
        encoder: PromptEncoder,
        *,
        openai: bool,
        api_path: str,
        stream: bool,
        api_key: Optional[str],
        max_request_size: int,
    ) -> None:
        """
        Args:
            encoder: turns requests into jobs.
            openai: serve the OpenAI API (else the plain API at `api_path`).
            api_path: the plain API's path (with `openai`, a non-default path replaces /v1/chat/completions).
            stream: whether plain-API requests stream by default.
            api_key: if set, every request must send `Authorization: Bearer <api_key>`.
            max_request_size: larger request bodies get 413.
        """
        super().__init__()
        self.encoder = encoder
        self.openai = openai
        self.api_path = (api_path if api_path != "/predict" else OPENAI_CHAT_PATH) if openai else api_path
        self.stream_default = stream
        self.api_key = api_key
        self.max_request_size = max_request_size
        self.created = int(time.time())

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["encoder"] = None  # the worker process has its own tokenizer
        return state

    @property
    def stream(self) -> bool:
        return True  # the worker always streams its events to this process

    def pre_setup(self, lit_api) -> None:
        """Registers the endpoints (LitServe calls this once, in the main process)."""
        if self.openai:
            self.add_endpoint(self.api_path, self.chat_completions, ["POST"])
            self.add_endpoint("/v1/completions", self.completions, ["POST"])
            self.add_endpoint("/v1/models", self.models, ["GET"])
        else:
            self.add_endpoint(self.api_path, self.predict, ["POST"])

    def decode_request(self, request, context_kwargs=None):
        return request

    def encode_response(self, output, context_kwargs=None):
        return output

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

    async def _predict(self, body: bytes):
        req = oa.parse_request(oa.PredictRequest, body)
        stream = self.stream_default if req.stream is None else req.stream
        job = await asyncio.to_thread(self.encoder.predict_job, req, stream)
        events = await _prefetch(self._events(job))
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

    async def _chat(self, body: bytes):
        req = oa.parse_request(oa.ChatCompletionRequest, body)
        self.encoder.check_model(req.model)
        job = await asyncio.to_thread(self.encoder.chat_job, req)
        return await self._openai_response(req, [job], chat=True)

    async def _completions(self, body: bytes):
        req = oa.parse_request(oa.CompletionRequest, body)
        self.encoder.check_model(req.model)
        if len(req.prompt) * req.n > oa.MAX_CHOICES:
            raise ApiError(400, f"n x prompts = {len(req.prompt) * req.n} choices; at most {oa.MAX_CHOICES} "
                                "per request", param="n")
        jobs = await asyncio.to_thread(self.encoder.completion_jobs, req)
        return await self._openai_response(req, jobs, chat=False)

    async def _openai_response(self, req, jobs: list[dict], chat: bool):
        """Runs n choices per job and answers with one OpenAI object or a stream of chunks."""
        choice_jobs = [_with_seed(job, req.seed, j) for job in jobs for j in range(req.n)]
        prompt_tokens = sum(len(job["prompt"]) for job in jobs)
        model = req.model or self.encoder.name
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        merged = await _prefetch(_merge([self._events(job) for job in choice_jobs]))
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
            return await handler(body)
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
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
        except HTTPException as err:  # LitServe's size middleware
            if err.status_code == 413:
                raise too_large from None
            raise
        return bytes(body)

    async def _events(self, job: dict) -> AsyncIterator[dict]:
        """Sends a job to the inference worker and yields its events (dicts) until the last one."""
        uid = str(uuid.uuid4())
        ready, received = asyncio.Event(), deque()
        self.response_buffer[uid] = ResponseBufferItem(event=ready, response_queue=received)
        finished = False
        try:
            self.request_queue.put((self.response_queue_id, uid, time.monotonic(), {**job, "id": uid}))
            async for data, status in self.data_streamer(received, ready, send_status=True):
                if status == LitAPIStatus.ERROR:
                    finished = True
                    raise _worker_error(data)
                event = json.loads(data)
                finished = event["done"]
                yield event
                if finished:
                    return
            finished = True
            raise ApiError(500, "the inference worker ended the stream early")
        finally:
            self.response_buffer.pop(uid, None)
            if not finished:  # the client went away: free the request's slot (best effort)
                self._cancel(uid)

    def _cancel(self, uid: str) -> None:
        try:
            self.request_queue.put((self.response_queue_id, str(uuid.uuid4()), time.monotonic(), {"cancel": uid}))
        except Exception:  # the server is shutting down
            pass


def _with_seed(job: dict, seed: Optional[int], index: int) -> dict:
    """The job of choice `index` (choice i of a seeded request samples with seed + i)."""
    if index == 0:
        return job
    return {**job, "seed": None if seed is None else (seed + index) % 2**63}


def _worker_error(data: Any) -> ApiError:
    if isinstance(data, bytes):
        try:
            data = pickle.loads(data)  # LitServe pickles the worker's exception
        except Exception:
            pass
    if isinstance(data, HTTPException):
        return ApiError(data.status_code, str(data.detail))
    return ApiError(500, f"generation failed: {data}" if data is not None else "the inference worker stopped")


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


# ------------------------------------------------------------------------------------------------------------
# worker side: the model and the scheduler


class LitGPTAPI(ls.LitAPI):
    """The inference worker (an async LitAPI): loads the model, runs the continuous-batching `Scheduler`, and
    streams each job's events back to the HTTP process."""

    def __init__(self, checkpoint_dir: Path, settings: dict, spec: ServeSpec) -> None:
        """
        Args:
            checkpoint_dir: the checkpoint folder.
            settings: precision, quantize, max_batch_size, max_seq_length.
            spec: the HTTP endpoints.
        """
        super().__init__(spec=spec, enable_async=True)
        self.checkpoint_dir = checkpoint_dir
        self.settings = settings
        self.scheduler = None
        self.live: dict = {}  # job id -> its running GenerationRequest (to cancel it)

    def setup(self, device: str) -> None:
        """Loads the model on `device` (LitServe's "cpu", "cuda:0", ...) and starts the scheduler."""
        import torch

        from litgpt.api import LLM
        from litgpt.deploy.scheduler import Scheduler

        kind, _, index = str(device).partition(":")
        if kind == "cuda" and index:
            torch.cuda.set_device(int(index))
        llm = LLM.load(str(self.checkpoint_dir), distribute=None)
        llm.distribute(accelerator=kind, precision=self.settings["precision"], quantize=self.settings["quantize"])
        self.scheduler = Scheduler(
            llm.model, llm.tokenizer, max_batch_size=self.settings["max_batch_size"],
            max_seq_length=self.settings["max_seq_length"], memory_budget=_free_memory(llm.model.cos.device),
        )
        self.scheduler.generate([0], max_new_tokens=2, temperature=0)  # warm-up: the first step is slow

    async def decode_request(self, request: dict, **kwargs) -> dict:
        return request

    async def predict(self, job: dict, **kwargs):
        """Submits the job to the scheduler and yields its events (all text at once when not streaming).
        A `{"cancel": id}` job cancels the running job `id` (its client went away)."""
        from litgpt.deploy.scheduler import GenerationRequest

        if "cancel" in job:
            request = self.live.get(job["cancel"])
            if request is not None:
                request.cancel()
            return
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        try:
            request = self.scheduler.submit(GenerationRequest(
                job["prompt"], lambda event: loop.call_soon_threadsafe(inbox.put_nowait, event),
                max_new_tokens=job["max_new_tokens"], temperature=job["temperature"], top_k=job["top_k"],
                top_p=job["top_p"], seed=job["seed"], stop_tokens=job["stop_tokens"],
                stop_strings=job["stop_strings"],
            ))
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        done, held = False, []
        self.live[job["id"]] = request
        try:
            while not done:
                events = [await inbox.get()]
                while not inbox.empty():
                    events.append(inbox.get_nowait())
                last = events[-1]
                done = last.done
                if last.error is not None:
                    raise HTTPException(500, f"generation failed: {last.error}")
                held.extend(e.text for e in events)
                if job["stream"] or done:
                    text, held = "".join(held), []
                    if text or done:
                        yield {"text": text, "done": done, "finish_reason": last.finish_reason,
                               "prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens}
        finally:
            self.live.pop(job["id"], None)
            if not done:
                request.cancel()

    async def encode_response(self, outputs, **kwargs):
        async for output in outputs:
            yield output


def _free_memory(device) -> Optional[int]:
    """Bytes the KV cache may use: 90% of the free GPU memory, or half the available RAM on the CPU."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * 0.9)
    if device.type != "cpu":
        return None
    try:  # Linux: MemAvailable counts the page cache the kernel can reclaim
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return None


# ------------------------------------------------------------------------------------------------------------
# the verb


def run_server(
    checkpoint_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    devices: int = 1,
    accelerator: str = "auto",
    precision: Optional[str] = None,
    quantize: Optional[str] = None,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    stream: bool = False,
    openai_spec: bool = False,
    api_path: str = "/predict",
    api_key: Optional[str] = None,
    max_batch_size: int = 16,
    max_seq_length: Optional[int] = None,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
) -> None:
    """Serve a checkpoint over HTTP (LitServe): the plain API or the OpenAI API, with continuous batching.

    Concurrent requests are decoded together: new requests join the running batch and finished ones leave it
    at every step. Plain API: POST {"prompt", "max_new_tokens", "temperature", "top_k", "top_p"} to api_path,
    answered with {"output"} (streamed as JSON lines with --stream true). OpenAI API (--openai_spec true):
    /v1/chat/completions (the checkpoint's chat template or prompt style), /v1/completions and /v1/models,
    usable with the `openai` client. The server stops with Ctrl-C.

    Args:
        checkpoint_dir: A checkpoint folder (lit_model.pth, model_config.yaml and the tokenizer files).
        host: Address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface).
        port: Port to listen on (1024-65535).
        devices: Number of devices (GPUs); each holds a replica of the model with its own batch.
        accelerator: auto, cpu, cuda, gpu or mps.
        precision: 32-true, bf16-true or 16-true. Default: bf16-true on GPUs and CPUs with native bf16,
            else 32-true.
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        max_new_tokens: Default number of new tokens per request (a request may ask for another).
        temperature: Default sampling temperature; 0 is greedy decoding.
        top_k: Default top-k: sample among the k most likely tokens only (1 is greedy).
        top_p: Default top-p: sample among the most likely tokens whose probability mass reaches top_p.
        stream: Plain API: stream the text as it is generated (a request may set "stream" itself).
        openai_spec: Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) instead of the
            plain one.
        api_path: Path of the plain API (default /predict).
        api_key: Require the header 'Authorization: Bearer <api_key>' on every request (401 otherwise).
        max_batch_size: Requests decoded together at most; more wait for a free slot. The KV cache holds up to
            max_batch_size x max_seq_length positions.
        max_seq_length: Positions per request (prompt + new tokens); default: the model's block_size.
        max_request_size: Request bodies larger than this many bytes are refused with 413.
    """
    from litgpt.api import check_quantize
    from litgpt.precision import INFERENCE_PRECISIONS as PRECISIONS
    from litgpt.precision import check_inference_precision as check_precision
    from litgpt.precision import default_inference_precision as default_precision
    from litgpt.precision import resolve_device
    from litgpt.quantization import check_quantize_supported
    from litgpt.config import Config
    from litgpt.utils import check_valid_checkpoint_dir

    checkpoint_dir = check_valid_checkpoint_dir(checkpoint_dir)
    if host not in HOSTS:
        raise ValueError(f"host must be one of {', '.join(HOSTS)}, got {host!r}")
    check_int("port", port, 1024, 65535)
    check_int("devices", devices, 1)
    device = resolve_device(accelerator)
    check_precision(precision)
    check_quantize(quantize)
    check_quantize_supported(quantize, device, PRECISIONS[precision or default_precision(device)])
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if not isinstance(api_path, str) or not api_path.startswith("/") or api_path in RESERVED_PATHS:
        raise ValueError(f"api_path must start with '/' and not be one of {', '.join(RESERVED_PATHS)}, "
                         f"got {api_path!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError("api_key must be a non-empty string")
    check_int("max_batch_size", max_batch_size, 1)
    check_int("max_request_size", max_request_size, 1024, note=" (bytes)")
    config = Config.from_checkpoint(checkpoint_dir)
    context = config.block_size if max_seq_length is None else max_seq_length
    check_int("max_seq_length", context, 2, config.block_size, " (the model's block_size)")
    if devices > 1 and device.type != "cuda":
        raise ValueError(f"devices={devices} needs CUDA GPUs; on {device.type} use devices=1")
    _check_port_free(host, port)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the HTTP processes are forked after loading
    defaults = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    encoder = PromptEncoder(checkpoint_dir, config, context, defaults)
    spec = ServeSpec(encoder, openai=openai_spec, api_path=api_path, stream=stream, api_key=api_key,
                     max_request_size=max_request_size)
    settings = dict(precision=precision, quantize=quantize, max_batch_size=max_batch_size, max_seq_length=context)
    api = LitGPTAPI(checkpoint_dir, settings, spec)
    server = ls.LitServer(
        api, accelerator=device.type, devices=devices, timeout=False, max_payload_size=max_request_size,
        model_metadata={"name": encoder.name, "context": context, "max_batch_size": max_batch_size},
    )
    paths = f"{spec.api_path}, /v1/completions, /v1/models" if openai_spec else spec.api_path
    shown = f"[{host}]" if ":" in host else host
    print(f"litgpt serve: {encoder.name} on http://{shown}:{port} ({paths}); up to {max_batch_size} requests "
          f"decoded together", file=sys.stderr, flush=True)
    _stop_on_sigterm()
    try:
        server.run(host=host, port=port, generate_client_file=False)
    except RuntimeError as err:
        if "failed to start" not in str(err):
            raise
        # the worker's own traceback is in the log above; the command ends with one line
        raise SystemExit("litgpt serve: error: the model could not be loaded (the inference worker's error is "
                         "printed above)") from None


def _check_port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f"port {port} on {host} is in use ({err.strerror}); pick another with --port") from None


def _stop_on_sigterm() -> None:
    """SIGTERM stops the server like Ctrl-C (LitServe then stops its workers). Processes forked later (the
    HTTP servers) inherit the handler; there it does what SIGTERM does by default."""
    main_pid = os.getpid()

    def handler(signum, frame) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


# ------------------------------------------------------------------------------------------------------------
# running a server in the background (tests, benchmarks, scripts)


class BackgroundServer:
    """`litgpt serve` in a child process: started, waited for until it answers, and stopped with its workers.

        with BackgroundServer("checkpoints/my-model", openai_spec=True) as server:
            requests.post(f"{server.url}/v1/completions", json={"prompt": "Hi"})

    Attributes:
        url: the base URL, e.g. "http://127.0.0.1:8000".
        port: the port (a free one is picked when none is given).
    """

    def __init__(
        self,
        checkpoint_dir: Path,
        *,
        port: Optional[int] = None,
        log_path: Optional[Path] = None,
        startup_timeout: float = 180.0,
        **flags: Any,
    ) -> None:
        """
        Args:
            checkpoint_dir: the checkpoint folder.
            port: the port; default: a free one.
            log_path: where the server's output goes (default: discarded).
            startup_timeout: seconds to wait for the server to answer /health.
            flags: further `litgpt serve` flags (openai_spec=True, api_key="...", precision="32-true", ...).
        """
        self.checkpoint_dir = Path(checkpoint_dir)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.flags = flags
        self.process = None

    def start(self) -> "BackgroundServer":
        """Starts the server and returns once it answers; a RuntimeError (with the log's end) if it fails."""
        import subprocess

        args = [sys.executable, "-m", "litgpt", "serve", str(self.checkpoint_dir), "--port", str(self.port)]
        for name, value in self.flags.items():
            if value is not None:
                args += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
        out = open(self.log_path, "wb") if self.log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server did not answer within {self.startup_timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not Path(self.log_path).is_file():
            return "(no log)"
        return Path(self.log_path).read_text(errors="replace")[-2000:]

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the server like Ctrl-C; processes still alive after `timeout` seconds are killed."""
        import subprocess

        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # LitServe stops its uvicorn and inference worker processes
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server's own session, its children included
            self.process.wait()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
