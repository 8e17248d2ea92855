"""The invariants every objective must keep, run over every objective shipped in conf/method/ (and, from its own
test, over a test-only objective: tests/objectives/). Each check takes the overrides that select an objective, so
a new objective is checked by its name alone.

Each experience comes from the pipeline itself (RLModule.make_experience) on a tiny random model, with rewards
that vary (tests/helpers/rewards.py), at step 0, a diagnostic step: every group has the teacher's Delta and
hidden states.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from methods import OBJECTIVES, build_objective
from rlsd_lab.credit import token_credit
from rlsd_lab.logprobs import response_states
from rlsd_lab.module import RLModule
from rlsd_lab.tasks import build_task
from rlsd_lab.update import accumulate_policy_gradients
from rlsd_lab.verifiers.pool import VerifierPool
from rlsd_lab.models import build_tiny_qwen2
from tests.conftest import TINY_ARCHITECTURE
from tests.helpers.configs import compose_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(path.stem for path in (ROOT / "conf" / "method").glob("*.yaml"))
REQUIRED = {"hybrid": ["method.beta_h=0.1"]}  # values without a default
SMALL = ["data.prompts_per_step=3", "rollout.group_size=4", "rollout.max_new_tokens=10", "train.logprob_chunk_size=4",
         "task.train_size=8"]
VARIED = "tests.helpers.rewards:char_parity"  # about half right
ALL_RIGHT = "tests.helpers.rewards:misbehaving"  # a proper Verdict(1.0) for an ordinary response
ALL_WRONG = "tests.helpers.rewards:all_wrong"


def selecting(name: str) -> list[str]:
    return [f"method={name}", *REQUIRED.get(name, [])]


def pipeline(model, tokenizer, tmp_path, overrides, verifier=VARIED, problems=None):
    """(module, experience): one step-0 experience of the composed config's objective."""
    cfg = compose_config([*SMALL, *overrides])
    module = RLModule(cfg, model, tokenizer, build_objective(cfg.method, cfg.loss), VerifierPool(verifier, workers=0),
                      [], [], tmp_path)
    problems = problems or build_task(cfg.task).problems("train", 3, seed=0)
    return module, module.make_experience(problems, step=0)


def gradient(model, module, experience, micro_batch_size: int):
    model.zero_grad()
    rows = torch.arange(experience.rollout.response_ids.shape[0])
    sums = accumulate_policy_gradients(model, module.objective, experience, rows, loss_cfg=module.cfg.loss,
                                       max_response_length=module.cfg.rollout.max_new_tokens,
                                       micro_batch_size=micro_batch_size, scorer=module.scorer)
    return sums["loss"], torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def credit_of(model, module, experience):
    rollout = experience.rollout
    with torch.no_grad():
        student = response_states(model, rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1])
    return token_credit(module.objective, experience, student=student, scorer=module.scorer, micro_batch_size=5)


# ---- the shared checks: each takes the overrides that select an objective ---------------------------------------
def check_micro_batch_invariance(model, tokenizer, tmp_path, overrides):
    """The loss and its gradient do not depend on how the batch is split into micro-batches."""
    module, experience = pipeline(model, tokenizer, tmp_path, overrides)
    whole_loss, whole = gradient(model, module, experience, micro_batch_size=12)
    split_loss, split = gradient(model, module, experience, micro_batch_size=5)
    assert whole.abs().sum() > 0
    assert split_loss == pytest.approx(whole_loss, abs=1e-6)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-5)


def check_no_graph_in_the_experience(model, tokenizer, tmp_path, overrides):
    """Nothing make_experience returns (rollout, teacher pass, advantages) carries an autograd graph."""
    _, experience = pipeline(model, tokenizer, tmp_path, overrides)
    tensors = [experience.teacher_states.hidden_B_T_H]
    for value in [getattr(experience, f.name) for f in dataclasses.fields(experience)] + [
            getattr(experience.rollout, f.name) for f in dataclasses.fields(experience.rollout)]:
        tensors += list(value.values()) if isinstance(value, dict) else [value]
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    assert experience.delta_B_T is not None and len(tensors) >= 10
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)


def check_credit_is_finite_and_zero_on_padding(model, tokenizer, tmp_path, overrides):
    module, experience = pipeline(model, tokenizer, tmp_path, overrides)
    credit = credit_of(model, module, experience)
    mask = experience.response_mask_B_T
    assert credit.shape == mask.shape and torch.isfinite(credit).all()
    assert torch.all(credit[mask == 0] == 0) and credit.abs().sum() > 0


