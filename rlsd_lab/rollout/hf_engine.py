"""Batched sampling on a `transformers` causal LM with its KV cache: a lean loop instead of `model.generate`.

Why not `generate`: we need the sampling log-probs of exactly the drawn tokens and a seeded generator, and the
per-step machinery of `generate` (logits processors, stopping criteria, input preparation) costs more than the
forward pass of a small model. `benchmarks/rollout_speed.py` compares the two side by side.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from rlsd_lab.rollout.base import RolloutBatch, RolloutEngine, SamplingParams
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
    def __init__(self, model: PreTrainedModel, pad_id: int, eos_id: int, seed: int = 0):
        self.model, self.pad_id, self.eos_id = model, pad_id, eos_id
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch:
        prompts = [p for p in prompt_ids for _ in range(params.n)]
        ids, mask = left_pad(prompts, self.pad_id)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        was_training = self.model.training
        self.model.eval()
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1]
        batch = ids.shape[0]
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens, logprobs, alive = [], [], []
        next_position = positions[:, -1:] + 1
        attention = mask
        for _ in range(params.max_new_tokens):
            token, logprob = sample_next_token(logits, params.temperature, params.top_p, self.generator)
            alive.append(~finished)
            tokens.append(token.masked_fill(finished, self.pad_id))
            logprobs.append(logprob.masked_fill(finished, 0.0))
            finished = finished | (token == self.eos_id)
            if bool(finished.all()):
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            logits = self.model(input_ids=tokens[-1][:, None], attention_mask=attention, position_ids=next_position,
                                past_key_values=cache, use_cache=True).logits[:, -1]
            next_position = next_position + 1
        self.model.train(was_training)
        return RolloutBatch(
            prompt_ids=ids, prompt_mask=mask,
            response_ids=torch.stack(tokens, dim=1),
            response_mask=torch.stack(alive, dim=1).float(),
            logprobs=torch.stack(logprobs, dim=1),
            finished=finished,
        )
