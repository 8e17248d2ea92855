"""Train/inference mismatch: the rollout engine's log-probs against the trainer's for the same tokens.

An engine other than the trainer's own forward pass (vLLM: other kernels, batching, sometimes another dtype)
samples from a slightly different policy than the one the loss differentiates. These pure functions measure the
gap per token and give truncated importance-sampling (TIS) weights that correct for it.
"""

from __future__ import annotations

import torch


def logprob_mismatch(engine_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor,
                     response_mask: torch.Tensor) -> dict[str, float]:
    """Mean and max of |logprob_engine - logprob_trainer| over response tokens (`response_mask` 1); [B, T] each."""
    mask = response_mask.bool()
    gap = (engine_logprobs.float() - trainer_logprobs.float()).abs()[mask]
    if gap.numel() == 0:
        return {"mismatch/logprob_abs_diff_mean": 0.0, "mismatch/logprob_abs_diff_max": 0.0}
    return {"mismatch/logprob_abs_diff_mean": float(gap.mean()), "mismatch/logprob_abs_diff_max": float(gap.max())}


def truncated_is_weights(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_trainer / pi_engine, cap) per token, without gradient: the sample came from the engine's policy, the
    loss is about the trainer's; the cap bounds the variance a rare large ratio would add."""
    if cap <= 0:
        raise ValueError(f"the importance-weight cap must be positive, got {cap}")
    ratio = torch.exp(trainer_logprobs.detach().float() - engine_logprobs.detach().float())
    return ratio.clamp(max=cap)
