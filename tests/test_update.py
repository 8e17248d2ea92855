"""The accumulated update: micro-batch split invariance, and a positive advantage raising a response's log-prob."""

import pytest
import torch
from omegaconf import OmegaConf

from methods import ScoredRollout, build_objective
from rlsd_lab.logprobs import response_logprobs
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.update import UpdateInputs, accumulate_policy_gradients

LOSS = OmegaConf.create({"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0, "kl_coef": 0.0,
                         "kl_estimator": "k3", "entropy_coef": 0.0})
GRPO = OmegaConf.create({"name": "grpo", "scale_by_std": True})


def make_rollout(model, tokenizer, prompts=4, group=4, max_new_tokens=12, seed=0):
    """Sampled responses cut to lengths 3..12 (a random model rarely says eos), prompts of different lengths."""
    engine = build_engine("hf", model, tokenizer, seed=seed)
    ids = [tokenizer.encode(f"Q:{i}{i}+{i}\n", add_special_tokens=False)[: 5 + i] for i in range(prompts)]
    batch = engine.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, n=group))
    lengths = torch.tensor([3 + (5 * row) % 10 for row in range(batch.response_ids.shape[0])])
    keep = torch.arange(batch.response_ids.shape[1])[None, :] < lengths[:, None]
    batch.response_mask = batch.response_mask * keep
    batch.response_ids = batch.response_ids.masked_fill(~keep, tokenizer.pad_token_id)
    batch.logprobs = batch.logprobs * keep
    return batch


def gradient_after(model, objective, rollout, advantages, aggregation, micro_batch_size, old_logprobs=None):
    model.zero_grad()
    rows = torch.arange(rollout.response_ids.shape[0])
    inputs = UpdateInputs(advantages=advantages, old_logprobs=old_logprobs)
    sums = accumulate_policy_gradients(model, objective, rollout, inputs, rows, aggregation, 12,
                                       micro_batch_size, temperature=1.0, chunk_size=5)
    return sums, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_loss_and_gradient_do_not_depend_on_micro_batch_split(tiny_model, tokenizer, aggregation):
    rollout = make_rollout(tiny_model, tokenizer)
    assert rollout.response_mask.sum(1).unique().numel() > 1, "test needs responses of different lengths"
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0] * 4)
    objective = build_objective(GRPO, LOSS)
    advantages, _ = objective.token_advantages(ScoredRollout(rewards, rollout.response_mask, 4), 0)
    whole, grad_whole = gradient_after(tiny_model, objective, rollout, advantages, aggregation, 16)
    split, grad_split = gradient_after(tiny_model, objective, rollout, advantages, aggregation, 4)
    assert grad_whole.abs().sum() > 0
    assert whole["loss"] == pytest.approx(split["loss"], abs=1e-6)
    torch.testing.assert_close(grad_split, grad_whole, atol=1e-6, rtol=1e-5)


def test_positive_advantage_raises_the_log_prob_of_its_response(tiny_model, tokenizer):
    rollout = make_rollout(tiny_model, tokenizer, prompts=1, group=2)
    rewards = torch.tensor([1.0, 0.0])
    objective = build_objective(GRPO, LOSS)
    advantages, _ = objective.token_advantages(ScoredRollout(rewards, rollout.response_mask, 2), 0)
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.5)

    def sequence_logprobs():
        with torch.no_grad():
            logprobs = response_logprobs(tiny_model, rollout.input_ids, rollout.attention_mask,
                                         rollout.response_ids.shape[1]).logprobs
        return (logprobs * rollout.response_mask).sum(1)

    before = sequence_logprobs()
    gradient_after(tiny_model, objective, rollout, advantages, "token-mean", 2)
    optimizer.step()
    after = sequence_logprobs()
    assert after[0] > before[0] and after[1] < before[1]


def test_first_step_uses_detached_current_logprobs_as_pi_old(tiny_model, tokenizer):
    rollout = make_rollout(tiny_model, tokenizer)
    objective = build_objective(GRPO, LOSS)
    advantages, _ = objective.token_advantages(ScoredRollout(torch.tensor([1.0, 0.0] * 8), rollout.response_mask, 4), 0)
    implicit, grad_implicit = gradient_after(tiny_model, objective, rollout, advantages, "token-mean", 8)
    _, grad_explicit = gradient_after(tiny_model, objective, rollout, advantages, "token-mean", 8,
                                      old_logprobs=rollout.logprobs)
    torch.testing.assert_close(grad_explicit, grad_implicit, atol=1e-5, rtol=1e-4)
    assert implicit["pg_clipfrac_low"] == 0 and implicit["pg_clipfrac_high"] == 0
