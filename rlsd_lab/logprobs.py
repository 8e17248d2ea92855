"""Log-probs of given response tokens under a causal LM, projected to the vocabulary chunk by chunk.

Only [B, T] results are kept: each chunk's [B, chunk, V] logits live for one chunk, and under autograd the chunk
is recomputed in backward (activation checkpointing), so no B x T x V tensor is ever stored. That matters at
real vocabularies (150k); the embedded model has 99 tokens.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as the rollout engine used them."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    sampled = logprobs.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    return sampled, entropy


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
                      temperature: float = 1.0, chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(y_t), entropy_t), each [B, T], for the last `response_length` tokens of `input_ids`.

    `temperature` divides the logits exactly as the sampler did, so the ratio to the rollout log-probs is 1.
    """
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
    hidden = hidden[:, -response_length - 1:-1]  # the state at t-1 predicts token t
    targets = input_ids[:, -response_length:]
    head = model.get_output_embeddings()
    sampled, entropy = [], []
    for start in range(0, response_length, chunk_size):
        piece = (hidden[:, start:start + chunk_size], targets[:, start:start + chunk_size], head, temperature)
        if torch.is_grad_enabled():
            out = checkpoint(_chunk_logprobs, *piece, use_reentrant=False)
        else:
            out = _chunk_logprobs(*piece)
        sampled.append(out[0])
        entropy.append(out[1])
    return torch.cat(sampled, dim=1), torch.cat(entropy, dim=1)
