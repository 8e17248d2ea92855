"""Train/inference mismatch: the rollout engine's log-probs against the trainer's for the same tokens.

An engine other than the trainer's own forward pass (vLLM: other kernels, batching, sometimes another dtype)
samples from a slightly different policy than the one the loss differentiates. These pure functions measure the
gap per token and give truncated importance-sampling (TIS) weights that correct for it.
"""

from __future__ import annotations

import math

import torch

from methods.policy_loss import sequence_mean


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


def sequence_is_weights(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, response_mask: torch.Tensor,
                        cap: float, level: str) -> torch.Tensor:
    """[B, T] one weight per response, broadcast over its tokens: the product (`sequence`) or the geometric mean
    (`geometric`) of its token ratios pi_trainer / pi_engine, truncated at `cap` (in log space, so a long
    response's product cannot overflow)."""
    log_ratio = (trainer_logprobs.detach().float() - engine_logprobs.detach().float()) * response_mask
    per_row = log_ratio.sum(dim=1) if level == "sequence" else sequence_mean(log_ratio, response_mask)
    return torch.exp(per_row.clamp(max=math.log(cap)))[:, None] * response_mask


def engine_correction(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, response_mask: torch.Tensor,
                      rollout_cfg) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, float]]:
    """(importance weights [B, T] or None, rows kept in the loss [B] or None, metrics) for `rollout.tis_cap`,
    `rollout.tis_level` and `rollout.sequence_mask` (a response whose geometric-mean ratio lies outside
    [lo, hi] is left out of the loss, TRL's default correction)."""
    weights = keep = None
    metrics = {}
    geometric = torch.exp(sequence_mean(trainer_logprobs.float() - engine_logprobs.float(), response_mask))
    metrics["mismatch/sequence_ratio_std"] = float(geometric.std()) if geometric.numel() > 1 else 0.0
    cap = rollout_cfg.get("tis_cap")
    if cap:
        level = rollout_cfg.get("tis_level", "token")
        weights = (truncated_is_weights(trainer_logprobs, engine_logprobs, cap) * response_mask if level == "token"
                   else sequence_is_weights(trainer_logprobs, engine_logprobs, response_mask, cap, level))
    bounds = rollout_cfg.get("sequence_mask")
    if bounds is not None:
        low, high = bounds
        keep = (geometric >= low) & (geometric <= high)
        metrics["mismatch/sequence_masked_share"] = float((~keep).float().mean())
    return weights, keep, metrics
