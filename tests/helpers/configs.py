"""The real configs (conf/), composed as the entry point composes them, for tests."""

from __future__ import annotations

from methods import build_objective
from rlsd_lab.config import compose_config


def override(key: str, value) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key}={text}"


def objective(name: str, *overrides: str, **method_values):
    """The objective of conf/method/<name>.yaml with `method.<key>=<value>` for each keyword (and raw overrides)."""
    cfg = compose_config([f"method={name}", *overrides,
                          *(override(f"method.{key}", value) for key, value in method_values.items())])
    return build_objective(cfg.method, cfg.loss)
