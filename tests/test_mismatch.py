import math

import pytest
import torch

from rlsd_lab.rollout.mismatch import logprob_mismatch, truncated_is_weights


def test_mismatch_is_taken_over_response_tokens_only():
    engine = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    trainer = torch.tensor([[-1.5, -1.0, -9.0], [-0.5, -7.0, -7.0]])  # pads hold anything: they are masked out
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    metrics = logprob_mismatch(engine, trainer, mask)
    # |gaps| on response tokens: 0.5, 1.0, 0.0
    assert metrics["mismatch/logprob_abs_diff_mean"] == pytest.approx(0.5)
    assert metrics["mismatch/logprob_abs_diff_max"] == pytest.approx(1.0)


def test_mismatch_of_an_empty_batch_is_zero():
    metrics = logprob_mismatch(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3))
    assert metrics == {"mismatch/logprob_abs_diff_mean": 0.0, "mismatch/logprob_abs_diff_max": 0.0}


def test_truncated_importance_weights():
    trainer = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.1)]], requires_grad=True)
    engine = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.4)]])
    weights = truncated_is_weights(trainer, engine, cap=2.0)
    # ratios 1, 3 (capped at 2), 0.25
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 0.25]]))
    assert not weights.requires_grad


def test_truncated_importance_weights_survive_an_overflowing_ratio():
    weights = truncated_is_weights(torch.tensor([0.0]), torch.tensor([-200.0]), cap=5.0)
    assert weights.tolist() == [5.0]
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(torch.tensor([0.0]), torch.tensor([0.0]), cap=0.0)


def test_scaling_advantages_by_is_weights_scales_each_token_loss():
    """Why the module applies TIS to the advantages: the clipped surrogate (with dual clip) is positively
    homogeneous in A, so loss(A * w) == w * loss(A) token by token for w >= 0."""
    from methods.policy_loss import clipped_surrogate

    generator = torch.Generator().manual_seed(0)
    logprobs, old = -torch.rand(4, 6, generator=generator) * 3, -torch.rand(4, 6, generator=generator) * 3
    advantages = torch.randn(4, 6, generator=generator)
    weights = truncated_is_weights(old, old + 0.5 * torch.randn(4, 6, generator=generator), cap=2.0)
    scaled = clipped_surrogate(logprobs - old, advantages * weights, 0.2, 0.28, 3.0)["loss"]
    plain = clipped_surrogate(logprobs - old, advantages, 0.2, 0.28, 3.0)["loss"]
    assert torch.allclose(scaled, weights * plain, atol=1e-6)
