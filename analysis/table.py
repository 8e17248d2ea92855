"""Results table like the paper's: final and best validation accuracy, steps to reach a threshold, each as
mean ± 95% confidence interval over seeds (Student t), in Markdown and LaTeX.

    python -m analysis.table <run dirs or a multirun dir> --out figures/ [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import pandas as pd

from analysis.runs import load_runs, metric_curves

# Two-sided 95% Student-t quantiles by degrees of freedom (1..30); above 30 the normal 1.96 is close enough.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042]


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% CI); the half-width is nan for a single value."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    quantile = T_975[len(values) - 2] if len(values) - 1 <= len(T_975) else 1.96
    return statistics.mean(values), quantile * statistics.stdev(values) / math.sqrt(len(values))


def results_table(runs: pd.DataFrame, threshold: float, metric: str = "val/accuracy") -> pd.DataFrame:
    """One row per variant: seeds, final, best, steps to `threshold` (mean, CI) and how many seeds reached it."""
    curves = metric_curves(runs, metric)
    variant_of = runs.drop_duplicates("run").set_index("run")["variant"]
    rows = []
    for variant in sorted(variant_of.unique()):
        columns = [run for run in curves.columns if variant_of[run] == variant]
        finals = [curves[run].dropna().iloc[-1] for run in columns]
        bests = [curves[run].max() for run in columns]
        reached = [curves[run].dropna()[lambda s: s >= threshold].index.min() for run in columns]
        reached = [float(step) for step in reached if not pd.isna(step)]
        rows.append({"variant": variant, "seeds": len(columns), "final": mean_ci(finals), "best": mean_ci(bests),
                     "steps_to_threshold": mean_ci(reached), "reached": f"{len(reached)}/{len(columns)}"})
    return pd.DataFrame(rows)


def _cell(value: tuple[float, float], digits: int, pm: str) -> str:
    mean, half = value
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} {pm} {half:.{digits}f}"


def _rows(table: pd.DataFrame, pm: str) -> list[list[str]]:
    return [[r.variant, str(r.seeds), _cell(r.final, 3, pm), _cell(r.best, 3, pm),
             _cell(r.steps_to_threshold, 0, pm), r.reached] for r in table.itertuples()]


def headers(threshold: float) -> list[str]:
    return ["method", "seeds", "final val acc", "best val acc", f"steps to {threshold:g}", "reached"]


def to_markdown(table: pd.DataFrame, threshold: float) -> str:
    lines = ["| " + " | ".join(headers(threshold)) + " |", "|" + "---|" * len(headers(threshold))]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(table, "±")]
    return "\n".join(lines) + "\n\nmean ± 95% CI over seeds (Student t); one seed: no interval.\n"


def to_latex(table: pd.DataFrame, threshold: float) -> str:
    escape = lambda text: text.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{tabular}{lrrrrr}", r"\toprule", " & ".join(map(escape, headers(threshold))) + r" \\",
             r"\midrule"]
    lines += [" & ".join(escape(cell) for cell in row) + r" \\" for row in _rows(table, r"$\pm$")]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--threshold", type=float, default=0.8, help="validation accuracy for 'steps to'")
    args = parser.parse_args(argv)
    table = results_table(load_runs(args.paths), args.threshold)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, args.threshold)
    (args.out / "results.md").write_text(markdown)
    (args.out / "results.tex").write_text(to_latex(table, args.threshold))
    print(markdown)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.tex'}")


if __name__ == "__main__":
    main()
