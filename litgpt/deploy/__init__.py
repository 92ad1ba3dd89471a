"""Serving: `litgpt serve` (LitServe, plain and OpenAI-compatible APIs) over a continuous-batching scheduler."""

from litgpt.deploy.scheduler import Completion, Event, GenerationRequest, Scheduler

__all__ = ["Completion", "Event", "GenerationRequest", "Scheduler"]
