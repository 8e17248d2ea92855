"""Prompt rendering: the embedded plain template, or a model's chat template.

One template serves student and teacher: the teacher prompt is the student prompt with exactly one reference
block inserted before the response starts, nothing else changed (methods.md, "Decision (teacher prompt)").
An empty reference inserts nothing, so the teacher prompt then equals the student prompt token for token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlsd_lab.choices import check_choice, unknown_choice

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
    raise unknown_choice("reference mode", mode, REFERENCE_MODES)


def render_prompt(question: str, reference: str = "") -> str:
    """`Q:<question>\\n`, plus `[<reference>]\\n` when a reference is given."""
    block = f"[{reference}]\n" if reference else ""
    return f"Q:{question}\n{block}"


def chat_prompt(tokenizer, question: str, reference: str = "") -> str:
    """The model's own chat template around one user turn; the teacher's turn carries the reference block.

    The block (`CHAT_REFERENCE_BLOCK`) is appended to the user message; the template, system prompt and
    generation prompt are the same for student and teacher.
    """
    content = question + (CHAT_REFERENCE_BLOCK.format(reference=reference) if reference else "")
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


CHAT_REFERENCE_BLOCK = "\n\nReference (for you only):\n{reference}"
PROMPT_FORMATS = ("plain", "chat")


class PromptRenderer:
    """Renders student (`reference=""`) and teacher prompts in one `format`: `plain` (the embedded template)
    or `chat` (the tokenizer's chat template, for real instruction-tuned models)."""

    def __init__(self, format: str, tokenizer):
        check_choice("prompt format", format, PROMPT_FORMATS)
        if format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("model.prompt_format=chat needs a tokenizer with a chat template")
        self.format, self.tokenizer = format, tokenizer

    def text(self, question: str, reference: str = "") -> str:
        if self.format == "chat":
            return chat_prompt(self.tokenizer, question, reference)
        return render_prompt(question, reference)

    def ids(self, question: str, reference: str = "") -> list[int]:
        return self.tokenizer.encode(self.text(question, reference), add_special_tokens=False)
