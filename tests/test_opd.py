"""OPD: an external teacher scores the student's own samples; refused with another vocabulary or when weaker."""

import pandas as pd
import pytest
import torch

from methods import build_objective
from rlsd_lab.external_teacher import vocabulary_problem
from rlsd_lab.models import load_policy
from rlsd_lab.module import RLModule
from rlsd_lab.tasks import build_task
from rlsd_lab.verifiers.pool import VerifierPool
from rlsd_lab.train import run
from tests.helpers.configs import compose_config
from tests.test_end_to_end import FAST


def opd_config(model_dir, teacher_dir, *extra):
    return compose_config(FAST + [f"model.path={model_dir}", "method=opd", f"method.teacher.model={teacher_dir}",
                                  "trainer.max_steps=2", "diagnostics.every=1", *extra])


def test_the_student_as_its_own_teacher_gives_zero_advantages(tmp_path, model_dir):
    cfg = opd_config(model_dir, model_dir, "method.teacher.require_stronger=false", "verify.workers=0")
    model, tokenizer = load_policy(model_dir)
    task = build_task(cfg.task)
    problems = task.problems("train", 4, seed=0)
    module = RLModule(cfg, model, tokenizer, build_objective(cfg.method, cfg.loss),
                      VerifierPool(task.verifier, {}, 0, 30), problems, problems, tmp_path)
    experience = module.make_experience(problems, step=1)
    # the teacher pass continues a KV cache, the student's log-probs come from one forward: equal up to float error
    assert experience.delta_B_T.abs().max() < 1e-5
    assert experience.advantages.abs().max() < 1e-5
    assert experience.rewards_B.numel() == 16


@pytest.mark.parametrize("form", ["sampled_token", "divergence"])
def test_opd_trains_end_to_end_and_logs_the_teacher(tmp_path, model_dir, form):
    run(opd_config(model_dir, model_dir, "method.teacher.require_stronger=false", f"method.form={form}"),
        tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    train = metrics.dropna(subset=["train/loss"])
    assert train["step"].tolist() == [1, 2] and train["train/teacher_student_kl"].notna().all()
    # the teacher is the student's initial weights: at step 0 the KL is 0, after an update it is not
    assert metrics.dropna(subset=["teacher/val_accuracy"]).shape[0] >= 1
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any(key.startswith("teacher.frozen.") for key in checkpoint["state_dict"])


def test_a_teacher_that_is_not_stronger_stops_the_run_at_step_0(tmp_path, model_dir):
    with pytest.raises(RuntimeError, match="external teacher is not stronger than the student"):
        run(opd_config(model_dir, model_dir), tmp_path / "run")


def test_a_teacher_with_another_vocabulary_is_refused_naming_both_sizes(tmp_path, model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    teacher_dir = tmp_path / "teacher"
    teacher_tokenizer = tokenizer.__class__.from_pretrained(model_dir)
    teacher_tokenizer.add_tokens(["<extra>"])
    teacher = AutoModelForCausalLM.from_pretrained(model_dir)
    teacher.resize_token_embeddings(len(teacher_tokenizer))
    teacher.save_pretrained(teacher_dir)
    teacher_tokenizer.save_pretrained(teacher_dir)
    size = len(tokenizer)
    expected = rf"vocabulary \({size + 1} tokens\) differs from the student's \({size} tokens\)"
    with pytest.raises(ValueError, match=expected):
        run(opd_config(model_dir, teacher_dir), tmp_path / "run")


def test_vocabulary_check_also_compares_the_output_layers(tiny_model, tokenizer):
    class Head:
        def __init__(self, rows):
            self.weight = torch.zeros(rows, 1)

    class Model:
        def __init__(self, rows):
            self.head = Head(rows)

        def get_output_embeddings(self):
            return self.head

    assert vocabulary_problem(tokenizer, tokenizer, tiny_model, tiny_model) is None
    assert "output layer has 128 rows" in vocabulary_problem(tokenizer, tokenizer, Model(99), Model(128))


def test_opd_refuses_a_privileged_teacher_mode():
    from tests.helpers.configs import objective

    with pytest.raises(ValueError, match="method.teacher.mode must be external"):
        objective("opd", "method.teacher.mode=live")
