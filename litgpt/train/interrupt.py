"""Ctrl-C and SIGTERM during training: finish the current optimizer step, save a resumable checkpoint, print the
command that resumes, and exit 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving `checkpoint` (None when the save was aborted before any
    checkpoint existed); `exit_code` is 128 + the signal number, what the CLI exits with."""

    def __init__(self, exit_code: int, checkpoint: Optional[Path]) -> None:
        super().__init__(f"training interrupted (exit code {exit_code})")
        self.exit_code = exit_code
        self.checkpoint = checkpoint


class InterruptFlag:
    """While active, SIGINT / SIGTERM only set `signum` (the loop checks it between steps). A second signal, or
    one that arrives while `saving` is True, raises KeyboardInterrupt at once. Outside the main thread (where
    handlers cannot be installed) it does nothing and signals behave as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.saving = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.saving or self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def resume_command(folder: Path) -> str:
    """The command line of this run with `--resume <folder>` (replacing any --resume it had), as the user can
    type it in the same directory; for a run started from Python, the argument to pass."""
    argv = list(sys.argv)
    program = Path(argv[0]) if argv and argv[0] else None
    if program is None or not (program.name == "litgpt" or program.parts[-2:] == ("litgpt", "__main__.py")):
        return f"resume={str(folder)!r} (the same call, resuming from that checkpoint)"
    if program.name == "__main__.py":
        prefix = [_relative(Path(sys.executable)), "-m", "litgpt"]
    else:
        on_path = shutil.which("litgpt")
        same = on_path is not None and os.path.realpath(on_path) == os.path.realpath(program)
        prefix = ["litgpt" if same else _relative(program)]
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume="):
            continue
        args.append(arg)
    return shlex.join(prefix + args + ["--resume", str(folder)])


def _relative(path: Path) -> str:
    """`path` relative to the current directory when it lies inside it (e.g. .venv/bin/litgpt), else as is."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
