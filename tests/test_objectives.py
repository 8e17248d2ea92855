"""OPSD, GRPO+OPSD and RLSD against hand-computed values and the invariances of methods.md."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from methods import ScoredRollout, build_objective
from methods.divergences import (
    generalized_jsd,
    student_top1_cross_entropy,
    teacher_top1_cross_entropy,
    token_divergence,
)
from methods.rlsd import rlsd_advantages, rlsd_lambda

LOSS = OmegaConf.create({"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0, "kl_coef": 0.0,
                         "kl_estimator": "k3", "entropy_coef": 0.0})
TEACHER = {"mode": "live", "reference": "answer", "sync_every": 10}


def rlsd_cfg(**overrides):
    cfg = {"name": "rlsd", "lr": 1e-4, "scale_by_std": True, "eps_w": 0.2, "lambda_0": 0.5, "decay_steps": 50,
           "schedule": "linear", "negative_only": False, "reasoning_only": False, "teacher": TEACHER}
    return OmegaConf.create({**cfg, **overrides})


def opsd_cfg(**overrides):
    cfg = {"name": "opsd", "lr": 1e-3, "form": "divergence", "support": "full", "beta": 0.5,
           "divergence_clip": None, "teacher": TEACHER}
    return OmegaConf.create({**cfg, **overrides})


def scored(rewards, delta, group_size=2, reasoning=None):
    mask = torch.ones_like(delta)
    return ScoredRollout(rewards=torch.tensor(rewards), response_mask=mask, group_size=group_size,
                         student_logprobs=torch.zeros_like(delta), teacher_logprobs=delta, reasoning_mask=reasoning)


# ---- RLSD -----------------------------------------------------------------------------------------------------
def test_rlsd_advantage_by_hand():
    # A = +1: Delta 0.1 -> w = e^0.1 = 1.10517 (inside the clip); Delta 0.5 -> w = e^0.5 clipped to 1.2.
    # A = -1: Delta 0.5 -> w = e^-0.5 clipped to 0.8; Delta -0.1 -> w = e^0.1.  lambda = 0.5.
    advantages = torch.tensor([1.0, -1.0])
    delta = torch.tensor([[0.1, 0.5], [0.5, -0.1]])
    expected = torch.tensor([[0.5 + 0.5 * math.exp(0.1), 0.5 + 0.5 * 1.2],
                             [-(0.5 + 0.5 * 0.8), -(0.5 + 0.5 * math.exp(0.1))]])
    torch.testing.assert_close(rlsd_advantages(advantages, delta, lam=0.5, eps_w=0.2), expected)


def test_rlsd_lambda_schedule():
    assert rlsd_lambda(0, 0.5, 50, "linear") == 0.5
    assert rlsd_lambda(25, 0.5, 50, "linear") == pytest.approx(0.25)
    assert rlsd_lambda(50, 0.5, 50, "linear") == 0.0
    assert rlsd_lambda(80, 0.5, 50, "linear") == 0.0
    assert rlsd_lambda(80, 1.0, 50, "constant") == 1.0
    with pytest.raises(ValueError, match="valid choices"):
        rlsd_lambda(0, 0.5, 50, "cosine")


def test_rlsd_sign_follows_the_verifier_and_w_stays_in_its_clip():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (64,), generator=generator).float().tolist()
    delta = torch.randn(64, 20, generator=generator) * 3
    objective = build_objective(rlsd_cfg(lambda_0=1.0, schedule="constant"), LOSS)
    rollout = scored(rewards, delta, group_size=4)
    advantages = objective.sequence_advantages(rollout)[:, None].expand_as(delta)
    rlsd, metrics = objective.token_advantages(rollout, step=0)
    nonzero = advantages != 0
    assert torch.equal(torch.sign(rlsd), torch.sign(advantages))
    w = rlsd[nonzero] / advantages[nonzero]  # with lambda = 1, A_hat = A * clip(w)
    assert w.min() >= 0.8 - 1e-6 and w.max() <= 1.2 + 1e-6
    assert metrics["rlsd_w_clipfrac_low"] > 0 and metrics["rlsd_w_clipfrac_high"] > 0


def test_rlsd_negative_only_and_reasoning_only_leave_other_tokens_at_A():
    rewards, delta = [1.0, 0.0], torch.full((2, 3), 0.5)
    grpo = build_objective(OmegaConf.create({"name": "grpo", "scale_by_std": True}), LOSS)
    a = grpo.token_advantages(scored(rewards, delta), 0)[0]
    negative = build_objective(rlsd_cfg(negative_only=True), LOSS).token_advantages(scored(rewards, delta), 0)[0]
    assert torch.equal(negative[0], a[0]) and not torch.equal(negative[1], a[1])
    reasoning = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    only = build_objective(rlsd_cfg(reasoning_only=True), LOSS).token_advantages(
        scored(rewards, delta, reasoning=reasoning), 0)[0]
    assert torch.equal(only[reasoning == 0], a[reasoning == 0])
    assert not torch.equal(only[reasoning == 1], a[reasoning == 1])


def test_rlsd_asks_the_teacher_only_for_groups_it_reweights():
    rollout = scored([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], torch.zeros(6, 2))
    assert build_objective(rlsd_cfg(), LOSS).teacher_groups(rollout).tolist() == [True, False, False]
    grpo = build_objective(OmegaConf.create({"name": "grpo", "scale_by_std": True}), LOSS)
    assert grpo.teacher_groups(rollout).tolist() == [True, True, True]


def test_rlsd_gives_no_signal_when_a_group_agrees():
    out = build_objective(rlsd_cfg(), LOSS).token_advantages(scored([1.0, 1.0], torch.randn(2, 4)), 0)[0]
    assert torch.equal(out, torch.zeros(2, 4))


# ---- OPSD divergences -----------------------------------------------------------------------------------------
def logs(*probabilities):
    return torch.log(torch.tensor(probabilities))


def test_jsd_endpoints_are_forward_and_reverse_kl():
    generator = torch.Generator().manual_seed(1)
    student = torch.log_softmax(torch.randn(5, 7, generator=generator), -1)
    teacher = torch.log_softmax(torch.randn(5, 7, generator=generator), -1)
    forward = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    reverse = torch.nn.functional.kl_div(teacher, student, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(generalized_jsd(student, teacher, 0.0), forward)
    torch.testing.assert_close(generalized_jsd(student, teacher, 1.0), reverse)


def test_jsd_half_by_hand():
    # S = [0.5, 0.5], T = [0.9, 0.1], M = [0.7, 0.3].
    kl_t_m = 0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    kl_s_m = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    got = generalized_jsd(logs(0.5, 0.5), logs(0.9, 0.1), 0.5)
    assert float(got) == pytest.approx(0.5 * kl_t_m + 0.5 * kl_s_m, abs=1e-6)


def test_top1_variants_by_hand():
    student, teacher = logs(0.5, 0.3, 0.2), logs(0.1, 0.6, 0.3)
    assert float(teacher_top1_cross_entropy(student, teacher)) == pytest.approx(-math.log(0.3))
    assert float(student_top1_cross_entropy(student, teacher)) == pytest.approx(-(0.1 / 0.5) * math.log(0.5))


def test_divergence_clip_caps_the_loss_and_its_gradient():
    student = logs(0.5, 0.5).requires_grad_(True)
    loss = token_divergence(student, logs(0.99, 0.01), "full", 1.0, clip=0.01)
    assert float(loss) == pytest.approx(0.01)
    loss.backward()
    assert torch.all(student.grad == 0)


def test_opsd_sampled_token_advantage_is_delta():
    delta = torch.tensor([[0.3, -0.2], [0.0, 1.0]])
    out = build_objective(opsd_cfg(form="sampled_token"), LOSS).token_advantages(scored([1.0, 0.0], delta), 0)[0]
    torch.testing.assert_close(out, delta)


def test_unknown_opsd_choices_are_listed():
    with pytest.raises(ValueError, match="valid choices"):
        build_objective(opsd_cfg(support="top5"), LOSS)
    with pytest.raises(ValueError, match="valid choices"):
        build_objective(opsd_cfg(form="logit"), LOSS)


# ---- hybrid ---------------------------------------------------------------------------------------------------
def hybrid_cfg(**overrides):
    cfg = {"name": "hybrid", "lr": 1e-4, "scale_by_std": True, "beta_h": 0.1, "mix": "advantage",
           "opsd": {"form": "sampled_token", "support": "full", "beta": 0.5, "divergence_clip": None},
           "teacher": TEACHER}
    return OmegaConf.create({**cfg, **overrides})


def test_hybrid_advantage_mix_by_hand():
    delta = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    out = build_objective(hybrid_cfg(), LOSS).token_advantages(scored([1.0, 0.0], delta), 0)[0]
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    torch.testing.assert_close(out, torch.tensor([[a + 0.05, a - 0.1], [-a + 0.2, -a]]))


def test_hybrid_requires_beta_h():
    with pytest.raises(ValueError, match="needs method.beta_h"):
        build_objective(hybrid_cfg(beta_h="???"), LOSS)
