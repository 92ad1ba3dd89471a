"""Rows of the GPU acceptance table: a figure, its goal and pass / fail, and the Markdown table of them.

A row is a plain dict (it travels as JSON between the section processes and the driver):
    {"section", "check", "value", "figure", "goal", "result", "note"}
`result` is "pass", "fail", "info" (no goal), "no GPU" (a CUDA-only figure in a CPU dry run), "error" or
"timeout".
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any, Optional

_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def fmt(value: Optional[float], unit: str = "") -> str:
    """`value` with 3 significant digits (and its unit), or "-" when not measured."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f}%"
    if unit == "x":
        return f"{value:.2f}x"
    text = f"{value:.3g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def row(
    section: str,
    check: str,
    value: Optional[float],
    unit: str = "",
    goal: Optional[tuple[str, float]] = None,
    *,
    gpu: bool,
    cuda_only: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """One row of the table.

    Args:
        section: the part of the check (decode, pretrain, ...).
        check: what was measured.
        value: the figure (None: not measured).
        unit: its unit; "%" and "x" format a fraction and a ratio.
        goal: (comparison, threshold) such as (">=", 0.75), or None for a figure without a goal.
        gpu: whether this run had a CUDA GPU.
        cuda_only: the figure means something only on a GPU (judged "no GPU" in a CPU dry run).
        note: details (the raw timings behind a ratio, the sizes).

    Returns:
        The row as a dict.
    """
    goal_text = "" if goal is None else f"{goal[0]} {fmt(goal[1], unit)}"
    if cuda_only and not gpu:
        result = "no GPU"
    elif value is None:
        result = "error" if goal is not None else "info"
    elif goal is None:
        result = "info"
    else:
        result = "pass" if _COMPARE[goal[0]](value, goal[1]) else "fail"
    return {"section": section, "check": check, "value": value, "figure": fmt(value, unit), "goal": goal_text,
            "result": result, "note": note}


def problem(section: str, result: str, note: str) -> dict[str, Any]:
    """A row saying that a section ended without its figures ("error" or "timeout")."""
    return {"section": section, "check": "section finished", "value": None, "figure": "-", "goal": "finishes",
            "result": result, "note": note}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table."""
    lines = ["| section | check | figure | goal | result | note |", "|---|---|---:|---|---|---|"]
    for r in rows:
        cells = [r["section"], r["check"], r["figure"], r["goal"], r["result"], r["note"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))


def read_rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []
