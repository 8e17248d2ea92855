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
TEACHER_REFERENCES = (*REFERENCE_MODES, "none")  # none: an external teacher, stronger without privileged information


def reference_text(problem: Problem, mode: str) -> str:
    """The privileged information shown to the teacher: the final answer only, or the full solution (the answer
    when a row has no reference solution); none: nothing, so the teacher's prompt is the student's."""
    if mode == "none":
        return ""
    if mode == "answer":
        return problem.answer
    if mode == "solution":
        return problem.solution or problem.answer
    raise unknown_choice("reference mode", mode, TEACHER_REFERENCES)


def render_prompt(question: str, reference: str = "") -> str:
    """`Q:<question>\\n`, plus `[<reference>]\\n` when a reference is given."""
    block = f"[{reference}]\n" if reference else ""
    return f"Q:{question}\n{block}"


def chat_messages(problem: Problem, reference: str = "") -> list[dict[str, str]]:
    """The row's chat messages (or one user turn with the question); the teacher's last user turn carries the
    reference block (`CHAT_REFERENCE_BLOCK`). System prompt and earlier turns are the same for student and teacher.
    """
    messages = [dict(m) for m in problem.messages] or [{"role": "user", "content": problem.question}]
    if reference:
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last_user]["content"] += CHAT_REFERENCE_BLOCK.format(reference=reference)
    return messages


CHAT_REFERENCE_BLOCK = "\n\nReference (for you only):\n{reference}"
PROMPT_FORMATS = ("plain", "chat")


class PromptRenderer:
    """Renders student (`reference=""`) and teacher prompts in one `format`: `plain` (the embedded template)
    or `chat` (the tokenizer's chat template, for real instruction-tuned models). `template_options` are the
    chat template's own variables (`model.chat_template_options`, e.g. Qwen3's `enable_thinking: false`)."""

    def __init__(self, format: str, tokenizer, template_options: dict | None = None):
        check_choice("prompt format", format, PROMPT_FORMATS)
        if format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("model.prompt_format=chat needs a tokenizer with a chat template")
        self.format, self.tokenizer = format, tokenizer
        self.template_options = dict(template_options or {})

    def text(self, problem: Problem, reference: str = "") -> str:
        """The prompt of `problem`; the teacher's when a `reference` is given. In the plain format a chat row
        is reduced to its last user turn (`problem.question`)."""
        if self.format == "chat":
            return self.tokenizer.apply_chat_template(chat_messages(problem, reference), tokenize=False,
                                                      add_generation_prompt=True, **self.template_options)
        return render_prompt(problem.question, reference)

    def ids(self, problem: Problem, reference: str = "") -> list[int]:
        return self.tokenizer.encode(self.text(problem, reference), add_special_tokens=False)
