"""The GRPO family's pieces, by hand: GSPO's sequence ratio, CISPO's weights, DAPO's overlong penalty and dynamic
sampling, and the sequence-level engine-mismatch corrections; then each through the entry point."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from methods import MicroBatch
from methods.policy_loss import cispo_surrogate, clipped_surrogate, sequence_log_ratio
from rlsd_lab.dynamic_sampling import GroupPicker, informative_groups
from rlsd_lab.reward_shaping import overlong_penalty
from rlsd_lab.rollout import RolloutBatch, concat_rollouts
from rlsd_lab.rollout.mismatch import engine_correction, sequence_is_weights
from rlsd_lab.train import run
from tests.helpers.configs import compose_config, objective
from tests.test_end_to_end import FAST


def test_gspo_ratio_is_the_geometric_mean_with_the_token_gradient():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -1.9, -0.7], [-0.3, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    log_s = sequence_log_ratio(logprobs, old, mask)
    # row 0: mean(0.2, -0.1, 0.2) = 0.1 at every token; row 1: mean(0, -0.2) = -0.1
    assert torch.allclose(log_s[0], torch.full((3,), 0.1))
    assert torch.allclose(log_s[1, :2], torch.full((2,), -0.1))
    # d exp(log s_t) / d logprob_t = s_i (the token's own gradient, scaled by the sequence ratio)
    (grad,) = torch.autograd.grad(log_s.exp().sum(), logprobs)
    assert torch.allclose(grad[0], torch.full((3,), torch.tensor(0.1).exp().item()))


def test_gspo_with_one_token_responses_equals_the_token_level_surrogate():
    logprobs = torch.tensor([[-1.0], [-0.2], [-3.0]], requires_grad=True)
    old = torch.tensor([[-1.1], [-0.1], [-2.0]])
    advantages = torch.tensor([[1.0], [-1.0], [0.5]])
    mask = torch.ones(3, 1)
    gspo = clipped_surrogate(sequence_log_ratio(logprobs, old, mask), advantages, 0.2, 0.28, 3.0)["loss"]
    token = clipped_surrogate(logprobs - old, advantages, 0.2, 0.28, 3.0)["loss"]
    assert torch.allclose(gspo, token)
    (g_gspo,) = torch.autograd.grad(gspo.sum(), logprobs, retain_graph=True)
    (g_token,) = torch.autograd.grad(token.sum(), logprobs)
    assert torch.allclose(g_gspo, g_token)


def test_gspo_token_form_gradient_equals_the_sequence_level_loss():
    torch.manual_seed(0)
    logprobs = (-torch.rand(2, 4)).requires_grad_(True)
    old = logprobs.detach() + 0.1 * torch.randn(2, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    advantages = torch.tensor([0.7, -1.3])
    token_form = clipped_surrogate(sequence_log_ratio(logprobs, old, mask), advantages[:, None] * mask, 0.5, 0.5,
                                   None)["loss"]
    per_sequence = (token_form * mask).sum(1) / mask.sum(1)  # seq-mean-token-mean
    s = torch.exp(((logprobs - old) * mask).sum(1) / mask.sum(1))
    sequence_level = torch.maximum(-advantages * s, -advantages * s.clamp(0.5, 1.5))
    (g_token,) = torch.autograd.grad(per_sequence.sum(), logprobs)
    (g_sequence,) = torch.autograd.grad(sequence_level.sum(), logprobs)
    assert torch.allclose(g_token, g_sequence, atol=1e-6)


def test_cispo_weights_by_hand_and_no_token_loses_its_gradient():
    logprobs = torch.tensor([-1.0, -1.0, -1.0, -1.0], requires_grad=True)
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.1])
    advantages = torch.tensor([1.0, 1.0, 1.0, -2.0])
    out = cispo_surrogate(logprobs, ratio.log(), advantages, clip_low=None, clip_high=0.28)
    (grad,) = torch.autograd.grad(out["loss"].sum(), logprobs)
    # -d loss / d logprob = sg(clip(rho, 0, 1.28)) * A: 0.5, 1, 1.28 (clipped, still a gradient), 1.1 * -2
    assert torch.allclose(-grad, torch.tensor([0.5, 1.0, 1.28, -2.2]))
    assert out["clipped_high"].tolist() == [False, False, True, False]
    floored = cispo_surrogate(logprobs, ratio.log(), advantages, clip_low=0.2, clip_high=0.28)
    assert floored["clipped_low"].tolist() == [True, False, False, False]


def test_cispo_with_an_unclipped_ratio_is_the_plain_policy_gradient():
    torch.manual_seed(1)
    logprobs = (-torch.rand(3, 5)).requires_grad_(True)
    old = logprobs.detach() + 0.05 * torch.randn(3, 5)
    advantages = torch.randn(3, 5)
    cispo = cispo_surrogate(logprobs, logprobs - old, advantages, clip_low=0.5, clip_high=0.5)["loss"]
    plain = -advantages * torch.exp(logprobs - old)  # the unclipped importance-weighted policy gradient
    (g_cispo,) = torch.autograd.grad(cispo.sum(), logprobs)
    (g_plain,) = torch.autograd.grad(plain.sum(), logprobs)
    assert torch.allclose(g_cispo, g_plain, atol=1e-6)


def micro(logprobs, old, advantages):
    return MicroBatch(logprobs=logprobs, old_logprobs=old, advantages=advantages,
                      response_mask=torch.ones_like(logprobs))


def test_loss_options_reach_every_clipped_surrogate_objective():
    logprobs, old = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    advantages = torch.tensor([[1.0, 1.0]])
    ppo = objective("rlsd").surrogate(micro(logprobs, old, advantages), advantages)
    gspo = objective("rlsd", "loss.ratio=sequence").surrogate(micro(logprobs, old, advantages), advantages)
    cispo = objective("grpo", "loss.surrogate=cispo").surrogate(micro(logprobs, old, advantages), advantages)
    assert torch.allclose(ppo["ratio"], torch.tensor([[0.5, 0.0]]).exp())
    assert torch.allclose(gspo["ratio"], torch.full((1, 2), 0.25).exp())  # geometric mean, GSPO's clip 4e-4
    assert gspo["clipped_high"].all() and not ppo["clipped_high"][0, 1]
    assert torch.allclose(cispo["loss"], -torch.tensor([[1.28, 1.0]]) * logprobs)


@pytest.mark.parametrize("length, penalty", [(5, 0.0), (6, 0.0), (7, -0.25), (9, -0.75), (10, -1.0), (11, -1.0)])
def test_overlong_penalty_at_the_buffer_edges(length, penalty):
    # max_len 10, buffer 4: free up to 6 tokens, then -1/4 per token, -1 at and beyond 10
    assert overlong_penalty(torch.tensor([length]), max_len=10, buffer=4).item() == pytest.approx(penalty)


def test_dynamic_sampling_keeps_only_groups_whose_raw_scores_differ():
    scores = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 1.0])  # groups of 3: all wrong, all right, mixed
    assert informative_groups(scores, 3).tolist() == [False, False, True]
    picker = GroupPicker(wanted=2)
    picker.add(["a", "b", "c"], scores, 3)
    assert not picker.done
    picker.add(["d", "e", "f"], torch.tensor([1, 0, 0, 1, 1, 1, 0, 1, 0.0]), 3)
    assert picker.done and picker.picked() == ["c", "d"]
    assert picker.metrics() == {"data/dynamic_draws": 2.0, "data/dynamic_filtered_share": 3 / 6,
                                "data/dynamic_filled_share": 0.0}
    short = GroupPicker(wanted=3)
    short.add(["a", "b", "c"], scores, 3)  # the draws ran out: filtered groups fill the batch, in drawn order
    assert short.picked() == ["c", "a", "b"] and short.metrics()["data/dynamic_filled_share"] == pytest.approx(2 / 3)


def test_sequence_masking_and_sequence_tis_by_hand():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    engine = torch.zeros(3, 2)
    trainer = torch.tensor([[0.2, 0.4], [-1.0, 5.0], [-0.1, 0.1]])  # log ratios; row 1's second token is padding
    cfg = {"tis_cap": 2.0, "tis_level": "geometric", "sequence_mask": [0.5, 1.3]}
    weights, keep, metrics = engine_correction(trainer, engine, mask, cfg)
    # geometric means: e^0.3 = 1.35 (outside), e^-1 = 0.37 (outside), e^0 = 1 (kept)
    assert keep.tolist() == [False, False, True]
    assert metrics["mismatch/sequence_masked_share"] == pytest.approx(2 / 3)
    assert torch.allclose(weights, torch.tensor([[0.3, 0.3], [-1.0, 0.0], [0.0, 0.0]]).exp() * mask)
    product = sequence_is_weights(trainer, engine, mask, cap=1.5, level="sequence")
    assert torch.allclose(product[:, 0], torch.tensor([1.5, torch.tensor(-1.0).exp().item(), 1.0]))


def test_concatenated_rollouts_score_like_their_parts(tiny_model, tokenizer):
    from rlsd_lab.logprobs import response_logprobs

    def batch(prompt_len, response_len, seed):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, len(tokenizer), (2, prompt_len + response_len), generator=g)
        return RolloutBatch(ids[:, :prompt_len], torch.ones(2, prompt_len, dtype=torch.long), ids[:, prompt_len:],
                            torch.ones(2, response_len), torch.zeros(2, response_len), torch.ones(2, dtype=torch.bool))

    parts = [batch(3, 5, 0), batch(6, 2, 1)]
    joined = concat_rollouts(parts, tokenizer.pad_token_id)
    assert joined.prompt_ids.shape == (4, 6) and joined.response_ids.shape == (4, 5)
    scored = response_logprobs(tiny_model, joined.input_ids, joined.attention_mask, 5).logprobs
    for i, part in enumerate(parts):
        alone = response_logprobs(tiny_model, part.input_ids, part.attention_mask, part.response_ids.shape[1]).logprobs
        width = part.response_ids.shape[1]
        assert torch.allclose(scored[2 * i:2 * i + 2, :width], alone, atol=1e-5)


def test_rows_left_out_of_the_loss_give_the_gradient_of_the_batch_without_them(tiny_model, tokenizer):
    from tests.helpers.experience import experience, with_advantages
    from tests.test_update import gradient_after, make_rollout

    rollout = make_rollout(tiny_model, tokenizer, prompts=2, group=4)
    grpo = objective("grpo")
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    built = with_advantages(grpo, experience(rewards, rollout=rollout, group_size=4))
    keep = torch.tensor([True, False, True, True, False, True, True, True])
    masked = replace(built, loss_rows_B=keep)
    # the same advantages on the kept rows alone: the left-out rows weigh 0 and count in no token-mean denominator
    alone = replace(built, rollout=rollout.rows(keep), advantages=built.advantages[keep],
                    rewards_B=built.rewards_B[keep], sequence_advantages_B=built.sequence_advantages_B[keep])
    _, with_rows_masked = gradient_after(tiny_model, grpo, masked, "token-mean", 3)
    _, without_rows = gradient_after(tiny_model, grpo, alone, "token-mean", 3)
    assert with_rows_masked.abs().sum() > 0
    torch.testing.assert_close(with_rows_masked, without_rows, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("options", [
    ["loss.ratio=sequence", "loss.aggregation=seq-mean-token-mean"],
    ["loss.surrogate=cispo"],
    ["data.dynamic_sampling.enabled=true", "data.dynamic_sampling.max_draws=3", "reward.overlong.enabled=true",
     "reward.overlong.buffer=4", "loss.mask_truncated=true"],
    ["method=rlsd", "loss.ratio=sequence"],
])
def test_grpo_family_trains_end_to_end(tmp_path, model_dir, options):
    cfg = compose_config(FAST + [f"model.path={model_dir}", "trainer.max_steps=2", *options])
    run(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert metrics["step"].tolist() == [1, 2] and metrics["train/grad_norm"].notna().all()
    if "data.dynamic_sampling.enabled=true" in options:
        assert {"data/dynamic_draws", "train/overlong_penalty", "train/truncated_masked_share"} <= set(metrics)
        assert (metrics["data/dynamic_draws"] >= 1).all() and (metrics["data/dynamic_draws"] <= 3).all()
