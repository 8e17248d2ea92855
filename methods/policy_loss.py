"""The clipped policy-gradient surrogate every objective shares (methods.md, "One surrogate for all").

Loss aggregation is expressed as a per-token weight computed once for the whole optimiser step, so the sum over
micro-batches of (weight x per-token loss) is the same however the batch is split.
"""

from __future__ import annotations

import torch

from rlsd_lab.choices import unknown_choice

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")


def aggregation_weights(response_mask: torch.Tensor, mode: str, max_response_length: int) -> torch.Tensor:
    """[B, T] weights summing the per-token loss into the batch loss.

    token-mean: 1 / (tokens in the whole batch). seq-mean-token-mean: 1 / (sequences x own length).
    seq-mean-token-sum-norm (Dr. GRPO): 1 / (sequences x max_response_length), a constant.
    """
    mask = response_mask.float()
    sequences = mask.shape[0]
    if mode == "token-mean":
        return mask / mask.sum().clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        return mask / (mask.sum(dim=1, keepdim=True).clamp(min=1.0) * sequences)
    if mode == "seq-mean-token-sum-norm":
        return mask / (sequences * max_response_length)
    raise unknown_choice("loss aggregation", mode, AGGREGATIONS)


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      clip_low: float, clip_high: float, dual_clip: float | None) -> dict[str, torch.Tensor]:
    """Per-token PPO loss with clip-higher (1 - clip_low, 1 + clip_high) and dual clip on negative advantages.

    Returns the per-token `loss` and boolean masks of where the low / high / dual clip was active.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    dual_active = torch.zeros_like(loss, dtype=torch.bool)
    if dual_clip is not None:
        # For A < 0 the ratio can grow without bound; cap the loss at -A * dual_clip.
        cap = -advantages * dual_clip
        dual_active = (advantages < 0) & (loss > cap)
        loss = torch.where(advantages < 0, torch.minimum(loss, cap), loss)
    return {
        "loss": loss,
        "ratio": ratio,
        "clipped_low": (advantages < 0) & (ratio < 1.0 - clip_low),
        "clipped_high": (advantages > 0) & (ratio > 1.0 + clip_high),
        "clipped_dual": dual_active,
    }


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled tokens (Schulman's k1, k2, k3)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1.0
    raise unknown_choice("KL estimator", estimator, KL_ESTIMATORS)
