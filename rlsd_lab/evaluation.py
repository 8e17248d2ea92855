"""Greedy accuracy on held-out problems: the validation metric of both the bootstrap and the RL runs."""

from __future__ import annotations

from typing import Callable

from rlsd_lab.prompts import PromptRenderer, reference_text
from rlsd_lab.rollout.base import RolloutEngine, SamplingParams
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verifier
from rlsd_lab.verifiers.pool import VerifierPool


def decode_responses(tokenizer, batch) -> list[str]:
    return tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)


def greedy_accuracy(engine: RolloutEngine, tokenizer, verifier: Verifier | VerifierPool, problems: list[Problem],
                    max_new_tokens: int, batch_size: int = 256, prompts: PromptRenderer | None = None,
                    reference_mode: str | None = None, leakage: Callable[[str], bool] | None = None
                    ) -> dict[str, float]:
    """Share of problems answered correctly with greedy decoding, plus mean response length.

    `reference_mode` (answer | solution): the teacher's accuracy, each prompt carrying its reference block.
    `leakage`: a test of a response's text; adds `leakage_rate`, the share of responses it flags.
    """
    correct, tokens, leaked = 0.0, 0.0, 0
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    prompts = prompts or PromptRenderer("plain", tokenizer)
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        batch = engine.generate([prompts.ids(p, reference_text(p, reference_mode) if reference_mode else "")
                                 for p in chunk], params)
        texts = decode_responses(tokenizer, batch)
        correct += sum(verdict.reward for verdict in verifier.score_batch(texts, chunk))
        tokens += float(batch.response_lengths().sum())
        leaked += sum(map(leakage, texts)) if leakage else 0
    result = {"accuracy": correct / len(problems), "response_length": tokens / len(problems)}
    return result | ({"leakage_rate": leaked / len(problems)} if leakage else {})
