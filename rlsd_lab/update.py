"""Gradient accumulation of one optimiser step over micro-batches.

The loss weights are computed for the whole mini-batch before it is split, so the accumulated gradient is the
same for any `micro_batch_size` (tested in tests/test_update.py).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from methods import MicroBatch, Objective
from methods.policy_loss import aggregation_weights
from rlsd_lab.logprobs import response_logprobs


def accumulate_policy_gradients(model, objective: Objective, rollout, advantages: torch.Tensor, rows: torch.Tensor,
                                fixed: dict[str, torch.Tensor], aggregation: str, max_response_length: int,
                                micro_batch_size: int, temperature: float, chunk_size: int,
                                backward=torch.Tensor.backward) -> dict[str, float]:
    """Backpropagates the loss of mini-batch `rows` in micro-batches; returns the loss and token-mean diagnostics.

    `fixed` may hold `old_logprobs` (else the current log-probs, detached, are pi_old: exact for the first
    optimiser step on a rollout batch) and `ref_logprobs` for a KL penalty.
    """
    mask = rollout.response_mask[rows]
    length = mask.shape[1]
    loss_weights = aggregation_weights(mask, aggregation, max_response_length)
    token_weights = aggregation_weights(mask, "token-mean", length)
    input_ids, attention = rollout.input_ids[rows], rollout.attention_mask[rows]
    sums: dict[str, float] = defaultdict(float)
    for part in torch.arange(len(rows)).split(micro_batch_size):
        logprobs, entropy = response_logprobs(model, input_ids[part], attention[part], length, temperature, chunk_size)
        select = rows[part]
        old = fixed["old_logprobs"][select] if "old_logprobs" in fixed else logprobs.detach()
        ref = fixed["ref_logprobs"][select] if "ref_logprobs" in fixed else None
        micro = MicroBatch(logprobs=logprobs, old_logprobs=old, advantages=advantages[select], entropy=entropy,
                           ref_logprobs=ref)
        per_token, diagnostics = objective.per_token_loss(micro)
        loss = (loss_weights[part] * per_token).sum()
        backward(loss)
        sums["loss"] += float(loss.detach())
        for name, value in diagnostics.items():
            sums[name] += float((token_weights[part] * value.float()).sum())
    return sums
