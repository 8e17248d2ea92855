"""Small helpers that pull the answer out of a model response; shared by the verifiers.

All run in one linear pass over the text (no backtracking regexes), so hostile megabyte responses stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every closed Markdown code fence as `(language, body)`, in order; `language` is lowercased, `""` if none.

    A fence is a line starting (after indentation) with three backticks; it closes on a line of backticks only.
    An unclosed final fence (a truncated response) is not a block: the model did not finish its answer.
    """
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if language is None:
            if stripped.startswith("```"):
                info = stripped.strip("`").split(maxsplit=1)
                language, body = (info[0].lower() if info else ""), []
        elif stripped.startswith("```") and not stripped.strip("`"):
            blocks.append((language, "\n".join(body)))
            language = None
        else:
            body.append(line)
    return blocks


def last_fenced_block(text: str, languages: Iterable[str] | None = ("sql",)) -> str | None:
    """The body of the last fenced block tagged with one of `languages` (case-insensitive); `None` matches any
    block, tagged or not. Returns `None` when there is no such block."""
    wanted = None if languages is None else {language.lower() for language in languages}
    for language, body in reversed(fenced_blocks(text)):
        if wanted is None or language in wanted:
            return body
    return None


def after_last_marker(text: str, marker: str) -> str | None:
    """The rest of the last line that starts (after indentation) with `marker`, stripped; `None` if none does.

    Only a line start counts, so a marker inside other words ("DATA:" for "A:") is not taken for one.
    """
    for line in reversed(text.splitlines()):
        stripped = line.lstrip()
        if stripped.startswith(marker):
            return stripped[len(marker):].strip()
    return None


def outermost_json_span(text: str) -> str | None:
    """From the first `{` or `[` to the last matching closer of the same kind, or `None`.

    A cheap way to drop the prose a model writes around a JSON value; it does not check the brackets balance,
    the JSON parser does that.
    """
    starts = [index for index in (text.find("{"), text.find("[")) if index >= 0]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    return text[start:end + 1] if end > start else None
