"""SDPO: demonstrations from the group, an EMA teacher, no signal without a success; top-k plus tail."""

import copy

import pandas as pd
import pytest
import torch

from methods import MicroBatch
from methods.divergences import generalized_jsd, top_k_with_tail
from methods.sdpo import demonstrations
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.train import run
from rlsd_lab.verifiers.base import Verdict
from tests.helpers.configs import compose_config, objective
from tests.helpers.experience import experience
from tests.test_end_to_end import FAST


def test_each_row_is_shown_another_success_of_its_group():
    rewards = torch.tensor([1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0.0])
    assert demonstrations(rewards, 4) == [2, 0, 0, 0, 5, None, 5, 5, None, None, None, None]


def sdpo_experience(rewards, **method):
    sdpo = objective("sdpo", **method)
    built = experience(rewards, group_size=2, response_mask=torch.ones(len(rewards), 3),
                       texts=[f"response {i}" for i in range(len(rewards))],
                       verdicts=[Verdict(r, "correct" if r else "wrong answer") for r in rewards])
    return sdpo, built


def test_reference_blocks_hold_the_demonstration_and_optionally_feedback():
    sdpo, built = sdpo_experience([1.0, 0.0, 0.0, 0.0])
    assert sdpo.teacher_references(built) == ["", "response 0", "", ""]
    sdpo, built = sdpo_experience([1.0, 0.0, 1.0, 1.0], feedback=True)
    assert sdpo.teacher_references(built) == ["", "response 0\nFeedback: wrong answer", "response 3", "response 2"]


@pytest.mark.parametrize("form", ["divergence", "sampled_token"])
def test_no_successful_response_anywhere_gives_no_distillation_gradient(form):
    sdpo, built = sdpo_experience([0.0, 0.0, 0.0, 0.0], form=form)
    from dataclasses import replace

    built = replace(built, delta_B_T=torch.randn(4, 3))
    advantages, metrics = sdpo.token_advantages(built)
    assert metrics["sdpo_demonstration_share"] == 0.0 and metrics["sdpo_groups_without_success"] == 1.0
    logprobs = torch.full((4, 3), -1.0, requires_grad=True)
    divergence = (logprobs.exp() * 3).requires_grad_(True)
    loss = sdpo.per_token_loss(MicroBatch(logprobs=logprobs, old_logprobs=logprobs.detach(), advantages=advantages,
                                          response_mask=torch.ones(4, 3), divergence=divergence)).loss
    (grad,) = torch.autograd.grad(loss.sum(), logprobs)
    assert grad.abs().max() == 0.0
    # with one success the other response of its group gets a signal
    sdpo, built = sdpo_experience([1.0, 0.0, 0.0, 0.0], form=form)
    built = replace(built, delta_B_T=torch.ones(4, 3))
    advantages, _ = sdpo.token_advantages(built)
    assert advantages[1].abs().sum() > 0 and advantages[[0, 2, 3]].abs().sum() == 0


def test_the_ema_teacher_moves_by_its_rate_once_per_step(tiny_model):
    teacher = TeacherPass(tiny_model, "ema", ema_rate=0.05)
    start = copy.deepcopy(teacher.frozen.state_dict())
    with torch.no_grad():
        for parameter in tiny_model.parameters():
            parameter.add_(1.0)
    assert teacher.weights(tiny_model, 0) is teacher.frozen  # step 0: the initial weights
    assert torch.equal(next(teacher.frozen.parameters()), next(iter(start.values())))
    teacher.weights(tiny_model, 1)
    teacher.weights(tiny_model, 1)  # a second call in the same step does not move it again
    name, moved = next(iter(teacher.frozen.state_dict().items()))
    assert torch.allclose(moved, start[name] + 0.05 * 1.0, atol=1e-6)


def test_top_k_with_a_tail_bucket_is_a_distribution_and_exact_when_k_covers_the_vocabulary():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 10).log_softmax(-1), torch.randn(3, 10).log_softmax(-1)
    s, t = top_k_with_tail(student, teacher, 4)
    assert s.shape == (3, 5) and torch.allclose(s.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.exp().sum(-1), torch.ones(3), atol=1e-5)
    full_s, full_t = top_k_with_tail(student, teacher, 10)  # the tail is empty: the full divergence
    assert torch.allclose(generalized_jsd(full_s, full_t, 0.5), generalized_jsd(student, teacher, 0.5), atol=1e-4)


@pytest.mark.parametrize("options", [[], ["method.support=topk", "method.top_k=5"], ["method.form=sampled_token"],
                                     ["method.teacher.mode=live"]])
def test_sdpo_trains_end_to_end(tmp_path, model_dir, options):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "method=sdpo", "trainer.max_steps=2", "diagnostics.every=1",
                                 *options])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert metrics["step"].tolist() == [1, 2] and metrics["train/sdpo_demonstration_share"].between(0, 1).all()
