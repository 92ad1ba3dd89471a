"""`litgpt serve`: a checkpoint behind an HTTP API, on LitServe, with continuous batching.

The pieces (LitServe's public API only):

* `litgpt.deploy.requests`: request schemas, strict checks, prompt styles / chat templates and tokenization
  (`PromptEncoder`, which turns a request into jobs).
* `litgpt.deploy.frontend`: the endpoints (plain API or OpenAI API, API key, body limit, responses and
  streams), an ASGI middleware given to `LitServer(middlewares=...)`, run in the HTTP server processes.
* `litgpt.deploy.api`: `EngineAPI`, the LitAPI of the inference worker, which runs the continuous-batching
  `Scheduler` (`litgpt.deploy.scheduler`) on the same decode engine as `litgpt generate`.
* here: the verb (`run_server`), loading, process management (`BackgroundServer`), and LitGPT's LitAPI
  classes (`BaseLitAPI`, `SimpleLitAPI`, `StreamLitAPI`, `OpenAISpecLitAPI`) over the same engine.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

try:
    import litserve as ls
except ImportError as _err:
    raise ImportError(f"`litgpt serve` needs LitServe ({_err}): pip install 'litgpt[serve]'") from None

from litgpt.deploy.api import EngineAPI, start_scheduler
from litgpt.deploy.frontend import JOB_PATH, OPENAI_PATHS, ServeFrontend
from litgpt.deploy.requests import PromptEncoder
from litgpt.utils import check_int
from litgpt.generate.engine import check_sampling_args

DEFAULT_MAX_REQUEST_SIZE = 4 * 1024 * 1024
RESERVED_PATHS = ("/", "/health", "/info", "/docs", "/openapi.json", "/shutdown", JOB_PATH) + OPENAI_PATHS
HOSTS = ("127.0.0.1", "0.0.0.0", "::")


def load_for_serving(checkpoint_dir: Path, precision: Optional[str], quantize: Optional[str], device: str):
    """Loads a checkpoint as `LLM.load` + `LLM.distribute` do (the same engine as `litgpt generate`) on
    LitServe's device string ("cpu", "cuda:0", ...). Returns (model, tokenizer)."""
    import torch

    from litgpt.api import LLM

    kind, _, index = str(device).partition(":")
    if kind == "cuda" and index:
        torch.cuda.set_device(int(index))
    llm = LLM.load(str(checkpoint_dir), distribute=None)
    llm.distribute(accelerator=kind, precision=precision, quantize=quantize)
    return llm.model, llm.tokenizer


# ------------------------------------------------------------------------------------------------------------
# the verb


