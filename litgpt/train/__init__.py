"""The training loop every training verb shares (`fit`), and its argument groups."""

from litgpt.train.args import EvalArgs, LogArgs, TrainArgs
from litgpt.train.loop import Method, TrainingRun, fit

__all__ = ["EvalArgs", "LogArgs", "Method", "TrainArgs", "TrainingRun", "fit"]
