"""Checkpoint and resume, and reproducibility, on CPU.

The acceptance test: a run of the entry point killed with SIGKILL after a checkpoint and resumed with `resume=auto`
writes exactly the metrics.csv of an uninterrupted run (every column but time/* and perf/*), no row lost or doubled.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlsd_lab.resume import EpochBatchSampler, MetricsCSV, find_checkpoint
from rlsd_lab.train import run
from tests.test_end_to_end import FAST, ROOT, compose_config

# 3 batches per epoch, so that 6 steps cross an epoch and a resume at step 4 starts mid-epoch; rewards that vary
# (tests/helpers/rewards.py), so that updates are not zero; a learning rate that changes every step (warm-up);
# every row written at once, so that the killed run has rows after its checkpoint, which the resumed run replaces.
RESUME = FAST + ["task.train_size=12", "trainer.max_steps=6", "train.checkpoint_every=2", "train.val_every=3",
                 "optim.warmup_steps=10", "logger.flush_every=1", "verify.workers=0",
                 "+task.verifier=tests.helpers.rewards:char_parity"]
# RLSD (lambda decays with the step) with a periodic teacher re-synced at step 3: resuming from the step-4
# checkpoint needs the frozen copy it holds.
RLSD_PERIODIC = ["method=rlsd", "method.teacher.mode=periodic", "method.teacher.sync_every=3"]


def comparable(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without the wall-clock columns, which no two runs share."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics[[c for c in metrics.columns if not c.startswith(("time/", "perf/"))]]


def assert_same_metrics(run_dir: Path, reference_dir: Path, steps: int) -> None:
    metrics = comparable(run_dir)
    assert metrics["step"].tolist() == list(range(steps + 1))  # one row per step: none lost, none repeated
    pd.testing.assert_frame_equal(metrics, comparable(reference_dir), check_exact=True)


def cli(overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rlsd_lab.train", *overrides, f"hydra.run.dir={run_dir}"]


def logged_step(run_dir: Path, step: int) -> bool:
    """Whether the run has finished `step` (train.log's line for it; metrics.csv has its row by then)."""
    log = run_dir / "train.log"
    return log.exists() and f"step={step} " in log.read_text()


def kill_after_checkpoint(command: list[str], run_dir: Path, checkpoint: str, step: int, output: Path) -> None:
    """Starts `command` and kills it (SIGKILL, its whole process group) once `checkpoint` exists and the step after
    it is done, so that metrics.csv holds a row that the resumed run must replace."""
    with output.open("w") as file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    while not ((run_dir / "checkpoints" / checkpoint).exists() and logged_step(run_dir, step + 1)):
        assert process.poll() is None, f"the run ended before it was killed:\n{output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.mark.parametrize(("method", "kill_at"), [(["train.mini_batches=2"], 2), (RLSD_PERIODIC, 4)],
                         ids=["grpo", "rlsd_periodic_teacher"])
def test_a_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, model_dir, method, kill_at):
    overrides = [*RESUME, f"model.path={model_dir}", *method]
    run(compose_config(overrides), tmp_path / "reference")
    run_dir = tmp_path / "run"
    optimizer_steps = kill_at * (2 if "train.mini_batches=2" in method else 1)
    kill_after_checkpoint(cli(overrides, run_dir), run_dir, f"epoch={kill_at // 3}-step={optimizer_steps}.ckpt",
                          kill_at, tmp_path / "killed.log")
    assert not (run_dir / "summary.json").exists()
    assert pd.read_csv(run_dir / "metrics.csv")["step"].max() > kill_at

    resumed = subprocess.run(cli([*overrides, "resume=auto"], run_dir), check=False, cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {kill_at})" in (run_dir / "train.log").read_text()  # "resuming from <checkpoint> (step k)"
    assert_same_metrics(run_dir, tmp_path / "reference", steps=6)
    if "method=rlsd" in method:
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert any(key.startswith("teacher.frozen.") for key in checkpoint["state_dict"])


def test_a_finished_run_continues_to_more_steps_in_process(tmp_path, model_dir):
    """Stop at step 3 (a checkpoint, end of an epoch), then resume=auto with trainer.max_steps=6."""
    overrides = [*RESUME, f"model.path={model_dir}", "train.checkpoint_every=3", "loss.kl_coef=0.01"]
    run(compose_config(overrides), tmp_path / "reference")
    run(compose_config([*overrides, "trainer.max_steps=3"]), tmp_path / "run")
    run(compose_config([*overrides, "resume=auto"]), tmp_path / "run")
    assert_same_metrics(tmp_path / "run", tmp_path / "reference", steps=6)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt", "last.ckpt"]


def test_a_relaunched_finished_run_is_skipped(tmp_path, model_dir, monkeypatch):
    """A sweep launched again into its directory with resume=auto: a job that trained all its steps is not
    trained again (its summary is returned, its files untouched); asked for more steps, it would resume."""
    import lightning

    cfg = compose_config([*FAST, f"model.path={model_dir}", "trainer.max_steps=2", "resume=auto"])
    summary = run(cfg, tmp_path / "run")
    metrics = (tmp_path / "run" / "metrics.csv").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(lightning.Trainer, "fit", no_training)
    assert run(cfg, tmp_path / "run") == summary
    assert (tmp_path / "run" / "metrics.csv").read_text() == metrics
    with pytest.raises(AssertionError, match="trained again"):  # more steps asked for: it resumes (and trains)
        run(compose_config([*FAST, f"model.path={model_dir}", "trainer.max_steps=3", "resume=auto"]),
            tmp_path / "run")


