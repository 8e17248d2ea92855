"""analysis.sweep on a synthetic sweep directory: grouping, CIs, statuses, the knob ranking, the files."""

import json
import os
import time

import pandas as pd
import pytest
import yaml

from analysis.sweep import knob_ranking, read_sweep, swept_knobs, write_report


def job(root, name, overrides, accuracies, status="finished"):
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    pd.DataFrame({"step": range(len(accuracies)), "val/accuracy": accuracies}).to_csv(path / "metrics.csv",
                                                                                     index=False)
    (path / "train.log").write_text("step=1 ...\n" + ("Traceback (most recent call last): boom\n"
                                                      if status == "failed" else ""))
    if status == "finished":
        (path / "summary.json").write_text(json.dumps({"val_accuracy_final": accuracies[-1],
                                                       "val_accuracy_best": max(accuracies)}))
    return path


@pytest.fixture
def sweep(tmp_path):
    # eps_w matters (0.2 -> ~0.9, 1.0 -> ~0.5), schedule does not; seeds differ by 0.02
    job(tmp_path, "0", ["method.eps_w=0.2", "method.schedule=linear", "seed=1", "experiment=x"], [0.3, 0.9])
    job(tmp_path, "1", ["method.eps_w=0.2", "method.schedule=linear", "seed=2", "experiment=x"], [0.3, 0.92])
    job(tmp_path, "2", ["method.eps_w=1.0", "method.schedule=linear", "seed=1", "experiment=x"], [0.3, 0.5])
    job(tmp_path, "3", ["method.eps_w=1.0", "method.schedule=linear", "seed=2", "experiment=x"], [0.3, 0.52])
    job(tmp_path, "4", ["method.eps_w=0.2", "method.schedule=constant", "seed=1", "experiment=x"], [0.3, 0.91])
    job(tmp_path, "5", ["method.eps_w=1.0", "method.schedule=constant", "seed=1", "experiment=x"], [0.3],
        status="failed")
    running = job(tmp_path, "6", ["method.eps_w=1.0", "method.schedule=constant", "seed=2", "experiment=x"], [0.3],
                  status="running")
    old = time.time() - 3600
    for path in (tmp_path / "5").rglob("*"):
        os.utime(path, (old, old))
    return tmp_path, running


def test_statuses_knobs_and_ranking(sweep):
    root, _ = sweep
    jobs = read_sweep(root)
    assert [j.status for j in jobs] == ["finished"] * 5 + ["failed", "running"]
    knobs = swept_knobs(jobs)
    assert knobs == ["method.eps_w", "method.schedule"]  # seed and the shared experiment are not knobs
    ranking = knob_ranking(jobs, knobs)
    # eps_w at schedule=linear: 0.91 vs 0.51 (schedule=constant has one eps_w value finished)
    assert ranking[0][0] == "method.eps_w" and ranking[0][1] == pytest.approx(0.40, abs=1e-6)
    assert ranking[0][2] == pytest.approx(0.01414, abs=1e-4)  # std of (0.9, 0.92) and of (0.5, 0.52)
    # schedule at eps_w=0.2: 0.91 vs 0.91, though its marginal means differ (0.71 vs 0.91: unbalanced)
    assert ranking[1][0] == "method.schedule" and ranking[1][1] == pytest.approx(0.0, abs=1e-6)


def test_stale_run_without_summary_counts_as_failed(sweep):
    root, running = sweep
    old = time.time() - 3600
    for path in running.rglob("*"):
        os.utime(path, (old, old))
    assert [j.status for j in read_sweep(root)][-1] == "failed"


def test_report_files_table_and_failed_runs(sweep, tmp_path_factory):
    root, _ = sweep
    out = tmp_path_factory.mktemp("report")
    markdown, _ = write_report(root, out)
    assert "7 runs: 5 finished, 1 failed, 1 running" in markdown
    assert "| 0.2 | linear | 0.910 ± 0.127 | 0.910 ± 0.127 | 2 | 0 | 0 |" in markdown
    assert "| 1.0 | constant | - | - | 0 | 1 | 1 |" in markdown
    assert "- `5`: Traceback (most recent call last): boom" in markdown
    for name in ("sweep.md", "sweep.html", "knob_method.eps_w.png", "knob_method.schedule.png", "stability.png"):
        assert (out / name).exists(), name
    assert "data:image/png;base64," in (out / "sweep.html").read_text()


def test_no_jobs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hydra job directories"):
        write_report(tmp_path, tmp_path / "out")


def test_knobs_that_only_move_together_are_ranked_as_one(tmp_path):
    """make ablation's design: the schedule and its lambda_0 are set in pairs, so only their joint effect shows."""
    for i, (eps, schedule, lam, final) in enumerate([("0.2", "linear", "0.5", 0.9), ("0.2", "constant", "1.0", 0.8),
                                                     ("1.0", "linear", "0.5", 0.6), ("1.0", "constant", "1.0", 0.7)]):
        job(tmp_path, str(i), [f"method.eps_w={eps}", f"method.schedule={schedule}", f"method.lambda_0={lam}"],
            [0.3, final])
    jobs = read_sweep(tmp_path)
    ranking = dict((name, spread) for name, spread, _ in knob_ranking(jobs, swept_knobs(jobs)))
    assert ranking == pytest.approx({"method.eps_w": 0.2, "method.lambda_0 + method.schedule": 0.1})
