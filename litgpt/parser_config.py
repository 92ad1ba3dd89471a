"""LitGPT's `litgpt.parser_config`: the CLI's command names and saving a run's hyperparameters.

Thin names over `litgpt.__main__.VERBS` and `litgpt.utils.save_hyperparameters` (the CLI layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from litgpt.__main__ import VERBS
from litgpt.utils import save_hyperparameters as _save_hyperparameters


def parser_commands() -> list[str]:
    """The verbs of the `litgpt` command line."""
    return list(VERBS)


def save_hyperparameters(function: Callable, checkpoint_dir: Path, known_commands: Optional[list[str]] = None) -> None:
    """Writes `checkpoint_dir/hyperparameters.yaml` with the values of `function`'s parameters given on this
    process's command line (after the verb, when the first argument is one of `known_commands` or the verbs)."""
    import sys

    commands = set(known_commands or parser_commands())
    argv = sys.argv
    if len(argv) > 1 and argv[1] in commands:  # `litgpt VERB ...`: the verb is not a hyperparameter
        sys.argv = [argv[0], *argv[2:]]
    try:
        _save_hyperparameters(function, checkpoint_dir)
    finally:
        sys.argv = argv
