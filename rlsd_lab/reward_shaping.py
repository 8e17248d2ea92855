"""Shaping added to the verifier's reward before the group advantages are taken (`reward.*` in conf/config.yaml).

The verifier's own score stays the record of correctness (accuracy, credit quality, dynamic sampling read it); only
the advantages see the shaped reward.
"""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment per response, from its length |y| in tokens:

        0 for |y| <= max_len - buffer;  ((max_len - buffer) - |y|) / buffer inside the buffer;  -1 beyond max_len
    """
    safe = max_len - buffer
    inside = (safe - lengths.float()) / buffer
    return torch.where(lengths <= safe, torch.zeros_like(inside), torch.where(lengths <= max_len, inside, -1.0))


def reward_shaping(lengths: torch.Tensor, reward_cfg, max_new_tokens: int) -> torch.Tensor | None:
    """[B] the shaping terms `reward_cfg` turns on, summed; None when none is."""
    overlong = reward_cfg.overlong
    if not overlong.enabled:
        return None
    return overlong_penalty(lengths, overlong.max_len or max_new_tokens, overlong.buffer)
