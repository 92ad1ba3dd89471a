"""LitGPT's `litgpt.args`: the argument groups every training verb shares (defined in `litgpt.train.args`)."""

from litgpt.train.args import EvalArgs, LogArgs, TrainArgs

__all__ = ["TrainArgs", "EvalArgs", "LogArgs"]
