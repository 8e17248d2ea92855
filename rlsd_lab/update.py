"""Gradient accumulation of one optimiser step over micro-batches.

The loss weights are computed for the whole mini-batch before it is split, so the accumulated gradient is the
same for any `micro_batch_size` (tested in tests/test_update.py). Under data parallelism the mini-batch is that of
all ranks together: its token and sequence counts are summed over ranks first (rlsd_lab/distributed.py), so the
ranks' gradients add up to the gradient of one process holding every rank's rows (tests/test_distributed.py).

The shared regularisers are added here, to every objective's per-token loss: a KL to the reference policy
(`loss.kl_coef`) and an entropy bonus (`loss.entropy_coef`).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext

import torch

from methods import MicroBatch, Objective
from methods.policy_loss import aggregation_weights, kl_penalty
from rlsd_lab.distributed import sum_over_ranks, sum_values_over_ranks
from rlsd_lab.experience import Experience, rows_of
from rlsd_lab.logprobs import ResponseScores, TokenScorer


def global_aggregation_weights(mask: torch.Tensor, aggregation: str, max_response_length: int) -> torch.Tensor:
    """`aggregation_weights` of this rank's rows as part of the mini-batch of all ranks.

    `aggregation_weights` divides by the local token count (token-mean) or sequence count (seq-mean modes);
    multiplying by local / global count makes it divide by the count summed over ranks instead. One process:
    the factor is exactly 1.
    """
    weights = aggregation_weights(mask, aggregation, max_response_length)
    local = mask.sum() if aggregation == "token-mean" else torch.tensor(float(mask.shape[0]), device=mask.device)
    total = sum_over_ranks(local)
    # The clamps mirror aggregation_weights' own; a rank without tokens has zero weights whatever the factor.
    return weights * (local.clamp(min=1.0) / total.clamp(min=1.0))


def micro_batch(experience: Experience, rows: torch.Tensor, scores: ResponseScores) -> MicroBatch:
    """The objective's view of `rows`: current log-probs (pi_old = them, detached, on the first optimiser step)."""
    old = rows_of(experience.old_logprobs_B_T, rows)
    return MicroBatch(logprobs=scores.logprobs, old_logprobs=scores.logprobs.detach() if old is None else old,
                      advantages=rows_of(experience.advantages, rows),
                      response_mask=experience.response_mask_B_T[rows],
                      is_weights=rows_of(experience.is_weights_B_T, rows), delta=rows_of(experience.delta_B_T, rows),
                      divergence=scores.divergence)


def regularised_loss(loss: torch.Tensor, metrics: dict, micro: MicroBatch, scores: ResponseScores,
                     ref_logprobs: torch.Tensor | None, loss_cfg) -> torch.Tensor:
    """The objective's per-token loss plus the shared KL and entropy terms; their diagnostics go into `metrics`."""
    metrics["approx_kl_old"] = 0.5 * (micro.logprobs.detach() - micro.old_logprobs) ** 2
    metrics["entropy"] = scores.entropy.detach()
    if ref_logprobs is not None and loss_cfg.kl_coef > 0:
        kl = kl_penalty(micro.logprobs, ref_logprobs, loss_cfg.kl_estimator)
        loss = loss + loss_cfg.kl_coef * kl
        metrics["kl_ref"] = kl.detach()
    if loss_cfg.entropy_coef > 0:
        loss = loss - loss_cfg.entropy_coef * scores.entropy
    return loss


def accumulate_policy_gradients(model, objective: Objective, experience: Experience, rows: torch.Tensor, *,
                                loss_cfg, max_response_length: int, micro_batch_size: int, scorer: TokenScorer,
                                backward=torch.Tensor.backward, measure_terms: bool = False,
                                defer_sync=nullcontext) -> dict[str, float]:
    """Backpropagates the loss of mini-batch `rows` in micro-batches; returns the loss and token-mean diagnostics.

    With `measure_terms`, also the gradient norm of each of the objective's loss terms (combinations), at the cost
    of one extra backward per term. Under data parallelism `rows` are this rank's, the returned values are those of
    the global mini-batch, and every micro-batch but the last runs under `defer_sync()` (DDP's `no_sync`), so the
    gradient is all-reduced once; every rank must then have the same number of micro-batches.
    """
    rollout = experience.rollout
    mask = experience.loss_mask_B_T[rows]  # rows left out of the loss weigh 0 and count in no denominator
    length = mask.shape[1]
    loss_weights = global_aggregation_weights(mask, loss_cfg.aggregation, max_response_length)
    token_weights = global_aggregation_weights(mask, "token-mean", length)
    input_ids, attention = rollout.input_ids[rows], rollout.attention_mask[rows]
    divergence = objective.needs.divergence
    parameters = [p for p in model.parameters() if p.requires_grad]
    term_grads: dict[str, list[torch.Tensor]] = {}
    sums: dict[str, float] = defaultdict(float)
    parts = torch.arange(len(rows)).split(micro_batch_size)
    for index, part in enumerate(parts):
        select = rows[part]
        teacher = experience.teacher_states.rows(select) if divergence is not None else None
        scores = scorer.score(model, input_ids[part], attention[part], length, teacher=teacher, divergence=divergence)
        micro = micro_batch(experience, select, scores)
        output = objective.per_token_loss(micro)
        metrics = dict(output.metrics)
        per_token = regularised_loss(output.loss, metrics, micro, scores, rows_of(experience.ref_logprobs_B_T, select),
                                     loss_cfg)
        if measure_terms:
            for name, term in output.terms.items():
                grads = torch.autograd.grad((loss_weights[part] * term).sum(), parameters, retain_graph=True,
                                            allow_unused=True)
                previous = term_grads.get(name)
                grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, parameters)]
                term_grads[name] = grads if previous is None else [a + b for a, b in zip(previous, grads)]
        loss = (loss_weights[part] * per_token).sum()
        with defer_sync() if index < len(parts) - 1 else nullcontext():
            backward(loss)
        sums["loss"] += float(loss.detach())
        for name, value in metrics.items():
            sums[name] += float((token_weights[part] * value.float()).sum())
    sums = sum_values_over_ranks(sums, mask.device)  # each rank holds its share of the global values
    for name, grads in term_grads.items():
        grads = [sum_over_ranks(g) for g in grads]
        sums[f"grad_norm/{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
    return sums
