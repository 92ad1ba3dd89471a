"""GPU acceptance of litgpt in one command: kernels, bitsandbytes, decode, pretrain, finetune and serve on one
H100 / H200, in at most 8 minutes, as one Markdown table (figure, goal, pass / fail) plus JSON.

    make gpu-wheels                                      # here, with network: fills .wheels/ (< 60 MB)
    make gpu-check                                       # there: installs .wheels/ offline, then runs this
    python tests/gpu/check.py --out out/gpu-check        # the same without the install step
    python tests/gpu/check.py --dry-run --out /tmp/gc    # toy sizes on the CPU ("no GPU" rows), ~1 minute

On a GPU each section runs in its own process with its own time limit (SECTION_SECONDS), inside an overall
budget (--budget): a section that hangs is killed and reported as "timeout", and the next one starts.
Writes <out>/results.md, <out>/results.json, <out>/sections/*.json and <out>/logs/. See tutorials/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

if "--dry-run" in sys.argv:  # the Triton kernels then run in Triton's CPU interpreter; set before triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.gpu.report import markdown, problem, read_rows  # noqa: E402

SECTION_SECONDS = {  # the limit of each section on the GPU; the estimates are in tutorials/gpu.md
    "env": 30,
    "prepare": 45,
    "tests": 100,
    "kernels": 80,
    "decode": 120,
    "pretrain": 120,
    "finetune": 90,
    "serve": 60,
}
ORDER = tuple(SECTION_SECONDS)
NEEDS_CHECKPOINT = ("decode", "pretrain", "finetune", "serve")


def run_isolated(cmd: list[str], seconds: float, log: Path, env: dict[str, str]) -> tuple[Optional[int], float]:
    """Runs `cmd` in a new process group with output to `log`; kills the whole group after `seconds`.

    Returns:
        (exit code, or None when it was killed for its time limit; seconds it ran).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: Optional[int] = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the section and its children (servers, compile workers)
            proc.wait()
            code = None
    return code, time.monotonic() - start


def _log_tail(log: Path, chars: int = 300) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return " ".join(text[-chars:].split())


def default_work_dir() -> Path:
    """Scratch space for the checkpoint and training runs: /dev/shm when it has room (fast saves), else /tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 40 * 2**30:
        return shm / f"litgpt-gpu-check-{os.getpid()}"
    return Path(tempfile.gettempdir()) / f"litgpt-gpu-check-{os.getpid()}"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md, results.json and logs")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, to check the script itself")
    parser.add_argument("--sections", default=",".join(ORDER), help=f"comma-separated subset of {', '.join(ORDER)}")
    parser.add_argument("--budget", type=float, default=480, help="seconds for everything (default: 8 minutes)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: in /dev/shm or /tmp)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each section in its own killable process (default: on, except for --dry-run)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (checkpoint, runs)")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTION_SECONDS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if any(s in NEEDS_CHECKPOINT for s in sections) and "prepare" not in sections:
        sections.insert(0, "prepare")
    args.sections = [s for s in ORDER if s in sections]
    if args.isolate is None:
        args.isolate = not args.dry_run
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the sections, prints the table and writes it.

    Returns:
        0 when every row passed (or is informative / "no GPU"), 1 otherwise.
    """
    args = parse_args(argv)
    out = args.out.resolve()
    shutil.rmtree(out / "sections", ignore_errors=True)
    (out / "sections").mkdir(parents=True, exist_ok=True)
    work = (args.work or default_work_dir()).resolve()
    deadline = time.monotonic() + args.budget
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false"}
    if args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.setdefault("TRITON_INTERPRET", "0")
    rows, timings = [], {}
    try:
        for name in args.sections:
            left = deadline - time.monotonic()
            limit = min(SECTION_SECONDS[name], left) if not args.dry_run else SECTION_SECONDS[name] * 3
            if limit < 5:
                rows.append(problem(name, "timeout", f"not started: the {args.budget:.0f} s budget was spent"))
                continue
            print(f"[gpu-check] {name} (limit {limit:.0f} s)", flush=True)
            if name in NEEDS_CHECKPOINT and not (work / "checkpoint" / "lit_model.pth").is_file():
                rows.append(problem(name, "error", "no checkpoint: the prepare section failed"))
                continue
            if args.isolate:
                cmd = [sys.executable, "-m", "tests.gpu.sections", name, "--work", str(work), "--out", str(out),
                       "--seconds", str(limit)] + (["--dry-run"] if args.dry_run else [])
                log = out / "logs" / f"{name}.log"
                code, seconds = run_isolated(cmd, limit, log, env)
                got = read_rows(out / "sections" / f"{name}.json")
                if code is None:
                    got = [r for r in got if r["check"] != "_seconds"]
                    got.append(problem(name, "timeout", f"killed after {seconds:.0f} s; log: {_log_tail(log)}"))
                elif not got:
                    got = [problem(name, "error", f"exit code {code}; log: {_log_tail(log)}")]
            else:
                from tests.gpu.sections import Context, run_section

                os.environ.update(env)
                ctx = Context(work=work, out=out, dry_run=args.dry_run, deadline=time.monotonic() + limit)
                got = run_section(name, ctx)
            timings[name] = next((r["value"] for r in got if r["check"] == "_seconds"), None)
            rows += [r for r in got if r["check"] != "_seconds"]
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    total = args.budget - (deadline - time.monotonic())
    table = markdown(rows)
    summary = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if v is not None)
    text = (f"{table}\n\n{'Dry run (toy sizes, CPU)' if args.dry_run else 'GPU run'}: {total:.0f} s in all"
            f" ({summary}).\n")
    print(text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"dry_run": args.dry_run, "seconds": total,
                                                  "section_seconds": timings, "rows": rows}, indent=1))
    print(f"[gpu-check] results: {out / 'results.md'} and {out / 'results.json'}", flush=True)
    return 1 if any(r["result"] in ("fail", "error", "timeout") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
