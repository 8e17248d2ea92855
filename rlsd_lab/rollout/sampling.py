"""Drawing one token per row from logits, with its log-prob under the (unfiltered) temperature softmax."""

from __future__ import annotations

import torch


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (token [B], logprob [B]). temperature 0 is greedy (log-prob at temperature 1).

    Top-p only restricts which tokens can be drawn; the returned log-prob is that of the temperature-scaled full
    distribution, the quantity the trainer recomputes, so the importance ratio is 1 before any update.
    """
    logits = logits.float()
    if temperature == 0.0:
        token = logits.argmax(dim=-1)
        return token, torch.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    probs = logprobs.exp()
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