def saved_teacher(model, tokenizer, path: Path) -> str:
    """`model` as OPD's external teacher (the embedded one is a 3.3M-parameter build the tests do without)."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return f"method.teacher.model={path}"


def check_no_signal_without_information(model, tokenizer, tmp_path, overrides):
    """Every response right and an empty reference (the teacher's prompt is the student's): nothing to learn, so
    no credit and no gradient, up to the float noise of the teacher's KV-cache pass. Two teachers are informed
    otherwise, so their uninformed case is another: OPD's external teacher is then the student itself, SDPO's
    demonstrations need a success, so there every response is wrong."""
    problems = [dataclasses.replace(p, answer="", solution="")
                for p in build_task(compose_config([]).task).problems("train", 3, seed=0)]
    verifier = ALL_WRONG if "method=sdpo" in overrides else ALL_RIGHT
    if "method=opd" in overrides:
        overrides = [*overrides, saved_teacher(model, tokenizer, tmp_path / "student_as_teacher")]
    module, experience = pipeline(model, tokenizer, tmp_path, overrides, verifier=verifier, problems=problems)
    assert bool((experience.rewards_B == (0.0 if verifier == ALL_WRONG else 1.0)).all())
    assert experience.delta_B_T.abs().max() < 1e-5 or verifier == ALL_WRONG
    assert credit_of(model, module, experience).abs().max() < 1e-4
    assert gradient(model, module, experience, micro_batch_size=12)[1].abs().max() < 1e-4


SHARED_CHECKS = [check_micro_batch_invariance, check_no_graph_in_the_experience,
                 check_credit_is_finite_and_zero_on_padding, check_no_signal_without_information]


@pytest.mark.parametrize("check", SHARED_CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("name", SHIPPED)
def test_shared_invariants(tiny_model, tokenizer, tmp_path, name, check):
    overrides = selecting(name)
    if name == "opd":  # a teacher that differs from the student: another random tiny model
        torch.manual_seed(1)
        teacher = build_tiny_qwen2(tokenizer, TINY_ARCHITECTURE)
        overrides += [saved_teacher(teacher, tokenizer, tmp_path / "teacher"), "method.teacher.require_stronger=false"]
    check(tiny_model, tokenizer, tmp_path, overrides)


def test_every_registered_objective_of_the_package_has_a_yaml():
    shipped = {name for name, objective in OBJECTIVES.items() if objective.__module__.startswith("methods.")}
    assert shipped == set(SHIPPED)


# ---- objective-specific: the settings at which an objective is GRPO, exactly ---------------------------------
REDUCES_TO_GRPO = {
    "rlsd lambda=0": ["method=rlsd", "method.lambda_0=0.0", "method.schedule=constant"],
    "hybrid beta_h=0 (loss mix)": ["method=hybrid", "method.beta_h=0.0"],
    "hybrid beta_h=0 (advantage mix)": ["method=hybrid", "method.beta_h=0.0", "method.mix=advantage"],
}


@pytest.mark.parametrize("setting", sorted(REDUCES_TO_GRPO))
def test_reduces_to_grpo_exactly(tiny_model, tokenizer, tmp_path, setting):
    grpo_module, grpo_experience = pipeline(tiny_model, tokenizer, tmp_path, ["method=grpo"])
    module, experience = pipeline(tiny_model, tokenizer, tmp_path, REDUCES_TO_GRPO[setting])
    assert torch.equal(experience.rollout.response_ids, grpo_experience.rollout.response_ids)
    grpo_loss, grpo_grad = gradient(tiny_model, grpo_module, grpo_experience, 5)
    loss, grad = gradient(tiny_model, module, experience, 5)
    assert loss == grpo_loss and torch.equal(grad, grpo_grad)
    torch.testing.assert_close(credit_of(tiny_model, module, experience),
                               credit_of(tiny_model, grpo_module, grpo_experience), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["grpo", "rlsd"])
def test_the_verifier_alone_sets_the_sign_of_the_credit(tiny_model, tokenizer, tmp_path, name):
    module, experience = pipeline(tiny_model, tokenizer, tmp_path, selecting(name))
    expected = torch.sign(experience.sequence_advantages_B)[:, None] * experience.response_mask_B_T
    assert expected.abs().sum() > 0
    assert torch.equal(torch.sign(credit_of(tiny_model, module, experience)), expected)
