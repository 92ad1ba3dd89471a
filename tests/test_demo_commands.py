"""`make demo` prints commands; each must run as printed, in a fresh shell, from the directory the demo ran in."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ~2 minutes; CI runs it (`make test`), a plain `pytest` leaves it out: tests/test_pretrain.py runs the demo itself
# and every verb it suggests has its own CLI tests
pytestmark = pytest.mark.slow


def fresh_env() -> dict[str, str]:
    """A shell environment without this venv on the PATH (as after the README's set-up commands)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": path, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_commands(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "litgpt.demo", "--out_dir", "out/demo", "--max_steps", "3",
                           "--max_time", "60"], cwd=work, env=fresh_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.split("Try the model:", 1)[1].strip().splitlines()
    return work, [line.strip() for line in lines if line.strip()], proc.stdout


def test_demo_banner_states_the_true_size(demo_commands):
    _, _, stdout = demo_commands
    assert "1.3M-parameter" in stdout.splitlines()[0]


def test_every_printed_command_runs_as_printed(demo_commands):
    work, commands, _ = demo_commands
    assert any(" generate " in c for c in commands) and any(" finetune_lora " in c for c in commands)
    env = fresh_env()
    for command in commands:
        args = shlex.split(command)
        assert (work / args[0]).is_file(), f"{args[0]} does not exist relative to {work}"
        verb = args[1]
        if verb == "serve":
            port = free_port()
            server = subprocess.Popen(args + ["--port", str(port)], cwd=work, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            try:
                deadline = time.time() + 120
                while time.time() < deadline:
                    assert server.poll() is None, server.communicate()[0][-3000:]
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.5)
                else:
                    raise AssertionError("the printed serve command did not start listening")
            finally:
                server.terminate()
                server.wait(timeout=30)
            continue
        stdin = "Hello there\n/quit\n" if verb == "chat" else None
        done = subprocess.run(args, cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        if verb.startswith("finetune"):
            assert "warmup" not in done.stdout.lower() or "longer than the run" not in done.stdout
            assert "stopped by epochs" in done.stdout
