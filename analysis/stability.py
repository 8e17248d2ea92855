"""Stability curves: validation accuracy vs step per method (mean over seeds with a band), plus panels for
response length, entropy, leakage rate and teacher-student divergence when the runs logged them.

    python -m analysis.stability <run dirs or a multirun dir> --out figures/
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.runs import load_runs  # noqa: E402

PANELS = (("val/accuracy", "Validation accuracy (greedy)"),
          ("train/response_length", "Response length (tokens)"),
          ("train/entropy", "Entropy (nats / token)"),
          ("train/leakage_rate", "Leakage rate"),
          ("train/teacher_student_kl", "Teacher-student KL"),
          ("teacher/val_accuracy", "Teacher accuracy (greedy, with its reference)"))
SMOOTHING = 5  # steps of rolling mean on per-step training metrics (validation is plotted as logged)


def seed_statistics(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per variant and step: mean, min, max and number of seeds (runs of different lengths are fine)."""
    subset = runs[runs["metric"] == metric].sort_values("step")
    if metric.startswith("train/"):
        subset = subset.assign(value=subset.groupby("run")["value"].transform(
            lambda v: v.rolling(SMOOTHING, min_periods=1).mean()))
    grouped = subset.groupby(["variant", "step"])["value"]
    return grouped.agg(["mean", "min", "max", "count"]).reset_index()


def stability_figure(runs: pd.DataFrame, out_dir: Path, name: str = "stability") -> list[Path]:
    """Writes <name>.png and <name>.pdf; returns their paths."""
    panels = [(m, title) for m, title in PANELS if (runs["metric"] == m).any()]
    extra = sorted(m for m in runs["metric"].unique() if re.fullmatch(r"val/.+/accuracy", m))  # train.val_sets
    panels[1:1] = [(m, f"Validation accuracy on {m.split('/')[1]} (greedy)") for m in extra]
    if not panels:
        raise ValueError(f"none of the metrics {[m for m, _ in PANELS]} is in these runs")
    columns = min(3, len(panels))
    rows_of_panels = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.6 * columns, 3.6 * rows_of_panels), squeeze=False)
    axes = axes.flatten()
    for unused in axes[len(panels):]:
        unused.set_visible(False)
    colours = dict(zip(sorted(runs["variant"].unique()), plt.get_cmap("tab10").colors))
    for ax, (metric, title) in zip(axes, panels):
        stats = seed_statistics(runs, metric)
        for variant, rows in stats.groupby("variant"):
            seeds = int(rows["count"].max())
            ax.plot(rows["step"], rows["mean"], color=colours[variant], label=f"{variant} (n={seeds})")
            if seeds > 1:
                ax.fill_between(rows["step"], rows["min"], rows["max"], color=colours[variant], alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    # One legend for all panels, off the data: in the free panel slot if there is one, else below the panels.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("Training stability: mean over seeds, band = min-max across seeds")
    if len(panels) < len(axes):
        spare = axes[len(panels)]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(handles, labels, loc="center", fontsize=9, frameon=False)
        fig.tight_layout()
    else:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0.05 * (-(-len(labels) // 2)) / rows_of_panels, 1, 1))
    return save_figure(fig, out_dir, name)


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Writes <name>.png (200 dpi) and <name>.pdf into `out_dir`, closes the figure, returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=200)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding them")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    for path in stability_figure(load_runs(args.paths), args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
