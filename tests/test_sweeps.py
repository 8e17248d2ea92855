"""Sweeps through Hydra's launchers and sweepers (rlsd_lab/launchers.py, sweep_progress.py, seed_average.py).

Each test launches `python -m rlsd_lab.train -m` as a user would: 4 jobs in parallel with their thread share (and
the report of that 2x2 sweep), a submitit job preempted and requeued that resumes to the metrics of an
uninterrupted run, data parallel inside a submitit job, the refusals, and the Optuna example for 3 trials.
"""

import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from analysis.sweep import read_sweep, write_report
from rlsd_lab.launchers import claim_gpu, cpu_cores
from rlsd_lab.seed_average import seed_overrides
from rlsd_lab.sweep_progress import progress_line
from tests.test_end_to_end import FAST, ROOT
from tests.test_resume import RESUME, assert_same_metrics, logged_step

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Rewards that vary (so updates and accuracies differ between configurations), scored in the trainer process.
VARYING = ["+task.verifier=tests.helpers.rewards:char_parity", "verify.workers=0"]


def sweep(arguments: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "rlsd_lab.train", "-m", *arguments], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=timeout)
    return result


def log_window(run_dir: Path) -> tuple[datetime, datetime]:
    """The first and last timestamps of a run's train.log."""
    stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
              for line in (run_dir / "train.log").read_text().splitlines() if line.startswith("[20")]
    return stamps[0], stamps[-1]