def test_the_same_seed_and_config_give_identical_metrics(tmp_path, model_dir):
    overrides = [*RESUME, f"model.path={model_dir}", "trainer.max_steps=3", "method=rlsd", "train.mini_batches=2",
                 "loss.kl_coef=0.01", "diagnostics.every=2"]
    run(compose_config(overrides), tmp_path / "a")
    run(compose_config(overrides), tmp_path / "b")
    pd.testing.assert_frame_equal(comparable(tmp_path / "a"), comparable(tmp_path / "b"), check_exact=True)
    assert comparable(tmp_path / "a")["train/loss"].dropna().abs().sum() > 0  # the runs did learn something


def test_the_sampler_resumed_at_any_batch_continues_the_same_order():
    def batches(start: int, count: int) -> list[list[int]]:
        sampler, drawn = EpochBatchSampler(size=14, batch_size=4, seed=3, start=start), []
        while len(drawn) < count:  # a fresh iterator per epoch, as Lightning asks
            drawn.extend(iter(sampler))
        return drawn[:count]

    uninterrupted = batches(0, 12)
    for start in range(9):
        assert batches(start, 12 - start) == uninterrupted[start:]
    epochs = [[i for batch in uninterrupted[e * 3:e * 3 + 3] for i in batch] for e in range(4)]
    assert len({tuple(epoch) for epoch in epochs}) == 4  # a new order every epoch
    assert all(len(batch) == 4 and len(set(batch)) == 4 for batch in uninterrupted)


def test_resume_auto_picks_the_latest_readable_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, step in [("a.ckpt", 4), ("b.ckpt", 2)]:
        torch.save({"rlsd_lab": {"rollout_step": step}}, folder / name)
    (folder / "c.ckpt").write_bytes(b"cut short")
    assert find_checkpoint("auto", tmp_path) == folder / "a.ckpt"
    assert find_checkpoint("auto", tmp_path / "fresh") is None
    assert find_checkpoint(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="resume=nope.ckpt"):
        find_checkpoint("nope.ckpt", tmp_path)


def test_metrics_csv_keeps_the_rows_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.csv"
    first = MetricsCSV(path, flush_every=1)
    for step in range(5):
        first.log_metrics({"train/loss": step / 10, **({"val/accuracy": 0.5} if step == 3 else {})}, step=step)
    path.write_text(path.read_text()[:-4])  # the last row cut short by a kill
    resumed = MetricsCSV(path, flush_every=10, resume_step=3)
    resumed.log_metrics({"train/loss": 0.4, "train/new": 1.0}, step=4)
    resumed.finalize("success")
    metrics = pd.read_csv(path)
    assert metrics["step"].tolist() == [0, 1, 2, 3, 4]
    assert metrics["val/accuracy"].tolist()[3] == 0.5 and metrics["train/new"].tolist()[4] == 1.0
    assert np.allclose(metrics["train/loss"], [0.0, 0.1, 0.2, 0.3, 0.4])


def test_the_sampler_draws_the_order_of_the_shuffling_loader_it_replaced():
    """Runs from before resume support used DataLoader(shuffle=True, generator=seed), from which Lightning takes
    len(loader) batches of a new iterator per epoch: the same batches."""
    loader = torch.utils.data.DataLoader(range(14), batch_size=4, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(3))
    sampler = EpochBatchSampler(size=14, batch_size=4, seed=3)
    for _ in range(3):
        batches = iter(loader)
        assert [next(batches).tolist() for _ in range(len(loader))] == list(sampler)


def test_a_killed_sweep_relaunched_skips_finished_runs_and_resumes_the_cut_one(tmp_path, model_dir):
    """4 runs in one Hydra sweep, killed while the second is half done (after its step-2 checkpoint), then launched
    again with the same command into the same sweep directory: the first is skipped, the second resumes, the rest
    run, and every run's metrics equal those of an uninterrupted sweep."""
    overrides = [*RESUME, f"model.path={model_dir}", "resume=auto"]

    def sweep(directory: Path) -> list[str]:
        return [sys.executable, "-m", "rlsd_lab.train", "-m", *overrides, "seed=1,2,3,4",
                f"hydra.sweep.dir={directory}"]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = subprocess.run(sweep(tmp_path / "reference"), cwd=ROOT, capture_output=True, text=True, timeout=600,
                               env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    second = tmp_path / "sweep" / "1_grpo_seed2"
    kill_after_checkpoint(sweep(tmp_path / "sweep"), second, "epoch=0-step=2.ckpt", 2, tmp_path / "killed.log")
    assert (tmp_path / "sweep" / "0_grpo_seed1" / "summary.json").exists() and not (second / "summary.json").exists()
    relaunched = subprocess.run(sweep(tmp_path / "sweep"), cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env=env)
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    assert "finished all 6 steps already" in (tmp_path / "sweep" / "0_grpo_seed1" / "train.log").read_text()
    assert "(step 2)" in (second / "train.log").read_text()
    for name in ("0_grpo_seed1", "1_grpo_seed2", "2_grpo_seed3", "3_grpo_seed4"):
        assert_same_metrics(tmp_path / "sweep" / name, tmp_path / "reference" / name, steps=6)
