"""The LitAPI side of `litgpt serve`: the inference worker that runs the continuous-batching `Scheduler`.

`EngineAPI` is a streaming, async LitAPI at `JOB_PATH`: it loads the model in LitServe's worker process and
runs one `Scheduler` there; each job (token ids and settings, already checked by the HTTP front,
`litgpt.deploy.frontend`) becomes a request of the scheduler, whose events are streamed back as JSON lines.
Only LitServe's public API is used: `LitAPI(api_path=..., stream=True, enable_async=True)` and its hooks.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Callable, Optional

try:
    import litserve as ls
except ImportError as _err:
    raise ImportError(f"`litgpt serve` needs LitServe ({_err}): pip install 'litgpt[serve]'") from None

from litgpt.deploy.frontend import JOB_PATH
from litgpt.deploy.scheduler import GenerationRequest, Scheduler

Loader = Callable[[str], tuple[Any, Any]]  # LitServe's device ("cpu", "cuda:0") -> (model, tokenizer)


def start_scheduler(model, tokenizer, max_batch_size: int, max_seq_length: Optional[int]) -> Scheduler:
    """A `Scheduler` for a loaded model, its KV cache bounded by the free memory, warmed up (the first step is
    slow).

    Args:
        model: the model on its device, in its precision.
        tokenizer: its tokenizer.
        max_batch_size: requests decoded together at most.
        max_seq_length: positions per request; None: the model's block_size.
    """
    scheduler = Scheduler(model, tokenizer, max_batch_size=max_batch_size, max_seq_length=max_seq_length,
                          memory_budget=_free_memory(model.cos.device))
    scheduler.generate([0], max_new_tokens=2, temperature=0)
    return scheduler


class EngineAPI(ls.LitAPI):
    """The inference worker: loads the model, runs the continuous-batching `Scheduler`, and streams each job's
    events back to the HTTP front as JSON lines. A job that cannot run answers one `{"error": {"status",
    "message"}}` line; a `{"cancel": id}` job cancels the running job `id` (its client went away)."""

    def __init__(self, load: Loader, *, max_batch_size: int, max_seq_length: Optional[int]) -> None:
        """
        Args:
            load: loads the model and tokenizer on LitServe's device string (picklable: it travels to the worker).
            max_batch_size: requests decoded together at most.
            max_seq_length: positions per request.
        """
        super().__init__(api_path=JOB_PATH, stream=True, enable_async=True)
        self.load = load
        self.batch_limit = max_batch_size  # not LitAPI's max_batch_size: LitServe's batching stays off
        self.max_seq_length = max_seq_length
        self.scheduler: Optional[Scheduler] = None
        self.live: dict = {}  # job id -> its running GenerationRequest (to cancel it)

    def setup(self, device: str) -> None:
        """Loads the model on `device` and starts the scheduler."""
        model, tokenizer = self.load(str(device))
        self.scheduler = start_scheduler(model, tokenizer, self.batch_limit, self.max_seq_length)

    async def decode_request(self, request: dict, **kwargs) -> dict:
        return request

    async def predict(self, job: dict, **kwargs):
        """Submits the job to the scheduler and yields its events (all text at once when not streaming)."""
        if "cancel" in job:
            request = self.live.get(job["cancel"])
            if request is not None:
                request.cancel()
            yield {"cancelled": request is not None}
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
        except (ValueError, KeyError, TypeError) as err:
            yield {"error": {"status": 400, "message": str(err)}}
            return
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
                    yield {"error": {"status": 500, "message": f"generation failed: {last.error}"}}
                    return
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
