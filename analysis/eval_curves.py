"""Evaluation accuracy against training step, per method and set: `python -m rlsd_lab.evaluate
eval.checkpoints=all` scores every checkpoint a run kept, and this draws them.

    python -m analysis.eval_curves <runs or eval dirs> [--metric avg@8] [--out figures]

One panel per set; one line per method (or setting), the mean over seeds, with the seeds' min-max band. Writes
`eval_curves.png` and `.pdf`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.benchmark_table import results_from_command_line  # noqa: E402
from analysis.stability import save_figure  # noqa: E402


def eval_curves_figure(results, metric: str, out_dir: Path) -> list[Path]:
    if "step" not in results:
        raise SystemExit("these results have no step column (made before eval.checkpoints existed): evaluate again")
    chosen = results[(results["metric"] == metric) & results["step"].notna()]
    if chosen.empty:
        raise SystemExit(f"no {metric} results with a step: evaluate with eval.checkpoints=all")
    sets = sorted(chosen["set"].unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.6), squeeze=False)
    colours = dict(zip(sorted(chosen["row"].unique()), plt.get_cmap("tab10").colors))
    for ax, name in zip(axes[0], sets):
        for row, rows in chosen[chosen["set"] == name].groupby("row"):
            stats = rows.groupby("step")["value"].agg(["mean", "min", "max", "count"]).reset_index()
            ax.plot(stats["step"], stats["mean"], marker="o", color=colours[row],
                    label=f"{row} (n={int(stats['count'].max())})")
            ax.fill_between(stats["step"], stats["min"], stats["max"], color=colours[row], alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("RL step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_dir, "eval_curves")


def main(argv: list[str] | None = None) -> None:
    args, results, metric = results_from_command_line(__doc__, argv)
    for path in eval_curves_figure(results, metric, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
