"""Loading run directories into one tidy DataFrame: one row per (run, step, metric).

A run directory holds `metrics.csv` (or, for wandb runs copied without it, `wandb/*/run-*.wandb`) and
`config_resolved.yaml` (rlsd_lab/train.py); anything like that below the given paths counts, so a Hydra multirun
directory can be passed whole. Runs that stopped early, runs with different metric sets and single-seed methods
all load; missing values are simply absent rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from analysis.wandb_offline import find_wandb_file, wandb_history


def is_run_dir(path: Path) -> bool:
    return (path / "metrics.csv").exists() or find_wandb_file(path) is not None


def find_run_dirs(paths: list[Path | str]) -> list[Path]:
    """Run directories at or below `paths`: those with metrics.csv or a wandb run file."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            runs.append(path)
        else:
            candidates = {p.parent for p in path.rglob("metrics.csv")}
            candidates |= {p.parents[2] for p in path.rglob("wandb/*run-*/run-*.wandb")}
            runs += sorted(candidates)
    return sorted(set(runs))


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The run's metrics, one row per step: from metrics.csv, or else from its wandb run file."""
    if (run_dir / "metrics.csv").exists():
        return pd.read_csv(run_dir / "metrics.csv")
    return wandb_history(find_wandb_file(run_dir))


# Overrides that do not change what is being compared (they are the repetition, or bookkeeping).
NOT_VARIANT = ("seed=", "hydra.", "trainer.progress_bar=", "experiment=", "model.path=", "threads=")


def run_labels(run_dir: Path) -> dict:
    """run, method, seed and the run's defining overrides (method and seed excluded), from its resolved config
    and Hydra overrides."""
    config_file = run_dir / "config_resolved.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    method = (config.get("method") or {}).get("name", run_dir.name)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    variant = tuple(o for o in overrides or [] if not o.startswith(NOT_VARIANT) and not o.startswith("method="))
    # conf/arm/<name>.yaml names a method with its options: the arm's name stands for both
    arm = next((o.removeprefix("arm=") for o in variant if o.startswith("arm=")), None)
    return {"run": str(run_dir), "method": method, "seed": config.get("seed", 0),
            "overrides": tuple(o for o in variant if not o.startswith("arm=")), "name": arm or method}


def variant_labels(labels: list[dict]) -> list[str]:
    """`variant` = method (or arm) + the overrides that are not shared by every run loaded together, so a
    sweep's common settings (e.g. `++method.beta_h=0.1` given to all methods) do not clutter every label."""
    shared = set.intersection(*(set(label["overrides"]) for label in labels)) if labels else set()
    return [" ".join([label["name"], *(o for o in label["overrides"] if o not in shared)]) for label in labels]


def load_runs(paths: list[Path | str]) -> pd.DataFrame:
    """Tidy frame with columns run, method, seed, variant, step, metric, value (NaNs dropped)."""
    frames = []
    run_dirs = find_run_dirs(paths)
    labels = [run_labels(run_dir) for run_dir in run_dirs]
    for run_dir, label, variant in zip(run_dirs, labels, variant_labels(labels)):
        wide = read_metrics(run_dir)
        if "step" not in wide:
            raise ValueError(f"the metrics of {run_dir} have no 'step' column")
        tidy = wide.melt(id_vars="step", var_name="metric", value_name="value").dropna(subset=["value"])
        frames.append(tidy.assign(run=label["run"], method=label["method"], seed=label["seed"], variant=variant))
    if not frames:
        raise FileNotFoundError(f"no run directories (with metrics.csv or a wandb run file) under "
                                f"{', '.join(map(str, paths))}")
    columns = ["run", "method", "seed", "variant", "step", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns]


def metric_curves(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Wide frame: index step, one column per run, for one metric (the last value logged at each step)."""
    subset = runs[runs["metric"] == metric]
    return subset.pivot_table(index="step", columns="run", values="value", aggfunc="last")
