"""The GPU check's dry run (`make gpu-check GPU_CHECK_ARGS=--dry-run`): every section of benchmarks/gpu_check.py
at toy sizes on the CPU, so that the script cannot rot between the sessions that have a GPU."""

import json
import subprocess
import sys

from tests.test_end_to_end import ROOT


def test_the_dry_run_runs_every_section_and_writes_the_report(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["tests", "rollout", "method_cost", "logprob_memory", "embedded_rollout",
                              "embedded_method_cost"]
    assert {s["status"] for s in sections.values()} == {"ok"}
    assert sections["tests"]["result"] == {"passed": 4, "failed": 0, "skipped": 0}  # run on the CPU, not skipped
    rollout = sections["rollout"]["result"]
    assert rollout["vocab_size"] == 512 and rollout["batch"]["group_size"] == 2
    for cost in (sections["method_cost"]["result"], sections["embedded_method_cost"]["result"]):
        assert set(cost["ratio_to_grpo"]) == {"grpo", "rlsd", "opd"}
        assert cost["ratio_to_grpo"]["grpo"]["step_time"]["median"] == 1.0
        assert cost["per_method"]["opd"]["phase_seconds"]["teacher"] > 0  # the teacher pass ran and was timed
    assert sections["logprob_memory"]["result"]["same_logprobs"]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "GPU tests: 4 passed" in markdown and "| opd |" in markdown