def test_local_parallel_runs_four_jobs_at_once_within_the_thread_budget_and_reports(tmp_path, model_dir):
    """A real 2x2 sweep (eps_w x seed) through hydra/launcher=local_parallel with 2 jobs at once: every job gets
    cores / 2 torch threads, two jobs overlap in time, one progress line per job, and analysis.sweep reports both
    groups with their 2 seeds."""
    result = sweep([*FAST, *VARYING, f"model.path={model_dir}", "hydra/launcher=local_parallel",
                    "hydra.launcher.n_jobs=2", "method=rlsd", "method.eps_w=0.2,0.5", "seed=1,2",
                    f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 4
    threads = [yaml.safe_load((job / "config_resolved.yaml").read_text())["threads"] for job in jobs]
    assert threads == [max(1, cpu_cores() // 2)] * 4 and 2 * threads[0] <= cpu_cores()
    assert all("local_parallel job:" in (job / "train.log").read_text() for job in jobs)
    windows = [log_window(job) for job in jobs]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(windows) for b in windows[i + 1:]), windows
    progress = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert sorted(r["job"] for r in progress) == [0, 1, 2, 3] and {r["status"] for r in progress} == {"finished"}
    assert "[sweep] 4/4 done (0 failed)" in result.stdout
    markdown, read = write_report(tmp_path, tmp_path / "report")
    assert len(read) == 4 and "method.eps_w" in markdown
    groups = {job.overrides["method.eps_w"] for job in read}
    assert groups == {"0.2", "0.5"} and all(job.status == "finished" for job in read)


def test_local_parallel_refuses_more_threads_than_cores(tmp_path, model_dir):
    result = sweep([*FAST, f"model.path={model_dir}", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2",
                    f"threads={cpu_cores()}", "seed=1,2", f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode != 0
    assert (f"threads={cpu_cores()} with hydra.launcher.n_jobs=2 asks for {2 * cpu_cores()} CPU threads"
            in result.stderr)
    assert not list(tmp_path.rglob("metrics.csv"))  # refused before any training


def test_data_parallel_in_a_multirun_is_refused_under_the_basic_launcher(tmp_path, model_dir):
    result = sweep([*FAST, f"model.path={model_dir}", "trainer.strategy=ddp", "trainer.devices=2", "seed=1,2",
                    f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode != 0 and "under the basic launcher: Lightning relaunches the command" in result.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


def _hold_a_gpu(slot_dir, gpus, claimed, release):
    claimed.put(claim_gpu(Path(slot_dir), gpus))
    release.wait(60)


def _try_a_gpu(slot_dir, gpus, claimed):
    try:
        claimed.put(claim_gpu(Path(slot_dir), gpus))
    except RuntimeError as error:
        claimed.put(str(error))


def test_gpu_slots_go_to_one_live_process_each_and_free_when_it_ends(tmp_path):
    """Two job processes get the two GPUs; a third finds none; once one holder exits its GPU is free again."""
    context = multiprocessing.get_context("spawn")
    claimed, release = context.Queue(), context.Event()
    holders = [context.Process(target=_hold_a_gpu, args=(tmp_path, ["0", "1"], claimed, release)) for _ in range(2)]
    for holder in holders:
        holder.start()
    assert sorted([claimed.get(timeout=60), claimed.get(timeout=60)]) == ["0", "1"]
    third = context.Process(target=_try_a_gpu, args=(tmp_path, ["0", "1"], claimed))
    third.start()
    third.join(60)
    assert "every GPU of this sweep (0,1) is held by another job" in claimed.get(timeout=10)
    release.set()
    for holder in holders:
        holder.join(60)
    fourth = context.Process(target=_try_a_gpu, args=(tmp_path, ["0", "1"], claimed))
    fourth.start()
    fourth.join(60)
    assert claimed.get(timeout=10) == "0"


def job_task_pid(sweep_dir: Path) -> int | None:
    """The process submitit_local runs the job in (its command line names the sweep's .submitit folder)."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in command and str(sweep_dir) in command:
            return int(proc.name)
    return None


def submitit_logs(sweep_dir: Path) -> str:
    """Every task's stdout and stderr, as submitit keeps them."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*_log.*")))


def test_a_preempted_submitit_job_is_requeued_and_resumes_to_the_uninterrupted_metrics(tmp_path, model_dir):
    """The SLURM path through submitit_local: the job gets the preemption signal (USR2) after its step-2 checkpoint,
    submitit requeues it, and the rerun continues from its checkpoint (resume: null acts as auto under submitit).
    Its metrics equal those of the same job run without interruption."""
    slow = [o.replace(":char_parity", ":slow_char_parity") for o in RESUME]  # a step takes long enough to signal
    overrides = [*slow, f"model.path={model_dir}", "seed=1"]
    reference = sweep([*overrides, f"hydra.sweep.dir={tmp_path / 'reference'}"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    sweep_dir, job_dir = tmp_path / "preempted", tmp_path / "preempted" / "0_grpo_seed1"
    with (tmp_path / "preempted.log").open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "rlsd_lab.train", "-m", *overrides,
                                    "hydra/launcher=submitit_local",
                                    f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=ENV, stdout=output,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not ((job_dir / "checkpoints" / "epoch=0-step=2.ckpt").exists() and logged_step(job_dir, 3)):
        assert process.poll() is None, (tmp_path / "preempted.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    os.kill(job_task_pid(sweep_dir), signal.SIGUSR2)
    assert process.wait(timeout=600) == 0, (tmp_path / "preempted.log").read_text()[-3000:]
    assert "Requeued job" in submitit_logs(sweep_dir)
    log = (job_dir / "train.log").read_text()
    assert "resuming from" in log and "step=6 " in log
    assert_same_metrics(job_dir, tmp_path / "reference" / "0_grpo_seed1", steps=6)


def test_data_parallel_runs_inside_a_submitit_job_one_task_per_rank(tmp_path, model_dir):
    result = sweep([*FAST, "verify.workers=0", f"model.path={model_dir}", "hydra/launcher=submitit_local",
                    "hydra.launcher.tasks_per_node=2", "trainer.strategy=ddp", "trainer.devices=2", "seed=1",
                    f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "0_grpo_seed1" / "summary.json").exists()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in submitit_logs(tmp_path)


def study_trials(database: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT t.state, v.value FROM trials t LEFT JOIN trial_values v "
                                  "ON t.trial_id = v.trial_id ORDER BY t.number").fetchall()


def test_the_optuna_search_scores_each_trial_over_its_seeds_and_resumes_from_its_sqlite(tmp_path, model_dir):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    arguments = [*FAST, *VARYING, f"model.path={model_dir}", "hparams_search=rlsd", "trainer.max_steps=2",
                 f"hydra.sweep.dir={tmp_path}"]
    result = sweep([*arguments, "hydra.sweeper.n_trials=3"])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(tmp_path.glob("trial_*"))
    assert len(trials) == 3
    means = []
    for trial in trials:
        average = json.loads((trial / "seed_average.json").read_text())
        per_seed = [json.loads((trial / f"seed{s}" / "summary.json").read_text())["val_accuracy_final"]
                    for s in (1, 2)]
        assert average["val_accuracy_final_per_seed"] == per_seed
        assert average["val_accuracy_final"] == pytest.approx(statistics.fmean(per_seed))
        means.append(average["val_accuracy_final"])
    stored = study_trials(tmp_path / "optuna.db")
    assert [state for state, _ in stored] == ["COMPLETE"] * 3
    assert sorted(value for _, value in stored) == pytest.approx(sorted(means))
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(means))
    assert len({job.overrides["method.eps_w"] for job in read_sweep(tmp_path)}) == 3  # the report reads the seeds
    finished = {t: (t / "seed1" / "summary.json").stat().st_mtime for t in trials}
    relaunched = sweep([*arguments, "hydra.sweeper.n_trials=1"])
    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    assert [state for state, _ in study_trials(tmp_path / "optuna.db")] == ["COMPLETE"] * 4
    assert {t: (t / "seed1" / "summary.json").stat().st_mtime for t in trials} == finished  # nothing lost


def test_the_progress_line_counts_jobs_and_estimates_the_time_left():
    records = [{"job": 0, "overrides": "seed=1", "status": "finished", "value": 0.5, "seconds": 30.0},
               {"job": 2, "overrides": "seed=3", "status": "failed", "value": None, "seconds": 12.0}]
    line = progress_line(records, total=8, elapsed=90.0)
    assert line == ("[sweep] 2/8 done (1 failed): job 2 seed=3 failed in 12s; elapsed 1m30s, about 4m30s left")
    assert progress_line(records[:1], total=1, elapsed=30.0).endswith("returned 0.500 in 30s; elapsed 30s")


def test_a_seed_run_gets_the_jobs_overrides_with_its_own_seed(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["method.eps_w=0.3", "seed=7", "+x=1"]))
    assert seed_overrides(tmp_path, 2) == ["method.eps_w=0.3", "+x=1", "seed=2"]
    assert seed_overrides(tmp_path / "none", 2) == ["seed=2"]


def test_the_slurm_launcher_submits_one_array_job_with_its_resources_and_requeue_signal(tmp_path):
    """hydra/launcher=slurm up to the submission: a stand-in `sbatch` keeps the script submitit wrote (and refuses
    it, so the sweep stops there). The array, the resources and the signal that triggers the requeue are in it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):  # submitit looks for both
        (bin_dir / name).write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in *.sh) cp "$a" "$CAPTURE";; esac; done\n'
                                    'echo "not a cluster: nothing submitted" >&2\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    capture = tmp_path / "submitted.sh"
    result = subprocess.run([sys.executable, "-m", "rlsd_lab.train", "-m", "hydra/launcher=slurm", "seed=1,2,3",
                             "hydra.launcher.gpus_per_node=8", "hydra.launcher.tasks_per_node=8",
                             "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=ROOT,
                            env={**ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CAPTURE": str(capture)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "not a cluster: nothing submitted" in result.stderr
    script = capture.read_text()
    for line in ("--array=0-2%", "--gpus-per-node=8", "--ntasks-per-node=8", "--partition=gpu", "--time=240",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, script
    assert "srun" in script and "submitit.core._submit" in script
