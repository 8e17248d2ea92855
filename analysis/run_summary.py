"""Headline numbers of one run, read back from its metrics.csv; also a CLI that prints them for many runs.

    python -m analysis.run_summary runs/<run> [more run dirs or a multirun dir]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from analysis.runs import find_run_dirs


def validation_curve(metrics_csv: Path) -> pd.Series:
    """val/accuracy indexed by step (rows without a validation are dropped)."""
    frame = pd.read_csv(metrics_csv)
    if "val/accuracy" not in frame:
        raise ValueError(f"{metrics_csv} has no val/accuracy column")
    curve = frame.dropna(subset=["val/accuracy"]).groupby("step")["val/accuracy"].last()
    if curve.empty:
        raise ValueError(f"{metrics_csv} has no validation rows")
    return curve


def validation_summary(metrics_csv: Path) -> dict:
    curve = validation_curve(metrics_csv)
    return {"val_accuracy_start": float(curve.iloc[0]), "val_accuracy_final": float(curve.iloc[-1]),
            "val_accuracy_best": float(curve.max()), "final_step": int(curve.index[-1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    rows = [json.loads((run / "summary.json").read_text()) | {"run": str(run)} for run in find_run_dirs(args.paths)
            if (run / "summary.json").exists()]
    if not rows:
        raise SystemExit(f"no runs (directories with summary.json) under {', '.join(map(str, args.paths))}")
    table = pd.DataFrame(rows)[["method", "seed", "steps", "val_accuracy_start", "val_accuracy_final",
                                "val_accuracy_best", "train_seconds", "run"]]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
