"""Gradient accumulation of one optimiser step over micro-batches.

The loss weights are computed for the whole mini-batch before it is split, so the accumulated gradient is the
same for any `micro_batch_size` (tested in tests/test_update.py). Under data parallelism the mini-batch is that of
all ranks together: its token and sequence counts are summed over ranks first (rlsd_lab/distributed.py), so the
ranks' gradients add up to the gradient of one process holding every rank's rows (tests/test_distributed.py).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from methods import MicroBatch, Objective
from methods.policy_loss import aggregation_weights
from rlsd_lab.distributed import sum_over_ranks, sum_values_over_ranks
from rlsd_lab.logprobs import TeacherStates, response_logprobs


@dataclass
class UpdateInputs:
    """Everything fixed for one rollout batch: advantages, and the optional pi_old / reference / teacher data."""

    advantages: torch.Tensor  # [B, T]
    old_logprobs: torch.Tensor | None = None  # None: pi_old = current weights (first optimiser step)
    ref_logprobs: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    teacher: TeacherStates | None = None


def _rows(tensor: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[rows]


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


def accumulate_policy_gradients(model, objective: Objective, rollout, inputs: UpdateInputs, rows: torch.Tensor,
                                aggregation: str, max_response_length: int, micro_batch_size: int,
                                temperature: float, chunk_size: int, backward=torch.Tensor.backward,
                                measure_terms: bool = False, defer_sync=nullcontext) -> dict[str, float]:
    """Backpropagates the loss of mini-batch `rows` in micro-batches; returns the loss and token-mean diagnostics.

    With `measure_terms`, also the gradient norm of each of `objective.loss_terms` (hybrids), at the cost of one
    extra backward per term. Under data parallelism `rows` are this rank's, the returned values are those of the
    global mini-batch, and every micro-batch but the last runs under `defer_sync()` (DDP's `no_sync`), so the
    gradient is all-reduced once; every rank must then have the same number of micro-batches.
    """
    mask = rollout.response_mask[rows]
    length = mask.shape[1]
    loss_weights = global_aggregation_weights(mask, aggregation, max_response_length)
    token_weights = global_aggregation_weights(mask, "token-mean", length)
    input_ids, attention = rollout.input_ids[rows], rollout.attention_mask[rows]
    parameters = [p for p in model.parameters() if p.requires_grad]
    term_grads: dict[str, list[torch.Tensor]] = {}
    sums: dict[str, float] = defaultdict(float)
    parts = torch.arange(len(rows)).split(micro_batch_size)
    for index, part in enumerate(parts):
        select = rows[part]
        teacher = None
        if inputs.teacher is not None and objective.token_divergence is not None:
            teacher = TeacherStates(inputs.teacher.hidden[select], inputs.teacher.head)
        scores = response_logprobs(model, input_ids[part], attention[part], length, temperature, chunk_size,
                                   teacher=teacher, divergence_fn=objective.token_divergence if teacher else None)
        old = _rows(inputs.old_logprobs, select)
        micro = MicroBatch(logprobs=scores.logprobs, old_logprobs=scores.logprobs.detach() if old is None else old,
                           advantages=inputs.advantages[select], entropy=scores.entropy,
                           ref_logprobs=_rows(inputs.ref_logprobs, select), delta=_rows(inputs.delta, select),
                           divergence=scores.divergence)
        per_token, diagnostics = objective.per_token_loss(micro)
        if measure_terms:
            for name, term in objective.loss_terms(micro).items():
                grads = torch.autograd.grad((loss_weights[part] * term).sum(), parameters, retain_graph=True,
                                            allow_unused=True)
                previous = term_grads.get(name)
                grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, parameters)]
                term_grads[name] = grads if previous is None else [a + b for a, b in zip(previous, grads)]
        loss = (loss_weights[part] * per_token).sum()
        with defer_sync() if index < len(parts) - 1 else nullcontext():
            backward(loss)
        sums["loss"] += float(loss.detach())
        for name, value in diagnostics.items():
            sums[name] += float((token_weights[part] * value.float()).sum())
    sums = sum_values_over_ranks(sums, mask.device)  # each rank holds its share of the global values
    for name, grads in term_grads.items():
        grads = [sum_over_ranks(g) for g in grads]
        sums[f"grad_norm/{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
    return sums
