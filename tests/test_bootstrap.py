"""The embedded base policy's premise: a weak student, a strong privileged teacher, proven at build time."""

import json

import pytest
from omegaconf import OmegaConf

from rlsd_lab import bootstrap
from rlsd_lab.bootstrap import cached_premise, ensure_base_policy, premise_failures, train_base_policy
from tests.conftest import TINY_ARCHITECTURE
from tests.test_end_to_end import ROOT, compose_config

BARS = OmegaConf.create({"target_accuracy": [0.3, 0.6], "teacher_bars": {"answer": 0.8, "solution": 0.95}})
PREMISE = {"student": 0.4, "teacher_answer": 0.9, "teacher_solution": 0.97, "problems": 500,
           "teacher_answer_shortcut_rate": 0.01, "teacher_solution_shortcut_rate": 0.0}


def test_premise_failures_name_the_bar_and_the_value_reached():
    assert premise_failures(PREMISE, BARS) == []
    failures = premise_failures({**PREMISE, "student": 0.7, "teacher_solution": 0.5}, BARS)
    assert failures == ["student accuracy 0.700 outside model.bootstrap.target_accuracy [0.3, 0.6]",
                        "teacher accuracy with the solution reference 0.500 below "
                        "model.bootstrap.teacher_bars.solution=0.95"]


def test_the_cached_default_base_policy_meets_the_bars_by_its_own_record(capsys):
    cfg = compose_config([])
    bootstrap.main([])  # `python -m rlsd_lab.bootstrap`: builds it if needed, prints its premise
    assert "greedy accuracy on 500 validation problems: student" in capsys.readouterr().out
    record = json.loads((ensure_base_policy(cfg.model, cfg.task) / "bootstrap.json").read_text())
    premise = record["premise"]
    assert premise_failures(premise, cfg.model.bootstrap) == []
    assert premise["problems"] == cfg.task.val_size  # measured on the RL runs' validation split
    assert cfg.model.bootstrap.teacher_bars.answer >= 0.8 and cfg.model.bootstrap.teacher_bars.solution >= 0.95


@pytest.mark.parametrize("record", [None, {"accuracy": 0.4}, {"premise": {**PREMISE, "teacher_answer": 0.04}}])
def test_a_cached_policy_without_a_premise_that_meets_the_bars_is_rebuilt(tmp_path, monkeypatch, record):
    monkeypatch.setenv("RLSD_LAB_CACHE", str(tmp_path))
    cfg = compose_config([])
    cached = tmp_path / "base_policy" / bootstrap.cache_key(cfg.model, cfg.task)
    cached.mkdir(parents=True)
    if record is not None:  # an older recipe's record, or one whose teacher is weak
        (cached / "bootstrap.json").write_text(json.dumps(record))
    assert cached_premise(cached, cfg.model.bootstrap) is None
    builds = []

    def build(model_cfg, task_cfg, out_dir):
        builds.append(out_dir)
        summary = {"premise": PREMISE, "steps": 1, "seconds": 0.0, "parameters": 1}
        (out_dir / "bootstrap.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(bootstrap, "train_base_policy", build)
    assert ensure_base_policy(cfg.model, cfg.task) == cached and len(builds) == 1
    assert cached_premise(cached, cfg.model.bootstrap) == PREMISE
    ensure_base_policy(cfg.model, cfg.task)
    assert len(builds) == 1  # now cached with its record: not rebuilt


def test_a_build_that_misses_the_bars_within_its_budget_fails_naming_them(tmp_path):
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml")
    model_cfg.architecture = TINY_ARCHITECTURE
    model_cfg.bootstrap.update({"max_steps": 4, "eval_every": 2, "eval_size": 4, "max_new_tokens": 8,
                                "batch_size": 4, "train_pool": 16})
    task_cfg = OmegaConf.load(ROOT / "conf" / "task" / "arith.yaml")
    task_cfg.val_size = 4
    with pytest.raises(RuntimeError, match=r"max_steps=4 \(phase 'read'\).*teacher accuracy with the answer "
                                           r"reference 0\.000 below model\.bootstrap\.teacher_bars\.answer=0\.8"):
        train_base_policy(model_cfg, task_cfg, tmp_path)
    assert not (tmp_path / "bootstrap.json").exists()


@pytest.mark.parametrize("override, key", [("model.bootstrap.teacher_bars.answer=abc", "teacher_bars.answer"),
                                           ("model.bootstrap.teacher_bars.answer=1.5", "teacher_bars.answer"),
                                           ("+model.bootstrap.teacher_bars.hint=0.9", "teacher_bars reference mode"),
                                           ("model.bootstrap.target_accuracy=[0.6,0.3]", "target_accuracy"),
                                           ("model.bootstrap.student_share=-0.1", "student_share"),
                                           ("model.bootstrap.lr_scale=0", "lr_scale"),
                                           ("model.bootstrap.eval_every=0", "eval_every")])
def test_a_bad_bootstrap_value_fails_before_any_build_naming_its_key(tmp_path, monkeypatch, override, key):
    monkeypatch.setenv("RLSD_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(bootstrap, "train_base_policy", lambda *args: pytest.fail("built despite a bad config"))
    cfg = compose_config([override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        ensure_base_policy(cfg.model, cfg.task)
