"""The GPU path: the checks `benchmarks/gpu_check.py` runs first (`pytest -m gpu`).

On a machine with CUDA they run there. Without one they are skipped, except in the GPU check's CPU dry run
(RLSD_LAB_GPU_DRY_RUN=1), which runs them on the CPU so that they cannot rot between GPU runs. There bf16 goes
through CPU autocast: the same code, another kernel.
"""

import os

import pandas as pd
import pytest
import torch

from rlsd_lab.logprobs import TokenScorer, response_logprobs
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.train import run
from rlsd_lab.update import accumulate_policy_gradients
from tests.helpers.configs import compose_config, objective
from tests.helpers.experience import experience, with_advantages
from tests.test_resume import RESUME, comparable
from tests.test_teacher import QUESTIONS, rollout_for, teacher_logprobs

pytestmark = pytest.mark.gpu
DRY_RUN = os.environ.get("RLSD_LAB_GPU_DRY_RUN") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not DRY_RUN:
    pytest.skip("no CUDA device (RLSD_LAB_GPU_DRY_RUN=1 runs these on the CPU)", allow_module_level=True)


@pytest.fixture
def model(tiny_model):
    return tiny_model.to(DEVICE)


def bf16():
    return torch.autocast(DEVICE, dtype=torch.bfloat16)


def test_hf_engine_equals_generate_greedily_on_the_device(model, tokenizer):
    prompts = [tokenizer.encode(f"Q:{q}\n", add_special_tokens=False) for q in QUESTIONS]
    ours = build_engine("hf", model, tokenizer, seed=0).generate(prompts, SamplingParams(12, temperature=0.0))
    for row, prompt in enumerate(prompts):
        reference = model.generate(torch.tensor([prompt], device=DEVICE), do_sample=False, max_new_tokens=12,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        length = int(ours.response_mask[row].sum())
        assert ours.response_ids[row, :length].tolist() == reference[0, len(prompt):len(prompt) + length].tolist()


def policy_gradient(model, built, precision):
    model.zero_grad()
    method = objective("grpo")
    rows = torch.arange(built.rollout.response_ids.shape[0])
    with bf16() if precision == "bf16" else torch.autocast(DEVICE, enabled=False):
        accumulate_policy_gradients(model, method, with_advantages(method, built), rows,
                                    loss_cfg=compose_config([]).loss, max_response_length=10, micro_batch_size=5,
                                    scorer=TokenScorer(1.0, 4))
    return torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def test_bf16_mixed_update_gradient_is_close_to_fp32(model, tokenizer):
    """What trainer.precision=bf16-mixed does to one GRPO update: fp32 weights, bf16 autocast. The gradient keeps
    its direction (cosine > 0.99) and its norm (within 5%)."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0] * 3, device=DEVICE)
    built = experience(rewards, rollout=rollout_for(model, tokenizer), group_size=4)
    full, mixed = policy_gradient(model, built, "fp32"), policy_gradient(model, built, "bf16")
    assert torch.nn.functional.cosine_similarity(full, mixed, dim=0) > 0.99
    assert abs(mixed.norm() / full.norm() - 1) < 0.05


def test_teacher_delta_under_bf16_is_zero_within_bf16_tolerance_for_an_empty_reference(model, tokenizer):
    """The teacher pass (prompt KV cache shared by a group) against the student's own forward pass, both in bf16:
    with an empty reference they are the same distribution, so Delta is bf16 rounding only."""
    rollout = rollout_for(model, tokenizer)
    with torch.no_grad(), bf16():
        student = response_logprobs(model, rollout.input_ids, rollout.attention_mask,
                                    rollout.response_ids.shape[1]).logprobs.float()
        empty, _ = teacher_logprobs(model, tokenizer, rollout, ["", "", ""])
        informed, _ = teacher_logprobs(model, tokenizer, rollout, ["46", "11", "579"])
    mask = rollout.response_mask.bool()
    delta_empty = (empty.float() - student)[mask].abs()
    delta_informed = (informed.float() - student)[mask].abs()
    assert delta_empty.max() < 0.1 and delta_empty.mean() < 0.02, (delta_empty.max(), delta_empty.mean())
    assert delta_informed.mean() > delta_empty.mean()


def test_a_run_resumed_on_the_device_reproduces_the_uninterrupted_metrics(tmp_path, model_dir):
    """Stop at step 3, resume=auto to step 6, on the device: metrics.csv equals the uninterrupted run's (within
    1e-4 relative on a GPU, whose kernels need not be bit-reproducible; bit-exact on the CPU, tests/test_resume.py)."""
    accelerator = "gpu" if DEVICE == "cuda" else "cpu"
    overrides = [*RESUME, f"model.path={model_dir}", "train.checkpoint_every=3", f"trainer.accelerator={accelerator}"]
    run(compose_config(overrides), tmp_path / "reference")
    run(compose_config([*overrides, "trainer.max_steps=3"]), tmp_path / "run")
    run(compose_config([*overrides, "resume=auto"]), tmp_path / "run")
    resumed, reference = comparable(tmp_path / "run"), comparable(tmp_path / "reference")
    assert resumed["step"].tolist() == list(range(7))
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, rtol=1e-4, atol=1e-6)
