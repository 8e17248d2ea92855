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


def first_steps(curves: pd.DataFrame, runs: list[str], level: float) -> list[float]:
    """Per run, the first logged step at which its curve reaches `level` (runs that never do are left out; a
    rounding error's worth below counts as reached: a mean of accuracies is not exact)."""
    reached = [curves[run].dropna()[lambda s: s >= level - 1e-9].index.min() for run in runs]
    return [float(step) for step in reached if not pd.isna(step)]


def results_table(runs: pd.DataFrame, threshold: float, metric: str = "val/accuracy",
                  baseline: str | None = None) -> pd.DataFrame:
    """One row per variant: seeds, final, best, steps to `threshold` (mean, CI) and how many seeds reached it.
    With `baseline` (a variant's name): steps to match, the first step at which a run reaches the baseline's mean
    final accuracy (the paper's "RLSD at 200 steps beats GRPO at 400"), and how many seeds did."""
    curves = metric_curves(runs, metric)
    variant_of = runs.drop_duplicates("run").set_index("run")["variant"]
    members = {variant: [run for run in curves.columns if variant_of[run] == variant]
               for variant in sorted(variant_of.unique())}
    if baseline is not None and baseline not in members:
        raise SystemExit(f"--baseline {baseline}: no such variant (there are: {', '.join(members)})")
    target = mean_ci([curves[run].dropna().iloc[-1] for run in members[baseline]])[0] if baseline else None
    rows = []
    for variant, columns in members.items():
        finals = [curves[run].dropna().iloc[-1] for run in columns]
        reached = first_steps(curves, columns, threshold)
        row = {"variant": variant, "seeds": len(columns), "final": mean_ci(finals),
               "best": mean_ci([curves[run].max() for run in columns]), "steps_to_threshold": mean_ci(reached),
               "reached": f"{len(reached)}/{len(columns)}"}
        if baseline:
            matched = first_steps(curves, columns, target)
            row |= {"steps_to_match": mean_ci(matched), "matched": f"{len(matched)}/{len(columns)}"}
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["baseline"] = (baseline, target) if baseline else None
    return table


def _cell(value: tuple[float, float], digits: int, pm: str) -> str:
    mean, half = value
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} {pm} {half:.{digits}f}"


def _rows(table: pd.DataFrame, pm: str) -> list[list[str]]:
    match = (lambda r: [_cell(r.steps_to_match, 0, pm), r.matched]) if table.attrs.get("baseline") else (lambda r: [])
    return [[r.variant, str(r.seeds), _cell(r.final, 3, pm), _cell(r.best, 3, pm),
             _cell(r.steps_to_threshold, 0, pm), r.reached, *match(r)] for r in table.itertuples()]


def headers(threshold: float, table: pd.DataFrame | None = None) -> list[str]:
    columns = ["method", "seeds", "final val acc", "best val acc", f"steps to {threshold:g}", "reached"]
    if table is not None and table.attrs.get("baseline"):
        name, target = table.attrs["baseline"]
        columns += [f"steps to match {name} ({target:.3f})", "matched"]
    return columns


def to_markdown(table: pd.DataFrame, threshold: float) -> str:
    names = headers(threshold, table)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(table, "±")]
    return "\n".join(lines) + "\n\nmean ± 95% CI over seeds (Student t); one seed: no interval.\n"


def to_latex(table: pd.DataFrame, threshold: float) -> str:
    escape = lambda text: text.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    names = headers(threshold, table)
    lines = [r"\begin{tabular}{l" + "r" * (len(names) - 1) + "}", r"\toprule", " & ".join(map(escape, names)) + r" \\",
             r"\midrule"]
    lines += [" & ".join(escape(cell) for cell in row) + r" \\" for row in _rows(table, r"$\pm$")]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--threshold", type=float, default=0.8, help="validation accuracy for 'steps to'")
    parser.add_argument("--baseline", help="a variant (e.g. grpo): add steps to reach its mean final accuracy")
    args = parser.parse_args(argv)
    table = results_table(load_runs(args.paths), args.threshold, baseline=args.baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, args.threshold)
    (args.out / "results.md").write_text(markdown)
    (args.out / "results.tex").write_text(to_latex(table, args.threshold))
    print(markdown)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.tex'}")


if __name__ == "__main__":
    main()