def run_server(
    checkpoint_dir: Path,
    quantize: Optional[str] = None,
    precision: Optional[str] = None,
    temperature: float = 0.8,
    top_k: Optional[int] = 50,
    top_p: float = 1.0,
    max_new_tokens: int = 50,
    devices: int = 1,
    accelerator: str = "auto",
    port: int = 8000,
    stream: bool = False,
    openai_spec: bool = False,
    access_token: Optional[str] = None,
    api_path: Optional[str] = "/predict",
    timeout: int = 30,
    generate_strategy: Optional[str] = None,
    *,
    host: str = "127.0.0.1",
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
        quantize: Weight quantization while loading: int8, int4 (int4-g32/-g64/-g128) or bnb.nf4, bnb.nf4-dq,
            bnb.fp4, bnb.fp4-dq, bnb.int8 (see tutorials/quantize.md).
        precision: 32-true, bf16-true or 16-true. Default: bf16-true on GPUs and CPUs with native bf16,
            else 32-true.
        temperature: Default sampling temperature; 0 is greedy decoding.
        top_k: Default top-k: sample among the k most likely tokens only (1 is greedy).
        top_p: Default top-p: sample among the most likely tokens whose probability mass reaches top_p.
        max_new_tokens: Default number of new tokens per request (a request may ask for another).
        devices: Number of devices (GPUs); each holds a replica of the model with its own batch.
        accelerator: auto, cpu, cuda, gpu or mps.
        port: Port to listen on (1024-65535).
        stream: Plain API: stream the text as it is generated (a request may set "stream" itself).
        openai_spec: Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) instead of the
            plain one.
        access_token: Hugging Face token, used only when checkpoint_dir is a repo id still to download.
        api_path: Path of the plain API (default /predict).
        timeout: Seconds a request may wait for the inference worker before it is refused with 504
            (LitServe's timeout); -1 waits forever.
        generate_strategy: LitGPT's multi-device strategies ("sequential", "tensor_parallel") are not
            supported: with devices > 1 every GPU holds a replica.
        host: Address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface).
        api_key: Require the header 'Authorization: Bearer <api_key>' on every request (401 otherwise).
        max_batch_size: Requests decoded together at most; more wait for a free slot. The KV cache holds up to
            max_batch_size x max_seq_length positions.
        max_seq_length: Positions per request (prompt + new tokens); default: the model's block_size.
        max_request_size: Request bodies larger than this many bytes are refused with 413.
    """
    from litgpt.api import check_quantize
    from litgpt.config import Config
    from litgpt.precision import INFERENCE_PRECISIONS as PRECISIONS
    from litgpt.precision import check_inference_precision as check_precision
    from litgpt.precision import default_inference_precision as default_precision
    from litgpt.precision import resolve_device
    from litgpt.quantization import check_quantize_supported
    from litgpt.utils import check_valid_checkpoint_dir

    if generate_strategy is not None:
        raise ValueError(f"generate_strategy={generate_strategy!r} is not supported: with devices > 1 every GPU "
                         "holds a replica of the model")
    checkpoint_dir = _resolve_checkpoint(checkpoint_dir, access_token)
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
    api_path = "/predict" if api_path is None else api_path
    if not isinstance(api_path, str) or not api_path.startswith("/") or api_path in RESERVED_PATHS:
        raise ValueError(f"api_path must start with '/' and not be one of {', '.join(RESERVED_PATHS)}, "
                         f"got {api_path!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError("api_key must be a non-empty string")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or (timeout <= 0 and timeout != -1):
        raise ValueError(f"timeout must be a positive number of seconds or -1 (no limit), got {timeout!r}")
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
    front = dict(encoder=encoder, openai=openai_spec, api_path=api_path, stream=stream, api_key=api_key,
                 max_request_size=max_request_size, created=int(time.time()))
    load = functools.partial(load_for_serving, checkpoint_dir, precision, quantize)
    api = EngineAPI(load, max_batch_size=max_batch_size, max_seq_length=context)
    server = ls.LitServer(
        api, accelerator=device.type, devices=devices, timeout=timeout, middlewares=[(ServeFrontend, front)],
        model_metadata={"name": encoder.name, "context": context, "max_batch_size": max_batch_size},
    )
    served = ServeFrontend(None, **front)
    paths = ", ".join(served.routes)
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


def _resolve_checkpoint(checkpoint_dir: Path, access_token: Optional[str]) -> Path:
    """A repo id that is not a folder here ("org/name" of a known config) is downloaded, as LitGPT does."""
    path = Path(checkpoint_dir)
    if path.exists() or access_token is None:
        return path
    from litgpt.api import LLM

    return Path(LLM.load(str(checkpoint_dir), distribute=None, access_token=access_token).checkpoint_dir)


# ------------------------------------------------------------------------------------------------------------
# LitGPT's LitAPI classes: thin layers over the same loading and the same continuous-batching scheduler


class BaseLitAPI(ls.LitAPI):
    """LitGPT's base LitAPI: loads the checkpoint in `setup` and generates through the continuous-batching
    `Scheduler` (the engine of `litgpt serve` and `litgpt generate`). `decode_request` turns `{"prompt": ...}`
    into token ids with the checkpoint's prompt style."""

    stream_output = False  # StreamLitAPI: True

    def __init__(
        self,
        checkpoint_dir: Path,
        quantize: Optional[str] = None,
        precision: Optional[str] = None,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 1.0,
        max_new_tokens: int = 50,
        devices: int = 1,
        api_path: Optional[str] = None,
        generate_strategy: Optional[str] = None,
    ) -> None:
        """
        Args:
            checkpoint_dir: the checkpoint folder.
            quantize, precision: as in `litgpt serve`.
            temperature, top_k, top_p, max_new_tokens: the generation settings of every request.
            devices: devices LitServe gives the API (each worker holds a replica).
            api_path: the endpoint (default /predict).
            generate_strategy: must be None (multi-device strategies are not supported).
        """
        if generate_strategy is not None:
            raise ValueError(f"generate_strategy={generate_strategy!r} is not supported: with devices > 1 every "
                             "GPU holds a replica of the model")
        check_sampling_args(temperature, top_k, top_p, max_new_tokens)
        spec = ls.OpenAISpec() if isinstance(self, OpenAISpecLitAPI) else None
        super().__init__(api_path=api_path or "/predict", stream=self.stream_output, spec=spec)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.quantize, self.precision, self.devices = quantize, precision, devices
        self.temperature, self.top_k, self.top_p, self.max_new_tokens = temperature, top_k, top_p, max_new_tokens
        self.scheduler = None

    def setup(self, device: str) -> None:
        """Loads the model on `device` and starts its scheduler."""
        from litgpt.prompts import resolve_prompt_style

        model, self.tokenizer = load_for_serving(self.checkpoint_dir, self.precision, self.quantize, device)
        self.prompt_style = resolve_prompt_style(self.checkpoint_dir, model.config, self.tokenizer)
        self.chat_style = resolve_prompt_style(self.checkpoint_dir, model.config, self.tokenizer,
                                               use_chat_template=True)
        self.scheduler = start_scheduler(model, self.tokenizer, max_batch_size=16, max_seq_length=None)

    def decode_request(self, request) -> Any:
        """`{"prompt": text}` -> the prompt's token ids (prompt style applied)."""
        from fastapi import HTTPException

        prompt = request.get("prompt") if isinstance(request, dict) else None
        if not isinstance(prompt, str):
            raise HTTPException(400, 'the request body must be {"prompt": "<text>"}')
        return self.tokenizer.encode(self.prompt_style.apply(prompt))

    def _text_pieces(self, ids, style, **settings):
        """The text of a generation, piece by piece, with the server's settings unless given."""
        options = dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                       top_p=self.top_p)
        options.update({k: v for k, v in settings.items() if v is not None})
        stop = [list(s) for s in style.stop_tokens(self.tokenizer)]
        for event in self.scheduler.stream(ids, stop_tokens=stop, stop_strings=style.stop_strings, **options):
            if event.error is not None:
                raise RuntimeError(f"generation failed: {event.error}")
            if event.text:
                yield event.text


