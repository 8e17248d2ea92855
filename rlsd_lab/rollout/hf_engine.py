"""Batched sampling on a `transformers` causal LM with a KV cache: a lean loop instead of `model.generate`.

Why not `generate`: we need the sampling log-probs of exactly the drawn tokens and a seeded generator, and the
per-step machinery of `generate` (logits processors, stopping criteria, input preparation) costs time a small
model notices. Distinct prompts are prefilled once and their cache repeated for the G samples
(rlsd_lab/rollout/kv_cache.py). `benchmarks/rollout_speed.py` compares this engine with `generate` side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from rlsd_lab.rollout.base import RolloutBatch, RolloutEngine, SamplingParams
from rlsd_lab.rollout.kv_cache import sampling_cache
from rlsd_lab.rollout.sampling import sample_next_token


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


class HFRolloutEngine(RolloutEngine):
    def __init__(self, model: PreTrainedModel, pad_id: int, stop_ids: Sequence[int], seed: int = 0):
        """`stop_ids`: the tokens that end a response (`stop_token_ids`); empty: every response runs to the limit."""
        self.model, self.pad_id = model, pad_id
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        device = next(self.model.parameters()).device
        unique_ids, unique_mask = left_pad(prompt_ids, self.pad_id)
        unique_ids, unique_mask = unique_ids.to(device), unique_mask.to(device)
        ids, mask = unique_ids.repeat_interleave(params.n, 0), unique_mask.repeat_interleave(params.n, 0)
        positions = (unique_mask.cumsum(dim=1) - 1).clamp(min=0)
        # Without padding the mask is all ones: omitting it lets attention take its plain causal path.
        padded = bool((unique_mask == 0).any())
        was_training = self.model.training
        self.model.eval()
        cache = sampling_cache(self.model.config, ids.shape[1] + params.max_new_tokens, params.n)
        logits = self.model(input_ids=unique_ids, attention_mask=unique_mask if padded else None,
                            position_ids=positions, past_key_values=cache, use_cache=True,
                            logits_to_keep=1).logits[:, -1].repeat_interleave(params.n, 0)
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
        stop_ids = self.stop_ids.to(device)
        next_position = positions[:, -1:].repeat_interleave(params.n, 0) + 1
        attention = mask
        tokens, logprobs, alive = [], [], []
        for _ in range(params.max_new_tokens):
            token, logprob = sample_next_token(logits, params.temperature, params.top_p, self.generator)
            alive.append(~finished)
            tokens.append(token.masked_fill(finished, self.pad_id))
            logprobs.append(logprob.masked_fill(finished, 0.0))
            finished = finished | torch.isin(token, stop_ids)
            if bool(finished.all()):
                break
            if padded:
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            logits = self.model(input_ids=tokens[-1][:, None], attention_mask=attention if padded else None,
                                position_ids=next_position, past_key_values=cache, use_cache=True).logits[:, -1]
            next_position = next_position + 1
        self.model.train(was_training)
        return RolloutBatch(
            prompt_ids=ids, prompt_mask=mask,
            response_ids=torch.stack(tokens, dim=1),
            response_mask=torch.stack(alive, dim=1).float(),
            logprobs=torch.stack(logprobs, dim=1),
            finished=finished,
        )
