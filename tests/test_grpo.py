"""GRPO advantage and the shared clipped surrogate against hand-computed values."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from methods import build_objective
from methods.grpo import group_advantages, zero_variance_fraction
from methods.policy_loss import aggregation_weights, clipped_surrogate, kl_penalty
from rlsd_lab.config import ConfigError
from tests.helpers.configs import objective
from tests.helpers.experience import experience


def test_group_advantage_by_hand():
    # Group [1, 0, 0, 0]: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
    # Group [1, 1, 1, 1]: no variance, no signal.
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / torch.tensor([0.5] * 4 + [1.0] * 4)
    torch.testing.assert_close(group_advantages(rewards, 4), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(group_advantages(rewards, 4, scale_by_std=False),
                               torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))
    assert zero_variance_fraction(rewards, 4) == 0.5


def test_group_advantage_needs_two_samples():
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.ones(4), 1)


def test_grpo_gives_every_token_the_sequence_advantage():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float)
    advantages, metrics = objective("grpo").token_advantages(experience([1.0, 0.0, 1.0, 1.0], response_mask=mask))
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    expected = torch.tensor([[a, a, a], [-a, -a, 0], [0, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(advantages, expected)
    assert metrics["zero_variance_groups"] == 0.5


def test_clipped_surrogate_by_hand():
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5, 4.0, 0.5, 1.1])
    out = clipped_surrogate(ratio.log(), advantages, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    # 1: A>0, ratio above 1.28 -> -1.28 (clip-high). 2: A<0, ratio below 0.8 -> 0.8 (clip-low).
    # 3: A<0, ratio 4 -> unclipped 4, dual clip caps at 3. 4: A>0, ratio 0.5 -> -0.5, no clip. 5: -1 * 1.1 -> 1.1.
    torch.testing.assert_close(out["loss"], torch.tensor([-1.28, 0.8, 3.0, -0.5, 1.1]))
    assert out["clipped_high"].tolist() == [True, False, False, False, False]
    assert out["clipped_low"].tolist() == [False, True, False, False, False]
    assert out["clipped_dual"].tolist() == [False, False, True, False, False]
    no_dual = clipped_surrogate(ratio.log(), advantages, 0.2, 0.28, dual_clip=None)
    assert float(no_dual["loss"][2]) == pytest.approx(4.0)


def test_aggregation_weights_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float)
    torch.testing.assert_close(aggregation_weights(mask, "token-mean", 3),
                               torch.tensor([[1 / 3, 1 / 3, 0], [1 / 3, 0, 0]]))
    torch.testing.assert_close(aggregation_weights(mask, "seq-mean-token-mean", 3),
                               torch.tensor([[0.25, 0.25, 0], [0.5, 0, 0]]))
    torch.testing.assert_close(aggregation_weights(mask, "seq-mean-token-sum-norm", 3),
                               torch.tensor([[1 / 6, 1 / 6, 0], [1 / 6, 0, 0]]))
    with pytest.raises(ValueError, match="valid choices"):
        aggregation_weights(mask, "sum", 3)


def test_kl_estimators_by_hand():
    logprobs, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log_ratio = math.log(2.0)
    assert float(kl_penalty(logprobs, ref, "k1")) == pytest.approx(log_ratio)
    assert float(kl_penalty(logprobs, ref, "k2")) == pytest.approx(0.5 * log_ratio**2)
    assert float(kl_penalty(logprobs, ref, "k3")) == pytest.approx(0.5 + log_ratio - 1.0)
    with pytest.raises(ValueError, match="valid choices"):
        kl_penalty(logprobs, ref, "k4")


def test_unknown_method_lists_choices():
    with pytest.raises(ConfigError, match="method.name=ppo: must be one of grpo, hybrid, opd, opsd, rlsd, sdpo"):
        build_objective(OmegaConf.create({"name": "ppo"}), OmegaConf.create({}))
