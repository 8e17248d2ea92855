"""The teacher pass, the trainer-level invariances of the teacher-using objectives, diagnostics and credits."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from methods import ScoredRollout, build_objective
from rlsd_lab.credit import compare_credits, divergence_credit
from rlsd_lab.diagnostics import leakage_rate, reasoning_mask, shows_leakage
from rlsd_lab.logprobs import TeacherStates, response_hidden, response_logprobs
from rlsd_lab.prompts import render_prompt
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.rollout.hf_engine import left_pad
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.update import UpdateInputs, accumulate_policy_gradients
from tests.test_objectives import LOSS, hybrid_cfg, opsd_cfg, rlsd_cfg

QUESTIONS = ["12+34", "5+6", "123+456"]


def rollout_for(model, tokenizer, n=4, tokens=10, seed=0):
    prompts = [tokenizer.encode(render_prompt(q), add_special_tokens=False) for q in QUESTIONS]
    return build_engine("hf", model, tokenizer, seed=seed).generate(prompts, SamplingParams(tokens, n=n))


def teacher_logprobs(model, tokenizer, rollout, references, keep_hidden=False, n=4):
    prompts = [tokenizer.encode(render_prompt(q, r), add_special_tokens=False) for q, r in zip(QUESTIONS, references)]
    return TeacherPass(model, "live").run(model, prompts, rollout.response_ids, n, tokenizer.pad_token_id, 1.0, 4,
                                          keep_hidden)


def test_empty_reference_gives_zero_gain_on_every_token(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    teacher, _ = teacher_logprobs(tiny_model, tokenizer, rollout, ["", "", ""])
    delta = (teacher - rollout.logprobs) * rollout.response_mask
    assert delta.abs().max() < 1e-5
    with_reference, _ = teacher_logprobs(tiny_model, tokenizer, rollout, ["46", "11", "579"])
    assert ((with_reference - rollout.logprobs) * rollout.response_mask).abs().max() > 1e-3


def test_grouped_teacher_pass_equals_a_plain_forward_pass(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    references = ["46", "11", "579"]
    grouped, _ = teacher_logprobs(tiny_model, tokenizer, rollout, references)
    rows = [tokenizer.encode(render_prompt(q, r), add_special_tokens=False) for q, r in zip(QUESTIONS, references)
            for _ in range(4)]
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        plain = response_logprobs(tiny_model, torch.cat([ids, rollout.response_ids], 1),
                                  torch.cat([mask, torch.ones_like(rollout.response_ids)], 1),
                                  rollout.response_ids.shape[1]).logprobs
    torch.testing.assert_close(grouped * rollout.response_mask, plain * rollout.response_mask, atol=2e-5, rtol=1e-4)


def test_teacher_pass_builds_no_autograd_graph(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    with torch.enable_grad():
        logprobs, states = teacher_logprobs(tiny_model, tokenizer, rollout, ["46", "11", "579"], keep_hidden=True)
    assert not logprobs.requires_grad and logprobs.grad_fn is None
    assert not states.hidden.requires_grad and states.hidden.grad_fn is None


def test_teacher_modes(tiny_model):
    fixed, periodic, live = (TeacherPass(tiny_model, mode, sync_every=10) for mode in ("fixed", "periodic", "live"))
    assert live.weights(tiny_model, 5) is tiny_model and live.frozen is None
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)
    first = next(tiny_model.parameters())
    assert not torch.equal(next(fixed.weights(tiny_model, 10).parameters()), first)
    assert not torch.equal(next(periodic.weights(tiny_model, 9).parameters()), first)  # not due yet
    assert torch.equal(next(periodic.weights(tiny_model, 10).parameters()), first)  # re-synced at step 10


def update_sums_and_grad(model, objective, rollout, scored, teacher=None):
    model.zero_grad()
    advantages, _ = objective.token_advantages(scored, 0)
    inputs = UpdateInputs(advantages=advantages, delta=scored.delta, teacher=teacher)
    rows = torch.arange(rollout.response_ids.shape[0])
    sums = accumulate_policy_gradients(model, objective, rollout, inputs, rows, "token-mean", 10, 5, 1.0, 4)
    return sums, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def scored_rollout(model, tokenizer, rollout, keep_hidden=False):
    teacher, states = teacher_logprobs(model, tokenizer, rollout, ["46", "11", "579"], keep_hidden)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0] * 3)
    return ScoredRollout(rewards, rollout.response_mask, 4, student_logprobs=rollout.logprobs,
                         teacher_logprobs=teacher), states


def test_rlsd_with_lambda_zero_is_grpo_exactly(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    scored, _ = scored_rollout(tiny_model, tokenizer, rollout)
    grpo = build_objective(OmegaConf.create({"name": "grpo", "scale_by_std": True}), LOSS)
    rlsd = build_objective(rlsd_cfg(lambda_0=0.0, schedule="constant"), LOSS)
    grpo_sums, grpo_grad = update_sums_and_grad(tiny_model, grpo, rollout, scored)
    rlsd_sums, rlsd_grad = update_sums_and_grad(tiny_model, rlsd, rollout, scored)
    assert rlsd_sums["loss"] == grpo_sums["loss"]
    assert torch.equal(rlsd_grad, grpo_grad)


def test_opsd_divergence_gradient_equals_the_unchunked_jsd(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    scored, states = scored_rollout(tiny_model, tokenizer, rollout, keep_hidden=True)
    opsd = build_objective(opsd_cfg(), LOSS)
    _, chunked_grad = update_sums_and_grad(tiny_model, opsd, rollout, scored, teacher=states)
    tiny_model.zero_grad()
    length = rollout.response_ids.shape[1]
    hidden = response_hidden(tiny_model, rollout.input_ids, rollout.attention_mask, length)
    student = torch.log_softmax(tiny_model.lm_head(hidden), -1)
    teacher = torch.log_softmax(tiny_model.lm_head(states.hidden), -1).detach()
    mixture = torch.logsumexp(torch.stack([student + math.log(0.5), teacher + math.log(0.5)]), 0)
    jsd = 0.5 * (teacher.exp() * (teacher - mixture)).sum(-1) + 0.5 * (student.exp() * (student - mixture)).sum(-1)
    mask = rollout.response_mask
    ((jsd * mask).sum() / mask.sum()).backward()
    naive_grad = torch.cat([p.grad.flatten() for p in tiny_model.parameters() if p.grad is not None])
    torch.testing.assert_close(chunked_grad, naive_grad, atol=1e-6, rtol=1e-4)


def test_four_methods_credit_the_same_responses(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    scored, teacher_states = scored_rollout(tiny_model, tokenizer, rollout, keep_hidden=True)
    length = rollout.response_ids.shape[1]
    with torch.no_grad():
        student_states = TeacherStates(response_hidden(tiny_model, rollout.input_ids, rollout.attention_mask, length),
                                       tiny_model.lm_head)
    objectives = {
        "grpo": build_objective(OmegaConf.create({"name": "grpo", "scale_by_std": True}), LOSS),
        "opsd": build_objective(opsd_cfg(), LOSS),
        "hybrid": build_objective(hybrid_cfg(mix="loss"), LOSS),
        "rlsd": build_objective(rlsd_cfg(), LOSS),
    }
    credits = compare_credits(objectives, scored, 0, student_states, teacher_states, rollout.response_ids, 1.0, 4)
    assert set(credits) == set(objectives)
    for credit in credits.values():
        assert credit.shape == rollout.response_ids.shape and torch.isfinite(credit).all()
    grpo = credits["grpo"]
    assert torch.equal(grpo, grpo[:, :1] * rollout.response_mask)  # one credit per response
    assert torch.equal(torch.sign(credits["rlsd"]), torch.sign(grpo))
    assert not torch.allclose(credits["rlsd"], grpo)


def test_reverse_kl_credit_by_hand():
    # D = KL(S || T); dD/d log S_v = S_v (log S_v - log T_v + 1), so the credit is minus that at the sampled token.
    student = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))
    teacher = torch.log(torch.tensor([[[0.2, 0.5, 0.3]]]))
    identity = torch.nn.Identity()
    credit = divergence_credit(lambda s, t: (s.exp() * (s - t)).sum(-1), TeacherStates(student, identity),
                               TeacherStates(teacher, identity), torch.tensor([[0]]), 1.0, 4)
    assert float(credit) == pytest.approx(-0.6 * (math.log(0.6 / 0.2) + 1), rel=1e-5)


def test_leakage_and_reasoning_span(tokenizer):
    assert shows_leakage("@ref\n1+2+0=03\nA:3", ["@ref"], "A:", True)
    assert shows_leakage("A:3", ["@ref"], "A:", True)
    assert not shows_leakage("1+2+0=03\nA:3", ["@ref"], "A:", True)
    assert not shows_leakage("A:3", ["@ref"], "A:", answer_first=False)
    assert leakage_rate(["A:3", "1+2+0=03\nA:3", "@ref", "x"], ["@ref"], "A:", True) == 0.5
    ids = torch.tensor([tokenizer.encode("1+2=3\nA:3<", add_special_tokens=False)])
    mask = reasoning_mask(ids, torch.ones_like(ids, dtype=torch.float), tokenizer.encode("A:", add_special_tokens=False))
    assert mask[0].tolist() == [1.0] * 6 + [0.0] * 4
