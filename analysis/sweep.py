"""One report for a Hydra sweep directory: which knob mattered, against the seed spread.

    python -m analysis.sweep <sweep dir> [--out <dir>] [--watch [SECONDS]]

Reads every job directory below the sweep (one with `.hydra/overrides.yaml`; an Optuna trial's seeds count as
jobs of their own): its overrides, its status
(`finished`: summary.json written; `failed`: its log ends in an error, or it stopped without a summary longer than
`--stale` seconds ago; `running`: otherwise) and its validation curve. The swept knobs are the overrides whose
values differ between jobs, the seed excepted. It writes into `--out` (default `<sweep dir>/report`):

- `sweep.md` and `sweep.html`: a table grouped by the swept values (final and best validation accuracy, mean and
  95% CI over seeds; runs finished / failed / running), the knobs ranked by the spread of their group means
  against the seed spread, and the failed runs with the last line of their log; the HTML embeds the figures;
- `knob_<name>.png`: final and best accuracy against each value of that knob, one point per seed, the mean line;
- `stability.png`: the stability figure, one curve per group.

`--watch` rewrites the report (and prints the table) every SECONDS (default 30) until every run has ended.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from analysis.runs import load_runs  # noqa: E402
from analysis.run_summary import validation_curve  # noqa: E402
from analysis.stability import save_figure, stability_figure  # noqa: E402
from analysis.table import mean_ci  # noqa: E402

NOT_KNOBS = ("seed", "hydra.", "trainer.progress_bar", "threads")
ERROR_MARKERS = ("Error", "Traceback", "error:")
STATUSES = ("finished", "failed", "running")


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    status: str
    final: float = math.nan
    best: float = math.nan
    last_line: str = ""


def parse_overrides(path: Path) -> dict[str, str]:
    pairs = [o.split("=", 1) for o in yaml.safe_load(path.read_text()) or [] if "=" in o]
    return {key.lstrip("+~"): value for key, value in pairs}


def last_log_line(job_dir: Path) -> str:
    logs = sorted(job_dir.glob("*.log"))
    lines = [line for log in logs for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def read_job(job_dir: Path, stale_seconds: float, now: float) -> Job:
    overrides = parse_overrides(job_dir / ".hydra" / "overrides.yaml")
    last = last_log_line(job_dir)
    if (job_dir / "summary.json").exists():
        status = "finished"
    else:
        newest = max((p.stat().st_mtime for p in job_dir.rglob("*") if p.is_file()), default=0.0)
        status = "failed" if any(m in last for m in ERROR_MARKERS) or now - newest > stale_seconds else "running"
    job = Job(job_dir, overrides, status, last_line=last)
    if (job_dir / "metrics.csv").exists():
        curve = validation_curve(job_dir / "metrics.csv")
        if len(curve):
            job.final, job.best = float(curve.iloc[-1]), float(curve.max())
    if status == "finished":
        summary = json.loads((job_dir / "summary.json").read_text())
        job.final, job.best = summary["val_accuracy_final"], summary["val_accuracy_best"]
    return job


def read_sweep(sweep_dir: Path, stale_seconds: float = 600.0) -> list[Job]:
    """Every job below `sweep_dir`; a job that holds jobs (`search.seeds`: one run per seed inside the job's
    directory) is read as those runs."""
    now = time.time()
    job_dirs = [p.parents[1] for p in sorted(sweep_dir.rglob(".hydra/overrides.yaml"))]
    holders = {parent for job_dir in job_dirs for parent in job_dir.parents}
    return [read_job(job_dir, stale_seconds, now) for job_dir in job_dirs if job_dir not in holders]


def swept_knobs(jobs: list[Job]) -> list[str]:
    """Overrides whose values differ between jobs (or that only some jobs set), the seed excepted."""
    keys = sorted({k for job in jobs for k in job.overrides if not k.startswith(NOT_KNOBS)})
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def group_table(jobs: list[Job], knobs: list[str]) -> pd.DataFrame:
    """One row per combination of swept values: accuracy over finished seeds and the run counts."""
    rows = []
    for values in sorted({tuple(job.overrides.get(k, "-") for k in knobs) for job in jobs}):
        members = [job for job in jobs if tuple(job.overrides.get(k, "-") for k in knobs) == values]
        done = [job for job in members if job.status == "finished"]
        rows.append({**dict(zip(knobs, values)), "final": mean_ci([j.final for j in done]),
                     "best": mean_ci([j.best for j in done]),
                     **{status: sum(j.status == status for j in members) for status in STATUSES}})
    return pd.DataFrame(rows)


def confounded_blocks(jobs: list[Job], knobs: list[str]) -> list[list[int]]:
    """Knobs that only ever move together (each value of one goes with one value of the other, as a schedule and
    its lambda_0 set in pairs), as blocks of indices into `knobs`: the sweep cannot tell their effects apart."""
    blocks: list[list[int]] = []
    for index, knob in enumerate(knobs):
        for block in blocks:
            other = knobs[block[0]]
            pairs = {(job.overrides.get(knob, "-"), job.overrides.get(other, "-")) for job in jobs}
            if len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}):
                block.append(index)
                break
        else:
            blocks.append([index])
    return blocks


def knob_ranking(jobs: list[Job], knobs: list[str]) -> list[tuple[str, float, float]]:
    """(knob, spread, seed spread), largest spread first. A knob's spread: the range (max - min) of the mean final
    accuracy over its values with every other knob held fixed, averaged over the settings of the other knobs
    that have at least two of its values (so an unbalanced sweep does not credit one knob with another's effect).
    Knobs that only move together are ranked as one (`a + b`). Seed spread: the mean standard deviation over seeds
    within a group (nan with one seed per group)."""
    done = [job for job in jobs if job.status == "finished" and not math.isnan(job.final)]
    groups: dict[tuple, list[float]] = {}
    for job in done:
        groups.setdefault(tuple(job.overrides.get(k, "-") for k in knobs), []).append(job.final)
    spreads = [statistics.stdev(v) for v in groups.values() if len(v) > 1]
    seed_spread = statistics.mean(spreads) if spreads else math.nan
    ranking = []
    for block in confounded_blocks(jobs, knobs):
        strata: dict[tuple, list[float]] = {}
        for values, finals in groups.items():
            rest = tuple(v for i, v in enumerate(values) if i not in block)
            strata.setdefault(rest, []).append(statistics.mean(finals))
        ranges = [max(means) - min(means) for means in strata.values() if len(means) > 1]
        name = " + ".join(knobs[i] for i in block)
        ranking.append((name, statistics.mean(ranges) if ranges else math.nan, seed_spread))
    return sorted(ranking, key=lambda row: -row[1] if not math.isnan(row[1]) else math.inf)


def knob_figure(jobs: list[Job], knob: str, out_dir: Path) -> Path:
    done = [job for job in jobs if job.status == "finished"]
    values = sorted({job.overrides.get(knob, "-") for job in done}, key=_sort_key)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, metric in zip(axes, ("final", "best")):
        x = {value: i for i, value in enumerate(values)}
        points = [(x[job.overrides.get(knob, "-")], getattr(job, metric)) for job in done]
        ax.scatter([p[0] for p in points], [p[1] for p in points], alpha=0.6, label="one seed")
        means = [statistics.mean([getattr(j, metric) for j in done if j.overrides.get(knob, "-") == v]) for v in values]
        ax.plot(range(len(values)), means, "-o", color="black", label="mean")
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(knob)
        ax.set_title(f"{metric} validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val/accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"knob_{knob.replace('/', '_')}")[0]


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _cell(value: tuple[float, float]) -> str:
    mean, half = value
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def markdown_report(sweep_dir: Path, jobs: list[Job], knobs: list[str]) -> str:
    table = group_table(jobs, knobs)
    header = [*knobs, "final val acc", "best val acc", "finished", "failed", "running"]
    lines = [f"# Sweep {sweep_dir}", "", f"{len(jobs)} runs: " + ", ".join(
        f"{sum(j.status == s for j in jobs)} {s}" for s in STATUSES), "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [str(row[k]) for k in knobs] + [_cell(row["final"]), _cell(row["best"])]
        lines.append("| " + " | ".join(cells + [str(row[s]) for s in STATUSES]) + " |")
    lines += ["", "mean ± 95% CI over the finished seeds (Student t).", "", "## Which knob mattered", "",
              "| knob | spread of its group means (final) | seed spread (std within a group) |", "|---|---|---|"]
    lines += [f"| {knob} | {spread:.3f} | {seed:.3f} |" for knob, spread, seed in knob_ranking(jobs, knobs)]
    failed = [job for job in jobs if job.status == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{job.path.name}`: {job.last_line}" for job in failed]
    return "\n".join(lines) + "\n"


def html_report(markdown: str, figures: list[Path]) -> str:
    images = "".join(f'<p><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
                     f'style="max-width:100%"></p>' for p in figures)
    return (f"<!doctype html><meta charset=utf-8><title>sweep report</title>"
            f"<pre style='font-family:monospace'>{html.escape(markdown, quote=False)}</pre>{images}")


def write_report(sweep_dir: Path, out_dir: Path, stale_seconds: float = 600.0) -> tuple[str, list[Job]]:
    jobs = read_sweep(sweep_dir, stale_seconds)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories (with .hydra/overrides.yaml) under {sweep_dir}")
    knobs = swept_knobs(jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [knob_figure(jobs, knob, out_dir) for knob in knobs if any(j.status == "finished" for j in jobs)]
    with_metrics = [job.path for job in jobs if (job.path / "metrics.csv").exists()]
    if with_metrics:
        figures += [p for p in stability_figure(load_runs(with_metrics), out_dir) if p.suffix == ".png"]
    markdown = markdown_report(sweep_dir, jobs, knobs)
    (out_dir / "sweep.md").write_text(markdown)
    (out_dir / "sweep.html").write_text(html_report(markdown, figures))
    return markdown, jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, help="default: <sweep>/report")
    parser.add_argument("--stale", type=float, default=600.0,
                        help="seconds without output before a run without a summary counts as failed")
    parser.add_argument("--watch", type=float, nargs="?", const=30.0, help="refresh every SECONDS until all ended")
    args = parser.parse_args(argv)
    out = args.out or args.sweep / "report"
    while True:
        markdown, jobs = write_report(args.sweep, out, args.stale)
        print(markdown, flush=True)
        if args.watch is None or not any(job.status == "running" for job in jobs):
            break
        time.sleep(args.watch)
    print(f"wrote {out / 'sweep.md'} and {out / 'sweep.html'}")


if __name__ == "__main__":
    main()
