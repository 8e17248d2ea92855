"""One wording for every "unknown value" error: what was asked for, and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable


def unknown_choice(what: str, value, choices: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def check_choice(what: str, value, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise unknown_choice(what, value, choices)
