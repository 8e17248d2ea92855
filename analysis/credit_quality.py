"""Credit against ground truth over training, per method: does the most-blamed token of a wrong response sit at
its first error? (the metrics: rlsd_lab/credit_quality.py)

    python -m analysis.credit_quality <run dirs or multirun dirs> --out figures/

Writes `credit_quality.png/.pdf`: first-error top-1, first-error rank and the digit tokens' share of credit on
correct responses against step, each variant's mean over seeds (band: min-max), with the baselines as grey lines
(dashed: random ranking, or equal credit per token; dotted: the student's own log-prob as the blame), and
`credit_quality.md`: each at the first and the last diagnostic step, mean ± 95% CI over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.runs import load_runs  # noqa: E402
from analysis.stability import save_figure, seed_statistics  # noqa: E402
from analysis.table import _cell, mean_ci  # noqa: E402

# (metric, panel title, baselines: (suffix, line style)); higher top-1 and digit share, lower rank are better
PANELS = (("credit/first_error_top1", "Most-blamed token = first error (share)",
           (("_random", "--"), ("_student_logprob", ":"))),
          ("credit/first_error_rank", "Rank of the first error (1 = most blamed)",
           (("_random", "--"), ("_student_logprob", ":"))),
          ("credit/correct_digit_share", "Correct responses: share of |credit| on digits", (("_uniform", "--"),)))
BASELINE_NAMES = {"_random": "random ranking", "_student_logprob": "student log-prob", "_uniform": "equal credit"}


def credit_figure(runs: pd.DataFrame, out_dir: Path, name: str = "credit_quality") -> list[Path]:
    panels = [panel for panel in PANELS if (runs["metric"] == panel[0]).any()]
    if not panels:
        raise ValueError("these runs logged no credit/* metrics: the task needs a first-error locator "
                         "(task.first_error, e.g. task=arith)")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    colours = dict(zip(sorted(runs["variant"].unique()), plt.get_cmap("tab10").colors))
    for ax, (metric, title, baselines) in zip(axes[0], panels):
        for variant, rows in seed_statistics(runs, metric).groupby("variant"):
            seeds = int(rows["count"].max())
            ax.plot(rows["step"], rows["mean"], marker="o", ms=3, color=colours[variant], label=f"{variant} (n={seeds})")
            if seeds > 1:
                ax.fill_between(rows["step"], rows["min"], rows["max"], color=colours[variant], alpha=0.15)
        for suffix, style in baselines:
            baseline = runs[runs["metric"] == metric + suffix].groupby("step")["value"].mean()
            if len(baseline):
                ax.plot(baseline.index, baseline.values, style, color="grey", label=BASELINE_NAMES[suffix])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    legend = {}  # label -> handle, over all panels (the baselines differ by panel)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    columns = max(1, min(4, 150 // max(len(label) for label in legend)))  # long variant names: fewer columns
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle("Credit against ground truth (wrong responses: where does each method put the blame?)")
    fig.tight_layout(rect=(0, min(0.6, 0.06 * (1 + len(legend) // columns)), 1, 1))
    return save_figure(fig, out_dir, name)


def first_and_last(runs: pd.DataFrame, metric: str) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Per variant: (mean, CI) over runs of the metric's value at each run's first and last logged step."""
    subset = runs[runs["metric"] == metric].sort_values("step")
    result = {}
    for variant, rows in subset.groupby("variant"):
        by_run = rows.groupby("run")["value"]
        result[variant] = (mean_ci(by_run.first().tolist()), mean_ci(by_run.last().tolist()))
    return result


def credit_table(runs: pd.DataFrame) -> str:
    steps = runs[runs["metric"] == PANELS[0][0]].groupby("run")["step"].agg(["min", "max"])
    header = "| method | metric | first step | last step |\n|---|---|---|---|"
    lines = [header]
    for metric, _, baselines in PANELS:
        for suffix in ("", *(s for s, _ in baselines)):
            for variant, (first, last) in first_and_last(runs, metric + suffix).items():
                label = variant if not suffix else f"{variant} ({BASELINE_NAMES[suffix]})"
                lines.append(f"| {label} | {metric.removeprefix('credit/')} | {_cell(first, 3, '±')} | "
                             f"{_cell(last, 3, '±')} |")
    span = f"steps {int(steps['min'].min())} and {int(steps['max'].max())}" if len(steps) else "no steps"
    return "\n".join(lines) + f"\n\nmean ± 95% CI over seeds (Student t) at the first and last diagnostic step ({span}).\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    runs = load_runs(args.paths)
    for path in credit_figure(runs, args.out):
        print(f"wrote {path}")
    table = credit_table(runs)
    (args.out / "credit_quality.md").write_text(table)
    print(table)
    print(f"wrote {args.out / 'credit_quality.md'}")


if __name__ == "__main__":
    main()
