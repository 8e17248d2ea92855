"""The GPU proof: one command that shows the GPU path works and what it costs, in about 8 minutes on one H200.

    python benchmarks/gpu_check.py --out gpu_check          # make gpu-check (on the GPU machine: make gpu-check-device)
    python benchmarks/gpu_check.py --dry-run --out /tmp/g   # the same code at toy sizes on a CPU (in make test)

Sections, each a subprocess whose JSON is collected (a failing section is recorded and the others still run):

1. `tests`: `pytest -m gpu` (tests/test_gpu.py): the HF engine equals `generate` greedily on CUDA, a bf16-mixed
   update's gradient is close to fp32's, the teacher pass's Delta under bf16 is ~0 for an empty reference, and a
   run resumed on CUDA reproduces the uninterrupted metrics.
2. `rollout`: tokens/s of the HF engine vs `model.generate` (benchmarks/rollout_speed.py) on a random Qwen2 of
   Qwen2.5-0.5B's shape (494M parameters, 151,936-token vocabulary; benchmarks/random_policy.py) in bf16,
   `--new-tokens` tokens per response (eos off), group size 8.
3. `method_cost`: step time, the time of each phase and peak memory of every objective relative to GRPO on that
   model (benchmarks/method_cost.py, bf16-mixed). Rewards vary at random (tests.helpers.rewards:char_parity), so
   every objective has advantages to update on. OPD's teacher is the policy itself: a cost measurement, not a
   premise (its premise check is switched off for this one arm).
4. `logprob_memory`: the chunked log-prob's memory against a naive log-softmax at that vocabulary.
5. `embedded_rollout`, `embedded_method_cost`: the same on the embedded default, as a sanity row (its caches are
   carried by `make gpu-wheels`, else built first).

Writes `<out>/gpu_check.json` (every section's JSON, its wall time and status) and `<out>/gpu_check.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
VARYING_REWARDS = "+task.verifier=tests.helpers.rewards:char_parity"
SIZES = {  # the full check; --dry-run's toy sizes run the same code in seconds
    "full": {"preset": "qwen2.5-0.5b", "new_tokens": 512, "group_size": 8, "prompts": 4, "repeats": 2,
             "steps": 3, "arms": None, "logprob": ["--length", "1024", "--batch", "8", "--rounds", "2"]},
    "dry": {"preset": "toy", "new_tokens": 8, "group_size": 2, "prompts": 2, "repeats": 1, "steps": 2,
            "arms": ["grpo", "rlsd", "opd"],
            "logprob": ["--length", "16", "--batch", "2", "--vocab", "512", "--rounds", "1"]},
}


def sections(size: dict, policy: Path, out: Path, dry_run: bool) -> dict[str, list[str]]:
    """The command of every section, in the order they run."""
    python = sys.executable
    arms = ["--methods", *size["arms"]] if size["arms"] else []
    batch = [f"--override=rollout.group_size={size['group_size']}",
             f"--override=data.prompts_per_step={size['prompts']}"]
    gpu_precision = [] if dry_run else ["--override=trainer.precision=bf16-mixed"]
    own_teacher = [f"--override=opd:method.teacher.model={policy}",
                   "--override=opd:method.teacher.require_stronger=false"]
    return {
        "tests": [python, "-m", "pytest", "-m", "gpu", "-q", "-o", "addopts=", "tests/test_gpu.py",
                  f"--junitxml={out / 'tests.xml'}"],
        "rollout": [python, str(BENCH / "rollout_speed.py"), "--model-dir", str(policy),
                    "--dtype", "float32" if dry_run else "bfloat16", "--new-tokens", str(size["new_tokens"]),
                    "--group-size", str(size["group_size"]), "--prompts", str(size["prompts"]),
                    "--repeats", str(size["repeats"]), "--out", str(out / "rollout.json")],
        "method_cost": [python, str(BENCH / "method_cost.py"), "--model-dir", str(policy), *arms,
                        "--steps", str(size["steps"]), "--rounds", "1", "--tokens", str(size["new_tokens"]),
                        *batch, *gpu_precision, f"--override={VARYING_REWARDS}", "--override=verify.workers=0",
                        *own_teacher, "--out", str(out / "method_cost.json")],
        "logprob_memory": [python, str(BENCH / "logprob_memory.py"), *size["logprob"],
                           "--out", str(out / "logprob_memory.json")],
        # the embedded default at its own sizes (its premise, checked for OPD, needs whole responses)
        "embedded_rollout": [python, str(BENCH / "rollout_speed.py"), "--repeats", str(size["repeats"]),
                             "--out", str(out / "embedded_rollout.json")],
        "embedded_method_cost": [python, str(BENCH / "method_cost.py"), *arms, "--steps", str(size["steps"]),
                                 "--rounds", "1", "--out", str(out / "embedded_method_cost.json")],
    }


def test_counts(junit: Path) -> dict:
    """passed / failed / skipped of the JUnit file pytest wrote."""
    import xml.etree.ElementTree as ElementTree

    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
    skipped = int(suite.get("skipped"))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def run_section(name: str, command: list[str], out: Path, env: dict) -> dict:
    started = time.time()
    print(f"[gpu-check] {name}: {' '.join(command[1:3])} ...", flush=True)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    record = {"status": "ok" if done.returncode == 0 else "failed", "seconds": round(time.time() - started, 1)}
    result = out / ("tests.xml" if name == "tests" else f"{name}.json")
    if result.exists():
        record["result"] = test_counts(result) if name == "tests" else json.loads(result.read_text())
    if done.returncode:
        record["error"] = (done.stdout + done.stderr)[-2000:]
    print(f"[gpu-check] {name}: {record['status']} in {record['seconds']:.0f} s", flush=True)
    return record


def ratio_rows(cost: dict) -> list[str]:
    rows = []
    for arm, ratios in cost.get("ratio_to_grpo", {}).items():
        phases = cost["per_method"][arm]["phase_seconds"]
        total = sum(phases.values()) or float("nan")
        shares = ", ".join(f"{p} {v / total:.0%}" for p, v in sorted(phases.items(), key=lambda kv: -kv[1]) if v)
        rows.append(f"| {arm} | {ratios['step_time']['median']:.2f} | {ratios['peak_memory']['median']:.2f} | "
                    f"{cost['per_method'][arm]['step_seconds']:.3f} | {shares} |")
    return rows


def section_result(report: dict, name: str) -> dict | None:
    """A section's collected JSON; None if it did not run or wrote none."""
    return report["sections"].get(name, {}).get("result")


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['mode']}), {report['finished']}", "", f"machine: {report['machine']}", "",
             "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']:.0f} |" for name, s in report["sections"].items()]
    tests = section_result(report, "tests")
    if tests:
        lines += ["", f"GPU tests: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"]
    for name in ("rollout", "embedded_rollout"):
        rollout = section_result(report, name)
        if rollout:
            rates = ", ".join(f"{k} {v:,.0f}" for k, v in rollout["tokens_per_s_median"].items())
            lines += ["", f"{name} ({rollout['model_parameters']:,} parameters, vocabulary {rollout['vocab_size']:,}, "
                      f"{rollout['batch']['new_tokens']} tokens x {rollout['batch']['prompts']} prompts x "
                      f"{rollout['batch']['group_size']}): tokens/s {rates}; HF engine / generate "
                      f"{rollout['ratio_hf_engine_over_generate']:.2f}"]
    for name in ("method_cost", "embedded_method_cost"):
        cost = section_result(report, name)
        if cost:
            lines += ["", f"{name} (relative to GRPO, one round of {cost['steps']} steps, first dropped):", "",
                      "| arm | step time | peak memory | step seconds | share of the step |", "|---|---|---|---|---|"]
            lines += ratio_rows(cost)
    memory = section_result(report, "logprob_memory")
    if memory:
        lines += ["", "logprob_memory, chunked / naive: " + json.dumps(memory["ratio_chunked_over_naive"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (the tests run it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results" / "gpu_check")
    parser.add_argument("--only", nargs="+", help="run these sections only")
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run it on a GPU machine, or with --dry-run here")
    args.out.mkdir(parents=True, exist_ok=True)
    size = SIZES["dry" if args.dry_run else "full"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", **({"RLSD_LAB_GPU_DRY_RUN": "1"} if args.dry_run else {})}
    with tempfile.TemporaryDirectory() as scratch:
        policy = Path(scratch) / size["preset"]
        subprocess.run([sys.executable, str(BENCH / "random_policy.py"), size["preset"], str(policy)], check=True,
                       cwd=ROOT, env=env)
        commands = sections(size, policy, args.out, args.dry_run)
        report = {"mode": "dry run (CPU, toy sizes)" if args.dry_run else "full", "sizes": size,
                  "machine": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
                  or platform.machine(), "torch": torch.__version__,
                  "sections": {name: run_section(name, command, args.out, env) for name, command in commands.items()
                               if not args.only or name in args.only}}
    report["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [name for name, section in report["sections"].items() if section["status"] != "ok"]
    if failed:
        raise SystemExit(f"gpu check: {', '.join(failed)} failed (logs in {args.out})")


if __name__ == "__main__":
    main()
