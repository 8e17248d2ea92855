"""The clipped policy-gradient surrogate every objective shares (methods.md, "One surrogate for all").

Loss aggregation is expressed as a per-token weight computed once for the whole optimiser step, so the sum over
micro-batches of (weight x per-token loss) is the same however the batch is split.
"""

from __future__ import annotations

import torch

from rlsd_lab.choices import unknown_choice

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
RATIOS = ("token", "sequence")
SURROGATES = ("ppo", "cispo")
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


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float,
                      dual_clip: float | None) -> dict[str, torch.Tensor]:
    """Per-token PPO loss with clip-higher (1 - clip_low, 1 + clip_high) and dual clip on negative advantages.

    `log_ratio`: log pi_theta - log pi_old per token (or its sequence-level token form, `sequence_log_ratio`).
    Returns the per-token `loss` and boolean masks of where the low / high / dual clip was active.
    """
    ratio = torch.exp(log_ratio)
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


def cispo_surrogate(logprobs: torch.Tensor, log_ratio: torch.Tensor, advantages: torch.Tensor,
                    clip_low: float | None, clip_high: float) -> dict[str, torch.Tensor]:
    """CISPO (MiniMax-M1): -sg(clip(rho, 1 - clip_low, 1 + clip_high)) * A * log pi_theta per token.

    The importance weight is clipped and detached, so every token keeps a gradient (PPO's clip zeroes that of a
    clipped token); its gradient equals PPO's unclipped -A grad(rho) wherever rho lies inside the clip.
    `clip_low` None: no lower bound (the paper's choice). The loss value is not PPO's; only its gradient is
    comparable.
    """
    ratio = torch.exp(log_ratio)
    low = 0.0 if clip_low is None else 1.0 - clip_low
    weight = ratio.detach().clamp(low, 1.0 + clip_high)
    return {
        "loss": -weight * advantages * logprobs,
        "ratio": ratio,
        "clipped_low": ratio < low,
        "clipped_high": ratio > 1.0 + clip_high,
        "clipped_dual": torch.zeros_like(ratio, dtype=torch.bool),
    }


def sequence_mean(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B] mean of [B, T] `values` over each response's tokens."""
    return (values * response_mask).sum(dim=1) / response_mask.sum(dim=1).clamp(min=1.0)


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, response_mask: torch.Tensor
                       ) -> torch.Tensor:
    """GSPO's ratio in its token form, [B, T] (log s_{i,t}).

    s_i = exp(mean_t log rho_{i,t}) is the geometric mean of the response's token ratios; its token form
    s_{i,t} = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)] has the value s_i at every token and the gradient
    s_i grad log pi_theta(y_t), so per-token advantages (RLSD) still apply; with one advantage per response and
    a per-sequence token mean, its gradient equals the sequence-level loss's.
    """
    log_s = sequence_mean(logprobs - old_logprobs, response_mask).detach()
    return log_s[:, None] + logprobs - logprobs.detach()


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
