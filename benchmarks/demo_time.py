"""Wall time of the demo pipeline, measured in this run, next to the last full `make demo` if one was recorded.

A full `make demo` (base policy + four methods x 60 steps, two sweeps side by side + figures) takes longer than
`make bench` may, so this runs the four methods in one sweep with `--steps` RL steps each (same base policy,
validation, figures) and reports its wall time; `make demo` writes its own wall time to multirun/demo/wall_time.json, which is reported alongside.

    python benchmarks/demo_time.py --out bench_results/demo_time.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "multirun" / "demo" / "wall_time.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_results/demo_time.json")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlsd_demo_bench_") as sweep:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlsd_lab.train", "-m", "experiment=demo", f"hydra.sweep.dir={sweep}",
                        f"trainer.max_steps={args.steps}", f"train.val_every={args.steps}",
                        "trainer.progress_bar=false"], cwd=ROOT, check=True, capture_output=True)
        training = time.perf_counter() - started
        subprocess.run(["make", "-s", "figures", f"RUNS={sweep}", f"FIGURES={sweep}/figures"], cwd=ROOT, check=True,
                       capture_output=True)
        total = time.perf_counter() - started
    result = {"short_demo": {"steps_per_method": args.steps, "training_seconds": round(training, 1),
                             "with_figures_seconds": round(total, 1)},
              "last_make_demo": json.loads(RECORDED.read_text()) if RECORDED.exists() else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
