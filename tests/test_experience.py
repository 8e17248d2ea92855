"""The three defects found when the step was split into make_experience / learn, each pinned by a test that
fails on the old behaviour."""

from dataclasses import replace

import pandas as pd
import torch

from methods import MicroBatch
from rlsd_lab.tasks import build_task
from rlsd_lab.train import run
from tests.helpers.configs import compose_config, objective
from tests.test_end_to_end import FAST
from tests.test_invariants import pipeline

VARIED = "+task.verifier=tests.helpers.rewards:char_parity"


def first_diagnostics(tmp_path, model_dir, lr: str) -> pd.Series:
    run_dir = tmp_path / f"lr{lr}"
    run(compose_config(FAST + [f"model.path={model_dir}", VARIED, "method=rlsd", f"method.lr={lr}",
                               "trainer.max_steps=1", "diagnostics.every=1"]), run_dir)
    return pd.read_csv(run_dir / "metrics.csv").set_index("step").loc[1]


def test_a_diagnostics_read_the_weights_that_sampled_the_batch_not_the_updated_ones(tmp_path, model_dir):
    """(a) The teacher-student KL (and the credit) of step 0 compare the student and a live teacher on the same
    weights, those that sampled the batch: the size of the update that follows cannot change them."""
    still, moved = first_diagnostics(tmp_path, model_dir, "1e-9"), first_diagnostics(tmp_path, model_dir, "0.05")
    assert moved["train/grad_norm"] > 0 and moved["val/accuracy"] == moved["val/accuracy"]
    for key in ("train/teacher_student_kl", "teacher/delta_correct", "teacher/delta_wrong", "teacher/val_accuracy"):
        assert still[key] == moved[key], key


def test_b_hybrid_term_gradients_use_each_parts_own_importance_weighted_advantage():
    """(b) With truncated importance weights w, the advantage mix's GRPO term is the surrogate of w * A, not of
    w * (A + beta_h Delta) - beta_h Delta (what un-mixing the weighted advantages gave)."""
    hybrid = objective("hybrid", beta_h=0.5, mix="advantage")
    generator = torch.Generator().manual_seed(0)
    a, delta = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    weights = torch.rand(4, 6, generator=generator) * 2
    logprobs = torch.randn(4, 6, generator=generator) * 0.1
    micro = MicroBatch(logprobs=logprobs, old_logprobs=torch.zeros(4, 6), advantages={"grpo": a, "opsd": delta},
                       response_mask=torch.ones(4, 6), is_weights=weights)
    terms = hybrid.per_token_loss(micro).terms
    grpo_alone = objective("grpo").per_token_loss(replace(micro, advantages=a)).loss
    torch.testing.assert_close(terms["grpo"], grpo_alone, atol=0, rtol=0)
    unmixed = hybrid.surrogate(replace(micro, is_weights=None), (a + 0.5 * delta) * weights - 0.5 * delta)["loss"]
    assert (terms["grpo"] - unmixed).abs().max() > 1e-2


def test_c_rows_the_teacher_skips_have_zero_delta_even_when_the_engine_disagrees(tmp_path, tiny_model, tokenizer,
                                                                                 monkeypatch):
    """(c) RLSD skips groups with A = 0. Their rows keep the student's pi_old log-probs as teacher log-probs, so
    Delta is exactly 0 there; the engine's own log-probs (here off by 0.01, as another engine's are) are not
    pi_old when the trainer recomputes it."""
    from rlsd_lab.rollout.hf_engine import HFRolloutEngine

    generate = HFRolloutEngine.generate

    def disagreeing(self, prompts, params):
        batch = generate(self, prompts, params)
        batch.logprobs = (batch.logprobs + 0.01) * batch.response_mask
        return batch

    monkeypatch.setattr(HFRolloutEngine, "generate", disagreeing)
    problems = build_task(compose_config([]).task).problems("train", 8, seed=0)
    module, _ = pipeline(tiny_model, tokenizer, tmp_path, ["method=rlsd", "train.mini_batches=2",
                                                           "rollout.group_size=2"], problems=problems)
    experience = module.make_experience(problems, step=1)  # not a diagnostic step: groups with A = 0 are skipped
    skipped = ~experience.teacher_rows_B
    assert experience.old_logprobs_B_T is not None and bool(skipped.any()) and bool((~skipped).any())
    assert torch.equal(experience.delta_B_T[skipped], torch.zeros_like(experience.delta_B_T[skipped]))
    mask = experience.response_mask_B_T.bool()
    assert (experience.rollout.logprobs - experience.old_logprobs_B_T)[mask].abs().min() > 5e-3
