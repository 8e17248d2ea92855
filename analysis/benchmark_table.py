"""The paper's Table 2 layout from evaluation results: methods x benchmarks plus the average.

    python -m analysis.benchmark_table <runs or eval dirs> [--metric avg@8] [--out figures]

Reads every `eval/results.csv` below the paths (`python -m rlsd_lab.evaluate`; of runs evaluated at every
checkpoint, the final policy). A cell is the mean over seeds of a
method's score on a set, with the 95% CI over seeds (Student t). The average column averages each seed's sets
first, then takes the mean and CI over seeds. The best mean per column is in bold (none where all rows tie).
Writes `benchmark_table.md` and `benchmark_table.tex`, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from analysis.runs import variant_labels
from analysis.table import mean_ci

AVERAGE = "average"


def load_results(paths: list[Path]) -> pd.DataFrame:
    """Every results.csv, with `row`: the method (or arm) and the overrides that tell its runs apart from the rest
    (analysis.runs.variant_labels), so that an ablation of one method gives one row per setting."""
    files = sorted({f for path in paths for f in ([path] if path.is_file() else path.rglob("eval/results.csv"))})
    if not files:
        raise SystemExit(f"no eval/results.csv under {', '.join(map(str, paths))}: run python -m rlsd_lab.evaluate")
    results = pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in files], ignore_index=True)
    results["overrides"] = results["overrides"].fillna("")
    keys = sorted(set(zip(results["method"], results["overrides"])))
    labels = variant_labels([{"name": m, "overrides": tuple(o.split()) if o else ()} for m, o in keys])
    names = dict(zip(keys, labels))
    results["row"] = [names[key] for key in zip(results["method"], results["overrides"])]
    return results


def benchmark_table(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows: methods; columns: the sets and the average; cells: (mean, CI half-width) over seeds."""
    chosen = results[results["metric"] == metric]
    if chosen.empty:
        raise SystemExit(f"--metric {metric}: not in the results (they have {', '.join(sorted(set(results.metric)))})")
    if "step" in chosen:  # eval.checkpoints=all: the table is of the final policies, the latest step of each run
        chosen = chosen.sort_values("step").groupby(["row", "seed", "set"]).tail(1)
    scores = chosen.pivot_table(index=["row", "seed"], columns="set", values="value", aggfunc="mean")
    scores[AVERAGE] = scores.mean(axis=1)
    columns = [c for c in scores.columns if c != AVERAGE] + [AVERAGE]
    return pd.DataFrame({column: {method: mean_ci(group[column].dropna().tolist())
                                  for method, group in scores.groupby(level="row")} for column in columns})


def _cell(value: tuple[float, float], best: bool, latex: bool) -> str:
    mean, half = value
    text = f"{mean:.3f}" + ("" if math.isnan(half) else (" $\\pm$ " if latex else " ± ") + f"{half:.3f}")
    if best:
        return f"\\textbf{{{text}}}" if latex else f"**{text}**"
    return text


def render(table: pd.DataFrame, latex: bool = False) -> str:
    # the best mean of a column, unless every row has it (no winner)
    best = {column: max(v[0] for v in table[column]) if len({v[0] for v in table[column]}) > 1 else None
            for column in table.columns}
    rows = [[method] + [_cell(table.at[method, c], table.at[method, c][0] == best[c], latex) for c in table.columns]
            for method in table.index]
    header = ["method", *table.columns]
    if latex:
        lines = [r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
                 " & ".join(h.replace("_", r"\_") for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(cells) + r" \\" for cells in rows]
        return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows]) + "\n"


def results_from_command_line(description: str, argv: list[str] | None):
    """The CLI of the tools that read evaluation results: (args, results, metric; default avg@n)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="runs, folders of runs, or results.csv files")
    parser.add_argument("--metric", default=None, help="avg@n (default), pass@k, maj@k or response_length")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    results = load_results(args.paths)
    return args, results, args.metric or f"avg@{int(results['n'].iloc[0])}"


def main(argv: list[str] | None = None) -> None:
    args, results, metric = results_from_command_line(__doc__, argv)
    table = benchmark_table(results, metric)
    seeds = results.groupby("row")["seed"].nunique()
    counts = str(seeds.iloc[0]) if seeds.nunique() == 1 else ", ".join(f"{m}: {n}" for m, n in seeds.items())
    caption = (f"{metric}, mean ± 95% CI over seeds ({counts} per row); "
               f"n={results['n'].iloc[0]}, temperature {results['temperature'].iloc[0]}, top-p "
               f"{results['top_p'].iloc[0]}, {results['problems'].iloc[0]} problems per set.\n")
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = render(table) + "\n" + caption
    (args.out / "benchmark_table.md").write_text(markdown)
    (args.out / "benchmark_table.tex").write_text(render(table, latex=True))
    print(markdown + f"wrote {args.out / 'benchmark_table.md'} and .tex")


if __name__ == "__main__":
    main()
