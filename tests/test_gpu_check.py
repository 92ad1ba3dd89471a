"""The GPU acceptance script (tests/gpu/check.py) in its CPU dry run, so that it never rots, and the parts
that decide its results: the per-section time limit, the pass / fail rules and the section list."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gpu import check
from tests.gpu.report import markdown, row

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_produces_every_section_with_cuda_rows_marked_no_gpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "tests/gpu/check.py", "--dry-run", "--out", str(out), "--work",
                           str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert result["dry_run"] and set(result["section_seconds"]) == set(check.ORDER)
    assert {r["section"] for r in rows} == set(check.ORDER)
    assert not [r for r in rows if r["result"] in ("error", "timeout", "fail")]
    judged = [r for r in rows if r["goal"]]
    assert judged and all(r["result"] == "no GPU" for r in judged)
    checks = {r["check"] for r in rows}
    for expected in ("batch 1: share of the memory roofline", "kernels on: MFU vs the measured bf16 peak",
                     "QLoRA (nf4): peak memory", "16 concurrent clients: tokens/s",
                     "fused LM head + cross-entropy: peak memory, eager / Triton", "test_cuda_bnb (CUDA-marked)",
                     "test_cuda_triton (CUDA-marked)"):
        assert expected in checks
    # the figures were computed (toy sizes) even where the goal cannot be judged
    assert all(r["value"] is not None for r in rows if r["section"] in ("decode", "serve"))
    table = (out / "results.md").read_text()
    assert table.startswith("| section | check | figure | goal | result | note |")
    assert "| decode | batch 1: share of the memory roofline |" in table and table in proc.stdout
    assert not (tmp_path / "work").exists()  # scratch removed


def test_a_hanging_section_is_killed_at_its_limit(tmp_path):
    start = time.monotonic()
    code, seconds = check.run_isolated([sys.executable, "-c", "import time; time.sleep(60)"], 1.0,
                                       tmp_path / "hang.log", {})
    assert code is None and seconds < 10 and time.monotonic() - start < 10
    code, _ = check.run_isolated([sys.executable, "-c", "print('ok')"], 30, tmp_path / "ok.log", {})
    assert code == 0 and (tmp_path / "ok.log").read_text().strip() == "ok"


def test_rows_judge_against_their_goal_and_say_no_gpu_on_the_cpu():
    assert row("s", "c", 0.8, "%", (">=", 0.75), gpu=True)["result"] == "pass"
    assert row("s", "c", 0.7, "%", (">=", 0.75), gpu=True)["result"] == "fail"
    assert row("s", "c", 0.7, "%", (">=", 0.75), gpu=False)["result"] == "no GPU"
    assert row("s", "c", None, "x", (">=", 4.0), gpu=True)["result"] == "error"
    assert row("s", "c", 12.0, "tok/s", gpu=True)["result"] == "info"
    r = row("s", "c", 0.756, "%", (">=", 0.75), gpu=True)
    assert (r["figure"], r["goal"]) == ("75.6%", ">= 75.0%")
    assert markdown([r]).splitlines()[2] == "| s | c | 75.6% | >= 75.0% | pass |  |"


def test_sections_needing_the_checkpoint_bring_prepare_and_unknown_ones_fail(capsys):
    args = check.parse_args(["--out", "x", "--sections", "serve,env"])
    assert args.sections == ["env", "prepare", "serve"] and args.isolate
    assert not check.parse_args(["--out", "x", "--dry-run"]).isolate
    with pytest.raises(SystemExit):
        check.parse_args(["--out", "x", "--sections", "decode,warp"])
    assert "unknown section(s) warp" in capsys.readouterr().err


def test_sections_past_the_overall_budget_are_reported_not_started(tmp_path):
    assert check.main(["--out", str(tmp_path), "--sections", "env", "--budget", "1"]) == 1
    (r,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (r["section"], r["result"]) == ("env", "timeout") and "not started" in r["note"]
