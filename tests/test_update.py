"""The accumulated update: micro-batch split invariance, and a positive advantage raising a response's log-prob."""

from dataclasses import replace

import pytest
import torch

from rlsd_lab.logprobs import TokenScorer, response_logprobs
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.update import accumulate_policy_gradients
from tests.helpers.configs import compose_config, objective
from tests.helpers.experience import experience, with_advantages

LOSS = compose_config([]).loss


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


def gradient_after(model, grpo, built, aggregation, micro_batch_size):
    model.zero_grad()
    rows = torch.arange(built.rollout.response_ids.shape[0])
    sums = accumulate_policy_gradients(model, grpo, built, rows, loss_cfg=replace_aggregation(aggregation),
                                       max_response_length=12, micro_batch_size=micro_batch_size,
                                       scorer=TokenScorer(1.0, 5))
    return sums, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def replace_aggregation(aggregation):
    loss = LOSS.copy()
    loss.aggregation = aggregation
    return loss


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_loss_and_gradient_do_not_depend_on_micro_batch_split(tiny_model, tokenizer, aggregation):
    rollout = make_rollout(tiny_model, tokenizer)
    assert rollout.response_mask.sum(1).unique().numel() > 1, "test needs responses of different lengths"
    grpo = objective("grpo")
    built = with_advantages(grpo, experience([1.0, 0.0, 0.0, 1.0] * 4, rollout=rollout, group_size=4))
    whole, grad_whole = gradient_after(tiny_model, grpo, built, aggregation, 16)
    split, grad_split = gradient_after(tiny_model, grpo, built, aggregation, 4)
    assert grad_whole.abs().sum() > 0
    assert whole["loss"] == pytest.approx(split["loss"], abs=1e-6)
    torch.testing.assert_close(grad_split, grad_whole, atol=1e-6, rtol=1e-5)


def test_positive_advantage_raises_the_log_prob_of_its_response(tiny_model, tokenizer):
    rollout = make_rollout(tiny_model, tokenizer, prompts=1, group=2)
    grpo = objective("grpo")
    built = with_advantages(grpo, experience([1.0, 0.0], rollout=rollout, group_size=2))
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.5)

    def sequence_logprobs():
        with torch.no_grad():
            logprobs = response_logprobs(tiny_model, rollout.input_ids, rollout.attention_mask,
                                         rollout.response_ids.shape[1]).logprobs
        return (logprobs * rollout.response_mask).sum(1)

    before = sequence_logprobs()
    gradient_after(tiny_model, grpo, built, "token-mean", 2)
    optimizer.step()
    after = sequence_logprobs()
    assert after[0] > before[0] and after[1] < before[1]


def test_first_step_uses_detached_current_logprobs_as_pi_old(tiny_model, tokenizer):
    rollout = make_rollout(tiny_model, tokenizer)
    grpo = objective("grpo")
    built = with_advantages(grpo, experience([1.0, 0.0] * 8, rollout=rollout, group_size=4))
    implicit, grad_implicit = gradient_after(tiny_model, grpo, built, "token-mean", 8)
    _, grad_explicit = gradient_after(tiny_model, grpo, replace(built, old_logprobs_B_T=rollout.logprobs),
                                      "token-mean", 8)
    torch.testing.assert_close(grad_explicit, grad_implicit, atol=1e-5, rtol=1e-4)
    assert implicit["pg_clipfrac_low"] == 0 and implicit["pg_clipfrac_high"] == 0
