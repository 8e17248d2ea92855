"""OPSD, GRPO+OPSD and RLSD against hand-computed values and the invariances of methods.md."""

import math

import pytest
import torch

from methods.divergences import (
    generalized_jsd,
    student_top1_cross_entropy,
    teacher_top1_cross_entropy,
    token_divergence,
)
from methods.rlsd import rlsd_advantages, rlsd_lambda
from rlsd_lab.config import ConfigError
from rlsd_lab.experience import teacher_groups
from tests.helpers.configs import objective
from tests.helpers.experience import experience


def scored(rewards, delta, group_size=2, reasoning=None):
    return experience(rewards, delta=delta, group_size=group_size, reasoning_mask_B_T=reasoning)


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
    rlsd_objective = objective("rlsd", lambda_0=1.0, schedule="constant")
    rollout = scored(rewards, delta, group_size=4)
    advantages = rollout.sequence_advantages_B[:, None].expand_as(delta)
    rlsd, metrics = rlsd_objective.token_advantages(rollout)
    nonzero = advantages != 0
    assert torch.equal(torch.sign(rlsd), torch.sign(advantages))
    w = rlsd[nonzero] / advantages[nonzero]  # with lambda = 1, A_hat = A * clip(w)
    assert w.min() >= 0.8 - 1e-6 and w.max() <= 1.2 + 1e-6
    assert metrics["rlsd_w_clipfrac_low"] > 0 and metrics["rlsd_w_clipfrac_high"] > 0


def test_rlsd_negative_only_and_reasoning_only_leave_other_tokens_at_A():
    rewards, delta = [1.0, 0.0], torch.full((2, 3), 0.5)
    a = objective("grpo").token_advantages(scored(rewards, delta))[0]
    negative = objective("rlsd", negative_only=True).token_advantages(scored(rewards, delta))[0]
    assert torch.equal(negative[0], a[0]) and not torch.equal(negative[1], a[1])
    reasoning = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    only = objective("rlsd", reasoning_only=True).token_advantages(scored(rewards, delta, reasoning=reasoning))[0]
    assert torch.equal(only[reasoning == 0], a[reasoning == 0])
    assert not torch.equal(only[reasoning == 1], a[reasoning == 1])


def test_rlsd_asks_the_teacher_only_for_groups_it_reweights():
    rollout = scored([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], torch.zeros(6, 2))
    groups = {name: teacher_groups(objective(name, *extra).needs.teacher_groups, rollout.sequence_advantages_B, 2)
              for name, extra in (("rlsd", ()), ("opsd", ()), ("hybrid", ("method.beta_h=0.1",)))}
    assert groups["rlsd"].tolist() == [True, False, False]
    assert groups["opsd"].tolist() == groups["hybrid"].tolist() == [True, True, True]
    negative = objective("rlsd", negative_only=True).needs.teacher_groups
    assert teacher_groups(negative, torch.tensor([1.0, -1.0, 0.0, 0.0, 1.0, 1.0]), 2).tolist() == [True, False, False]


def test_rlsd_gives_no_signal_when_a_group_agrees():
    out = objective("rlsd").token_advantages(scored([1.0, 1.0], torch.randn(2, 4)))[0]
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
    out = objective("opsd", form="sampled_token").token_advantages(scored([1.0, 0.0], delta))[0]
    torch.testing.assert_close(out, delta)


def test_unknown_opsd_choices_are_listed():
    with pytest.raises(ConfigError, match="method.support=top5: must be one of full, teacher_top1, student_top1"):
        objective("opsd", support="top5")
    with pytest.raises(ConfigError, match="method.form=logit: must be one of divergence, sampled_token"):
        objective("opsd", form="logit")


# ---- hybrid ---------------------------------------------------------------------------------------------------
def test_hybrid_advantage_mix_by_hand():
    delta = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    hybrid = objective("hybrid", beta_h=0.1, mix="advantage")
    parts = hybrid.token_advantages(scored([1.0, 0.0], delta))[0]
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    torch.testing.assert_close(parts["grpo"], torch.tensor([[a, a], [-a, -a]]))
    torch.testing.assert_close(parts["opsd"], delta)  # OPSD's sampled-token advantage, mixed in with beta_h


def test_hybrid_requires_beta_h():
    with pytest.raises(ConfigError, match=r"method.beta_h: required, no default \(no published value"):
        objective("hybrid")
