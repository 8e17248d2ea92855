"""Step time and peak memory of every objective relative to GRPO, side by side in one run. Writes JSON.

The objectives are the arms of conf/arm/ (a method with its loss and data options: GSPO, CISPO, DAPO, OPD, ...),
so a new arm is measured without editing this file.

Each (method, round) trains `--steps` RL steps in a fresh subprocess (so allocator state and the peak-memory
high-water mark start clean), rounds alternate the methods, and the medians over rounds are compared.
Step time = rollout + verify + teacher + update (+ old/reference log-probs) per step, the first step dropped;
validation and diagnostics are switched off. Peak memory = the process's peak RSS minus its RSS just before
training (CPU), or torch.cuda.max_memory_allocated (GPU). The model is the embedded base policy (built and
cached first if needed), so rewards, zero-variance groups and response lengths are those of a real run; every
method starts from the same rollouts (same seed).

    python benchmarks/method_cost.py --out bench_results/method_cost.json
    python benchmarks/method_cost.py --model-dir /tmp/policy_0.5b --override trainer.precision=bf16-mixed \
        --override opd:method.teacher.model=/tmp/policy_0.5b   # another policy; an override for one arm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = sorted((p.stem for p in (ROOT / "conf" / "arm").glob("*.yaml")), key=lambda name: (name != "grpo", name))
METHODS = {name: [f"arm={name}"] for name in ARMS}
PHASES = ("time/rollout", "time/verify", "time/teacher", "time/update", "time/old_logprobs", "time/reference")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def arm_overrides(method: str, overrides: list[str]) -> list[str]:
    """The `--override` values for `method`: plain ones apply to every arm, `arm:key=value` to that arm only."""
    chosen = []
    for override in overrides:
        arm, separator, rest = override.partition(":")
        if not separator or "=" in arm:
            chosen.append(override)
        elif arm == method:
            chosen.append(rest)
    return chosen


def worker(method: str, steps: int, tokens: int, model_dir: str, overrides: list[str]) -> dict:
    """One measurement in this process: train `steps` steps of `method`, report step times, the time of each
    phase and peak memory."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd
    import torch

    import rlsd_lab.train as train
    from rlsd_lab.config import compose_config

    overrides = METHODS[method] + [
        f"model.path={model_dir}", f"trainer.max_steps={steps}", f"train.val_every={10**6}",
        f"diagnostics.every={10**6}", f"rollout.max_new_tokens={tokens}", "trainer.progress_bar=false",
        "task.val_size=1", "train.checkpoint_every=1000000", *arm_overrides(method, overrides)]
    cfg = compose_config(overrides)
    gpu = torch.cuda.is_available()
    if gpu:
        cfg.trainer.accelerator = "gpu"
    baseline = {}

    original_fit = train.L.Trainer.fit

    def fit_with_baseline(self, *args, **kwargs):  # the baseline is taken with the model loaded, before training
        if gpu:
            torch.cuda.reset_peak_memory_stats()
            baseline["bytes"] = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak-RSS high-water mark
            baseline["bytes"] = rss_kib("VmRSS") * 1024
        return original_fit(self, *args, **kwargs)

    train.L.Trainer.fit = fit_with_baseline
    with tempfile.TemporaryDirectory() as run_dir:
        train.run(cfg, Path(run_dir))
        peak = torch.cuda.max_memory_allocated() if gpu else rss_kib("VmHWM") * 1024
        metrics = pd.read_csv(Path(run_dir) / "metrics.csv").dropna(subset=["time/update"])
    phases = metrics[[c for c in PHASES if c in metrics]].fillna(0).iloc[1:]
    return {"step_seconds_median": statistics.median(phases.sum(axis=1).tolist()),
            "phase_seconds_median": {c.removeprefix("time/"): float(phases[c].median()) for c in phases},
            "response_length_mean": float(metrics["train/response_length"].iloc[1:].mean()),
            "peak_bytes_over_baseline": peak - baseline["bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results" / "method_cost.json")
    parser.add_argument("--model-dir", help="a local policy (default: the embedded base policy, built if needed)")
    parser.add_argument("--override", action="append", default=[],
                        help="a Hydra override for every arm, or `ARM:key=value` for one (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.tokens, args.model_dir, args.override)))
        return

    sys.path.insert(0, str(ROOT))
    import torch

    from rlsd_lab.bootstrap import ensure_base_policy
    from rlsd_lab.config import compose_config

    cfg = compose_config([])
    model_dir = args.model_dir or str(ensure_base_policy(cfg.model, cfg.task))
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for round_index in range(args.rounds):
        for method in args.methods:
            command = [sys.executable, __file__, "--worker", method, "--model-dir", model_dir,
                       "--steps", str(args.steps), "--tokens", str(args.tokens),
                       *(f"--override={o}" for o in args.override)]
            out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            if out.returncode:
                raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
            results[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {method}: {results[method][-1]}", flush=True)
    summary = {m: {"step_seconds": statistics.median(r["step_seconds_median"] for r in runs),
                   "phase_seconds": {phase: statistics.median(r["phase_seconds_median"][phase] for r in runs)
                                     for phase in runs[0]["phase_seconds_median"]},
                   "peak_bytes_over_baseline": statistics.median(r["peak_bytes_over_baseline"] for r in runs)}
               for m, runs in results.items()}
    grpo = summary.get("grpo")
    result = {"benchmark": "method_cost", "steps": args.steps, "rounds": args.rounds, "tokens": args.tokens,
              "model_dir": model_dir, "overrides": args.override,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "per_method": summary, "runs": results}
    if grpo:
        # Paired per round (each method ran right after GRPO's run of the same round), then the median.
        def paired(method: str, key: str) -> dict:
            ratios = [m[key] / g[key] for m, g in zip(results[method], results["grpo"])]
            return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

        result["ratio_to_grpo"] = {m: {"step_time": paired(m, "step_seconds_median"),
                                       "peak_memory": paired(m, "peak_bytes_over_baseline")} for m in results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result.get("ratio_to_grpo", summary), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