class SimpleLitAPI(BaseLitAPI):
    """LitGPT's plain API: `{"prompt"}` -> `{"output"}` (the whole text)."""

    def predict(self, inputs) -> Any:
        return "".join(self._text_pieces(inputs, self.prompt_style))

    def encode_response(self, output: str) -> dict[str, Any]:
        return {"output": output}


class StreamLitAPI(BaseLitAPI):
    """LitGPT's streaming API: `{"prompt"}` -> lines of `{"output": piece}` as the text is generated."""

    stream_output = True

    def predict(self, inputs) -> Any:
        yield from self._text_pieces(inputs, self.prompt_style)

    def encode_response(self, output):
        for piece in output:
            yield {"output": piece}


class OpenAISpecLitAPI(BaseLitAPI):
    """LitGPT's OpenAI-compatible API on LitServe's `OpenAISpec` (/v1/chat/completions): the conversation is
    rendered with the checkpoint's chat template; temperature, top_p and max_tokens come from the request.
    (`litgpt serve --openai_spec true` serves a stricter, fuller OpenAI API of its own.)"""

    stream_output = True

    def decode_request(self, request) -> Any:
        messages = [{"role": m.role, "content": m.content if isinstance(m.content, str) else
                     "".join(getattr(part, "text", "") for part in m.content or [])} for m in request.messages]
        return self.tokenizer.encode(self.chat_style.apply_conversation(messages))

    def predict(self, inputs, context: dict) -> Any:
        max_tokens = context.get("max_completion_tokens") or context.get("max_tokens")
        yield from self._text_pieces(inputs, self.chat_style, temperature=context.get("temperature"),
                                top_p=context.get("top_p"), max_new_tokens=max_tokens)


# ------------------------------------------------------------------------------------------------------------
# process management: ports, signals, a server in the background (tests, benchmarks, scripts)


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
