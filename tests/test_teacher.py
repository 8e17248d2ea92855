"""The teacher pass, the trainer-level invariances of the teacher-using objectives, diagnostics and credits."""

import math

import pytest
import torch

from rlsd_lab.credit import token_credit
from rlsd_lab.diagnostics import leakage_rate, reasoning_mask, shows_leakage
from rlsd_lab.logprobs import HiddenStates, TokenScorer, response_hidden, response_logprobs, response_states
from rlsd_lab.prompts import render_prompt
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.rollout.hf_engine import left_pad
from rlsd_lab.teacher import TeacherPass
from rlsd_lab.update import accumulate_policy_gradients
from tests.helpers.configs import compose_config, objective
from tests.helpers.experience import experience, with_advantages

QUESTIONS = ["12+34", "5+6", "123+456"]


def rollout_for(model, tokenizer, n=4, tokens=10, seed=0):
    prompts = [tokenizer.encode(render_prompt(q), add_special_tokens=False) for q in QUESTIONS]
    return build_engine("hf", model, tokenizer, seed=seed).generate(prompts, SamplingParams(tokens, n=n))


def teacher_logprobs(model, tokenizer, rollout, references, keep_hidden=False, n=4):
    prompts = [tokenizer.encode(render_prompt(q, r), add_special_tokens=False) for q, r in zip(QUESTIONS, references)]
    return TeacherPass(model, "live").run(model, teacher_prompts=prompts, response_ids=rollout.response_ids,
                                          group_size=n, pad_id=tokenizer.pad_token_id, scorer=TokenScorer(1.0, 4),
                                          keep_hidden=keep_hidden)


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
    assert not states.hidden_B_T_H.requires_grad and states.hidden_B_T_H.grad_fn is None


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


def update_sums_and_grad(model, method, built):
    model.zero_grad()
    built = with_advantages(method, built)
    rows = torch.arange(built.rollout.response_ids.shape[0])
    sums = accumulate_policy_gradients(model, method, built, rows, loss_cfg=compose_config([]).loss,
                                       max_response_length=10, micro_batch_size=5, scorer=TokenScorer(1.0, 4))
    return sums, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def scored_rollout(model, tokenizer, rollout, keep_hidden=False):
    """The rollout as an Experience with rewards and the teacher's Delta (and hidden states)."""
    teacher, states = teacher_logprobs(model, tokenizer, rollout, ["46", "11", "579"], keep_hidden)
    return experience([1.0, 0.0, 0.0, 1.0] * 3, rollout=rollout, group_size=4, delta=teacher - rollout.logprobs,
                      teacher_states=states)


def test_opsd_divergence_gradient_equals_the_unchunked_jsd(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    built = scored_rollout(tiny_model, tokenizer, rollout, keep_hidden=True)
    _, chunked_grad = update_sums_and_grad(tiny_model, objective("opsd"), built)
    states = built.teacher_states
    tiny_model.zero_grad()
    length = rollout.response_ids.shape[1]
    hidden = response_hidden(tiny_model, rollout.input_ids, rollout.attention_mask, length)
    student = torch.log_softmax(tiny_model.lm_head(hidden), -1)
    teacher = torch.log_softmax(tiny_model.lm_head(states.hidden_B_T_H), -1).detach()
    mixture = torch.logsumexp(torch.stack([student + math.log(0.5), teacher + math.log(0.5)]), 0)
    jsd = 0.5 * (teacher.exp() * (teacher - mixture)).sum(-1) + 0.5 * (student.exp() * (student - mixture)).sum(-1)
    mask = rollout.response_mask
    ((jsd * mask).sum() / mask.sum()).backward()
    naive_grad = torch.cat([p.grad.flatten() for p in tiny_model.parameters() if p.grad is not None])
    torch.testing.assert_close(chunked_grad, naive_grad, atol=1e-6, rtol=1e-4)


def test_four_methods_credit_the_same_responses(tiny_model, tokenizer):
    rollout = rollout_for(tiny_model, tokenizer)
    built = scored_rollout(tiny_model, tokenizer, rollout, keep_hidden=True)
    with torch.no_grad():
        student = response_states(tiny_model, rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1])
    methods = {"grpo": objective("grpo"), "opsd": objective("opsd"), "hybrid": objective("hybrid", beta_h=0.1),
               "rlsd": objective("rlsd")}
    credits = {name: token_credit(method, with_advantages(method, built), student=student, scorer=TokenScorer(1.0, 4),
                                  micro_batch_size=5) for name, method in methods.items()}
    for credit in credits.values():
        assert credit.shape == rollout.response_ids.shape and torch.isfinite(credit).all()
        assert torch.all(credit[rollout.response_mask == 0] == 0)
    grpo = credits["grpo"]
    assert torch.equal(grpo, grpo[:, :1] * rollout.response_mask)  # one credit per response: its advantage
    torch.testing.assert_close(grpo[:, 0], built.sequence_advantages_B)
    assert torch.equal(torch.sign(credits["rlsd"]), torch.sign(grpo))
    assert not torch.allclose(credits["rlsd"], grpo)
    # The hybrid (loss mix) credits (1 - beta_h) of GRPO's plus beta_h of OPSD's.
    torch.testing.assert_close(credits["hybrid"], 0.9 * grpo + 0.1 * credits["opsd"], atol=1e-6, rtol=1e-5)


def test_reverse_kl_credit_by_hand():
    # D = KL(S || T); dD/d log S_v = S_v (log S_v - log T_v + 1), so the credit is minus that at the sampled token.
    student = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]]))
    teacher = torch.log(torch.tensor([[[0.2, 0.5, 0.3]]]))
    identity = torch.nn.Identity()
    sampled = student[..., 0].clone().requires_grad_(True)
    divergence = TokenScorer(1.0, 4).divergence_at_sampled(lambda s, t: (s.exp() * (s - t)).sum(-1),
                                                           HiddenStates(student, identity),
                                                           HiddenStates(teacher, identity), torch.tensor([[0]]),
                                                           sampled)
    (grad,) = torch.autograd.grad(divergence.sum(), sampled)
    assert float(-grad) == pytest.approx(-0.6 * (math.log(0.6 / 0.2) + 1), rel=1e-5)


def test_leakage_and_reasoning_span(tokenizer):
    assert shows_leakage("@ref\n1+2+0=03\nA:3", ["@ref"], "A:", True)
    assert shows_leakage("A:3", ["@ref"], "A:", True)
    assert not shows_leakage("1+2+0=03\nA:3", ["@ref"], "A:", True)
    assert not shows_leakage("A:3", ["@ref"], "A:", answer_first=False)
    assert leakage_rate(["A:3", "1+2+0=03\nA:3", "@ref", "x"], ["@ref"], "A:", True) == 0.5
    ids = torch.tensor([tokenizer.encode("1+2=3\nA:3<", add_special_tokens=False)])
    mask = reasoning_mask(ids, torch.ones_like(ids, dtype=torch.float), tokenizer.encode("A:", add_special_tokens=False))
    assert mask[0].tolist() == [1.0] * 6 + [0.0] * 4
