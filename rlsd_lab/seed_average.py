"""`search.seeds=[1,2,3]`: one Hydra job trains every seed and returns their mean.

This is how an Optuna trial scores a configuration over seeds. Hydra's `+seed=range(N)` does not mix with the
optuna sweeper (hydra #1969): it would make each seed its own trial. Each seed is a full run in
`<job dir>/seed<k>/`. It gets the job's overrides plus `seed=<k>` in its own `.hydra/overrides.yaml`, so
`analysis` and `analysis.sweep` read it like any other run. The job dir gets `seed_average.json`: the per-seed
values and their mean. With `resume=auto` a seed that finished is skipped, so a relaunched trial re-trains only
the seeds it lacks.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import yaml
from omegaconf import DictConfig


def seed_overrides(job_dir: Path, seed: int) -> list[str]:
    """The job's Hydra overrides with its seed replaced by `seed`."""
    path = job_dir / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(path.read_text()) or []) if path.exists() else []
    return [o for o in overrides if not o.lstrip("+~").startswith("seed=")] + [f"seed={seed}"]


def train_seeds(cfg: DictConfig, job_dir: Path, train: Callable[[DictConfig, Path], dict]) -> dict:
    """Trains `cfg` once per seed of `cfg.search.seeds` and returns the per-seed summaries with the mean of
    `cfg.search.metric` under that key. On data-parallel ranks other than 0 (whose runs return {}) it returns {}."""
    summaries = []
    for seed in cfg.search.seeds:
        seed_cfg = cfg.copy()
        seed_cfg.seed = seed
        seed_dir = job_dir / f"seed{seed}"
        (seed_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (seed_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(seed_overrides(job_dir, seed)))
        summaries.append(train(seed_cfg, seed_dir))
    if not all(summaries):
        return {}
    metric = cfg.search.metric
    values = [summary[metric] for summary in summaries]
    average = {"method": cfg.method.name, "seeds": list(cfg.search.seeds), metric: statistics.fmean(values),
               f"{metric}_per_seed": values, "seed_std": statistics.stdev(values) if len(values) > 1 else 0.0}
    (job_dir / "seed_average.json").write_text(json.dumps(average, indent=2))
    return average
