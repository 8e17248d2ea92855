"""Short real runs through the Hydra entry point on a tiny random model (no base-policy build needed)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rlsd_lab.train import run
from tests.helpers.configs import compose_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_steps=3", "train.val_every=2", "data.prompts_per_step=4", "rollout.group_size=4",
        "rollout.max_new_tokens=16", "task.val_size=8", "task.train_size=64", "trainer.progress_bar=false"]
EXPECTED_COLUMNS = {
    "step", "train/reward", "train/accuracy", "train/loss", "train/policy_loss", "train/entropy",
    "train/pg_clipfrac_low", "train/pg_clipfrac_high", "train/approx_kl_old", "train/grad_norm", "train/lr",
    "train/zero_variance_groups", "train/response_length", "train/response_clip_fraction", "val/accuracy",
    "val/response_length", "time/rollout", "time/verify", "time/update", "perf/rollout_tokens_per_s",
    "perf/step_tokens_per_s",
}


def test_short_run_writes_finite_metrics_with_expected_columns(tmp_path, model_dir):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "train.mini_batches=2", "train.micro_batch_size=3",
                                 "loss.kl_coef=0.01"])
    summary = run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert EXPECTED_COLUMNS | {"train/kl_ref", "time/old_logprobs", "time/reference"} <= set(metrics.columns)
    assert "verify/no_answer_marker" in metrics.columns  # a random model never writes the answer marker
    train_rows = metrics.dropna(subset=["train/loss"])
    assert train_rows["step"].tolist() == [1, 2, 3]
    assert all(math.isfinite(x) for x in train_rows["train/loss"])
    assert all(math.isfinite(x) for x in train_rows["train/grad_norm"])
    assert metrics.dropna(subset=["val/accuracy"])["step"].tolist() == [0, 2, 3]
    assert summary["final_step"] == 3
    assert (tmp_path / "run" / "final_policy" / "config.json").exists()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "config_resolved.yaml").exists()


def test_inconsistent_batch_settings_are_explained(tmp_path, model_dir):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "train.mini_batches=5"])
    with pytest.raises(ValueError, match="cannot be split into train.mini_batches=5"):
        run(cfg, tmp_path / "run")


def test_hydra_multirun_over_seeds_from_the_command_line(tmp_path, model_dir):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "rlsd_lab.train", "-m", "seed=1,2", f"model.path={model_dir}",
               f"hydra.sweep.dir={sweep}", *FAST, "trainer.max_steps=2"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["0_grpo_seed1", "1_grpo_seed2"]
    for name in runs:
        metrics = pd.read_csv(sweep / name / "metrics.csv")
        assert metrics["step"].max() == 2
        assert (sweep / name / ".hydra" / "config.yaml").exists()


def test_unknown_method_on_the_command_line_lists_the_choices(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rlsd_lab.train", "method=nope"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert "Available options" in result.stderr and "grpo" in result.stderr


@pytest.mark.parametrize("method", [["method=opsd"], ["method=opsd", "method.support=teacher_top1"],
                                    ["method=opsd", "method.form=sampled_token", "method.teacher.mode=periodic"],
                                    ["method=hybrid", "method.beta_h=0.2"],
                                    ["method=hybrid", "method.beta_h=0.2", "method.mix=advantage"],
                                    ["method=rlsd", "method.reasoning_only=true"]])
def test_teacher_methods_train_end_to_end(tmp_path, model_dir, method):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "trainer.max_steps=2", "diagnostics.every=1", *method])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert len(metrics) == 2 and metrics["train/loss"].map(math.isfinite).all()
    assert {"time/teacher", "train/teacher_student_kl", "train/leakage_rate"} <= set(metrics.columns)
    records = [json.loads(line) for line in (tmp_path / "run" / "token_credit.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == {0, 1} and all(len(r["credit"]) == len(r["tokens"]) for r in records)
    if "method=hybrid" in method:
        assert {"train/grad_norm/grpo", "train/grad_norm/opsd"} <= set(metrics.columns)


def test_credit_export_shows_the_runs_own_advantage(tmp_path, model_dir):
    """Dr. GRPO (scale_by_std=false): the exported `advantage` is R - mean_G, the credit GRPO gives every token."""
    cfg = compose_config(FAST + [f"model.path={model_dir}", "trainer.max_steps=1", "diagnostics.every=1",
                                 "method.scale_by_std=false", "+task.verifier=tests.helpers.rewards:char_parity"])
    run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "token_credit.jsonl").read_text().splitlines()]
    assert any(r["advantage"] != 0 for r in records)
    for record in records:
        assert record["credit"] == pytest.approx([record["advantage"]] * len(record["credit"]), abs=1e-6)


def test_hybrid_without_beta_h_stops_with_a_message(tmp_path, model_dir):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "method=hybrid"])
    with pytest.raises(ValueError, match=r"method.beta_h: required, no default \(no published value"):
        run(cfg, tmp_path / "run")


def test_training_steps_survive_a_verifier_that_hangs_and_dies(tmp_path, model_dir):
    """Some responses make the (custom) verifier hang or kill its process: those get reward 0, training goes on."""
    cfg = compose_config(FAST + [f"model.path={model_dir}", "trainer.max_steps=2", "data.prompts_per_step=2",
                                 "task.val_size=4", "verify.timeout_s=1",
                                 "+task.verifier=tests.helpers.rewards:flaky_arith"])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    train_rows = metrics.dropna(subset=["train/loss"])
    assert train_rows["step"].tolist() == [1, 2]
    assert train_rows["verify/failures"].sum() > 0
    assert {"verify/verifier_timeout", "verify/verifier_crashed"} & set(metrics.columns)
    assert all(math.isfinite(x) for x in train_rows["train/loss"])


HOSTILE_PROGRAMS = [
    "```python\nwhile True:\n    pass\n```",
    "```python\nimport os\nwhile True:\n    os.fork()\n```",
    "```python\nx = bytearray(10**10)\n```",
    "```python\nwhile True:\n    print('x' * 10000)\n```",
    "```python\nimport os\nos.remove({sentinel!r})\n```",
    "```python\nimport socket\nsocket.create_connection(('127.0.0.1', 22))\n```",
    "\ud800",
    "",
]


def test_training_steps_survive_hostile_programs(tmp_path, model_dir, monkeypatch):
    """The code task with every response replaced by a hostile program: reward 0 with reasons, steps complete."""
    import rlsd_lab.module

    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    programs = [program.replace("{sentinel!r}", repr(str(sentinel))) for program in HOSTILE_PROGRAMS]
    monkeypatch.setattr(rlsd_lab.module, "decode_responses",
                        lambda tokenizer, batch: [programs[i % len(programs)] for i in range(batch.response_ids.shape[0])])
    cfg = compose_config(FAST + [f"model.path={model_dir}", "task=code_example", "task.train_size=8",
                                 "task.val_size=2", "trainer.max_steps=2", "data.prompts_per_step=2",
                                 "+verify.options.code={cpu_seconds: 1, wall_seconds: 2}"])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    train_rows = metrics.dropna(subset=["train/loss"])
    assert train_rows["step"].tolist() == [1, 2]
    assert (train_rows["train/reward"] == 0).all()
    reasons = {c.removeprefix("verify/") for c in metrics.columns if c.startswith("verify/")}
    assert {"timeout", "blocked", "memory_limit", "output_limit", "malformed_unicode", "no_code"} <= reasons
    assert sentinel.read_text() == "keep me"
