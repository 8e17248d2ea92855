"""Prompt rendering for the embedded character-level model.

One template serves student and teacher: the teacher prompt is the student prompt with exactly one reference
block inserted before the response starts, nothing else changed (methods.md, "Decision (teacher prompt)").
An empty reference inserts nothing, so the teacher prompt then equals the student prompt token for token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlsd_lab.tasks.problem import Problem

ANSWER_MARKER = "A:"
CITATION_MARKER = "@ref"
REFERENCE_MODES = ("answer", "solution")


def reference_text(problem: Problem, mode: str) -> str:
    """The privileged information shown to the teacher: the final answer only, or the full solution."""
    if mode == "answer":
        return problem.answer
    if mode == "solution":
        return problem.solution
    raise ValueError(f"unknown reference mode {mode!r}; valid choices: {', '.join(REFERENCE_MODES)}")


def render_prompt(question: str, reference: str = "") -> str:
    """`Q:<question>\\n`, plus `[<reference>]\\n` when a reference is given."""
    block = f"[{reference}]\n" if reference else ""
    return f"Q:{question}\n{block}"
